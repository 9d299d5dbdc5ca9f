//! The events of the workflow and the envelope they travel in, on any broker.
//!
//! FoodLab publishes the envelope; what it reads may also be flat (`reader`).
//! A message that is not JSON, lacks a field or carries an invalid one is
//! poison, and the reason says which.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::order::{OrderId, OrderLine, OrderStatus};
use crate::trace::TraceContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    OrderPlaced,
    InventoryReserved,
    InventoryFailed,
}

impl EventType {
    /// The name on the wire (the envelope's `type`).
    pub fn name(self) -> &'static str {
        match self {
            Self::OrderPlaced => "OrderPlaced",
            Self::InventoryReserved => "InventoryReserved",
            Self::InventoryFailed => "InventoryFailed",
        }
    }

    /// The routing key (RabbitMQ) that carries this event.
    pub fn routing_key(self) -> &'static str {
        match self {
            Self::OrderPlaced => "order.placed",
            Self::InventoryReserved => "inventory.reserved",
            Self::InventoryFailed => "inventory.failed",
        }
    }

    pub const ALL: [EventType; 3] = [
        Self::OrderPlaced,
        Self::InventoryReserved,
        Self::InventoryFailed,
    ];

    /// The event a routing key carries, if it is one of the workflow's.
    pub fn for_routing_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.routing_key() == key)
    }

    /// The event a producer names, spelled as it likes: `OrderPlaced`,
    /// `order_placed`, `ORDER-PLACED`, `order.placed`.
    pub fn from_name(name: &str) -> Option<Self> {
        let squashed: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Self::ALL
            .into_iter()
            .find(|e| e.name().to_ascii_lowercase() == squashed)
    }
}

/// What happened, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    OrderPlaced {
        customer_id: Option<String>,
        items: Vec<OrderLine>,
    },
    InventoryReserved {
        customer_id: Option<String>,
        items: Vec<OrderLine>,
    },
    InventoryFailed {
        reason: String,
    },
}

impl Event {
    /// The status an inventory result gives its order, with the reason of a
    /// failure; `None` for an event that is not an inventory result.
    pub fn settles_order_as(&self) -> Option<(OrderStatus, Option<String>)> {
        match self {
            Self::InventoryReserved { .. } => Some((OrderStatus::Reserved, None)),
            Self::InventoryFailed { reason } => Some((OrderStatus::Failed, Some(reason.clone()))),
            Self::OrderPlaced { .. } => None,
        }
    }

    pub fn event_type(&self) -> EventType {
        match self {
            Self::OrderPlaced { .. } => EventType::OrderPlaced,
            Self::InventoryReserved { .. } => EventType::InventoryReserved,
            Self::InventoryFailed { .. } => EventType::InventoryFailed,
        }
    }

    fn payload(&self) -> Value {
        match self {
            Self::OrderPlaced { customer_id, items }
            | Self::InventoryReserved { customer_id, items } => {
                serde_json::json!({ "customer_id": customer_id, "items": items })
            }
            Self::InventoryFailed { reason } => serde_json::json!({ "reason": reason }),
        }
    }
}

/// An event with its identity: `message_id` is unique per message (a
/// redelivery keeps it), `correlation_id` follows one order through the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub message_id: Uuid,
    pub order_id: OrderId,
    pub occurred_at: jiff::Timestamp,
    pub correlation_id: String,
    pub event: Event,
    /// The trace it belongs to. It travels in the broker's headers, not in
    /// the body (`to_json`); only the outbox keeps it beside the body.
    pub trace: Option<TraceContext>,
}

#[derive(Serialize)]
struct Wire {
    message_id: Uuid,
    #[serde(rename = "type")]
    event_type: EventType,
    order_id: OrderId,
    occurred_at: jiff::Timestamp,
    correlation_id: String,
    payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

/// Why a message cannot be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Poison(pub String);

impl Envelope {
    pub fn new(
        order_id: OrderId,
        correlation_id: String,
        now: jiff::Timestamp,
        event: Event,
    ) -> Self {
        Self {
            message_id: Uuid::new_v4(),
            order_id,
            occurred_at: now,
            correlation_id,
            event,
            trace: None,
        }
    }

    /// The same envelope, in the trace `trace`.
    pub fn in_trace(self, trace: TraceContext) -> Self {
        Self {
            trace: Some(trace),
            ..self
        }
    }

    /// The result event of an order gets an id derived from the order, so
    /// publishing it again (after a redelivery) is recognisably the same message.
    pub fn result_of(order: &Envelope, now: jiff::Timestamp, event: Event) -> Self {
        Self {
            message_id: Uuid::new_v5(&order.order_id.0, b"inventory-result"),
            order_id: order.order_id,
            occurred_at: now,
            correlation_id: order.correlation_id.clone(),
            event,
            trace: order.trace,
        }
    }

    pub fn event_type(&self) -> EventType {
        self.event.event_type()
    }

    /// The body on the wire.
    pub fn to_json(&self) -> Vec<u8> {
        self.serialize(false)
    }

    /// The body with its `traceparent`, for the outbox: `parse` reads both.
    pub fn to_stored_json(&self) -> Vec<u8> {
        self.serialize(true)
    }

    fn serialize(&self, with_trace: bool) -> Vec<u8> {
        let wire = Wire {
            message_id: self.message_id,
            event_type: self.event_type(),
            order_id: self.order_id,
            occurred_at: self.occurred_at,
            correlation_id: self.correlation_id.clone(),
            payload: self.event.payload(),
            traceparent: self
                .trace
                .filter(|_| with_trace)
                .map(|trace| trace.to_string()),
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::catalogue::ItemName;

    fn placed() -> Envelope {
        Envelope::new(
            OrderId::new(),
            "c-1".into(),
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            Event::OrderPlaced {
                customer_id: Some("s1".into()),
                items: vec![OrderLine {
                    item: ItemName::parse("burger").unwrap(),
                    quantity: 2,
                }],
            },
        )
    }

    #[test]
    fn wire_names_are_the_serialized_types() {
        for event_type in [
            EventType::OrderPlaced,
            EventType::InventoryReserved,
            EventType::InventoryFailed,
        ] {
            assert_eq!(
                serde_json::to_value(event_type).unwrap(),
                serde_json::json!(event_type.name())
            );
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let envelope = placed();
        assert_eq!(Envelope::parse(&envelope.to_json()), Ok(envelope.clone()));
        let wire: Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        assert_eq!(wire["type"], "OrderPlaced");
        assert_eq!(wire["occurred_at"], "2023-11-14T22:13:20Z");
        assert_eq!(
            wire["payload"]["items"],
            json!([{"item": "burger", "quantity": 2}])
        );
    }

    #[test]
    fn the_trace_stays_out_of_the_wire_body_and_in_the_stored_one() {
        let trace = TraceContext::start();
        let envelope = placed().in_trace(trace);
        let wire: Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        assert_eq!(wire.get("traceparent"), None);
        assert_eq!(Envelope::parse(&envelope.to_json()).unwrap().trace, None);
        let stored = Envelope::parse(&envelope.to_stored_json()).unwrap();
        assert_eq!(stored, envelope);
        let result = Envelope::result_of(
            &stored,
            jiff::Timestamp::now(),
            Event::InventoryFailed { reason: "x".into() },
        );
        assert_eq!(result.trace, Some(trace));
    }

    #[test]
    fn event_names_are_read_in_any_spelling() {
        for event in EventType::ALL {
            assert_eq!(EventType::from_name(event.name()), Some(event));
            assert_eq!(EventType::for_routing_key(event.routing_key()), Some(event));
            assert_eq!(EventType::from_name(event.routing_key()), Some(event));
        }
        assert_eq!(
            EventType::from_name("ORDER_PLACED"),
            Some(EventType::OrderPlaced)
        );
        assert_eq!(EventType::from_name("OrderCooked"), None);
        assert_eq!(EventType::for_routing_key("order.cooked"), None);
    }

    #[test]
    fn result_ids_are_stable_per_order() {
        let order = placed();
        let now = jiff::Timestamp::now();
        let a = Envelope::result_of(&order, now, Event::InventoryFailed { reason: "x".into() });
        let b = Envelope::result_of(&order, now, Event::InventoryFailed { reason: "x".into() });
        assert_eq!(a.message_id, b.message_id);
        assert_ne!(a.message_id, order.message_id);
        assert_eq!(a.correlation_id, "c-1");
    }

    #[test]
    fn poison_is_named() {
        let good: Value = serde_json::from_slice(&placed().to_json()).unwrap();
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "not JSON"),
            (
                with(&|v| drop(v.as_object_mut().unwrap().remove("order_id"))),
                "invalid envelope: missing field `order_id`",
            ),
            (
                with(&|v| v["type"] = json!("OrderEaten")),
                "invalid envelope: unknown event type",
            ),
            (
                with(&|v| v["message_id"] = json!({})),
                "invalid envelope: `message_id` must be",
            ),
            (
                with(&|v| drop(v.as_object_mut().unwrap().remove("occurred_at"))),
                "invalid envelope: missing field `occurred_at`",
            ),
            (
                with(&|v| v["payload"]["items"][0]["quantity"] = json!(0)),
                "invalid payload: items[0]: `quantity` must be at least 1",
            ),
            (
                with(&|v| v["payload"] = json!({})),
                "invalid payload: order: `item` is missing",
            ),
        ];
        for (bytes, reason) in cases {
            let poison = Envelope::parse(&bytes).unwrap_err();
            assert!(
                poison.0.starts_with(reason),
                "{} does not start with {reason}",
                poison.0
            );
        }
    }
}
