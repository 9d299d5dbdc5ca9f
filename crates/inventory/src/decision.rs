//! What both messaging adapters do with a decision: the result event it
//! becomes, how it is counted and logged, and the crash point of the
//! crash-recovery labs.

use std::sync::atomic::{AtomicU64, Ordering};

use foodlab_domain::{Envelope, Event, OrderId};
use foodlab_service_kit::MessageMetrics;
use foodlab_store::{Outcome, Reservation, ReserveResult};

/// The result event of a decided order.
pub fn result_event(reservation: &Reservation, customer_id: Option<String>) -> Event {
    match reservation.outcome {
        Outcome::Reserved => Event::InventoryReserved {
            customer_id,
            items: reservation.items.clone(),
        },
        Outcome::OutOfStock | Outcome::UnknownItem | Outcome::Rejected => Event::InventoryFailed {
            reason: reservation.reason.clone().unwrap_or_default(),
        },
    }
}

/// Counts and logs a decision taken (or replayed) for an order event from `source`.
pub fn record(metrics: &MessageMetrics, source: &str, order: &Envelope, decided: &ReserveResult) {
    metrics.count(
        source,
        if decided.replayed {
            "duplicate"
        } else {
            "processed"
        },
    );
    log(order, decided);
}

/// Logs a decision taken (or replayed) for an order event.
pub fn log(order: &Envelope, decided: &ReserveResult) {
    tracing::info!(
        message_id = %order.message_id,
        order_id = %order.order_id,
        correlation_id = %order.correlation_id,
        outcome = ?decided.reservation.outcome,
        duplicate = decided.replayed,
        "order decided"
    );
}

/// Aborts the process right after the configured number of committed
/// decisions, before their result leaves (`FOODLAB_FAULT_CRASH_AFTER_COMMITS`).
#[derive(Debug, Default)]
pub struct CrashPoint {
    after: Option<u64>,
    commits: AtomicU64,
}

impl CrashPoint {
    pub fn after(commits: Option<u64>) -> Self {
        Self {
            after: commits,
            commits: AtomicU64::new(0),
        }
    }

    /// Counts one committed decision; aborts if it is the configured one.
    pub fn committed(&self, order_id: OrderId) {
        let commits = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if self.after == Some(commits) {
            tracing::error!(%order_id, commits, "crash point reached: aborting after the commit, before the result leaves");
            std::process::abort();
        }
    }
}
