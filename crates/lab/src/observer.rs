//! What hears about a lab while it runs.

use crate::measure::Sample;

/// Hears about a lab while it runs (progress bars, logs).
pub trait Observer: Send + Sync {
    fn workload_started(&self, _orders: u64) {}
    fn order_answered(&self, _sample: &Sample) {}
    fn note(&self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}
