//! Notification's REST endpoints.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use foodlab_domain::OrderId;
use foodlab_service_kit::{ApiError, JsonBody, now_ms};
use foodlab_store::{Notification, NotificationStore};
use serde::Deserialize;

pub fn routes(store: NotificationStore) -> Router {
    Router::new()
        .route("/send", post(send))
        .route("/notifications", get(list))
        .with_state(store)
}

/// `POST /send {"order_id": "...", "status": "reserved"}`; `message` and
/// `customer_id` are optional.
#[derive(Debug, Deserialize)]
struct SendRequest {
    order_id: OrderId,
    #[serde(default, alias = "user_id", alias = "student_id", alias = "studentId")]
    customer_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

async fn send(
    State(store): State<NotificationStore>,
    JsonBody(request): JsonBody<SendRequest>,
) -> Result<(StatusCode, axum::Json<Notification>), ApiError> {
    let message = request.message.unwrap_or_else(|| {
        let status = request.status.as_deref().unwrap_or("confirmed");
        format!("Your order {} is {status}", request.order_id)
    });
    let (notification, fresh) = store
        .record(request.order_id, request.customer_id, message, now_ms())
        .await?;
    tracing::info!(order_id = %notification.order_id, duplicate = !fresh, "notification sent");
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(notification)))
}

async fn list(
    State(store): State<NotificationStore>,
) -> Result<axum::Json<Vec<Notification>>, ApiError> {
    Ok(axum::Json(store.list().await?))
}
