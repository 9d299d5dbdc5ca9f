//! Liveness (`/healthz`) and readiness (`/readyz`) endpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

/// Named readiness checks; the service is ready when every check is.
/// Services flip a check as a dependency (a broker connection) comes and goes.
#[derive(Clone, Default)]
pub struct Readiness(Arc<RwLock<BTreeMap<&'static str, bool>>>);

impl Readiness {
    pub fn set(&self, check: &'static str, ready: bool) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(check, ready);
    }

    pub fn is_ready(&self) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .all(|ok| *ok)
    }

    fn report(&self) -> Value {
        let checks = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        json!({ "ready": checks.values().all(|ok| *ok), "checks": checks })
    }
}

pub fn routes(service: &'static str, readiness: Readiness) -> Router {
    let alive = move || async move { axum::Json(json!({ "status": "ok", "service": service })) };
    Router::new()
        .route("/healthz", get(alive))
        .route("/health", get(alive))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, axum::Json<Value>) {
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness.report()))
}
