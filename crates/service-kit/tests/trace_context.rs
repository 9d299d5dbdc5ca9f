//! Trace context on a service's routes, over HTTP on 127.0.0.1: a valid
//! `traceparent` is continued (same trace, a span of the service's own), a
//! missing or broken one starts a trace; the handler sees the context the
//! answer's `traceresponse` names.

#![allow(clippy::unwrap_used)]

use axum::Extension;
use axum::routing::get;
use foodlab_domain::{Faults, TraceContext};
use foodlab_service_kit::Kit;

const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn start() -> String {
    let business = axum::Router::new().route(
        "/seen",
        get(|Extension(trace): Extension<TraceContext>| async move { trace.to_string() }),
    );
    let router = Kit::new("test", Faults::default()).router(business);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// (what the handler saw, what the answer names) for a request with `traceparent`.
async fn call(base: &str, traceparent: Option<&str>) -> (String, String) {
    let mut request = reqwest::Client::new().get(format!("{base}/seen"));
    if let Some(value) = traceparent {
        request = request.header("traceparent", value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answered = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.text().await.unwrap(), answered)
}

#[tokio::test]
async fn a_callers_trace_is_continued_with_a_span_of_the_services_own() {
    let base = start().await;
    let (seen, answered) = call(&base, Some(SENT)).await;
    assert_eq!(seen, answered);
    let trace = TraceContext::parse(&seen).unwrap();
    assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(trace.span_id(), "00f067aa0ba902b7");
}

#[tokio::test]
async fn a_request_without_a_valid_traceparent_starts_a_trace() {
    let base = start().await;
    let (without, _) = call(&base, None).await;
    // The sent trace id is well formed, the parent span id (all zeros) is not:
    // nothing of the header may be kept.
    let (broken, answered) = call(
        &base,
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
    )
    .await;
    assert_eq!(broken, answered);
    let (without, broken) = (
        TraceContext::parse(&without).unwrap(),
        TraceContext::parse(&broken).unwrap(),
    );
    assert_ne!(without.trace_id(), broken.trace_id());
    assert_ne!(broken.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[tokio::test]
async fn health_and_metrics_answers_name_their_trace_too() {
    let base = start().await;
    for path in ["/healthz", "/admin/metrics"] {
        let response = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header("traceparent", SENT)
            .send()
            .await
            .unwrap();
        let answered = response.headers()["traceresponse"].to_str().unwrap();
        assert!(
            answered.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{path}: {answered}"
        );
    }
}
