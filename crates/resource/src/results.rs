//! The evidence a lab produces: measurements, chaos records, checks.
//! Shared by the local report and the FoodLab status.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kinds::{ChaosAction, ChaosTarget, Service};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabResults {
    /// Orders the order service accepted (2xx).
    pub accepted: u64,
    /// Orders that ended reserved or notified.
    pub reserved: u64,
    /// Orders that ended failed or timed out (and requests refused outright).
    pub failed: u64,
    /// Answers to `POST /order` by status code; `error` for no answer at all.
    pub status_codes: BTreeMap<String, u64>,
    /// Latency of `POST /order`.
    pub latency_ms: LatencySummary,
    /// From an order's creation to its final status, for orders settled
    /// after the answer (async parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_to_end_ms: Option<LatencySummary>,
    /// Reservations inventory made during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<u64>,
    /// Orders inventory decided during the run (reserved or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<u64>,
    /// Units of stock consumed during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_consumed: Option<u64>,
    /// Orders per second over the workload.
    pub throughput_per_second: f64,
    /// Seconds from the first order to the end of the workload.
    pub workload_seconds: f64,
    /// Seconds from the end of the last chaos step until every order was terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Option<f64>,
    /// The longest a broker node killed by a chaos step took to serve
    /// again, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_recovery_seconds: Option<f64>,
    /// The broker errors the part's services counted during the run, every
    /// replica's (async-rabbitmq and streaming-kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_errors: Option<BrokerErrorCounts>,
    /// Highest backlog seen (queue depth or consumer lag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backlog: Option<u64>,
    /// Messages dead-lettered during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<u64>,
    /// Consumer lag (analytics and inventory groups, every partition) when the lab ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_at_end: Option<u64>,
    /// What analytics counted during the run (streaming-kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<AnalyticsTotals>,
    /// Seconds from the first order until inventory and analytics had
    /// processed every accepted order and no group lagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_seconds: Option<f64>,
    /// Accepted orders over `processedSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_per_second: Option<f64>,
    /// Analytics rewound to the earliest offsets after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayResults>,
    /// Each expectation and whether it held.
    #[serde(default)]
    pub checks: Vec<Check>,
}

impl LabResults {
    /// Orders accepted that inventory never decided.
    pub fn lost(&self) -> Option<u64> {
        self.decided
            .map(|decided| self.accepted.saturating_sub(decided))
    }

    /// Reservations made beyond the orders that ended reserved (a message
    /// handled twice).
    pub fn duplicated(&self) -> Option<u64> {
        self.reservations
            .map(|made| made.saturating_sub(self.reserved))
    }
}

/// Broker errors the services saw (`foodlab_broker_errors_total`): failed
/// or refused publishes and deliveries, lost connections and reconnections,
/// consumer errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerErrorCounts {
    /// Errors seen producing (publishing).
    pub producer: u64,
    /// Errors seen consuming (connections included).
    pub consumer: u64,
    /// Each `role/kind` counted, e.g. `consumer/connection_lost`.
    #[serde(default)]
    pub by_kind: BTreeMap<String, u64>,
}

impl BrokerErrorCounts {
    /// The counts of `role/kind` series, summed by role.
    pub fn of(by_kind: BTreeMap<String, u64>) -> Self {
        let of_role = |role: &str| {
            by_kind
                .iter()
                .filter(|(series, _)| series.split('/').next() == Some(role))
                .map(|(_, n)| n)
                .sum()
        };
        Self {
            producer: of_role("producer"),
            consumer: of_role("consumer"),
            by_kind,
        }
    }
}

impl std::fmt::Display for BrokerErrorCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "producer {}, consumer {}", self.producer, self.consumer)?;
        if !self.by_kind.is_empty() {
            let kinds: Vec<String> = self
                .by_kind
                .iter()
                .map(|(series, n)| format!("{series} {n}"))
                .collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        Ok(())
    }
}

/// Analytics' totals (or their change over a run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsTotals {
    pub orders: u64,
    pub inventory_events: u64,
    pub failures: u64,
}

impl std::fmt::Display for AnalyticsTotals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} orders, {} inventory results ({} failures)",
            self.orders, self.inventory_events, self.failures
        )
    }
}

impl AnalyticsTotals {
    pub fn since(self, earlier: Self) -> Self {
        Self {
            orders: self.orders.saturating_sub(earlier.orders),
            inventory_events: self
                .inventory_events
                .saturating_sub(earlier.inventory_events),
            failures: self.failures.saturating_sub(earlier.failures),
        }
    }
}

/// Analytics' totals before a rewind and after reading the log again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayResults {
    pub before: AnalyticsTotals,
    pub after: AnalyticsTotals,
    pub identical: bool,
    /// Events read again.
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LatencySummary {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// A service run at the replicas `spec.replicas` declares for the lab: what
/// it ran at before, to restore on every ending (written before the scale).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasRecord {
    pub service: Service,
    /// What the lab runs it at.
    pub replicas: u32,
    /// What it ran at before the lab, to restore to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replicas: Option<u32>,
    /// The scale itself was made (the record is written first).
    #[serde(default)]
    pub scaled: bool,
    #[schemars(with = "String")]
    pub scaled_at: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub restored_at: Option<jiff::Timestamp>,
    /// Why the scale or its restore last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a chaos step did and when; enough to undo it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosRecord {
    /// Index of the step in `spec.chaos` this record is for.
    #[serde(default)]
    pub step: u32,
    pub action: ChaosAction,
    pub target: ChaosTarget,
    /// The disruption itself happened (the record is written first).
    #[serde(default)]
    pub disrupted: bool,
    /// Replicas before the step, to restore to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replicas: Option<u32>,
    /// The pods a PodKill killed, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
    #[schemars(with = "String")]
    pub started_at: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub restore_at: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub restored_at: Option<jiff::Timestamp>,
    /// Why the disruption or its restore last failed (retried until a deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_are_summed_by_role_and_shown_by_kind() {
        let errors = BrokerErrorCounts::of(BTreeMap::from([
            ("consumer/connection_lost".to_owned(), 1),
            ("consumer/connect_failed".to_owned(), 2),
            ("producer/publish_failed".to_owned(), 12),
        ]));
        assert_eq!((errors.producer, errors.consumer), (12, 3));
        assert_eq!(
            errors.to_string(),
            "producer 12, consumer 3 (consumer/connect_failed 2, consumer/connection_lost 1, \
             producer/publish_failed 12)"
        );
        let json = serde_json::to_value(&errors).unwrap();
        assert_eq!(json["byKind"]["producer/publish_failed"], 12);
        assert_eq!(
            BrokerErrorCounts::of(BTreeMap::new()).to_string(),
            "producer 0, consumer 0"
        );
    }
}
