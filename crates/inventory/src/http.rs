//! Inventory's REST endpoints.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use foodlab_domain::{OrderId, OrderRequest};
use foodlab_service_kit::{ApiError, JsonBody, now_ms};
use foodlab_store::{Outcome, Reservation, StockStats, StockStore};
use serde::Serialize;
use serde_json::Value;

pub fn routes(store: StockStore) -> Router {
    Router::new()
        .route("/reserve", post(reserve))
        .route("/reservations/{order_id}", get(reservation))
        .with_state(store)
}

/// `GET /stock`, `GET /stats`: what the labs read, never faulted.
pub fn counters(store: StockStore) -> Router {
    Router::new()
        .route("/stock", get(stock))
        .route("/stats", get(stats))
        .with_state(store)
}

#[derive(Serialize)]
struct Reserved {
    #[serde(flatten)]
    reservation: Reservation,
    /// The order had been reserved before; this call changed nothing.
    replayed: bool,
}

/// `POST /reserve {"order_id": "...", "item": "burger", "quantity": 2}`
/// (or `items: [...]`, and the other field spellings `POST /order` accepts).
async fn reserve(
    State(store): State<StockStore>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, axum::Json<Reserved>), ApiError> {
    let order_id = match body.get("order_id").or_else(|| body.get("orderId")) {
        None | Some(Value::Null) => OrderId::new(),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ApiError::unprocessable(format!("`order_id` is not a UUID: {s}")))?,
        Some(_) => return Err(ApiError::unprocessable("`order_id` must be a UUID string")),
    };
    let request =
        OrderRequest::from_json(&body).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let result = store
        .reserve(order_id, request.lines, now_ms())
        .await
        .map_err(ApiError::internal)?;
    let reservation = result.reservation;
    tracing::info!(
        order_id = %order_id,
        outcome = ?reservation.outcome,
        replayed = result.replayed,
        "reservation decided"
    );
    let refused = |status: StatusCode, reservation: &Reservation| {
        ApiError::new(status, reservation.reason.clone().unwrap_or_default())
            .with("order_id", order_id.to_string())
    };
    match reservation.outcome {
        Outcome::Reserved => Ok((
            StatusCode::OK,
            axum::Json(Reserved {
                reservation,
                replayed: result.replayed,
            }),
        )),
        Outcome::OutOfStock => Err(refused(StatusCode::CONFLICT, &reservation)),
        Outcome::UnknownItem => Err(refused(StatusCode::NOT_FOUND, &reservation)),
        Outcome::Rejected => Err(refused(StatusCode::CONFLICT, &reservation)),
    }
}

async fn stock(State(store): State<StockStore>) -> Result<axum::Json<Value>, ApiError> {
    let stock = store.stock().await.map_err(ApiError::internal)?;
    Ok(axum::Json(
        serde_json::to_value(stock).map_err(ApiError::internal)?,
    ))
}

async fn stats(State(store): State<StockStore>) -> Result<axum::Json<StockStats>, ApiError> {
    Ok(axum::Json(store.stats().await.map_err(ApiError::internal)?))
}

async fn reservation(
    State(store): State<StockStore>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<Reservation>, ApiError> {
    let id: OrderId = order_id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no reservation for `{order_id}`")))?;
    store
        .reservation(id)
        .await
        .map_err(ApiError::internal)?
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("no reservation for order {id}")))
}
