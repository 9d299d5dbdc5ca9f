//! The seed labs' clients on the wire: OrderPlaced in their shapes (no
//! `type`, no envelope; `event_id`, `qty`, `items`), published by plain
//! clients straight to the broker, twice, against the project's real
//! RabbitMQ and Kafka on 127.0.0.1. Each order is reserved exactly once.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use foodlab_lab::{LocalPlatform, Platform, Service};
use foodlab_transport::rabbitmq;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use support::{eventually, example, get, inventory_fails, messages_counted, start};

/// One order per seed shape, and what each takes from the stock.
fn seed_orders() -> (Vec<Value>, BTreeMap<&'static str, u64>) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let orders = vec![
        // The student test: bare, with a message id.
        json!({"order_id": uuid::Uuid::new_v4(), "message_id": uuid::Uuid::new_v4(),
               "item": "burger", "quantity": 2}),
        // ORG: `event_id`, a foreign order id.
        json!({"order_id": format!("ORD-IDEM-{run}"), "event_id": format!("evt-{run}"),
               "item": "Pizza", "quantity": 1}),
        // VIN: `qty` and `student_id`, no id but the order's.
        json!({"order_id": format!("ORD-QTY-{run}"), "item": "salad", "qty": 3,
               "student_id": "S123"}),
        // Asha: `items: [{sku, qty}]`.
        json!({"order_id": format!("ORD-ITEMS-{run}"), "user_id": "u1",
               "items": [{"sku": "burger", "qty": 1}, {"sku": "pizza", "qty": 2}]}),
    ];
    let taken = BTreeMap::from([("burger", 3), ("pizza", 3), ("salad", 3)]);
    (orders, taken)
}

async fn stats(platform: &LocalPlatform) -> Value {
    get(platform, Service::Inventory, "/stats").await
}

async fn stock(platform: &LocalPlatform) -> BTreeMap<String, u64> {
    serde_json::from_value(get(platform, Service::Inventory, "/stock").await).unwrap()
}

/// Waits until inventory has decided `processed` orders and recognised
/// `duplicates` duplicates since it started, then checks nothing else happened.
async fn settled(platform: &LocalPlatform, processed: u64, duplicates: u64) -> Value {
    let reached = eventually(20, || async {
        let stats = stats(platform).await;
        stats["processed_count"] == processed && stats["duplicate_count"] == duplicates
    })
    .await;
    let stats = stats(platform).await;
    assert!(reached, "{stats}");
    stats
}

fn assert_taken(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    taken: &BTreeMap<&str, u64>,
) {
    for (item, units) in taken {
        assert_eq!(
            after[*item],
            before[*item] - units,
            "{item}: {before:?} → {after:?}"
        );
    }
}

/// A plain AMQP client: publishes `body` to the exchange on `order.placed`,
/// persistent, with no FoodLab properties.
async fn publish_plain(connection: &Connection, body: &Value) {
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            "orders_exchange".into(),
            "order.placed".into(),
            BasicPublishOptions::default(),
            body.to_string().as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    let _ = channel.close(200, "done".into()).await;
}

async fn plain_client(platform: &LocalPlatform) -> Connection {
    let url = platform.rabbitmq().unwrap().amqp_url();
    Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_seed_shape_published_twice_is_reserved_once() {
    let platform = start(&example("async-idempotency")).await;
    let connection = plain_client(&platform).await;
    let before = stock(&platform).await;
    let (orders, taken) = seed_orders();
    for order in orders.iter().chain(&orders) {
        publish_plain(&connection, order).await;
    }
    let stats = settled(&platform, 4, 4).await;
    for (names, count) in [
        (["processed", "processed_count"], 4),
        (["reserved", "reserved_count"], 4),
        (["failed", "failed_count"], 0),
        (["duplicates", "duplicate_count"], 4),
        (["dead_lettered", "dead_lettered_count"], 0),
        (["skipped", "skipped_count"], 0),
    ] {
        for name in names {
            assert_eq!(stats.get(name), Some(&json!(count)), "{name}: {stats}");
        }
    }
    assert_eq!(stats["reserved_orders"], 4, "{stats}");
    assert_eq!(stats["units_reserved"], 9, "{stats}");
    assert_taken(&before, &stock(&platform).await, &taken);
    // The foreign order id finds its reservation.
    let reservation = get(
        &platform,
        Service::Inventory,
        &format!("/reservations/{}", orders[2]["order_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(reservation["outcome"], "reserved", "{reservation}");
    assert_eq!(
        reservation["items"],
        json!([{"item": "salad", "quantity": 3}])
    );
    let _ = connection.close(200, "done".into()).await;
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_seed_shape_is_reserved_once_across_an_inventory_restart() {
    let platform = start(&example("async-idempotency")).await;
    let connection = plain_client(&platform).await;
    let before = stock(&platform).await;
    let (orders, taken) = seed_orders();
    for order in &orders {
        publish_plain(&connection, order).await;
    }
    settled(&platform, 4, 0).await;

    platform.scale(Service::Inventory, 0).await.unwrap();
    platform.scale(Service::Inventory, 1).await.unwrap();
    for order in &orders {
        publish_plain(&connection, order).await;
    }
    // A later order: once it is decided, every copy before it was handled
    // (one delivery at a time, in order).
    let marker =
        json!({"order_id": format!("ORD-LATER-{}", uuid::Uuid::new_v4()), "item": "salad"});
    publish_plain(&connection, &marker).await;
    let reached = eventually(20, || async {
        stats(&platform).await["processed_count"] == 5
    })
    .await;
    let stats = stats(&platform).await;
    assert!(reached, "{stats}");
    assert_eq!(stats["reserved_count"], 5, "{stats}");
    assert_eq!(stats["units_reserved"], 10, "{stats}");
    assert_eq!(stats["dead_lettered_count"], 0, "{stats}");
    // The four second copies at least; deliveries the stopped inventory had
    // not acked yet come again too, and are duplicates as well.
    assert!(stats["duplicate_count"].as_u64().unwrap() >= 4, "{stats}");
    let mut taken = taken;
    *taken.get_mut("salad").unwrap() += 1;
    assert_taken(&before, &stock(&platform).await, &taken);
    let _ = connection.close(200, "done".into()).await;
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_order_retried_through_the_queue_is_still_an_order() {
    let platform = start(&example("async-idempotency")).await;
    inventory_fails(&platform, true).await;
    let connection = plain_client(&platform).await;
    let bare = json!({"order_id": "ORD-RETRIED-1", "item": "burger", "qty": 1});
    publish_plain(&connection, &bare).await;
    // Retried three times through inventory's own queue (its routing key is
    // then the queue's name), then given up on: not poison.
    let reached = eventually(20, || async {
        stats(&platform).await["dead_lettered_count"] == 1
    })
    .await;
    assert!(reached, "{}", stats(&platform).await);
    let retried =
        messages_counted(&platform, Service::Inventory, "inventory_queue", "retried").await;
    assert_eq!(retried, 3);
    let channel = connection.create_channel().await.unwrap();
    let dead = channel
        .basic_get(
            "dlq_queue".into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rabbitmq::reason_of(&dead.delivery.properties).as_deref(),
        Some("injected failure, gave up after 3 retries")
    );
    // Given up on is a decision, failed, and no stock is taken.
    let stats = stats(&platform).await;
    assert_eq!(stats["processed_count"], 1, "{stats}");
    assert_eq!(stats["failed_count"], 1, "{stats}");
    assert_eq!(stats["reserved_count"], 0, "{stats}");
    let _ = connection.close(200, "done".into()).await;
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_order_produced_to_the_order_topic_is_reserved_once() {
    let platform = start(&example("streaming-replay")).await;
    let args = platform.kafka().unwrap().args();
    let before = stock(&platform).await;
    // A plain producer, as a seed's confluent_kafka client would be.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()
        .unwrap();
    let order_id = format!("ORD-KAFKA-{}", uuid::Uuid::new_v4().simple());
    let bare = json!({"order_id": order_id, "item": "burger", "qty": 2}).to_string();
    for _ in 0..2 {
        producer
            .send(
                FutureRecord::to(&args.order_topic)
                    .key(&order_id)
                    .payload(&bare),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let stats = settled(&platform, 1, 1).await;
    assert_eq!(stats["reserved_count"], 1, "{stats}");
    assert_eq!(stats["skipped_count"], 0, "{stats}");
    let after = stock(&platform).await;
    assert_eq!(after["burger"], before["burger"] - 2);
    // Analytics counts it once too, at the broker's time.
    assert!(
        eventually(20, || async {
            let figures = get(&platform, Service::Analytics, "/metrics").await;
            figures["total_orders"] == 1
                && figures["total_inventory_events"] == 1
                // The second copy, and its result, which inventory produces
                // again (same message id) for the replayed decision.
                && figures["duplicates"] == 2
        })
        .await,
        "{}",
        get(&platform, Service::Analytics, "/metrics").await
    );
    let figures = get(&platform, Service::Analytics, "/metrics").await;
    assert_eq!(figures["orders_per_minute"], 1.0, "{figures}");
    assert_eq!(figures["malformed"], 0, "{figures}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analytics_throttle_takes_seconds_or_milliseconds() {
    let platform = start(&example("streaming-replay")).await;
    let base = platform.endpoint(Service::Analytics).unwrap();
    let client = reqwest::Client::new();
    let cases = [
        (json!({"seconds": 0.1}), 100),
        (json!({"ms": 5}), 5),
        (json!({"throttle_ms": 0}), 0),
        (json!({"throttle": "250ms"}), 250),
    ];
    for (body, ms) in cases {
        let response = client
            .post(format!("{base}/admin/throttle"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["ms"], ms, "{body}");
        let figures = get(&platform, Service::Analytics, "/metrics").await;
        assert_eq!(figures["throttle_ms"], ms, "{body}");
    }
    let response = client
        .post(format!("{base}/admin/throttle"))
        .json(&json!({"seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["detail"],
        "`seconds` must be a number of seconds from 0 to 10 (10000 ms), got 60"
    );
    platform.shutdown().await;
}
