//! The operator's own metrics.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    reconciles: Counter,
    failures: Counter,
    chaos_started: Counter,
    chaos_restored: Counter,
    queued: Counter,
    /// Seconds per reconcile: 1 ms to about 16 s.
    reconcile_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            failures: Counter::default(),
            chaos_started: Counter::default(),
            chaos_restored: Counter::default(),
            queued: Counter::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("reconciles", "Reconciles run", self.reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed",
            self.failures.clone(),
        );
        registry.register(
            "chaos_started",
            "Chaos steps started",
            self.chaos_started.clone(),
        );
        registry.register(
            "chaos_restored",
            "Chaos steps undone",
            self.chaos_restored.clone(),
        );
        registry.register(
            "labs_queued",
            "Labs that had to wait for another lab on their part",
            self.queued.clone(),
        );
        registry.register(
            "reconcile_seconds",
            "Time a reconcile took",
            self.reconcile_seconds.clone(),
        );
    }

    pub fn reconcile_took(&self, took: Duration) {
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    pub fn queued(&self) {
        self.queued.inc();
    }

    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    pub fn failed(&self) {
        self.failures.inc();
    }

    pub fn chaos_started(&self) {
        self.chaos_started.inc();
    }

    pub fn chaos_restored(&self) {
        self.chaos_restored.inc();
    }
}
