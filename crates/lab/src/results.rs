//! The evidence a lab produces: measurements, chaos records, checks.
//! Shared by the local report and the FoodLab status.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::{ChaosAction, Service};

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
    /// Highest backlog seen (queue depth or consumer lag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backlog: Option<u64>,
    /// Messages dead-lettered during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<u64>,
    /// Each expectation and whether it held.
    #[serde(default)]
    pub checks: Vec<Check>,
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

/// What a chaos step did and when; enough to undo it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosRecord {
    /// Index of the step in `spec.chaos` this record is for.
    #[serde(default)]
    pub step: u32,
    pub action: ChaosAction,
    pub target: Service,
    /// The disruption itself happened (the record is written first).
    #[serde(default)]
    pub disrupted: bool,
    /// Replicas before the step, to restore to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replicas: Option<u32>,
    #[schemars(with = "String")]
    pub started_at: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub restore_at: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub restored_at: Option<jiff::Timestamp>,
}
