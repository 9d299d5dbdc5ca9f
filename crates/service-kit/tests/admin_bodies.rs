//! The kit's admin routes over HTTP on 127.0.0.1: the delay in seconds or
//! milliseconds, out-of-range values naming the range, 413 for a body over
//! the size limit.

#![allow(clippy::unwrap_used)]

use foodlab_domain::Faults;
use foodlab_service_kit::Kit;
use serde_json::{Value, json};

async fn start() -> String {
    let router = Kit::new("test", Faults::default()).router(axum::Router::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

async fn post(base: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn set_delay(base: &str, body: Value) -> (u16, Value) {
    post(base, "/admin/delay", body.to_string().into_bytes()).await
}

#[tokio::test]
async fn the_delay_takes_seconds_or_milliseconds() {
    let base = start().await;
    let cases = [
        (json!({"seconds": 2}), 2000),
        (json!({"seconds": 0.1}), 100),
        (json!({"ms": 250}), 250),
        (json!({"delay_ms": 40}), 40),
        (json!({"delay": "1.5s"}), 1500),
        (json!({"seconds": 0}), 0),
    ];
    for (body, delay_ms) in cases {
        let (status, faults) = set_delay(&base, body.clone()).await;
        assert_eq!(
            (status, &faults["delay_ms"]),
            (200, &json!(delay_ms)),
            "{body}"
        );
        let shown: Value = reqwest::get(format!("{base}/admin/faults"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(shown["delay_ms"], delay_ms, "{body}");
    }
}

#[tokio::test]
async fn an_out_of_range_delay_says_what_the_range_is() {
    let base = start().await;
    let (status, problem) = set_delay(&base, json!({"seconds": 100_000})).await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["detail"],
        "`seconds` must be a number of seconds from 0 to 86400 (86400000 ms), got 100000"
    );
    let (status, problem) = set_delay(&base, json!({"ms": -5})).await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["detail"],
        "`ms` must be a number of milliseconds from 0 to 86400000 (86400 s), got -5"
    );
}

#[tokio::test]
async fn a_body_over_the_size_limit_is_413() {
    let base = start().await;
    // axum's default limit is 2 MiB.
    let padding = "x".repeat(3 * 1024 * 1024);
    let body = format!(r#"{{"seconds": 1, "padding": "{padding}"}}"#).into_bytes();
    let (status, problem) = post(&base, "/admin/delay", body).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["status"], 413);
    // Malformed JSON within the limit stays 400.
    let (status, _) = post(&base, "/admin/delay", b"{nope".to_vec()).await;
    assert_eq!(status, 400);
}
