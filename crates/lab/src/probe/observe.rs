//! Looking at the part while a lab runs: inventory and broker snapshots,
//! the backlog over time, and waiting for accepted orders to settle.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use foodlab_domain::OrderStatus;

use crate::platform::Platform;
use crate::platform::rabbitmq::RabbitAdmin;
use crate::probe::get_json;
use crate::probe::kafka::Analytics;
use crate::spec::Service;

const POLL: Duration = Duration::from_millis(250);

/// Counters read before and after a run; the difference is what the run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub reservations: u64,
    /// Orders decided either way (reserved, out of stock, unknown item, refused).
    pub decisions: u64,
    pub stock: u64,
    pub dead_letters: Option<u64>,
}

#[derive(Deserialize)]
struct Stats {
    reserved_orders: u64,
    out_of_stock_orders: u64,
    unknown_item_orders: u64,
    #[serde(default)]
    rejected_orders: u64,
}

impl Snapshot {
    pub async fn take<P: Platform>(platform: &P, http: &reqwest::Client) -> Option<Self> {
        let base = platform.endpoint(Service::Inventory).ok()?;
        let stats: Stats = get_json(http, &format!("{base}/stats")).await?;
        let stock: BTreeMap<String, u64> = get_json(http, &format!("{base}/stock")).await?;
        let dead_letters = match platform.rabbitmq() {
            Some(admin) => admin
                .queue_depth(&foodlab_transport::rabbitmq::Topology::default().dead_letter_queue)
                .await
                .ok()
                .map(|d| d.total()),
            None => None,
        };
        Some(Self {
            reservations: stats.reserved_orders,
            decisions: stats.reserved_orders
                + stats.out_of_stock_orders
                + stats.unknown_item_orders
                + stats.rejected_orders,
            stock: stock.values().sum(),
            dead_letters,
        })
    }
}

/// Samples the backlog until stopped: the inventory queue's depth
/// (async-rabbitmq) or the consumer lag of every group (streaming-kafka).
pub struct BacklogSampler {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the sampler saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backlog {
    pub samples: Vec<(Instant, u64)>,
}

impl Backlog {
    pub fn max(&self) -> u64 {
        self.samples
            .iter()
            .map(|(_, depth)| *depth)
            .max()
            .unwrap_or(0)
    }

    /// Time from `from` until the queue was first seen empty after it.
    pub fn drained_after(&self, from: Instant) -> Option<Duration> {
        self.samples
            .iter()
            .find(|(at, depth)| *at >= from && *depth == 0)
            .map(|(at, _)| at.saturating_duration_since(from))
    }
}

enum Source {
    Queue(RabbitAdmin, String),
    Lag(Analytics),
}

impl Source {
    async fn read(&self) -> Option<u64> {
        match self {
            Self::Queue(admin, queue) => admin.queue_depth(queue).await.ok().map(|d| d.total()),
            Self::Lag(analytics) => analytics.total_lag().await,
        }
    }
}

impl BacklogSampler {
    pub fn start<P: Platform>(platform: &P, analytics: Option<Analytics>) -> Option<Self> {
        let source = match (platform.rabbitmq(), analytics) {
            (Some(admin), _) => Source::Queue(
                admin.clone(),
                foodlab_transport::rabbitmq::Topology::default().inventory_queue,
            ),
            (None, Some(analytics)) => Source::Lag(analytics),
            (None, None) => return None,
        };
        let samples = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            loop {
                if let Some(backlog) = source.read().await {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((Instant::now(), backlog));
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Some(Self { samples, task })
    }

    pub fn stop(self) -> Backlog {
        self.task.abort();
        let samples = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        Backlog { samples }
    }
}

/// Waits until no queue of the workflow holds a message (read several times
/// in a row, as the management API's figures are up to half a second old).
pub async fn wait_queues_empty<P: Platform>(platform: &P, deadline: Instant) -> bool {
    let Some(admin) = platform.rabbitmq() else {
        return true;
    };
    let topology = foodlab_transport::rabbitmq::Topology::default();
    let queues = [
        topology.inventory_queue,
        topology.notification_queue,
        topology.order_status_queue,
    ];
    let mut quiet_reads = 0;
    while Instant::now() < deadline {
        let mut total = 0;
        for queue in &queues {
            total += admin.queue_depth(queue).await.map_or(1, |d| d.total());
        }
        quiet_reads = if total == 0 { quiet_reads + 1 } else { 0 };
        if quiet_reads >= 4 {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

/// Where the accepted orders ended up.
#[derive(Debug, Clone, Default)]
pub struct Settlement {
    /// Final status of each watched order (absent: not found).
    pub statuses: BTreeMap<String, String>,
    /// Creation-to-final-status times of the settled orders, in ms.
    pub end_to_end_ms: Vec<f64>,
    /// The same, with each order's creation time (ms since the epoch).
    pub end_to_end_by_creation: Vec<(i64, f64)>,
    /// When the last watched order settled (None: not all did in time).
    pub all_settled_at: Option<Instant>,
}

/// Polls `GET /orders` until every watched order is in a final status or the deadline passes.
pub async fn wait_settled<P: Platform>(
    platform: &P,
    http: &reqwest::Client,
    watched: &HashSet<String>,
    deadline: Instant,
) -> Settlement {
    let Ok(base) = platform.endpoint(Service::Order) else {
        return Settlement::default();
    };
    let mut settlement = Settlement::default();
    loop {
        if let Ok(response) = http.get(format!("{base}/orders")).send().await
            && let Ok(orders) = response.json::<Vec<Value>>().await
        {
            settlement.statuses.clear();
            settlement.end_to_end_ms.clear();
            settlement.end_to_end_by_creation.clear();
            for order in &orders {
                let (Some(id), Some(status)) =
                    (order["order_id"].as_str(), order["status"].as_str())
                else {
                    continue;
                };
                if !watched.contains(id) {
                    continue;
                }
                settlement.statuses.insert(id.to_owned(), status.to_owned());
                if is_terminal(status)
                    && let (Some(created), Some(updated)) = (
                        order["created_at_ms"].as_i64(),
                        order["updated_at_ms"].as_i64(),
                    )
                {
                    settlement.end_to_end_ms.push((updated - created) as f64);
                    settlement
                        .end_to_end_by_creation
                        .push((created, (updated - created) as f64));
                }
            }
            let settled = settlement
                .statuses
                .values()
                .filter(|s| is_terminal(s))
                .count();
            if settled == watched.len() {
                settlement.all_settled_at = Some(Instant::now());
                return settlement;
            }
        }
        if Instant::now() >= deadline {
            return settlement;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether an order status, as the API shows it, is final.
pub fn is_terminal(status: &str) -> bool {
    status
        .parse::<OrderStatus>()
        .is_ok_and(OrderStatus::is_terminal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_is_measured_to_the_first_empty_reading_after_the_restore() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let backlog = Backlog {
            samples: vec![
                (at(0), 0),
                (at(500), 12),
                (at(1000), 30),
                (at(1500), 8),
                (at(2000), 0),
                (at(2500), 0),
            ],
        };
        assert_eq!(backlog.max(), 30);
        assert_eq!(
            backlog.drained_after(at(1000)),
            Some(Duration::from_millis(1000))
        );
        assert_eq!(backlog.drained_after(at(2600)), None);
    }
}
