//! The tolerant reader of incoming events: FoodLab's envelope, and the flat
//! shapes other producers publish (the seed labs' clients among them).
//!
//! - The event is named by `type` (or `event_type`/`eventType`); a message
//!   without one is the event its channel carries (`Arrival::carries`).
//! - Its fields are under `payload` (the envelope) or at the top level (flat),
//!   read with the rules of `POST /order` (`OrderRequest::from_json`).
//! - Its identity is `message_id` (or `event_id`); with neither, one derived
//!   from the order id, so the order id is the deduplication key.
//! - An order id that is not a UUID maps to one UUID (`OrderId::from_wire`).
//! - `occurred_at` (or `timestamp`/`created_at`) is RFC 3339, a date-time
//!   without offset (UTC), or Unix seconds; left out, the arrival time.
//!
//! Anything else that cannot be read is poison, and the reason says why.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::event::{Envelope, Event, EventType, Poison};
use crate::order::OrderId;
use crate::request::OrderRequest;
use crate::trace::{TRACEPARENT, TraceContext};

const TYPE_KEYS: [&str; 3] = ["type", "event_type", "eventType"];
const ORDER_ID_KEYS: [&str; 2] = ["order_id", "orderId"];
const MESSAGE_ID_KEYS: [&str; 4] = ["message_id", "messageId", "event_id", "eventId"];
const OCCURRED_AT_KEYS: [&str; 4] = ["occurred_at", "occurredAt", "timestamp", "created_at"];
const CORRELATION_KEYS: [&str; 2] = ["correlation_id", "correlationId"];

/// What the channel says about a message that does not say it itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrival {
    /// The event its routing key or topic carries (`order.placed`, the order topic).
    pub carries: Option<EventType>,
    /// When it arrived (or the broker's timestamp of it).
    pub at: Option<jiff::Timestamp>,
}

impl Arrival {
    /// A message on a channel that carries only `event`, arrived `at`.
    pub fn on(event: EventType, at: jiff::Timestamp) -> Self {
        Self {
            carries: Some(event),
            at: Some(at),
        }
    }
}

impl Envelope {
    /// Reads an event that says everything itself: its `type` and
    /// `occurred_at` (FoodLab's own envelope, or a flat event that names both).
    pub fn parse(bytes: &[u8]) -> Result<Self, Poison> {
        Self::read(bytes, Arrival::default())
    }

    /// Reads an incoming event in any of the shapes the module describes.
    pub fn read(bytes: &[u8], arrival: Arrival) -> Result<Self, Poison> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| Poison(format!("not JSON: {e}")))?;
        let Value::Object(message) = value else {
            return Err(Poison("not a JSON object".into()));
        };
        let fields = match message.get("payload") {
            None | Some(Value::Null) => &message,
            Some(Value::Object(payload)) => payload,
            Some(_) => {
                return Err(Poison(
                    "invalid envelope: `payload` must be an object".into(),
                ));
            }
        };
        let event_type = event_type(&message, arrival.carries)?;
        let order_id = order_id(&message, fields)?;
        let message_id = message_id(&message, order_id, event_type)?;
        let occurred_at = match first(&message, &OCCURRED_AT_KEYS) {
            Some(value) => timestamp(value)?,
            None => arrival
                .at
                .ok_or_else(|| Poison("invalid envelope: missing field `occurred_at`".into()))?,
        };
        let correlation_id = match first(&message, &CORRELATION_KEYS) {
            None => order_id.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(Poison(
                    "invalid envelope: `correlation_id` must be a string".into(),
                ));
            }
        };
        let event = event(event_type, fields)?;
        // A broken trace context only loses the trace, never the event.
        let trace = message
            .get(TRACEPARENT)
            .and_then(Value::as_str)
            .and_then(TraceContext::parse);
        Ok(Self {
            message_id,
            order_id,
            occurred_at,
            correlation_id,
            event,
            trace,
        })
    }
}

fn first<'a>(object: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter()
        .find_map(|key| object.get(*key))
        .filter(|v| !v.is_null())
}

fn event_type(
    message: &Map<String, Value>,
    carries: Option<EventType>,
) -> Result<EventType, Poison> {
    match first(message, &TYPE_KEYS) {
        Some(Value::String(name)) => EventType::from_name(name)
            .ok_or_else(|| Poison(format!("invalid envelope: unknown event type `{name}`"))),
        Some(other) => Err(Poison(format!(
            "invalid envelope: `type` must be a string, got {other}"
        ))),
        None => carries.ok_or_else(|| {
            Poison("invalid envelope: missing field `type` (and the channel carries more than one event)".into())
        }),
    }
}

fn order_id(message: &Map<String, Value>, fields: &Map<String, Value>) -> Result<OrderId, Poison> {
    let value = first(message, &ORDER_ID_KEYS)
        .or_else(|| first(fields, &ORDER_ID_KEYS))
        .ok_or_else(|| Poison("invalid envelope: missing field `order_id`".into()))?;
    id_text(value)
        .and_then(|id| OrderId::from_wire(&id))
        .ok_or_else(|| {
            Poison(format!(
                "invalid envelope: `order_id` must be a non-empty string or a number, got {value}"
            ))
        })
}

fn message_id(
    message: &Map<String, Value>,
    order_id: OrderId,
    event_type: EventType,
) -> Result<Uuid, Poison> {
    let Some(value) = first(message, &MESSAGE_ID_KEYS) else {
        // One id per order and event: every copy of the message is the same
        // message, and an order's result is not a copy of the order.
        return Ok(Uuid::new_v5(&order_id.0, event_type.name().as_bytes()));
    };
    let id = id_text(value)
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| {
            Poison(format!(
                "invalid envelope: `message_id` must be a non-empty string or a number, got {value}"
            ))
        })?;
    Ok(Uuid::parse_str(id.trim()).unwrap_or_else(|_| {
        Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("urn:foodlab:message:{}", id.trim()).as_bytes(),
        )
    }))
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn timestamp(value: &Value) -> Result<jiff::Timestamp, Poison> {
    let invalid = || {
        Poison(format!(
            "invalid envelope: `occurred_at` must be an RFC 3339 time or Unix seconds, got {value}"
        ))
    };
    match value {
        Value::String(s) => s
            .parse::<jiff::Timestamp>()
            .or_else(|_| {
                s.parse::<jiff::civil::DateTime>()
                    .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
                    .map(|z| z.timestamp())
            })
            .map_err(|_| invalid()),
        Value::Number(n) => {
            let seconds = n.as_f64().ok_or_else(invalid)?;
            let ms = (seconds * 1000.0).round();
            if !ms.is_finite() || ms.abs() > 1e15 {
                return Err(invalid());
            }
            jiff::Timestamp::from_millisecond(ms as i64).map_err(|_| invalid())
        }
        _ => Err(invalid()),
    }
}

fn event(event_type: EventType, fields: &Map<String, Value>) -> Result<Event, Poison> {
    let request = || {
        OrderRequest::from_json(&Value::Object(fields.clone()))
            .map_err(|e| Poison(format!("invalid payload: {e}")))
    };
    Ok(match event_type {
        EventType::OrderPlaced => {
            let request = request()?;
            Event::OrderPlaced {
                customer_id: request.customer_id,
                items: request.lines,
            }
        }
        EventType::InventoryReserved => {
            let request = request()?;
            Event::InventoryReserved {
                customer_id: request.customer_id,
                items: request.lines,
            }
        }
        EventType::InventoryFailed => Event::InventoryFailed {
            reason: fields
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::catalogue::ItemName;
    use crate::order::OrderLine;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn on_order_placed() -> Arrival {
        Arrival::on(EventType::OrderPlaced, now())
    }

    fn read(body: Value) -> Result<Envelope, Poison> {
        Envelope::read(body.to_string().as_bytes(), on_order_placed())
    }

    fn line(item: &str, quantity: u32) -> OrderLine {
        OrderLine {
            item: ItemName::parse(item).unwrap(),
            quantity,
        }
    }

    fn placed(envelope: &Envelope) -> (Option<&str>, &[OrderLine]) {
        match &envelope.event {
            Event::OrderPlaced { customer_id, items } => (customer_id.as_deref(), items),
            other => panic!("not an OrderPlaced: {other:?}"),
        }
    }

    #[test]
    fn reads_the_seeds_flat_shapes() {
        let message_id = Uuid::new_v4();
        let order_id = OrderId::new();
        let cases = [
            (
                json!({"order_id": order_id, "message_id": message_id, "item": "burger", "quantity": 2}),
                None,
                vec![line("burger", 2)],
            ),
            (
                json!({"order_id": order_id, "event_id": message_id, "item": "Pizza", "qty": 3}),
                None,
                vec![line("pizza", 3)],
            ),
            (
                json!({"order_id": order_id, "messageId": message_id, "student_id": "S123",
                       "items": [{"sku": "burger", "qty": 1}, {"item_id": "salad", "quantity": 2}]}),
                Some("S123"),
                vec![line("burger", 1), line("salad", 2)],
            ),
        ];
        for (body, customer, lines) in cases {
            let envelope = read(body.clone()).unwrap();
            assert_eq!(envelope.message_id, message_id, "{body}");
            assert_eq!(envelope.order_id, order_id, "{body}");
            assert_eq!(envelope.occurred_at, now(), "{body}");
            assert_eq!(envelope.correlation_id, order_id.to_string(), "{body}");
            assert_eq!(placed(&envelope), (customer, &lines[..]), "{body}");
        }
    }

    #[test]
    fn without_an_id_the_order_id_is_the_identity() {
        let body = json!({"order_id": "ORD-IDEM-1771363267", "item": "burger"});
        let first = read(body.clone()).unwrap();
        let again = read(body).unwrap();
        assert_eq!(first.message_id, again.message_id);
        assert_eq!(
            first.order_id,
            OrderId::from_wire("ORD-IDEM-1771363267").unwrap()
        );
        let other = read(json!({"order_id": "ORD-2", "item": "burger"})).unwrap();
        assert_ne!(other.message_id, first.message_id);
        let result = json!({"order_id": "ORD-IDEM-1771363267", "type": "InventoryFailed"});
        assert_ne!(read(result).unwrap().message_id, first.message_id);
        // A foreign message id is one UUID too, the same for every copy.
        let named = |id: &str| {
            read(json!({"order_id": 7, "message_id": id, "item": "burger"}))
                .unwrap()
                .message_id
        };
        assert_eq!(named("m-1"), named("m-1"));
        assert_ne!(named("m-1"), named("m-2"));
    }

    #[test]
    fn a_type_names_the_event_wherever_it_arrived() {
        let order_id = OrderId::new();
        let cases = [
            (
                json!({"type": "OrderPlaced", "order_id": order_id, "item": "burger"}),
                EventType::OrderPlaced,
            ),
            (
                json!({"event_type": "order_placed", "order_id": order_id, "item": "burger"}),
                EventType::OrderPlaced,
            ),
            (
                json!({"type": "InventoryFailed", "order_id": order_id, "reason": "sold out"}),
                EventType::InventoryFailed,
            ),
            (
                json!({"eventType": "InventoryReserved", "order_id": order_id, "sku": "pizza"}),
                EventType::InventoryReserved,
            ),
        ];
        // The channel's event is only for a message that names none.
        let elsewhere = Arrival::on(EventType::InventoryFailed, now());
        for (body, expected) in cases {
            let read = Envelope::read(body.to_string().as_bytes(), elsewhere).unwrap();
            assert_eq!(read.event_type(), expected, "{body}");
        }
    }

    #[test]
    fn times_in_the_shapes_people_write_them() {
        let cases = [
            (json!("2027-01-15T08:00:00Z"), 1_800_000_000_000),
            (json!("2027-01-15T08:00:00.250"), 1_800_000_000_250),
            (json!(1_800_000_000.5), 1_800_000_000_500),
            (json!(1_800_000_000), 1_800_000_000_000),
        ];
        for (at, ms) in cases {
            let envelope = read(json!({"order_id": 1, "item": "burger", "timestamp": at})).unwrap();
            assert_eq!(envelope.occurred_at.as_millisecond(), ms, "{at}");
        }
    }

    #[test]
    fn what_cannot_be_read_is_poison_with_its_reason() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([1]), "not a JSON object"),
            (
                json!({"item": "burger", "qty": 1}),
                "invalid envelope: missing field `order_id`",
            ),
            (
                json!({"order_id": "", "item": "burger"}),
                "invalid envelope: `order_id` must be",
            ),
            (
                json!({"order_id": {"a": 1}, "item": "burger"}),
                "invalid envelope: `order_id` must be",
            ),
            (
                json!({"order_id": 1, "message_id": "", "item": "burger"}),
                "invalid envelope: `message_id` must be",
            ),
            (
                json!({"order_id": 1, "event_id": [], "item": "burger"}),
                "invalid envelope: `message_id` must be",
            ),
            (
                json!({"order_id": 1, "type": "OrderEaten", "item": "burger"}),
                "invalid envelope: unknown event type `OrderEaten`",
            ),
            (
                json!({"order_id": 1, "type": 3, "item": "burger"}),
                "invalid envelope: `type` must be a string",
            ),
            (
                json!({"order_id": 1, "item": "burger", "occurred_at": "yesterday"}),
                "invalid envelope: `occurred_at` must be",
            ),
            (
                json!({"order_id": 1, "payload": "burger"}),
                "invalid envelope: `payload` must be an object",
            ),
            (
                json!({"order_id": 1}),
                "invalid payload: order: `item` is missing",
            ),
            (
                json!({"order_id": 1, "item": "burger", "qty": 0}),
                "invalid payload: order: `quantity` must be at least 1",
            ),
        ];
        for (body, reason) in cases {
            let poison = read(body.clone()).unwrap_err();
            assert!(
                poison.0.starts_with(reason),
                "{body}: {} does not start with {reason}",
                poison.0
            );
        }
        let untyped = Envelope::read(br#"{"order_id": 1, "item": "burger"}"#, Arrival::default());
        assert!(
            untyped
                .unwrap_err()
                .0
                .starts_with("invalid envelope: missing field `type`")
        );
    }
}
