//! What hears about a lab while it runs.

use crate::measure::Sample;

/// The steps of a lab's run, in order (once it holds its part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabStep {
    /// Settings, stock and faults applied.
    Prepare,
    /// The part's figures read before any order.
    Baseline,
    /// The orders placed, with the chaos and injections.
    Workload,
    /// Waiting for the accepted orders to settle (and a backlog to drain).
    Settle,
    /// The part's figures read again, the results assembled.
    Measure,
}

impl LabStep {
    pub fn name(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Baseline => "baseline",
            Self::Workload => "workload",
            Self::Settle => "settle",
            Self::Measure => "measure",
        }
    }
}

/// Hears about a lab while it runs (progress bars, logs).
pub trait Observer: Send + Sync {
    fn step_started(&self, _step: LabStep) {}
    fn workload_started(&self, _orders: u64) {}
    fn order_answered(&self, _sample: &Sample) {}
    fn note(&self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}
