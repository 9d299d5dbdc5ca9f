//! Inventory's REST endpoints.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use foodlab_domain::api::{Decisions, InventoryStats};
use foodlab_domain::{ItemName, OrderId, OrderRequest};
use foodlab_service_kit::{ApiError, JsonBody, MessageMetrics, now_ms};
use foodlab_store::{Outcome, Reservation, StockStore};
use serde::Serialize;
use serde_json::Value;

pub fn routes(store: StockStore) -> Router {
    Router::new()
        .route("/reserve", post(reserve))
        .route("/reservations/{order_id}", get(reservation))
        .with_state(store)
}

/// `GET /stock`, `GET /stats`: what the labs read, never faulted.
pub fn counters(store: StockStore, messages: MessageMetrics) -> Router {
    let stats_state = Counters {
        store: store.clone(),
        messages,
    };
    Router::new()
        .route("/stock", get(stock))
        .with_state(store)
        .merge(
            Router::new()
                .route("/stats", get(stats))
                .with_state(stats_state),
        )
}

#[derive(Clone)]
struct Counters {
    store: StockStore,
    messages: MessageMetrics,
}

/// `GET /stats` from the decisions and the consumer's message counts.
fn stats_of(decisions: Decisions, messages: &MessageMetrics) -> InventoryStats {
    let reserved = decisions.reserved_orders;
    let failed = decisions.total() - reserved;
    let duplicates = messages.total("duplicate");
    let dead_lettered = messages.total("dead_lettered");
    let skipped = messages.total("malformed");
    InventoryStats {
        decisions,
        processed: reserved + failed,
        reserved,
        failed,
        duplicates,
        dead_lettered,
        skipped,
        processed_count: reserved + failed,
        reserved_count: reserved,
        failed_count: failed,
        duplicate_count: duplicates,
        dead_lettered_count: dead_lettered,
        skipped_count: skipped,
    }
}

/// `PUT /admin/stock {"burger": 100, ...}`: a lab's stock levels, set at run
/// time (outside fault injection, like every admin route).
pub fn admin(store: StockStore) -> Router {
    Router::new()
        .route("/admin/stock", axum::routing::put(set_stock))
        .with_state(store)
}

/// The largest level SQLite's INTEGER holds.
const MAX_LEVEL: u64 = i64::MAX as u64;

/// Reads `{"item": count, ...}`: at least one item, names not empty,
/// counts whole numbers from 0.
pub fn stock_levels(body: &Value) -> Result<std::collections::BTreeMap<ItemName, u64>, ApiError> {
    let Some(entries) = body.as_object() else {
        return Err(ApiError::unprocessable(
            "the body must be an object of item names to stock levels, e.g. {\"burger\": 100}",
        ));
    };
    if entries.is_empty() {
        return Err(ApiError::unprocessable("name at least one item"));
    }
    entries
        .iter()
        .map(|(name, level)| {
            let item = ItemName::parse(name)
                .ok_or_else(|| ApiError::unprocessable("an item name is empty"))?;
            let level = level.as_u64().filter(|n| *n <= MAX_LEVEL).ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "the stock of `{item}` must be a whole number from 0, got {level}"
                ))
            })?;
            Ok((item, level))
        })
        .collect()
}

async fn set_stock(
    State(store): State<StockStore>,
    JsonBody(body): JsonBody<Value>,
) -> Result<axum::Json<std::collections::BTreeMap<String, u64>>, ApiError> {
    let levels = stock_levels(&body)?;
    let stock = store.set_stock(levels).await?;
    tracing::info!(?stock, "stock levels set");
    Ok(axum::Json(stock))
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
    let result = store.reserve(order_id, request.lines, now_ms()).await?;
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

async fn stock(
    State(store): State<StockStore>,
) -> Result<axum::Json<std::collections::BTreeMap<String, u64>>, ApiError> {
    Ok(axum::Json(store.stock().await?))
}

async fn stats(State(counters): State<Counters>) -> Result<axum::Json<InventoryStats>, ApiError> {
    let decisions = counters.store.stats().await?;
    Ok(axum::Json(stats_of(decisions, &counters.messages)))
}

async fn reservation(
    State(store): State<StockStore>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<Reservation>, ApiError> {
    let id = OrderId::from_wire(&order_id)
        .ok_or_else(|| ApiError::not_found(format!("no reservation for `{order_id}`")))?;
    store
        .reservation(id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("no reservation for order {id}")))
}
