//! The synchronous chain: reserve at inventory, then notify, each call
//! blocking the customer's request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use foodlab_domain::{Order, OrderId, OrderLine, OrderStatus, TraceContext};
use foodlab_transport::{CallError, HttpClient};
use serde::Serialize;
use serde::de::IgnoredAny;

use crate::settings::Settings;

#[derive(Clone)]
pub struct RestChain {
    client: HttpClient,
    settings: Settings,
    reserve: Endpoints,
    send: Endpoints,
}

/// A dependency given no URL to call it at.
#[derive(Debug, thiserror::Error)]
#[error("no URL to call {path} at")]
struct NoUrl {
    path: &'static str,
}

/// The replicas of one dependency, taken in turn. A replica that cannot be
/// reached is passed over for the next: both calls are idempotent by order id
/// on a shared database, so a second attempt never reserves or notifies twice.
#[derive(Clone)]
struct Endpoints {
    urls: Arc<[String]>,
    next: Arc<AtomicUsize>,
}

impl Endpoints {
    /// The base URLs of the replicas (at least one); `path` is the call's.
    fn new(base_urls: &[String], path: &'static str) -> Result<Self, NoUrl> {
        let urls: Vec<String> = base_urls
            .iter()
            .map(|url| url.trim().trim_end_matches('/'))
            .filter(|url| !url.is_empty())
            .map(|url| format!("{url}{path}"))
            .collect();
        if urls.is_empty() {
            return Err(NoUrl { path });
        }
        Ok(Self {
            urls: urls.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// POSTs `body` to the next replica; the answer's body is checked to be
    /// JSON and not kept.
    async fn post(&self, client: &HttpClient, body: &impl Serialize) -> Result<(), CallError> {
        let count = self.urls.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        // The last replica tried answers for all when none can be reached.
        for attempt in 1..count {
            let url = &self.urls[(first + attempt - 1) % count];
            match client.post_json::<_, IgnoredAny>(url, body).await {
                Err(CallError::Unreachable { .. }) => continue,
                other => return other.map(drop),
            }
        }
        let last = &self.urls[(first + count - 1) % count];
        client
            .post_json::<_, IgnoredAny>(last, body)
            .await
            .map(drop)
    }
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
        inventory_urls: &[String],
        notification_urls: &[String],
    ) -> anyhow::Result<Self> {
        let inventory = Endpoints::new(inventory_urls, "/reserve")
            .map_err(|e| anyhow::anyhow!("--inventory-url: {e}"))?;
        let notification = Endpoints::new(notification_urls, "/send")
            .map_err(|e| anyhow::anyhow!("--notification-url: {e}"))?;
        Ok(Self {
            client,
            settings,
            reserve: inventory,
            send: notification,
        })
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
        let body = ReserveBody {
            order_id: order.order_id,
            items: &order.items,
        };
        self.reserve.post(&self.client(), &body).await
    }

    pub async fn notify(&self, order: &Order) -> Result<(), CallError> {
        let body = SendBody {
            order_id: order.order_id,
            customer_id: order.customer_id.as_deref(),
            status: OrderStatus::Reserved,
        };
        self.send.post(&self.client(), &body).await
    }
}

/// `POST /reserve` of inventory.
#[derive(Serialize)]
struct ReserveBody<'a> {
    order_id: OrderId,
    items: &'a [OrderLine],
}

/// `POST /send` of notification.
#[derive(Serialize)]
struct SendBody<'a> {
    order_id: OrderId,
    customer_id: Option<&'a str>,
    status: OrderStatus,
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

    use serde_json::json;

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

    /// Serves `POST /reserve` and counts the calls it answers.
    async fn counting_replica() -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let app = axum::Router::new().route(
            "/reserve",
            axum::routing::post(move || {
                let counted = Arc::clone(&counted);
                async move {
                    counted.fetch_add(1, Ordering::Relaxed);
                    axum::Json(json!({ "status": "reserved" }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    #[tokio::test]
    async fn replicas_are_taken_in_turn_and_an_unreachable_one_is_passed_over() {
        let (a, a_calls) = counting_replica().await;
        let (b, b_calls) = counting_replica().await;
        // A port nothing listens on: bound, then released.
        let gone = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let urls = [a.clone(), format!(" {gone}"), format!("{b}/")];
        let endpoints = Endpoints::new(&urls, "/reserve").unwrap();
        let client = HttpClient::new(Duration::from_secs(2)).unwrap();
        for _ in 0..9 {
            endpoints.post(&client, &json!({})).await.unwrap();
        }
        // Turns 0..9 start at a, gone, b in rotation; gone's turns fall to b.
        assert_eq!(a_calls.load(Ordering::Relaxed), 3);
        assert_eq!(b_calls.load(Ordering::Relaxed), 6);

        let none = Endpoints::new(std::slice::from_ref(&gone), "/reserve").unwrap();
        let refused = none.post(&client, &json!({})).await;
        assert!(
            matches!(&refused, Err(CallError::Unreachable { url, .. }) if url.starts_with(&gone)),
            "{refused:?}"
        );
        // No URL at all is refused when the chain is made, not on each order.
        assert!(Endpoints::new(&[" ".to_owned()], "/reserve").is_err());
    }
}
