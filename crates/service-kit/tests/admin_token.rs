//! The admin API with a token configured, over HTTP on 127.0.0.1: 401
//! without a bearer token, 403 with another one, the change made with the
//! right one; the scrape path, health and a service's read-only counters
//! answer everyone; without a token the admin API is open.

#![allow(clippy::unwrap_used)]

use axum::routing::get;
use foodlab_domain::Faults;
use foodlab_service_kit::{AdminToken, Kit};
use serde_json::{Value, json};

const TOKEN: &str = "lab-token-123";

async fn start(token: Option<&str>) -> String {
    let counters = axum::Router::new().route("/stock", get(|| async { "{}" }));
    let router = Kit::new("test", Faults::default())
        .with_admin_token(AdminToken::new(token))
        .router_with_counters(axum::Router::new(), counters);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// `PUT /admin/faults` with a 250 ms delay, with this Authorization header.
async fn put_faults(base: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .put(format!("{base}/admin/faults"))
        .json(&json!({"delay_ms": 250, "fail_rate": 0.0, "fail_status": 500}));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

async fn delay_ms(base: &str) -> Value {
    let body: Value = reqwest::Client::new()
        .get(format!("{base}/admin/faults"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["delay_ms"].clone()
}

#[tokio::test]
async fn without_a_bearer_token_the_admin_api_answers_401() {
    let base = start(Some(TOKEN)).await;
    for authorization in [None, Some("Basic bGFiOmxhYg=="), Some(TOKEN)] {
        let response = put_faults(&base, authorization).await;
        assert_eq!(response.status().as_u16(), 401, "{authorization:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"foodlab-admin\""
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 401);
        assert_eq!(body["title"], "Unauthorized");
    }
    assert_eq!(delay_ms(&base).await, 0);
}

#[tokio::test]
async fn another_token_is_refused_with_403() {
    let base = start(Some(TOKEN)).await;
    for wrong in ["Bearer lab-token-12", "Bearer lab-token-1234", "Bearer x"] {
        let response = put_faults(&base, Some(wrong)).await;
        assert_eq!(response.status().as_u16(), 403, "{wrong}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 403);
        assert_eq!(body["detail"], "this admin token is not the lab's");
    }
    // Every admin route is gated, reads included.
    let response = reqwest::get(format!("{base}/admin/faults")).await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(delay_ms(&base).await, 0);
}

#[tokio::test]
async fn the_lab_token_sets_the_faults() {
    let base = start(Some(TOKEN)).await;
    let response = put_faults(&base, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(delay_ms(&base).await, 250);
}

#[tokio::test]
async fn scrape_health_and_counters_answer_everyone() {
    let base = start(Some(TOKEN)).await;
    for path in ["/admin/metrics", "/healthz", "/readyz", "/stock"] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn without_a_token_configured_the_admin_api_is_open() {
    let base = start(None).await;
    let response = put_faults(&base, None).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(delay_ms(&base).await, 250);
}
