//! Liveness (`/healthz`) and readiness (`/readyz`) endpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

/// Named readiness checks; the service is ready when every gating check is.
/// Services flip a check as a dependency (a broker connection) comes and goes.
/// An informational check is reported but does not make the service unready
/// (the order service accepts orders into its outbox while the broker is away).
#[derive(Clone, Default)]
pub struct Readiness(Arc<RwLock<BTreeMap<&'static str, Check>>>);

#[derive(Clone, Copy)]
struct Check {
    ok: bool,
    gating: bool,
}

impl Readiness {
    /// A check the service cannot be ready without.
    pub fn set(&self, name: &'static str, ok: bool) {
        self.put(name, Check { ok, gating: true });
    }

    /// A check that is reported, but does not decide readiness.
    pub fn note(&self, name: &'static str, ok: bool) {
        self.put(name, Check { ok, gating: false });
    }

    fn put(&self, name: &'static str, check: Check) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, check);
    }

    pub fn is_ready(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .all(|c| c.ok || !c.gating)
    }

    fn report(&self) -> Value {
        let checks: BTreeMap<&str, bool> = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, c)| (*name, c.ok))
            .collect();
        json!({ "ready": self.is_ready(), "checks": checks })
    }
}

/// `/healthz` and `/readyz` name the service and the process answering, so a
/// supervisor can tell its own child from another process on the port.
pub fn routes(service: &'static str, readiness: Readiness) -> Router {
    let pid = std::process::id();
    let alive = move || async move {
        axum::Json(json!({ "status": "ok", "service": service, "pid": pid }))
    };
    let ready = move |State(readiness): State<Readiness>| async move {
        let status = if readiness.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut report = readiness.report();
        report["service"] = json!(service);
        report["pid"] = json!(pid);
        (status, axum::Json(report))
    };
    Router::new()
        .route("/healthz", get(alive))
        .route("/health", get(alive))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gating_checks_decide_readiness() {
        let readiness = Readiness::default();
        assert!(readiness.is_ready());
        readiness.note("rabbitmq", false);
        assert!(readiness.is_ready());
        assert_eq!(readiness.report()["checks"]["rabbitmq"], false);
        readiness.set("database", false);
        assert!(!readiness.is_ready());
        readiness.set("database", true);
        assert!(readiness.is_ready());
    }
}
