//! Prometheus metrics: request count and latency per route and status,
//! exposed in OpenMetrics text at `/admin/metrics`. (Analytics owns the
//! JSON `/metrics` of the lab contract, so the scrape path lives under admin.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::problem::ApiError;

pub const SCRAPE_PATH: &str = "/admin/metrics";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    duration: Family<HttpLabels, Histogram>,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<HttpLabels, Counter>::default();
        let duration = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            // 100 µs .. ~6.5 s
            Histogram::new(exponential_buckets(0.0001, 2.0, 17))
        });
        registry.register("http_requests", "HTTP requests handled", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            duration.clone(),
        );
        Self { requests, duration }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    queue: String,
    outcome: &'static str,
}

/// Messages a consumer handled, by queue and outcome (`processed`,
/// `duplicate`, `dead_lettered`, `retried`, ...).
#[derive(Clone)]
pub struct MessageMetrics {
    messages: Family<MessageLabels, Counter>,
    /// The same counts over every queue, for a service's own JSON counters.
    by_outcome: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl MessageMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages consumed, by queue and outcome",
            messages.clone(),
        );
        Self {
            messages,
            by_outcome: Arc::default(),
        }
    }

    pub fn count(&self, queue: &str, outcome: &'static str) {
        self.messages
            .get_or_create(&MessageLabels {
                queue: queue.to_owned(),
                outcome,
            })
            .inc();
        let mut counts = self.by_outcome.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(outcome).or_default() += 1;
    }

    /// Messages counted with `outcome` since the service started, over every queue.
    pub fn total(&self, outcome: &str) -> u64 {
        let counts = self.by_outcome.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(outcome).copied().unwrap_or_default()
    }
}

pub async fn record(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = HttpLabels {
        method,
        route,
        status: response.status().as_u16().to_string(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

pub fn routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(SCRAPE_PATH, get(scrape))
        .with_state(registry)
}

async fn scrape(State(registry): State<Arc<Registry>>) -> Result<Response, ApiError> {
    let mut body = String::new();
    encode(&mut body, &registry).map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
