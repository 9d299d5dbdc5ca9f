//! The analytics service's endpoints: `GET /metrics` (the figures, JSON),
//! `GET /lag`, `POST /admin/throttle`, `POST /admin/reset-offsets`.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use foodlab_service_kit::{ApiError, DurationSetting, JsonBody};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use foodlab_store::AnalyticsStore;
use foodlab_store::analytics::Replay;
use serde::Serialize;

use crate::consumer::{ResetRequest, Throttle};
use crate::lag::{LagReport, LagWatch};
use crate::totals::Figures;

/// How long `POST /admin/reset-offsets` waits for the rewind.
const RESET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `POST /admin/throttle`: `{"seconds": 0.1}`, `{"ms": 100}` or
/// `{"throttle": "100ms"}`. At most 10 s: a reset waits for the event being
/// throttled, and must not wait longer than `RESET_TIMEOUT`.
pub const THROTTLE: DurationSetting = DurationSetting {
    name: "throttle",
    max: std::time::Duration::from_secs(10),
};

#[derive(Clone)]
pub struct AppState {
    pub store: AnalyticsStore,
    pub throttle: Throttle,
    pub lag: LagWatch,
    pub resets: mpsc::Sender<ResetRequest>,
}

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/lag", get(lag))
        .route("/admin/throttle", get(throttle).post(set_throttle))
        .route("/admin/reset-offsets", post(reset_offsets))
        .with_state(state)
}

/// The latest replay as `GET /metrics` shows it.
#[derive(Debug, Serialize)]
struct LastReplay {
    /// Events in the log when the replay began.
    events: u64,
    /// Seconds until every one of those events was read again.
    seconds: Option<f64>,
    events_per_second: Option<f64>,
}

impl LastReplay {
    fn of(replay: &Replay) -> Self {
        let seconds = replay
            .finished_ms
            .map(|finished| (finished - replay.started_ms).max(0) as f64 / 1000.0);
        Self {
            events: replay.events,
            seconds,
            events_per_second: seconds
                .filter(|s| *s > 0.0)
                .map(|s| (replay.events as f64 / s).round()),
        }
    }
}

/// `GET /metrics`: the group's figures, whichever member answers.
async fn metrics(State(app): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let tallies = app.store.tallies().await.map_err(|error| {
        // The cause (SQL, an address) goes to the log, not to the caller.
        tracing::warn!(%error, "the figures cannot be read");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the figures cannot be read now; the service's log has the cause",
        )
    })?;
    let mut body = serde_json::to_value(Figures::of(&tallies)).map_err(ApiError::internal)?;
    body["throttle_ms"] = json!(app.throttle.ms());
    body["replays"] = json!(tallies.replays);
    body["last_replay"] = serde_json::to_value(tallies.replay.as_ref().map(LastReplay::of))
        .map_err(ApiError::internal)?;
    Ok(axum::Json(body))
}

async fn lag(State(app): State<AppState>) -> Result<axum::Json<LagReport>, ApiError> {
    app.lag.read().await.map(axum::Json).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("consumer lag cannot be read: {e}"),
        )
    })
}

async fn throttle(State(app): State<AppState>) -> axum::Json<Value> {
    let ms = app.throttle.ms();
    axum::Json(json!({ "ms": ms, "seconds": ms as f64 / 1000.0 }))
}

/// `POST /admin/throttle`: wait this long before each event (0 lifts it).
async fn set_throttle(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    let throttle = THROTTLE.read(&body)?;
    let ms = u64::try_from(throttle.as_millis()).unwrap_or(u64::MAX);
    app.throttle.set(ms);
    tracing::info!(throttle_ms = ms, "throttle changed");
    Ok(axum::Json(
        json!({ "ms": ms, "seconds": throttle.as_secs_f64() }),
    ))
}

/// `POST /admin/reset-offsets`: clear the figures and have the whole group
/// read the log again from the earliest offsets.
async fn reset_offsets(State(app): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let (answer, answered) = oneshot::channel();
    let unavailable =
        |detail: String| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, detail);
    app.resets
        .send(answer)
        .await
        .map_err(|_| unavailable("the reader is not running".into()))?;
    let rewound = tokio::time::timeout(RESET_TIMEOUT, answered)
        .await
        .map_err(|_| {
            unavailable(format!(
                "the reader did not rewind within {RESET_TIMEOUT:?} (is the broker up?); it will when it can"
            ))
        })?
        .map_err(|_| unavailable("the reader stopped before rewinding (is the broker up?)".into()))?
        .map_err(unavailable)?;
    tracing::info!(events = rewound.events, "offsets reset; replaying");
    Ok(axum::Json(json!({
        "rewound": true,
        "events": rewound.events,
        "partitions_rewound_here": rewound.partitions
    })))
}
