//! What analytics computes from the event log, as a pure fold over events.
//!
//! Every figure depends only on the events themselves (rates are bucketed
//! by the time each event happened, not when it was read), and each event
//! counts once by its message id; so reading the log again from the start
//! gives exactly the same figures.

use std::collections::{BTreeMap, HashSet};

use foodlab_domain::{Arrival, Envelope, Event};
use serde::Serialize;
use uuid::Uuid;

/// How one message was taken into account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Counted,
    /// Seen before (a producer retry or a redelivery): not counted again.
    Duplicate,
    /// Not an event: skipped, with the reason.
    Malformed(String),
}

#[derive(Debug, Clone, Default)]
pub struct Totals {
    seen: HashSet<Uuid>,
    orders: u64,
    inventory_events: u64,
    reserved: u64,
    failures: u64,
    malformed: u64,
    duplicates: u64,
    orders_by_minute: BTreeMap<i64, u64>,
    events: Span,
    orders_span: Span,
}

/// The first and the last event time seen.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    first: Option<jiff::Timestamp>,
    last: Option<jiff::Timestamp>,
}

impl Span {
    fn include(&mut self, at: jiff::Timestamp) {
        self.first = Some(self.first.map_or(at, |first| first.min(at)));
        self.last = Some(self.last.map_or(at, |last| last.max(at)));
    }

    fn seconds(self) -> f64 {
        match (self.first, self.last) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64().max(0.0),
            _ => 0.0,
        }
    }
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

impl Totals {
    /// Counts an event that names its type and time itself.
    pub fn record(&mut self, body: &[u8]) -> Recorded {
        self.record_arrived(body, Arrival::default())
    }

    /// Counts an event, in any shape the tolerant reader knows; `arrival`
    /// stands in for a `type` or `occurred_at` it leaves out (the order
    /// topic's event, the broker's timestamp, which a replay reads again).
    pub fn record_arrived(&mut self, body: &[u8], arrival: Arrival) -> Recorded {
        let envelope = match Envelope::read(body, arrival) {
            Ok(envelope) => envelope,
            Err(poison) => {
                self.malformed += 1;
                return Recorded::Malformed(poison.0);
            }
        };
        if !self.seen.insert(envelope.message_id) {
            self.duplicates += 1;
            return Recorded::Duplicate;
        }
        let at = envelope.occurred_at;
        match envelope.event {
            Event::OrderPlaced { .. } => {
                self.orders += 1;
                let minute = at.as_second().div_euclid(60);
                *self.orders_by_minute.entry(minute).or_default() += 1;
                self.orders_span.include(at);
            }
            Event::InventoryReserved { .. } => {
                self.inventory_events += 1;
                self.reserved += 1;
            }
            Event::InventoryFailed { .. } => {
                self.inventory_events += 1;
                self.failures += 1;
            }
        }
        self.events.include(at);
        Recorded::Counted
    }

    pub fn figures(&self) -> Figures {
        let failure_rate = if self.inventory_events == 0 {
            0.0
        } else {
            self.failures as f64 / self.inventory_events as f64
        };
        let minutes = (self.orders_span.seconds() / 60.0).max(1.0);
        let orders_per_minute = rounded(self.orders as f64 / minutes, 2);
        let orders_by_minute = self
            .orders_by_minute
            .iter()
            .filter_map(|(minute, count)| {
                let start = jiff::Timestamp::from_second(minute * 60).ok()?;
                Some((start.to_string(), *count))
            })
            .collect();
        Figures {
            total_orders: self.orders,
            total_inventory_events: self.inventory_events,
            reserved: self.reserved,
            failures: self.failures,
            failure_rate: rounded(failure_rate, 4),
            failure_rate_pct: rounded(failure_rate * 100.0, 2),
            orders_per_minute,
            orders_per_min: orders_per_minute,
            orders_by_minute,
            elapsed_seconds: rounded(self.events.seconds(), 3),
            malformed: self.malformed,
            duplicates: self.duplicates,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use foodlab_domain::{ItemName, OrderId, OrderLine};

    use super::*;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap()
    }

    fn burger() -> Vec<OrderLine> {
        vec![OrderLine {
            item: ItemName::parse("burger").unwrap(),
            quantity: 1,
        }]
    }

    fn placed(second: i64) -> Envelope {
        let order_id = OrderId::new();
        Envelope::new(
            order_id,
            order_id.to_string(),
            at(second),
            Event::OrderPlaced {
                customer_id: None,
                items: burger(),
            },
        )
    }

    fn log() -> Vec<Vec<u8>> {
        let first = placed(1_800_000_000);
        let second = placed(1_800_000_030);
        let third = placed(1_800_000_075);
        let reserved = Envelope::result_of(
            &first,
            at(1_800_000_001),
            Event::InventoryReserved {
                customer_id: None,
                items: burger(),
            },
        );
        let failed = Envelope::result_of(
            &second,
            at(1_800_000_031),
            Event::InventoryFailed {
                reason: "out of stock".into(),
            },
        );
        vec![
            first.to_json(),
            second.to_json(),
            reserved.to_json(),
            b"not an event".to_vec(),
            reserved.to_json(),
            failed.to_json(),
            third.to_json(),
        ]
    }

    #[test]
    fn counts_each_event_once_and_skips_what_is_not_an_event() {
        let mut totals = Totals::default();
        let recorded: Vec<Recorded> = log().iter().map(|body| totals.record(body)).collect();
        assert_eq!(recorded[4], Recorded::Duplicate);
        assert!(matches!(recorded[3], Recorded::Malformed(_)));
        let figures = totals.figures();
        assert_eq!(figures.total_orders, 3);
        assert_eq!(figures.total_inventory_events, 2);
        assert_eq!((figures.reserved, figures.failures), (1, 1));
        assert_eq!(figures.failure_rate, 0.5);
        assert_eq!((figures.malformed, figures.duplicates), (1, 1));
        assert_eq!(figures.elapsed_seconds, 75.0);
        assert_eq!(figures.failure_rate_pct, 50.0);
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
    fn a_bare_order_on_the_order_topic_counts_at_its_broker_time() {
        let mut totals = Totals::default();
        let bare = br#"{"order_id": "ORD-1", "item": "burger", "qty": 2}"#;
        assert!(matches!(totals.record(bare), Recorded::Malformed(_)));
        let arrival = Arrival::on(foodlab_domain::EventType::OrderPlaced, at(1_800_000_000));
        assert_eq!(totals.record_arrived(bare, arrival), Recorded::Counted);
        assert_eq!(totals.record_arrived(bare, arrival), Recorded::Duplicate);
        let figures = totals.figures();
        assert_eq!((figures.total_orders, figures.duplicates), (1, 1));
        assert_eq!(figures.orders_by_minute["2027-01-15T08:00:00Z"], 1);
    }

    #[test]
    fn a_span_under_a_minute_counts_as_one_minute() {
        let mut totals = Totals::default();
        assert_eq!(totals.figures().orders_per_minute, 0.0);
        for second in [0, 10, 20] {
            totals.record(&placed(1_800_000_000 + second).to_json());
        }
        assert_eq!(totals.figures().orders_per_minute, 3.0);
    }

    #[test]
    fn reading_the_log_again_gives_the_same_figures() {
        let log = log();
        let mut first_read = Totals::default();
        let mut second_read = Totals::default();
        for body in &log {
            first_read.record(body);
        }
        // A replay starts from cleared state; it may read the partitions
        // in another interleaving.
        for body in log.iter().rev() {
            second_read.record(body);
        }
        assert_eq!(first_read.figures(), second_read.figures());
    }
}
