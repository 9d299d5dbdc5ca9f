//! The operator's own metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct Metrics {
    reconciles: Counter,
    failures: Counter,
    chaos_started: Counter,
    chaos_restored: Counter,
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
