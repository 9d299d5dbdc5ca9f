//! What analytics makes of the event log: each message classified by the
//! tolerant reader, and the figures computed from the group's tallies.
//!
//! Every figure depends only on the events themselves (rates are bucketed
//! by the time each event happened, not when it was read), and the store
//! counts each event once by its message id; so reading the log again from
//! the start gives exactly the same figures.

use std::collections::BTreeMap;

use foodlab_domain::{Arrival, Envelope};
use foodlab_store::analytics::{ReadEvent, Tallies};
use serde::Serialize;

/// A message as an event to count, or the reason it is none.
pub fn classify(body: &[u8], arrival: Arrival) -> Result<ReadEvent, String> {
    let envelope = Envelope::read(body, arrival).map_err(|poison| poison.0)?;
    Ok(ReadEvent {
        message_id: envelope.message_id,
        event_type: envelope.event_type(),
        occurred_at_us: envelope.occurred_at.as_microsecond(),
    })
}

/// The figures `GET /metrics` shows; README's "Analytics figures" says what
/// each means, and which the seed labs call otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Figures {
    /// OrderPlaced events, each counted once.
    pub total_orders: u64,
    /// InventoryReserved and InventoryFailed events, each counted once.
    pub total_inventory_events: u64,
    pub reserved: u64,
    /// InventoryFailed events.
    pub failures: u64,
    /// Failed inventory results over all inventory results (0..1).
    pub failure_rate: f64,
    /// `failure_rate` in percent (the seeds' `failure_rate_pct`).
    pub failure_rate_pct: f64,
    /// Orders over the event-time span from the first to the last order, in
    /// minutes; a span under a minute counts as one minute.
    pub orders_per_minute: f64,
    /// The same figure under the seeds' name.
    pub orders_per_min: f64,
    /// Orders placed in each minute of event time (`2026-11-22T03:15:00Z`).
    pub orders_by_minute: BTreeMap<String, u64>,
    /// From the first to the last event (of any kind), in event time.
    pub elapsed_seconds: f64,
    pub malformed: u64,
    pub duplicates: u64,
}

fn rounded(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn seconds(span_us: Option<(i64, i64)>) -> f64 {
    span_us.map_or(0.0, |(first, last)| ((last - first) as f64 / 1e6).max(0.0))
}

impl Figures {
    pub fn of(tallies: &Tallies) -> Self {
        let inventory_events = tallies.reserved + tallies.failures;
        let failure_rate = if inventory_events == 0 {
            0.0
        } else {
            tallies.failures as f64 / inventory_events as f64
        };
        let minutes = (seconds(tallies.orders_span_us) / 60.0).max(1.0);
        let orders_per_minute = rounded(tallies.orders as f64 / minutes, 2);
        let orders_by_minute = tallies
            .orders_by_minute
            .iter()
            .filter_map(|(minute, count)| {
                let start = jiff::Timestamp::from_second(minute * 60).ok()?;
                Some((start.to_string(), *count))
            })
            .collect();
        Self {
            total_orders: tallies.orders,
            total_inventory_events: inventory_events,
            reserved: tallies.reserved,
            failures: tallies.failures,
            failure_rate: rounded(failure_rate, 4),
            failure_rate_pct: rounded(failure_rate * 100.0, 2),
            orders_per_minute,
            orders_per_min: orders_per_minute,
            orders_by_minute,
            elapsed_seconds: rounded(seconds(tallies.events_span_us), 3),
            malformed: tallies.malformed,
            duplicates: tallies.duplicates,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use foodlab_domain::{Event, EventType, ItemName, OrderId, OrderLine};

    use super::*;

    const AT_US: i64 = 1_800_000_000_000_000;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn figures_are_made_from_the_tallies() {
        let tallies = Tallies {
            orders: 3,
            reserved: 1,
            failures: 1,
            malformed: 1,
            duplicates: 1,
            orders_by_minute: [(30_000_000, 2), (30_000_001, 1)].into(),
            events_span_us: Some((AT_US, AT_US + 75_000_000)),
            orders_span_us: Some((AT_US, AT_US + 75_000_000)),
            ..Tallies::default()
        };
        let figures = Figures::of(&tallies);
        assert_eq!(figures.total_orders, 3);
        assert_eq!(figures.total_inventory_events, 2);
        assert_eq!(figures.failure_rate, 0.5);
        assert_eq!(figures.failure_rate_pct, 50.0);
        assert_eq!((figures.malformed, figures.duplicates), (1, 1));
        assert_eq!(figures.elapsed_seconds, 75.0);
        // Three orders over 75 s of event time: 2.4 a minute.
        assert_eq!(figures.orders_per_minute, 2.4);
        assert_eq!(figures.orders_per_min, 2.4);
        let minutes: Vec<(&str, u64)> = figures
            .orders_by_minute
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            minutes,
            [("2027-01-15T08:00:00Z", 2), ("2027-01-15T08:01:00Z", 1)]
        );
    }

    #[test]
    fn a_span_under_a_minute_counts_as_one_minute() {
        let mut tallies = Tallies::default();
        assert_eq!(Figures::of(&tallies).orders_per_minute, 0.0);
        tallies.orders = 3;
        tallies.orders_span_us = Some((AT_US, AT_US + 20_000_000));
        assert_eq!(Figures::of(&tallies).orders_per_minute, 3.0);
    }

    #[test]
    fn an_event_is_classified_by_its_id_type_and_time() {
        let order_id = OrderId::new();
        let placed = Envelope::new(
            order_id,
            order_id.to_string(),
            at(1_800_000_000),
            Event::OrderPlaced {
                customer_id: None,
                items: vec![OrderLine {
                    item: ItemName::parse("burger").unwrap(),
                    quantity: 1,
                }],
            },
        );
        let read = classify(&placed.to_json(), Arrival::default()).unwrap();
        assert_eq!(read.message_id, placed.message_id);
        assert_eq!(read.event_type, EventType::OrderPlaced);
        assert_eq!(read.occurred_at_us, AT_US);
        assert!(classify(b"not an event", Arrival::default()).is_err());
    }

    #[test]
    fn a_bare_order_on_the_order_topic_counts_at_its_broker_time() {
        let bare = br#"{"order_id": "ORD-1", "item": "burger", "qty": 2}"#;
        assert!(classify(bare, Arrival::default()).is_err());
        let arrival = Arrival::on(EventType::OrderPlaced, at(1_800_000_000));
        let first = classify(bare, arrival).unwrap();
        assert_eq!(first.occurred_at_us, AT_US);
        // Its id is derived from its content, so a retry is the same event.
        assert_eq!(
            classify(bare, arrival).unwrap().message_id,
            first.message_id
        );
    }
}
