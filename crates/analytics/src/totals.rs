//! What analytics computes from the event log, as a pure fold over events.
//!
//! Every figure depends only on the events themselves (rates are bucketed
//! by the time each event happened, not when it was read), and each event
//! counts once by its message id; so reading the log again from the start
//! gives exactly the same figures.

use std::collections::{BTreeMap, HashSet};

use foodlab_domain::{Envelope, Event};
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
    orders_per_minute: BTreeMap<i64, u64>,
    first_event: Option<jiff::Timestamp>,
    last_event: Option<jiff::Timestamp>,
}

/// The figures `GET /metrics` shows.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Figures {
    pub total_orders: u64,
    pub total_inventory_events: u64,
    pub reserved: u64,
    pub failures: u64,
    /// Failed inventory results over all inventory results (0..1).
    pub failure_rate: f64,
    /// Orders placed in each minute of event time (`2026-11-22T03:15:00Z`).
    pub orders_per_minute: BTreeMap<String, u64>,
    /// From the first to the last event, in event time.
    pub elapsed_seconds: f64,
    pub malformed: u64,
    pub duplicates: u64,
}

impl Totals {
    pub fn record(&mut self, body: &[u8]) -> Recorded {
        let envelope = match Envelope::parse(body) {
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
                *self.orders_per_minute.entry(minute).or_default() += 1;
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
        self.first_event = Some(self.first_event.map_or(at, |first| first.min(at)));
        self.last_event = Some(self.last_event.map_or(at, |last| last.max(at)));
        Recorded::Counted
    }

    pub fn figures(&self) -> Figures {
        let failure_rate = if self.inventory_events == 0 {
            0.0
        } else {
            self.failures as f64 / self.inventory_events as f64
        };
        let elapsed_seconds = match (self.first_event, self.last_event) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64().max(0.0),
            _ => 0.0,
        };
        let orders_per_minute = self
            .orders_per_minute
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
            failure_rate: (failure_rate * 10_000.0).round() / 10_000.0,
            orders_per_minute,
            elapsed_seconds: (elapsed_seconds * 1000.0).round() / 1000.0,
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
        let minutes: Vec<(&str, u64)> = figures
            .orders_per_minute
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            minutes,
            [("2027-01-15T08:00:00Z", 2), ("2027-01-15T08:01:00Z", 1)]
        );
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
