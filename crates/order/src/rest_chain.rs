//! The synchronous chain: reserve at inventory, then notify, each call
//! blocking the customer's request.

use axum::http::StatusCode;
use foodlab_domain::{Order, OrderStatus, TraceContext};
use foodlab_transport::{CallError, HttpClient};
use serde_json::{Value, json};

use crate::settings::Settings;

#[derive(Clone)]
pub struct RestChain {
    client: HttpClient,
    settings: Settings,
    reserve_url: String,
    send_url: String,
}

/// How a failed reservation call ends the order, and what the customer is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub order_status: OrderStatus,
    pub http_status: StatusCode,
}

impl RestChain {
    pub fn new(
        client: HttpClient,
        settings: Settings,
        inventory_url: &str,
        notification_url: &str,
    ) -> Self {
        Self {
            client,
            settings,
            reserve_url: format!("{}/reserve", inventory_url.trim_end_matches('/')),
            send_url: format!("{}/send", notification_url.trim_end_matches('/')),
        }
    }

    /// The same chain, its calls made as part of one order's `trace`.
    pub fn traced(&self, trace: TraceContext) -> Self {
        Self {
            client: self.client.with_trace(trace),
            ..self.clone()
        }
    }

    /// The pool, with the dependency timeout as it is set now.
    fn client(&self) -> HttpClient {
        self.client.with_timeout(self.settings.dependency_timeout())
    }

    pub async fn reserve(&self, order: &Order) -> Result<(), CallError> {
        let body = json!({ "order_id": order.order_id, "items": order.items });
        self.client()
            .post_json::<_, Value>(&self.reserve_url, &body)
            .await
            .map(drop)
    }

    pub async fn notify(&self, order: &Order) -> Result<(), CallError> {
        let body = json!({
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "status": OrderStatus::Reserved,
        });
        self.client()
            .post_json::<_, Value>(&self.send_url, &body)
            .await
            .map(drop)
    }
}

/// The mapping of a failed reservation call to the order's fate:
/// inventory's own refusals (409 out of stock, 404 unknown item) pass through;
/// any other answer is a failed dependency (502); no connection is 503; no
/// answer in time is 504 and the order's outcome is unknown (`timeout`).
pub fn refusal(error: &CallError) -> Refusal {
    let failed = |http_status| Refusal {
        order_status: OrderStatus::Failed,
        http_status,
    };
    match error {
        CallError::Status { status: 409, .. } => failed(StatusCode::CONFLICT),
        CallError::Status { status: 404, .. } => failed(StatusCode::NOT_FOUND),
        CallError::Status { .. } | CallError::BadBody { .. } => failed(StatusCode::BAD_GATEWAY),
        CallError::Unreachable { .. } => failed(StatusCode::SERVICE_UNAVAILABLE),
        CallError::Timeout { .. } => Refusal {
            order_status: OrderStatus::Timeout,
            http_status: StatusCode::GATEWAY_TIMEOUT,
        },
    }
}

/// What the customer reads: inventory's own words for its refusals,
/// the whole story for a failed dependency.
pub fn detail(error: &CallError) -> String {
    match error {
        CallError::Status {
            status: 404 | 409,
            detail: Some(detail),
            ..
        } => detail.clone(),
        other => format!("inventory: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn status(code: u16) -> CallError {
        CallError::Status {
            url: "u".into(),
            status: code,
            detail: Some("why".into()),
        }
    }

    #[test]
    fn refusal_table() {
        let cases = [
            (status(409), OrderStatus::Failed, 409),
            (status(404), OrderStatus::Failed, 404),
            (status(500), OrderStatus::Failed, 502),
            (status(503), OrderStatus::Failed, 502),
            (status(422), OrderStatus::Failed, 502),
            (
                CallError::BadBody {
                    url: "u".into(),
                    reason: "r".into(),
                },
                OrderStatus::Failed,
                502,
            ),
            (
                CallError::Unreachable {
                    url: "u".into(),
                    reason: "refused".into(),
                },
                OrderStatus::Failed,
                503,
            ),
            (
                CallError::Timeout {
                    url: "u".into(),
                    after: Duration::from_secs(5),
                },
                OrderStatus::Timeout,
                504,
            ),
        ];
        for (error, order_status, http) in cases {
            let r = refusal(&error);
            assert_eq!(
                (r.order_status, r.http_status.as_u16()),
                (order_status, http),
                "{error}"
            );
        }
    }

    #[test]
    fn inventory_refusals_keep_their_own_words() {
        assert_eq!(detail(&status(409)), "why");
        assert_eq!(detail(&status(500)), "inventory: u answered 500: why");
    }
}
