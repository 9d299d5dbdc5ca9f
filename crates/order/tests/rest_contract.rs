//! The sync-rest HTTP contract, with the three services on real loopback
//! sockets in this process.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

struct Running {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(router: axum::Router) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Running { addr, task }
}

struct Chain {
    _dir: TempDir,
    order: Running,
    inventory: Running,
    notification: Running,
    http: reqwest::Client,
}

/// Starts inventory (with `stock` overrides), notification and order.
async fn chain(stock: &str, timeout: &str) -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let inventory = serve(
        foodlab_inventory::app(&foodlab_inventory::Args::parse_from([
            "inventory",
            "--data-dir",
            data,
            "--stock",
            stock,
        ]))
        .await
        .unwrap(),
    )
    .await;
    let notification = serve(
        foodlab_notification::app(&foodlab_notification::Args::parse_from([
            "notification",
            "--data-dir",
            data,
        ]))
        .await
        .unwrap(),
    )
    .await;
    let order = serve(
        foodlab_order::app(&foodlab_order::Args::parse_from([
            "order",
            "--data-dir",
            data,
            "--inventory-url",
            &inventory.url(""),
            "--notification-url",
            &notification.url(""),
            "--dependency-timeout",
            timeout,
        ]))
        .await
        .unwrap(),
    )
    .await;
    Chain {
        _dir: dir,
        order,
        inventory,
        notification,
        http: reqwest::Client::new(),
    }
}

impl Chain {
    async fn order(&self, body: Value) -> (StatusCode, Value) {
        self.post(&self.order.url("/order"), body).await
    }

    async fn post(&self, url: &str, body: Value) -> (StatusCode, Value) {
        let response = self.http.post(url).json(&body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn get(&self, url: &str) -> Value {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn stock(&self) -> Value {
        self.get(&self.inventory.url("/stock")).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_variant_places_an_order_and_decrements_stock() {
    let c = chain("", "5s").await;
    let bodies = [
        json!({"item": "burger", "quantity": 2}),
        json!({"item_id": "Burger", "qty": 1, "user_id": "u1"}),
        json!({"itemId": "PIZZA", "quantity": 3, "studentId": "s7"}),
        json!({"sku": "salad", "qty": 1, "student_id": "s8"}),
        json!({"user_id": "u2", "items": [{"sku": "burger", "qty": 1}, {"item": "pizza", "quantity": 2}]}),
    ];
    for body in bodies {
        let (status, order) = c.order(body.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body} -> {order}");
        assert_eq!(order["status"], "notified", "{order}");
    }
    assert_eq!(
        c.stock().await,
        json!({"burger": 96, "pizza": 95, "salad": 99})
    );

    let orders = c.get(&c.order.url("/orders")).await;
    assert_eq!(orders.as_array().unwrap().len(), 5);
    let first = &orders[0];
    let id = first["order_id"].as_str().unwrap();
    assert_eq!(c.get(&c.order.url(&format!("/orders/{id}"))).await, *first);
    assert_eq!(first["items"], json!([{"item": "burger", "quantity": 2}]));

    let notifications = c.get(&c.notification.url("/notifications")).await;
    assert_eq!(notifications.as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_detail_and_reserves_nothing() {
    let c = chain("pizza=1", "5s").await;
    let raw = c
        .http
        .post(c.order.url("/order"))
        .header("content-type", "application/json")
        .body("{\"item\": \"burger\",")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        raw.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = raw.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{problem}"
    );

    let cases = [
        (
            json!({"item": "burger", "quantity": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"item": "burger", "quantity": -2}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"quantity": 2}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"item": "sushi", "quantity": 1}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"item": "pizza", "quantity": 2}),
            StatusCode::CONFLICT,
        ),
        (
            json!({"items": [{"item": "burger", "quantity": 5}, {"item": "pizza", "quantity": 2}]}),
            StatusCode::CONFLICT,
        ),
    ];
    for (body, expected) in cases {
        let (status, problem) = c.order(body.clone()).await;
        assert_eq!(status, expected, "{body} -> {problem}");
        assert_eq!(problem["status"], expected.as_u16());
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{problem}");
    }
    let (_, problem) = c.order(json!({"item": "pizza", "quantity": 2})).await;
    assert_eq!(
        problem["detail"],
        "out of stock: pizza (requested 2, available 1)"
    );
    assert_eq!(problem["order_status"], "failed");
    // The half-possible order (burger yes, pizza no) reserved nothing.
    assert_eq!(
        c.stock().await,
        json!({"burger": 100, "pizza": 1, "salad": 100})
    );

    // Refused orders are kept, as failed, with their reason.
    let orders = c.get(&c.order.url("/orders")).await;
    let failed: Vec<_> = orders
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 4, "{orders}");
    let unknown = c
        .http
        .get(c.order.url("/orders/not-an-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_failures_map_to_502_503_504() {
    let c = chain("", "300ms").await;

    let (_, faults) = c
        .post(&c.inventory.url("/admin/fail"), json!({"enabled": true}))
        .await;
    assert_eq!(faults["fail_rate"], 1.0);
    let (status, problem) = c.order(json!({"item": "burger"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("answered 500"),
        "{problem}"
    );
    // Health and admin are never faulted.
    let health = c
        .http
        .get(c.inventory.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    c.post(&c.inventory.url("/admin/fail"), json!({"enabled": false}))
        .await;

    c.post(&c.inventory.url("/admin/delay"), json!({"ms": 1500}))
        .await;
    let started = Instant::now();
    let (status, problem) = c.order(json!({"item": "burger"})).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{problem}");
    assert_eq!(problem["order_status"], "timeout");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1400),
        "{took:?}"
    );
    c.post(&c.inventory.url("/admin/delay"), json!({"seconds": 0}))
        .await;

    let order_id = {
        c.inventory.task.abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, problem) = c.order(json!({"item": "burger"})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        problem["order_id"].as_str().unwrap().to_owned()
    };
    let stored = c.get(&c.order.url(&format!("/orders/{order_id}"))).await;
    assert_eq!(stored["status"], "failed");
    assert!(
        stored["reason"].as_str().unwrap().contains("unreachable"),
        "{stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_notification_leaves_the_order_reserved() {
    let c = chain("", "5s").await;
    c.post(
        &c.notification.url("/admin/fail"),
        json!({"enabled": true, "status": 503}),
    )
    .await;
    let (status, order) = c.order(json!({"item": "salad", "quantity": 2})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(order["status"], "reserved");
    assert_eq!(c.stock().await["salad"], 98);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_orders_for_ten_items_never_oversell() {
    let c = chain("burger=10", "5s").await;
    let url = c.order.url("/order");
    let attempts = (0..50).map(|_| {
        let http = c.http.clone();
        let url = url.clone();
        async move {
            http.post(&url)
                .json(&json!({"item": "burger", "quantity": 1}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (10, 40), "{statuses:?}");
    assert_eq!(c.stock().await["burger"], 0);
    let stats = c.get(&c.inventory.url("/stats")).await;
    assert_eq!(stats["reserved_orders"], 10);
    assert_eq!(stats["units_reserved"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_admin_api_validates_and_reports() {
    let c = chain("", "5s").await;
    let faults_url = c.order.url("/admin/faults");
    let (status, _) = c
        .post(
            &c.order.url("/admin/fail"),
            json!({"enabled": true, "rate": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = c.post(&c.order.url("/admin/delay"), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, faults) = c
        .post(
            &c.order.url("/admin/fail"),
            json!({"enabled": true, "rate": 0.5, "status": 503}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        faults,
        json!({"delay_ms": 0, "fail_rate": 0.5, "fail_status": 503})
    );
    assert_eq!(c.get(&faults_url).await, faults);
    let cleared: Value = c
        .http
        .delete(&faults_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        cleared,
        json!({"delay_ms": 0, "fail_rate": 0.0, "fail_status": 500})
    );

    let metrics = c
        .http
        .get(c.order.url("/admin/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "foodlab_http_requests_total{method=\"POST\",route=\"/admin/fail\",status=\"422\"} 1"
        ),
        "{metrics}"
    );
}

impl Chain {
    async fn put(&self, url: &str, body: Value) -> (StatusCode, Value) {
        let response = self.http.put(url).json(&body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_levels_are_set_at_run_time_and_validated() {
    let c = chain("", "5s").await;
    let stock_url = c.inventory.url("/admin/stock");
    let (status, _) = c.order(json!({"item": "burger", "quantity": 7})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, stock) = c.put(&stock_url, json!({"burger": 1000, "Tofu": 3})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stock,
        json!({"burger": 1000, "pizza": 100, "salad": 100, "tofu": 3})
    );
    assert_eq!(c.stock().await, stock);
    let (status, _) = c.order(json!({"item": "tofu", "quantity": 3})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(c.stock().await["tofu"], 0);

    for (body, says) in [
        (json!({}), "at least one item"),
        (json!([1, 2]), "object of item names"),
        (json!({"burger": -1}), "whole number from 0"),
        (json!({"burger": 1.5}), "whole number from 0"),
        (json!({" ": 1}), "item name is empty"),
    ] {
        let (status, problem) = c.put(&stock_url, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{body}: {detail}");
    }
    // A refused request changes nothing; fault injection does not touch the admin route.
    c.post(&c.inventory.url("/admin/fail"), json!({"enabled": true}))
        .await;
    let (status, stock) = c.put(&stock_url, json!({"pizza": 5})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stock,
        json!({"burger": 1000, "pizza": 5, "salad": 100, "tofu": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dependency_timeout_is_a_runtime_setting() {
    let c = chain("", "5s").await;
    let settings_url = c.order.url("/admin/settings");
    assert_eq!(
        c.get(&settings_url).await,
        json!({"dependencyTimeout": "5s"})
    );
    c.post(&c.inventory.url("/admin/delay"), json!({"ms": 1000}))
        .await;
    let (status, settings) = c
        .put(&settings_url, json!({"dependencyTimeout": "200ms"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings, json!({"dependencyTimeout": "200ms"}));
    let (status, problem) = c.order(json!({"item": "burger"})).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(problem["order_status"], "timeout");

    let (status, _) = c
        .put(&settings_url, json!({"dependencyTimeout": "3s"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, order) = c.order(json!({"item": "burger"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(order["status"], "notified");

    for body in [
        json!({"dependencyTimeout": "0s"}),
        json!({"dependencyTimeout": "soon"}),
        json!({"dependencyTimeout": "2h"}),
        json!({"timeout": "1s"}),
    ] {
        let (status, problem) = c.put(&settings_url, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            problem["detail"].as_str().unwrap().contains("imeout"),
            "{problem}"
        );
    }
    assert_eq!(
        c.get(&settings_url).await,
        json!({"dependencyTimeout": "3s"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_come_in_pages_by_placement_and_by_change() {
    let c = chain("pizza=0", "5s").await;
    let cursor_at = |body: &Value| body["cursor"].as_i64().unwrap();
    let start = cursor_at(&c.get(&c.order.url("/orders/cursor")).await);
    assert_eq!(start, 0);
    for item in ["burger", "pizza", "burger", "salad", "pizza"] {
        c.order(json!({"item": item, "quantity": 1})).await;
    }
    // Without a query: the bare array of every order, as before.
    let all = c.get(&c.order.url("/orders")).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 5);

    let mut paged = Vec::new();
    let mut next = c.get(&c.order.url("/orders?limit=2")).await;
    let mut pages = 1;
    loop {
        paged.extend(next["orders"].as_array().unwrap().iter().cloned());
        match next["next"].as_i64() {
            Some(after) => {
                next = c
                    .get(&c.order.url(&format!("/orders?limit=2&after={after}")))
                    .await;
                pages += 1;
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(&paged, all);

    // Each order was placed, then given its final status: ten changes.
    let changes = c
        .get(
            &c.order
                .url(&format!("/orders?changed_since={start}&limit=100")),
        )
        .await;
    assert_eq!(changes["orders"].as_array().unwrap().len(), 5);
    assert_eq!(changes["next"], 10);
    let none = c.get(&c.order.url("/orders?changed_since=10")).await;
    assert_eq!(none, json!({"orders": [], "next": 10}));

    let counts = c.get(&c.order.url("/orders/counts?since=0")).await;
    assert_eq!(
        counts,
        json!({"placed": 0, "reserved": 0, "failed": 2, "notified": 3, "timeout": 0, "cursor": 10})
    );
    // Each order took two numbers: the last three were placed after 4.
    let later = c.get(&c.order.url("/orders/counts?since=4")).await;
    assert_eq!(
        later,
        json!({"placed": 0, "reserved": 0, "failed": 1, "notified": 2, "timeout": 0, "cursor": 10})
    );

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "after=-1",
        "changed_since=x",
        "after=1&changed_since=1",
        "limit=1&limit=2",
        "offset=3",
    ] {
        let response = c
            .http
            .get(c.order.url(&format!("/orders?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{bad}: {problem}"
        );
    }
    let response = c
        .http
        .get(c.order.url("/orders/counts?since=no"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
