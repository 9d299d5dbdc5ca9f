//! Looking at the part while a lab runs: inventory and broker snapshots,
//! the backlog over time, and waiting for accepted orders to settle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foodlab_domain::OrderStatus;
use foodlab_domain::api::{Cursor, InventoryStats, OrderCounts, OrderPage};

use crate::platform::Platform;
use crate::platform::rabbitmq::RabbitAdmin;
use crate::probe::kafka::Analytics;
use crate::probe::{ProbeError, get_json};
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

impl Snapshot {
    pub async fn take<P: Platform>(
        platform: &P,
        http: &reqwest::Client,
    ) -> Result<Self, ProbeError> {
        let base = endpoint(platform, Service::Inventory)?;
        let stats: InventoryStats = get_json(http, &format!("{base}/stats")).await?;
        let stock: BTreeMap<String, u64> = get_json(http, &format!("{base}/stock")).await?;
        let dead_letters = match platform.rabbitmq() {
            Some(admin) => admin
                .queue_depth(&foodlab_transport::rabbitmq::Topology::default().dead_letter_queue)
                .await
                .ok()
                .map(|d| d.total()),
            None => None,
        };
        Ok(Self {
            reservations: stats.decisions.reserved_orders,
            decisions: stats.decisions.total(),
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

    /// When the queue was first seen empty at or after `from`.
    pub fn empty_from(&self, from: Instant) -> Option<Instant> {
        self.samples
            .iter()
            .find(|(at, depth)| *at >= from && *depth == 0)
            .map(|(at, _)| *at)
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

/// Orders read per `GET /orders?changed_since=` page while settling.
const PAGE: usize = 1000;

/// The order service's cursor (`GET /orders/cursor`): orders placed or
/// changed from now on are after it.
pub async fn order_cursor<P: Platform>(
    platform: &P,
    http: &reqwest::Client,
) -> Result<i64, ProbeError> {
    let base = endpoint(platform, Service::Order)?;
    let body: Cursor = get_json(http, &format!("{base}/orders/cursor")).await?;
    Ok(body.cursor)
}

fn endpoint<P: Platform>(platform: &P, service: Service) -> Result<String, ProbeError> {
    platform
        .endpoint(service)
        .map_err(|_| ProbeError::NotDeployed { service })
}

/// Where the orders placed after a cursor ended up.
pub struct Settlement {
    /// The orders placed after the cursor, by status, as last counted.
    pub counts: BTreeMap<OrderStatus, u64>,
    /// When the last order settled (None: not all did in time).
    pub all_settled_at: Option<Instant>,
}

impl Settlement {
    /// Orders in a status that matches `which`.
    pub fn orders_whose_status(&self, which: impl Fn(OrderStatus) -> bool) -> u64 {
        count_whose_status(&self.counts, which)
    }
}

/// Waits until `expected` orders placed after `since` are in a final status
/// and none is still open, or the deadline passes. Each poll reads only the
/// orders changed since the last one (page by page) and hands each order
/// that became final to `on_settled` (its creation time in ms since the
/// epoch, and its creation-to-final-status time in ms); nothing is kept
/// per order.
/// The final figures are counted by the order service
/// (`GET /orders/counts?since=`), so they are exact.
pub async fn wait_settled<P: Platform>(
    platform: &P,
    http: &reqwest::Client,
    since: i64,
    expected: u64,
    mut on_settled: impl FnMut(i64, f64),
    deadline: Instant,
) -> Settlement {
    let mut settlement = Settlement {
        counts: BTreeMap::new(),
        all_settled_at: None,
    };
    let Ok(base) = platform.endpoint(Service::Order) else {
        return settlement;
    };
    let mut cursor = since;
    // An order becomes final once (the services move only `placed` orders
    // on), so the final orders read add up to those settled.
    let mut settled = 0u64;
    // A read that fails is tried again at the next poll; each kind of
    // failure is logged once.
    let mut seen = std::collections::BTreeSet::new();
    let mut failed = |error: ProbeError| {
        if seen.insert(error.kind()) {
            tracing::warn!(%error, "the order service's changes could not be read; polling on");
        }
    };
    loop {
        loop {
            let page = match changes(http, &base, cursor).await {
                Ok(page) => page,
                Err(error) => {
                    failed(error);
                    break;
                }
            };
            for order in &page.orders {
                if order.status.is_terminal() {
                    let took = order.updated_at_ms - order.created_at_ms;
                    on_settled(order.created_at_ms, took as f64);
                    settled += 1;
                }
            }
            cursor = page.next.unwrap_or(cursor);
            if page.orders.len() < PAGE {
                break;
            }
        }
        let done = settled >= expected;
        if done || Instant::now() >= deadline {
            match counts_since(http, &base, since).await {
                Ok(counts) => settlement.counts = counts,
                Err(error) => failed(error),
            }
            let open = settlement.orders_whose_status(|s| !s.is_terminal());
            let terminal = settlement.orders_whose_status(OrderStatus::is_terminal);
            if open == 0 && terminal >= expected {
                settlement.all_settled_at = Some(Instant::now());
                return settlement;
            }
            if Instant::now() >= deadline {
                return settlement;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn changes(http: &reqwest::Client, base: &str, cursor: i64) -> Result<OrderPage, ProbeError> {
    get_json(
        http,
        &format!("{base}/orders?changed_since={cursor}&limit={PAGE}"),
    )
    .await
}

async fn counts_since(
    http: &reqwest::Client,
    base: &str,
    since: i64,
) -> Result<BTreeMap<OrderStatus, u64>, ProbeError> {
    let counts: OrderCounts =
        get_json(http, &format!("{base}/orders/counts?since={since}")).await?;
    Ok(counts.by_status)
}

/// Of orders counted by status, those in a status that matches `which`.
pub fn count_whose_status(
    counts: &BTreeMap<OrderStatus, u64>,
    which: impl Fn(OrderStatus) -> bool,
) -> u64 {
    counts
        .iter()
        .filter(|(status, _)| which(**status))
        .map(|(_, n)| n)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_empty_reading_at_or_after_an_instant() {
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
        assert_eq!(backlog.empty_from(at(1000)), Some(at(2000)));
        assert_eq!(backlog.empty_from(at(2000)), Some(at(2000)));
        assert_eq!(backlog.empty_from(at(2600)), None);
    }
}
