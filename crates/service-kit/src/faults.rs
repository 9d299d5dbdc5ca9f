//! Fault injection: the admin API that sets faults, and the middleware that
//! applies them to business endpoints (never to health, metrics or admin).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use foodlab_domain::{FaultDecision, Faults};
use serde::Deserialize;
use serde_json::Value;

use crate::duration::DurationSetting;
use crate::json::JsonBody;
use crate::problem::ApiError;

#[derive(Clone, Default)]
pub struct FaultState(Arc<RwLock<Faults>>);

impl FaultState {
    pub fn new(initial: Faults) -> Self {
        Self(Arc::new(RwLock::new(initial)))
    }

    pub fn get(&self) -> Faults {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update(&self, change: impl FnOnce(&mut Faults)) -> Faults {
        let mut faults = self.0.write().unwrap_or_else(|p| p.into_inner());
        change(&mut faults);
        tracing::info!(
            delay_ms = faults.delay_ms,
            fail_rate = faults.fail_rate,
            fail_status = faults.fail_status,
            "faults changed"
        );
        faults.clone()
    }
}

/// Middleware for business routes: wait the injected delay, then maybe fail.
pub async fn inject(State(faults): State<FaultState>, request: Request, next: Next) -> Response {
    let current = faults.get();
    if current.delay_ms > 0 {
        tokio::time::sleep(current.delay()).await;
    }
    match current.decide(rand::random::<f64>()) {
        FaultDecision::Proceed => next.run(request).await,
        FaultDecision::Fail(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            tracing::warn!(status = code, path = %request.uri().path(), "injected failure");
            ApiError::new(status, "injected failure (fault injection is on)").into_response()
        }
    }
}

/// `POST /admin/delay`: `{"seconds": 2}`, `{"ms": 2000}` or `{"delay": "2s"}`.
pub const DELAY: DurationSetting = DurationSetting {
    name: "delay",
    max: Duration::from_secs(foodlab_domain::fault::MAX_DELAY_SECONDS as u64),
};

/// `POST /admin/fail` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    enabled: bool,
    /// Fraction of requests that fail while enabled; 1 when left out.
    rate: Option<f64>,
    /// Status code of injected failures; 500 when left out.
    #[serde(alias = "status_code")]
    status: Option<u16>,
}

pub fn admin_routes(state: FaultState) -> Router {
    Router::new()
        .route("/admin/delay", post(set_delay))
        .route("/admin/fail", post(set_fail))
        .route("/admin/faults", get(show).put(replace).delete(clear))
        .with_state(state)
}

async fn show(State(state): State<FaultState>) -> axum::Json<Faults> {
    axum::Json(state.get())
}

async fn clear(State(state): State<FaultState>) -> axum::Json<Faults> {
    axum::Json(state.update(|f| *f = Faults::default()))
}

/// `PUT /admin/faults` with the whole fault set, as `GET` shows it.
async fn replace(
    State(state): State<FaultState>,
    JsonBody(faults): JsonBody<Faults>,
) -> Result<axum::Json<Faults>, ApiError> {
    faults
        .validate()
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    Ok(axum::Json(state.update(|f| *f = faults)))
}

async fn set_delay(
    State(state): State<FaultState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<axum::Json<Faults>, ApiError> {
    let delay = DELAY.read(&body)?;
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    Ok(axum::Json(state.update(|f| f.delay_ms = delay_ms)))
}

async fn set_fail(
    State(state): State<FaultState>,
    JsonBody(body): JsonBody<FailRequest>,
) -> Result<axum::Json<Faults>, ApiError> {
    let mut next = state.get();
    next.fail_rate = if body.enabled {
        body.rate.unwrap_or(1.0)
    } else {
        0.0
    };
    if let Some(status) = body.status {
        next.fail_status = status;
    }
    next.validate()
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    Ok(axum::Json(state.update(|f| *f = next)))
}
