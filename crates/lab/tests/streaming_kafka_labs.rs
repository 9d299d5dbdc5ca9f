//! The streaming-kafka labs and failure cases, against the project's real
//! Kafka-protocol broker on 127.0.0.1 (started by its script if needed).
//! Each platform gets topics and consumer groups of its own.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use foodlab_lab::{LocalPlatform, Platform, Service, Verdict};
use foodlab_transport::kafka::{self, KafkaArgs};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedHeaders;
use serde_json::{Value, json};
use support::{
    all_orders_settled, died_and_restarted, eventually, example, get, messages_counted, options,
    order_statuses, post, run, statuses,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_lab_every_order_is_decided_and_counted_exactly_once() {
    let mut lab = example("streaming-burst");
    assert_eq!(lab.spec.workload.orders, 10_000);
    lab.spec.workload.orders = 600;
    lab.spec.expect.reservations = Some(600);
    let (platform, report) = run(&lab).await;
    let results = &report.results;
    assert_eq!(report.verdict, Verdict::Pass, "{results:#?}");
    assert_eq!(results.accepted, 600);
    assert_eq!(results.status_codes.get("202"), Some(&600));
    assert_eq!(results.reserved, 600);
    assert_eq!(results.reservations, Some(600));
    assert_eq!(results.decided, Some(600));
    assert_eq!(results.stock_consumed, Some(600));
    let counted = results.analytics.unwrap();
    assert_eq!((counted.orders, counted.inventory_events), (600, 600));
    assert_eq!(counted.failures, 0);
    assert_eq!(results.lag_at_end, Some(0));
    assert!(results.processed_seconds.is_some_and(|s| s > 0.0));
    assert!(results.processed_per_second.is_some_and(|r| r > 0.0));

    let figures = get(&platform, Service::Analytics, "/metrics").await;
    assert_eq!(figures["total_orders"], 600, "{figures}");
    assert_eq!(figures["failure_rate"], 0.0);
    let per_minute: u64 = figures["orders_by_minute"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(per_minute, 600);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_lab_throttled_analytics_falls_behind_then_drains() {
    let mut lab = example("streaming-lag");
    lab.spec.workload.orders = 300;
    lab.spec.chaos[0].duration = Some(Duration::from_secs(4));
    lab.spec.expect.max_lag_at_least = Some(100);
    let (platform, report) = run(&lab).await;
    let results = &report.results;
    assert_eq!(report.verdict, Verdict::Pass, "{results:#?}");
    assert!(results.max_backlog.unwrap() >= 100, "{results:#?}");
    assert_eq!(results.lag_at_end, Some(0));
    let counted = results.analytics.unwrap();
    assert_eq!((counted.orders, counted.inventory_events), (300, 300));
    assert_eq!(report.chaos.len(), 1);
    assert!(report.chaos[0].restored_at.is_some());

    // The lag is reported per group and partition, and as Prometheus gauges.
    let lag = get(&platform, Service::Analytics, "/lag").await;
    let groups = lag["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{lag}");
    let analytics_partitions = groups[0]["partitions"].as_array().unwrap();
    assert_eq!(
        analytics_partitions.len(),
        6,
        "3 partitions of 2 topics: {lag}"
    );
    assert!(analytics_partitions.iter().all(|p| p["lag"] == 0), "{lag}");
    let url = format!(
        "{}/admin/metrics",
        platform.endpoint(Service::Analytics).unwrap()
    );
    let scrape = reqwest::get(url).await.unwrap().text().await.unwrap();
    // 6 partitions for analytics-group, 3 for inventory-group, all drained.
    let gauges: Vec<&str> = scrape
        .lines()
        .filter(|line| line.starts_with("foodlab_consumer_lag{"))
        .collect();
    assert_eq!(gauges.len(), 9, "{scrape}");
    assert!(gauges.iter().all(|line| line.ends_with(" 0")), "{scrape}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_lab_totals_are_identical_after_rewinding_analytics() {
    let mut lab = example("streaming-replay");
    lab.spec.workload.orders = 400;
    let (platform, report) = run(&lab).await;
    let results = &report.results;
    assert_eq!(report.verdict, Verdict::Pass, "{results:#?}");
    let replay = results.replay.as_ref().unwrap();
    assert!(replay.identical);
    assert_eq!(replay.before.orders, 400);
    assert_eq!(replay.after.orders, 400);
    assert_eq!(replay.after.inventory_events, 400);
    assert_eq!(replay.events, 800, "400 order events and 400 results");
    // With a 5% failure rate the figures include some failures, and the
    // replay reproduces exactly those.
    assert!(replay.after.failures > 0, "{results:#?}");
    assert_eq!(replay.before.failures, replay.after.failures);
    assert_eq!(results.failed, replay.after.failures, "{results:#?}");

    // A second rewind by hand: the per-minute buckets come back too.
    let before = get(&platform, Service::Analytics, "/metrics").await;
    let (status, answer) = post(
        &platform,
        Service::Analytics,
        "/admin/reset-offsets",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], 800);
    assert_eq!(answer["offsets_committed"], true, "{answer}");
    assert!(
        eventually(30, || async {
            let now = get(&platform, Service::Analytics, "/metrics").await;
            now["last_replay"]["seconds"].is_number()
                && now["replays"].as_u64().is_some_and(|n| n >= 3)
        })
        .await
    );
    // The group's committed offsets follow the second reading to the end too.
    assert!(
        eventually(10, || async {
            let lag = get(&platform, Service::Analytics, "/lag").await;
            lag["groups"][0]["total_lag"] == 0
        })
        .await,
        "{}",
        get(&platform, Service::Analytics, "/lag").await
    );
    let after = get(&platform, Service::Analytics, "/metrics").await;
    for figure in [
        "total_orders",
        "total_inventory_events",
        "failures",
        "failure_rate",
        "orders_per_minute",
        "orders_by_minute",
        "elapsed_seconds",
    ] {
        assert_eq!(
            before[figure], after[figure],
            "{figure}: {before} vs {after}"
        );
    }
    platform.shutdown().await;
}

fn kafka_args(platform: &LocalPlatform) -> KafkaArgs {
    platform.kafka().unwrap().args()
}

/// Every message on `topic`, read from the start by a group of its own.
async fn read_topic(args: &KafkaArgs, topic: &str) -> Vec<Value> {
    let group = format!("reader-{}", uuid::Uuid::new_v4().simple());
    let consumer = args.consumer(&group, "test-reader").unwrap();
    let start = kafka::earliest_of(&consumer, &[topic]).unwrap();
    let mut expected = 0;
    for element in start.elements() {
        let (low, high) = consumer
            .fetch_watermarks(topic, element.partition(), kafka::QUERY_TIMEOUT)
            .unwrap();
        expected += high - low;
    }
    consumer.assign(&start).unwrap();
    let mut messages = Vec::new();
    while (messages.len() as i64) < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("the topic should be readable to its end")
            .unwrap();
        messages.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
    }
    messages
}

async fn bulk(platform: &LocalPlatform, count: u64) {
    let (status, body) = post(
        platform,
        Service::Order,
        "/orders/bulk",
        json!({"count": count, "item": "burger", "quantity": 1}),
    )
    .await;
    assert_eq!((status, body), (201, json!({"count": count})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_killed_mid_stream_resumes_from_committed_offsets() {
    let lab = example("streaming-burst");
    let mut options = options(&lab);
    options.env = vec![("FOODLAB_STOCK".into(), "burger=1000".into())];
    options.service_env.push((
        Service::Inventory,
        "FOODLAB_FAULT_CRASH_AFTER_COMMITS".into(),
        "120".into(),
    ));
    let platform = LocalPlatform::start(options).await.unwrap();
    let mut events = platform.events();
    // The supervisor restarts it without the crash point.
    platform
        .set_service_env(Service::Inventory, Vec::new())
        .await;
    bulk(&platform, 400).await;
    // It aborts at its crash point (SIGABRT), is reported and restarted.
    let death = died_and_restarted(&mut events, Service::Inventory, 30).await;
    assert!(death.to_string().contains("killed by SIGABRT"), "{death}");
    assert!(eventually(60, || all_orders_settled(&platform, 400)).await);

    let stats = get(&platform, Service::Inventory, "/stats").await;
    assert_eq!(stats["reserved_orders"], 400, "{stats}");
    assert_eq!(stats["units_reserved"], 400, "{stats}");
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await["burger"],
        600
    );
    assert_eq!(
        order_statuses(&platform).await,
        statuses(&[("reserved", 400)])
    );

    // Each order has exactly one result: one message id, one decision. A
    // result produced again after the crash carries the same id.
    let results = read_topic(
        &kafka_args(&platform),
        &platform.kafka().unwrap().inventory_topic,
    )
    .await;
    let mut ids_per_order: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for result in &results {
        assert_eq!(result["type"], "InventoryReserved", "{result}");
        ids_per_order
            .entry(result["order_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(result["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids_per_order.len(), 400);
    assert!(ids_per_order.values().all(|ids| ids.len() == 1));
    // The restarted inventory read again what the crashed one had not
    // committed: at least the order it died on, replayed, not re-reserved.
    let topic = &platform.kafka().unwrap().order_topic;
    let replayed = messages_counted(&platform, Service::Inventory, topic, "duplicate").await;
    assert!(replayed >= 1, "{replayed} replayed decisions");
    // Analytics counts each result once however often it was produced.
    assert!(
        eventually(30, || async {
            let figures = get(&platform, Service::Analytics, "/metrics").await;
            figures["total_orders"] == 400 && figures["total_inventory_events"] == 400
        })
        .await
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_order_events_are_skipped_counted_and_the_partitions_keep_flowing() {
    let lab = example("streaming-burst");
    let platform = LocalPlatform::start(options(&lab)).await.unwrap();
    let args = kafka_args(&platform);
    let producer = args.producer("test-poison").unwrap();
    let poison = foodlab_lab::inject::poison_bodies(6);
    // Different keys spread the poison over the partitions.
    for (i, body) in poison.iter().enumerate() {
        kafka::send_raw(
            &producer,
            &args.order_topic,
            &format!("poison-{i}"),
            body,
            OwnedHeaders::new(),
        )
        .await
        .unwrap()
        .confirmed()
        .await
        .unwrap();
    }
    bulk(&platform, 60).await;
    assert!(eventually(30, || all_orders_settled(&platform, 60)).await);
    let stats = get(&platform, Service::Inventory, "/stats").await;
    assert_eq!(stats["reserved_orders"], 60, "{stats}");

    let skipped = messages_counted(
        &platform,
        Service::Inventory,
        &args.order_topic,
        "malformed",
    )
    .await;
    assert_eq!(skipped, 6);
    assert!(
        eventually(30, || async {
            let figures = get(&platform, Service::Analytics, "/metrics").await;
            figures["malformed"] == 6 && figures["total_orders"] == 60
        })
        .await
    );
    platform.shutdown().await;
}
