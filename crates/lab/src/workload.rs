//! Placing the lab's orders: open loop at a rate, or closed loop at a concurrency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foodlab_domain::OrderStatus;
use futures::StreamExt;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::measure::{Reported, Sample, Tally};
use crate::spec::Workload;

/// Why no order could be placed at all.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot make the workload's HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the order URL `{url}` is not valid: {source}")]
    Url {
        url: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How long one `POST /order` may take before the workload counts it as unanswered.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Places every order of the workload, handing each answer to `on_sample`
/// as it comes; returns what the answers add up to and the time taken.
/// Request bodies are made as they are sent and answers are not kept, so
/// memory does not grow with the orders.
pub async fn run(
    workload: &Workload,
    order_url: &str,
    on_sample: Arc<dyn Fn(&Sample) + Send + Sync>,
) -> Result<(Tally, Duration), WorkloadError> {
    let http = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .map_err(WorkloadError::Client)?;
    let url = format!("{}/order", order_url.trim_end_matches('/'));
    let url = reqwest::Url::parse(&url).map_err(|source| WorkloadError::Url {
        url: url.clone(),
        source: source.into(),
    })?;
    let orders = Arc::new(Orders {
        http,
        url,
        items: workload.items.clone(),
        quantity: workload.quantity,
        on_sample,
    });
    let count = workload.orders as usize;
    let started = Instant::now();
    let mut tally = Tally::default();
    match workload.rate_per_second {
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..count {
                tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
                let orders = Arc::clone(&orders);
                tasks.spawn(async move { orders.place(i).await });
                while let Some(done) = tasks.try_join_next() {
                    if let Ok(sample) = done {
                        tally.record(&sample);
                    }
                }
            }
            while let Some(done) = tasks.join_next().await {
                if let Ok(sample) = done {
                    tally.record(&sample);
                }
            }
        }
        None => {
            let concurrency = workload.concurrency.unwrap_or(1).max(1) as usize;
            futures::stream::iter(0..count)
                .map(|i| orders.place(i))
                .buffer_unordered(concurrency)
                .for_each(|sample| {
                    tally.record(&sample);
                    std::future::ready(())
                })
                .await;
        }
    }
    Ok((tally, started.elapsed()))
}

/// What every order of a workload shares.
struct Orders {
    http: reqwest::Client,
    url: reqwest::Url,
    items: Vec<String>,
    quantity: u32,
    on_sample: Arc<dyn Fn(&Sample) + Send + Sync>,
}

/// `POST /order`'s body.
#[derive(Serialize)]
struct NewOrder<'a> {
    item: &'a str,
    quantity: u32,
}

/// Of an answer, the order's status: a 2xx body is the order (its `status`
/// is the order's); an error body is a problem whose `status` is the HTTP
/// code and `order_status` the order's.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    status: Option<StatusField>,
    #[serde(default)]
    order_status: Option<StatusField>,
}

/// A `status` or `order_status` field: an order status, another text, or
/// something else (a problem's `status` is a number).
#[derive(Deserialize)]
#[serde(untagged)]
enum StatusField {
    Known(OrderStatus),
    Text(String),
    Other(IgnoredAny),
}

impl StatusField {
    fn reported(self) -> Option<Reported> {
        match self {
            Self::Known(status) => Some(Reported::Known(status)),
            Self::Text(text) => {
                tracing::debug!(status = %text, "an answer carried an unknown order status");
                Some(Reported::Unknown)
            }
            Self::Other(_) => None,
        }
    }
}

/// The order status an answer's body carries, if any.
fn order_status(success: bool, body: &[u8]) -> Option<Reported> {
    let answer: Answer = serde_json::from_slice(body).ok()?;
    let field = if success {
        answer.status
    } else {
        answer.order_status
    };
    field.and_then(StatusField::reported)
}

impl Orders {
    async fn place(&self, i: usize) -> Sample {
        let body = NewOrder {
            item: &self.items[i % self.items.len()],
            quantity: self.quantity,
        };
        let started = Instant::now();
        // reqwest takes the URL by value.
        let response = self
            .http
            .post(self.url.clone())
            .json(&body)
            .send()
            .await
            .ok();
        let (status, order_status) = match response {
            Some(response) => {
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                (Some(status), order_status(status.is_success(), &body))
            }
            None => (None, None),
        };
        let latency = started.elapsed();
        let sample = Sample {
            status: status.map(|s| s.as_u16()),
            latency,
            order_status,
        };
        (self.on_sample)(&sample);
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_order_url_that_is_not_a_url_places_nothing_and_says_so() {
        let workload: Workload = serde_json::from_value(serde_json::json!({"orders": 3})).unwrap();
        let answered = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&answered);
        let placed = run(
            &workload,
            "127.0.0.1:8000",
            Arc::new(move |_: &Sample| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }),
        )
        .await;
        match placed {
            Err(WorkloadError::Url { url, .. }) => assert_eq!(url, "127.0.0.1:8000/order"),
            other => panic!("expected the URL refused, got {other:?}"),
        }
        assert_eq!(answered.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn the_order_status_is_read_from_an_order_or_a_problem() {
        let order =
            br#"{"order_id": "4f0c", "items": [], "status": "reserved", "created_at_ms": 1}"#;
        assert_eq!(
            order_status(true, order),
            Some(Reported::Known(OrderStatus::Reserved))
        );
        let problem = br#"{"type": "about:blank", "status": 409, "order_status": "failed"}"#;
        assert_eq!(
            order_status(false, problem),
            Some(Reported::Known(OrderStatus::Failed))
        );
        // A problem's `status` is its HTTP code, not an order status.
        assert_eq!(order_status(false, br#"{"status": 503}"#), None);
        assert_eq!(order_status(true, br#"{"status": 503}"#), None);
        assert_eq!(
            order_status(true, br#"{"status": "cooking"}"#),
            Some(Reported::Unknown)
        );
        assert_eq!(order_status(true, br#"{"order_id": "4f0c"}"#), None);
        assert_eq!(order_status(false, b"Bad Gateway"), None);
        assert_eq!(order_status(true, b""), None);
    }
}
