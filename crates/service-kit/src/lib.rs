//! The kit every FoodLab service is assembled from.
//!
//! A service supplies its business `Router`; the kit wraps it with fault
//! injection, adds the admin, health and metrics routes, renders errors as
//! problem details, and serves it until SIGTERM or Ctrl-C.

pub mod admin_auth;
pub mod config;
pub mod duration;
pub mod faults;
pub mod health;
pub mod hops;
pub mod json;
pub mod metrics;
pub mod problem;
pub mod query;
pub mod serve;
pub mod telemetry;
pub mod trace_context;

pub use admin_auth::{AdminArgs, AdminToken};
pub use config::{FaultArgs, LogFormat, ServiceArgs};
pub use duration::DurationSetting;
pub use faults::FaultState;
pub use health::Readiness;
pub use hops::{Hop, HopMetrics};
pub use json::JsonBody;
pub use metrics::MessageMetrics;
pub use problem::ApiError;
pub use query::QueryParams;
pub use serve::{Kit, run};

/// Milliseconds since the Unix epoch, the timestamp unit of FoodLab's records.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
