//! The order service's REST endpoints.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use foodlab_domain::{Order, OrderId, OrderRequest, OrderStatus};
use foodlab_service_kit::{ApiError, JsonBody, now_ms};
use serde_json::Value;

use crate::AppState;
use crate::rest_chain::{detail, refusal};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/order", post(place_order))
        .route("/orders", get(list_orders).post(place_order))
        .route("/orders/{order_id}", get(get_order))
        .with_state(state)
}

/// `POST /order`: store the order as `placed`, reserve, notify; answer 201
/// with the final order, or the mapped error with the order's id and status.
async fn place_order(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, axum::Json<Order>), ApiError> {
    let request =
        OrderRequest::from_json(&body).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let now = now_ms();
    let mut order = Order {
        order_id: OrderId::new(),
        customer_id: request.customer_id,
        items: request.lines,
        status: OrderStatus::Placed,
        reason: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    app.store
        .insert(order.clone())
        .await
        .map_err(ApiError::internal)?;
    let order_id = order.order_id;

    if let Err(error) = app.chain.reserve(&order).await {
        let refused = refusal(&error);
        let reason = detail(&error);
        tracing::warn!(%order_id, status = %refused.order_status, %reason, "order not reserved");
        app.store
            .set_status(
                order_id,
                refused.order_status,
                Some(reason.clone()),
                now_ms(),
            )
            .await
            .map_err(ApiError::internal)?;
        app.metrics.reached(refused.order_status);
        return Err(ApiError::new(refused.http_status, reason)
            .with("order_id", order_id.to_string())
            .with("order_status", refused.order_status.as_str()));
    }

    // A failed notification does not undo a reservation: the order stays reserved.
    order.status = match app.chain.notify(&order).await {
        Ok(()) => OrderStatus::Notified,
        Err(error) => {
            tracing::warn!(%order_id, %error, "notification failed; order stays reserved");
            OrderStatus::Reserved
        }
    };
    order.updated_at_ms = now_ms();
    app.store
        .set_status(order_id, order.status, None, order.updated_at_ms)
        .await
        .map_err(ApiError::internal)?;
    app.metrics.reached(order.status);
    tracing::info!(%order_id, status = %order.status, "order placed");
    Ok((StatusCode::CREATED, axum::Json(order)))
}

async fn list_orders(State(app): State<AppState>) -> Result<axum::Json<Vec<Order>>, ApiError> {
    Ok(axum::Json(
        app.store.list().await.map_err(ApiError::internal)?,
    ))
}

async fn get_order(
    State(app): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<Order>, ApiError> {
    let unknown = || ApiError::not_found(format!("no order `{order_id}`"));
    let id: OrderId = order_id.parse().map_err(|_| unknown())?;
    app.store
        .get(id)
        .await
        .map_err(ApiError::internal)?
        .map(axum::Json)
        .ok_or_else(unknown)
}
