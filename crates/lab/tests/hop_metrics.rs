//! Every service of every part records the hops an order takes through it
//! on `/admin/metrics` (`foodlab_hop_duration_seconds{hop}`), once per
//! order and hop: what `foodlab bench` reads to tell where the time went.
//! A message consumer's store commit is one per batch of the messages that
//! were waiting together, so at most one per order.

#![allow(clippy::unwrap_used)]

mod support;

use foodlab_lab::{LocalPlatform, Platform, Service};
use serde_json::json;
use support::{all_orders_settled, eventually, example, post, start};

const ORDERS: u64 = 12;

/// How many observations a service's histogram of `hop` holds (0 if absent).
async fn hop_count(platform: &LocalPlatform, service: Service, hop: &str) -> u64 {
    let url = format!("{}/admin/metrics", platform.endpoint(service).unwrap());
    let scrape = reqwest::get(url).await.unwrap().text().await.unwrap();
    let series = format!("foodlab_hop_duration_seconds_count{{hop=\"{hop}\"}} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn place_orders(platform: &LocalPlatform, expected_status: u16) {
    for _ in 0..ORDERS {
        let body = json!({"item": "burger", "quantity": 1});
        let (status, _) = post(platform, Service::Order, "/order", body).await;
        assert_eq!(status, expected_status);
    }
}

/// Waits until each `(service, hop)` has counted exactly `count`, then
/// checks it stays there (no hop counted twice for one order).
async fn expect_hops(platform: &LocalPlatform, expected: &[(Service, &str, u64)]) {
    for &(service, hop, count) in expected {
        let reached = eventually(30, || async move {
            hop_count(platform, service, hop).await >= count
        })
        .await;
        assert!(
            reached,
            "{service} {hop}: {} of {count} within 30 s",
            hop_count(platform, service, hop).await
        );
    }
    for &(service, hop, count) in expected {
        assert_eq!(
            hop_count(platform, service, hop).await,
            count,
            "{service} {hop}"
        );
    }
}

/// Checks each `service` committed the orders' decisions in at least one
/// and at most one commit per order (a commit per batch).
async fn expect_batched_commits(platform: &LocalPlatform, services: &[Service]) {
    for &service in services {
        let commits = hop_count(platform, service, "store_commit").await;
        assert!(
            (1..=ORDERS).contains(&commits),
            "{service} store_commit: {commits} for {ORDERS} orders"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_chain_records_each_call_and_each_commit_once_per_order() {
    let platform = start(&example("sync-baseline")).await;
    place_orders(&platform, 201).await;
    expect_hops(
        &platform,
        &[
            (Service::Order, "reserve_call", ORDERS),
            (Service::Order, "notify_call", ORDERS),
            // Stored as placed, then with its final status.
            (Service::Order, "store_commit", 2 * ORDERS),
        ],
    )
    .await;
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_async_hop_is_recorded_once_per_order_in_every_service() {
    let platform = start(&example("async-idempotency")).await;
    place_orders(&platform, 202).await;
    assert!(
        eventually(30, || all_orders_settled(&platform, ORDERS as usize)).await,
        "the orders did not settle"
    );
    expect_hops(
        &platform,
        &[
            (Service::Order, "outbox_dwell", ORDERS),
            (Service::Order, "publish_confirm", ORDERS),
            // The results coming back.
            (Service::Order, "broker_transit", ORDERS),
            (Service::Order, "delivery_to_ack", ORDERS),
            (Service::Inventory, "broker_transit", ORDERS),
            (Service::Inventory, "publish_confirm", ORDERS),
            (Service::Inventory, "delivery_to_ack", ORDERS),
            (Service::Notification, "broker_transit", ORDERS),
            (Service::Notification, "delivery_to_ack", ORDERS),
        ],
    )
    .await;
    expect_batched_commits(&platform, &[Service::Inventory, Service::Notification]).await;
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_streaming_hop_is_recorded_once_per_order_in_every_service() {
    let platform = start(&example("streaming-replay")).await;
    place_orders(&platform, 202).await;
    assert!(
        eventually(60, || all_orders_settled(&platform, ORDERS as usize)).await,
        "the orders did not settle"
    );
    expect_hops(
        &platform,
        &[
            (Service::Order, "outbox_dwell", ORDERS),
            (Service::Order, "publish_confirm", ORDERS),
            (Service::Order, "broker_transit", ORDERS),
            (Service::Order, "delivery_to_ack", ORDERS),
            (Service::Inventory, "broker_transit", ORDERS),
            (Service::Inventory, "publish_confirm", ORDERS),
            (Service::Inventory, "delivery_to_ack", ORDERS),
            // Analytics reads both topics: each order and its result.
            (Service::Analytics, "broker_transit", 2 * ORDERS),
        ],
    )
    .await;
    expect_batched_commits(&platform, &[Service::Inventory]).await;
    platform.shutdown().await;
}
