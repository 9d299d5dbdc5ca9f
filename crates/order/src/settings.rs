//! Order's runtime settings: `GET`/`PUT /admin/settings`, outside fault
//! injection, so a lab can set them on a part that keeps running.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use foodlab_service_kit::{ApiError, DurationSetting, JsonBody};
use serde::{Deserialize, Serialize};

/// The longest dependency timeout accepted.
pub const MAX_DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(3600);

/// Settings shared by the handlers and the REST chain.
#[derive(Clone)]
pub struct Settings(Arc<RwLock<Duration>>);

impl Settings {
    pub fn new(dependency_timeout: Duration) -> Self {
        Self(Arc::new(RwLock::new(dependency_timeout)))
    }

    /// How long order waits for inventory and notification.
    pub fn dependency_timeout(&self) -> Duration {
        *self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn set_dependency_timeout(&self, timeout: Duration) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = timeout;
        tracing::info!(
            dependency_timeout_ms = timeout.as_millis(),
            "settings changed"
        );
    }
}

/// The body of `PUT /admin/settings` and the answer of both methods.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SettingsBody {
    /// A duration such as `5s` or `800ms`.
    dependency_timeout: String,
}

pub fn routes(settings: Settings) -> Router {
    Router::new()
        .route("/admin/settings", get(show).put(replace))
        .with_state(settings)
}

fn body_of(settings: &Settings) -> axum::Json<SettingsBody> {
    axum::Json(SettingsBody {
        dependency_timeout: humantime::format_duration(settings.dependency_timeout()).to_string(),
    })
}

async fn show(State(settings): State<Settings>) -> axum::Json<SettingsBody> {
    body_of(&settings)
}

async fn replace(
    State(settings): State<Settings>,
    JsonBody(body): JsonBody<SettingsBody>,
) -> Result<axum::Json<SettingsBody>, ApiError> {
    let timeout = parse_timeout(&body.dependency_timeout)?;
    settings.set_dependency_timeout(timeout);
    Ok(body_of(&settings))
}

/// A dependency timeout: a duration above zero, at most an hour, read by the
/// parser every admin duration uses.
pub fn parse_timeout(raw: &str) -> Result<Duration, ApiError> {
    const SETTING: DurationSetting = DurationSetting {
        name: "dependency timeout",
        max: MAX_DEPENDENCY_TIMEOUT,
    };
    let timeout = SETTING.read_field("dependencyTimeout", &serde_json::Value::from(raw))?;
    if timeout.is_zero() {
        return Err(ApiError::unprocessable(format!(
            "`dependencyTimeout` must be above 0, got {raw}"
        )));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_validated() {
        assert_eq!(parse_timeout("800ms").unwrap(), Duration::from_millis(800));
        assert_eq!(parse_timeout("5s").unwrap(), Duration::from_secs(5));
        for bad in ["0s", "2h", "soon", ""] {
            let error = parse_timeout(bad).unwrap_err();
            assert_eq!(error.status.as_u16(), 422, "{bad}");
            assert!(
                error.detail.contains("dependencyTimeout"),
                "{bad}: {}",
                error.detail
            );
        }
    }
}
