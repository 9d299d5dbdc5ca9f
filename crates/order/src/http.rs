//! The order service's REST endpoints.

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use foodlab_domain::api;
use foodlab_domain::{Envelope, Event, Order, OrderId, OrderRequest, OrderStatus, TraceContext};
use foodlab_service_kit::{ApiError, Hop, JsonBody, QueryParams, now_ms};
use foodlab_store::orders::MAX_PAGE;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rest_chain::{RestChain, detail, refusal};
use crate::{AppState, Workflow};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/order", post(place_order))
        .route("/orders", get(list_orders).post(place_order))
        .route("/orders/bulk", post(place_bulk))
        .route("/orders/counts", get(count_orders))
        .route("/orders/cursor", get(order_cursor))
        .route("/orders/{order_id}", get(get_order))
        .with_state(state)
}

/// `POST /order`: validate, then hand the order to the workflow.
async fn place_order(
    State(app): State<AppState>,
    Extension(trace): Extension<TraceContext>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let request =
        OrderRequest::from_json(&body).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let order = Order::placed(&request, now_ms());
    match &app.workflow {
        Workflow::Rest(chain) => {
            let order = place_synchronously(&app, &chain.traced(trace), order).await?;
            Ok((StatusCode::CREATED, axum::Json(order)).into_response())
        }
        Workflow::Outbox(nudge) => {
            let order_id = order.order_id;
            let event = placed_event(&order).in_trace(trace);
            app.hops
                .time(Hop::StoreCommit, app.store.insert_with_event(order, &event))
                .await?;
            nudge.notify_one();
            app.metrics.reached(OrderStatus::Placed);
            tracing::info!(%order_id, message_id = %event.message_id, "order accepted");
            let accepted = Accepted {
                order_id,
                status: OrderStatus::Placed,
            };
            Ok((StatusCode::ACCEPTED, axum::Json(accepted)).into_response())
        }
    }
}

/// The answer of an async part to an order it accepted.
#[derive(Serialize)]
struct Accepted {
    order_id: OrderId,
    status: OrderStatus,
}

fn placed_event(order: &Order) -> Envelope {
    Envelope::new(
        order.order_id,
        order.order_id.to_string(),
        jiff::Timestamp::now(),
        Event::OrderPlaced {
            customer_id: order.customer_id.clone(),
            items: order.items.clone(),
        },
    )
}

/// The most orders one bulk request may place.
const MAX_BULK: u64 = 100_000;

/// `POST /orders/bulk {"count": 10000, "item": "burger", "quantity": 1}`:
/// `count` identical orders, stored with their events in one transaction.
async fn place_bulk(
    State(app): State<AppState>,
    Extension(trace): Extension<TraceContext>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let Workflow::Outbox(nudge) = &app.workflow else {
        return Err(ApiError::unprocessable(
            "bulk orders are for the async parts; the sync-rest part places orders one by one",
        ));
    };
    let count = match body.get("count") {
        Some(count) => count
            .as_u64()
            .filter(|n| (1..=MAX_BULK).contains(n))
            .ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "`count` must be a whole number from 1 to {MAX_BULK}"
                ))
            })?,
        None => return Err(ApiError::unprocessable("`count` is missing")),
    };
    let request =
        OrderRequest::from_json(&body).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let now = now_ms();
    let placed: Vec<(Order, Envelope)> = (0..count)
        .map(|_| {
            let order = Order::placed(&request, now);
            let event = placed_event(&order).in_trace(trace);
            (order, event)
        })
        .collect();
    app.store.insert_all_with_events(placed).await?;
    nudge.notify_one();
    tracing::info!(count, "bulk orders accepted");
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "count": count })),
    ))
}

/// Stores the order as `placed`, reserves, notifies: the final order, or
/// the mapped error with the order's id and status.
async fn place_synchronously(
    app: &AppState,
    chain: &RestChain,
    mut order: Order,
) -> Result<Order, ApiError> {
    app.hops
        .time(Hop::StoreCommit, app.store.insert(order.clone()))
        .await?;
    let order_id = order.order_id;

    if let Err(error) = app.hops.time(Hop::ReserveCall, chain.reserve(&order)).await {
        let refused = refusal(&error);
        let reason = detail(&error);
        tracing::warn!(%order_id, status = %refused.order_status, %reason, "order not reserved");
        let stored = app.store.set_status(
            order_id,
            refused.order_status,
            Some(reason.clone()),
            now_ms(),
        );
        app.hops.time(Hop::StoreCommit, stored).await?;
        app.metrics.reached(refused.order_status);
        return Err(ApiError::new(refused.http_status, reason)
            .with("order_id", order_id.to_string())
            .with("order_status", refused.order_status.as_str()));
    }

    // A failed notification does not undo a reservation: the order stays reserved.
    order.status = match app.hops.time(Hop::NotifyCall, chain.notify(&order)).await {
        Ok(()) => OrderStatus::Notified,
        Err(error) => {
            tracing::warn!(%order_id, %error, "notification failed; order stays reserved");
            OrderStatus::Reserved
        }
    };
    order.updated_at_ms = now_ms();
    let stored = app
        .store
        .set_status(order_id, order.status, None, order.updated_at_ms);
    app.hops.time(Hop::StoreCommit, stored).await?;
    app.metrics.reached(order.status);
    tracing::info!(%order_id, status = %order.status, "order placed");
    Ok(order)
}

/// The parameters of `GET /orders`; none of them gives every order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    after: Option<i64>,
    changed_since: Option<i64>,
}

/// `GET /orders`: every order, oldest first, as a bare array; with
/// `limit`, `after` or `changed_since`, one page `{"orders": [...], "next": c}`.
async fn list_orders(
    State(app): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let ListQuery {
        limit,
        after,
        changed_since,
    } = query;
    if limit.is_none() && after.is_none() && changed_since.is_none() {
        let orders = app.store.list().await?;
        return Ok(axum::Json(orders).into_response());
    }
    let limit = match limit {
        None => MAX_PAGE,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::unprocessable(format!("`limit` must be from 1 to {MAX_PAGE}"))
            })?,
    };
    let page = match (
        at_least_zero("after", after)?,
        at_least_zero("changed_since", changed_since)?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                "`after` pages by placement and `changed_since` by change: give one of them",
            ));
        }
        (after, None) => {
            app.store
                .page_placed_after(after.unwrap_or(0), limit)
                .await?
        }
        (None, Some(since)) => app.store.changed_after(since, limit).await?,
    };
    Ok(axum::Json(page).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountsQuery {
    since: Option<i64>,
}

/// `GET /orders/counts?since=c`: how many of the orders placed after
/// cursor `c` (all, without it) are in each status, and the current cursor.
async fn count_orders(
    State(app): State<AppState>,
    QueryParams(query): QueryParams<CountsQuery>,
) -> Result<axum::Json<api::OrderCounts>, ApiError> {
    let since = at_least_zero("since", query.since)?.unwrap_or(0);
    let counts = app.store.counts_placed_after(since).await?;
    let by_status = OrderStatus::ALL
        .into_iter()
        .map(|status| {
            let n = counts.by_status.get(status.as_str()).copied().unwrap_or(0);
            (status, n)
        })
        .collect();
    Ok(axum::Json(api::OrderCounts {
        by_status,
        cursor: counts.cursor,
    }))
}

/// `GET /orders/cursor`: `{"cursor": c}`, the latest change; later orders
/// and changes are after it.
async fn order_cursor(State(app): State<AppState>) -> Result<axum::Json<api::Cursor>, ApiError> {
    let cursor = app.store.cursor().await?;
    Ok(axum::Json(api::Cursor { cursor }))
}

/// A cursor parameter: positions start at 0.
fn at_least_zero(name: &str, value: Option<i64>) -> Result<Option<i64>, ApiError> {
    match value {
        Some(n) if n < 0 => Err(ApiError::unprocessable(format!(
            "`{name}` must be a whole number, at least 0 (got {n})"
        ))),
        _ => Ok(value),
    }
}

async fn get_order(
    State(app): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<Order>, ApiError> {
    let unknown = || ApiError::not_found(format!("no order `{order_id}`"));
    let id: OrderId = order_id.parse().map_err(|_| unknown())?;
    app.store.get(id).await?.map(axum::Json).ok_or_else(unknown)
}
