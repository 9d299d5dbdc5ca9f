//! How long each hop of an order's way through a service took, as one
//! Prometheus histogram family, `foodlab_hop_duration_seconds{hop}`: the
//! evidence `foodlab bench` reads to tell where an order's time went.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One step an order's message or request takes inside or between services.
/// Declared in the order of `ALL`: a hop's discriminant is its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hop {
    /// A SQLite transaction, the wait for the connection included.
    StoreCommit,
    /// From an order's placing (its event's time, taken just before the
    /// commit, so the commit is included) until the relay hands the event to
    /// the broker.
    OutboxDwell,
    /// From handing a message to the broker until the broker confirms it
    /// (a RabbitMQ publisher confirm, a Kafka acks=all delivery report).
    PublishConfirm,
    /// From the sender handing a message to the broker until this consumer
    /// receives it: broker routing, the queue or log, the fetch.
    BrokerTransit,
    /// From receiving a delivery until it is acked (RabbitMQ) or its offset
    /// is stored for commit (Kafka), the handling included.
    DeliveryToAck,
    /// The sync chain's call to inventory (`POST /reserve`).
    ReserveCall,
    /// The sync chain's call to notification (`POST /notify`).
    NotifyCall,
}

impl Hop {
    pub const ALL: [Self; 7] = [
        Self::StoreCommit,
        Self::OutboxDwell,
        Self::PublishConfirm,
        Self::BrokerTransit,
        Self::DeliveryToAck,
        Self::ReserveCall,
        Self::NotifyCall,
    ];

    /// The `hop` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StoreCommit => "store_commit",
            Self::OutboxDwell => "outbox_dwell",
            Self::PublishConfirm => "publish_confirm",
            Self::BrokerTransit => "broker_transit",
            Self::DeliveryToAck => "delivery_to_ack",
            Self::ReserveCall => "reserve_call",
            Self::NotifyCall => "notify_call",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HopLabel {
    hop: &'static str,
}

/// The buckets of every hop: 20 µs to about 30 s, each 1.5 times the last,
/// fine enough to tell a 0.2 ms commit from a 1 ms one.
fn buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_02, 1.5, 36)
}

/// The family, and each hop's histogram looked up once, on its first
/// observation (a hop this service never takes never shows in its metrics).
#[derive(Clone)]
pub struct HopMetrics {
    family: Family<HopLabel, Histogram, fn() -> Histogram>,
    hops: Arc<[OnceLock<Histogram>; Hop::ALL.len()]>,
}

impl HopMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let family: Family<HopLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(buckets()));
        registry.register(
            "hop_duration_seconds",
            "Time each hop of an order took in this service",
            family.clone(),
        );
        Self {
            family,
            hops: Arc::new(std::array::from_fn(|_| OnceLock::new())),
        }
    }

    pub fn observe(&self, hop: Hop, took: Duration) {
        self.hops[hop as usize]
            .get_or_init(|| {
                self.family
                    .get_or_create(&HopLabel { hop: hop.as_str() })
                    .clone()
            })
            .observe(took.as_secs_f64());
    }

    /// Records the time from `started` until now.
    pub fn since(&self, hop: Hop, started: Instant) {
        self.observe(hop, started.elapsed());
    }

    /// Records the time from a wall-clock moment another process stamped
    /// (on this machine or node) until now; none when it stamped nothing.
    pub fn since_stamp(&self, hop: Hop, stamped: Option<SystemTime>) {
        if let Some(took) = stamped.and_then(|at| SystemTime::now().duration_since(at).ok()) {
            self.observe(hop, took);
        }
    }

    /// Runs `work`, recording how long it took.
    pub async fn time<T>(&self, hop: Hop, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let outcome = work.await;
        self.since(hop, started);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[tokio::test]
    async fn every_hop_is_a_histogram_labelled_with_its_name() {
        let mut registry = Registry::with_prefix("foodlab");
        let hops = HopMetrics::register(&mut registry);
        for hop in Hop::ALL {
            hops.observe(hop, Duration::from_micros(300));
        }
        let answer = hops.time(Hop::StoreCommit, async { 42 }).await;
        assert_eq!(answer, 42);
        hops.since_stamp(Hop::BrokerTransit, None);

        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for hop in Hop::ALL {
            let count = if hop == Hop::StoreCommit { 2 } else { 1 };
            let line = format!(
                "foodlab_hop_duration_seconds_count{{hop=\"{}\"}} {count}",
                hop.as_str()
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        // 300 µs falls in the bucket whose bound is the first at or above it.
        assert!(
            text.contains(
                "foodlab_hop_duration_seconds_bucket{le=\"0.00034171875\",hop=\"outbox_dwell\"} 1"
            ),
            "{text}"
        );
    }
}
