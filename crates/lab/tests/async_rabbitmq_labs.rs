//! The async-rabbitmq labs and recovery cases, on the local platform against
//! the project's real RabbitMQ on 127.0.0.1 (started if not running). Each
//! platform gets a vhost of its own, so tests run side by side.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use foodlab_domain::{Envelope, Event, ItemName, OrderId, OrderLine};
use foodlab_lab::platform::local::ServiceEvent;
use foodlab_lab::{LocalPlatform, Platform, Service, Verdict};
use foodlab_transport::rabbitmq::{self, Publisher, Topology};
use serde_json::{Value, json};
use support::{
    all_orders_settled, died_and_restarted, eventually, example, get, inventory_fails, options,
    order_statuses, post, start, statuses,
};

async fn publisher(platform: &LocalPlatform) -> (lapin::Connection, Publisher) {
    let url = platform.rabbitmq().unwrap().amqp_url();
    let connection = rabbitmq::connect(&url, "test").await.unwrap();
    let publisher = Publisher::new(&connection, Topology::default())
        .await
        .unwrap();
    (connection, publisher)
}

fn order_placed(item: &str, quantity: u32) -> Envelope {
    Envelope::new(
        OrderId::new(),
        "test".into(),
        jiff::Timestamp::now(),
        Event::OrderPlaced {
            customer_id: None,
            items: vec![OrderLine {
                item: ItemName::parse(item).unwrap(),
                quantity,
            }],
        },
    )
}

async fn stats(platform: &LocalPlatform) -> Value {
    get(platform, Service::Inventory, "/stats").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_drain_lab_reserves_every_order_after_a_five_second_outage() {
    let mut lab = example("async-backlog-drain");
    let step = &mut lab.spec.chaos[0];
    assert_eq!(step.duration, Some(Duration::from_secs(60)));
    step.after = Duration::from_secs(1);
    step.duration = Some(Duration::from_secs(5));
    lab.spec.workload.orders = 40;
    lab.spec.workload.rate_per_second = Some(5.0);
    lab.spec.expect.reservations = Some(40);
    let (platform, report) = support::run(&lab).await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    let r = &report.results;
    assert_eq!((r.accepted, r.reserved, r.reservations), (40, 40, Some(40)));
    assert_eq!(r.stock_consumed, Some(40));
    // Five seconds at five orders a second wait in the queue.
    assert!(r.max_backlog.unwrap() >= 15, "{r:?}");
    assert!(r.drain_seconds.is_some(), "{r:?}");
    assert_eq!(report.chaos[0].original_replicas, Some(1));
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_lab_reserves_each_duplicated_order_once() {
    let lab = example("async-idempotency");
    let (platform, report) = support::run(&lab).await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    // 10 through the API, 10 published three times each.
    assert_eq!(report.results.reservations, Some(20));
    assert_eq!(report.results.stock_consumed, Some(20));
    assert_eq!(report.results.dead_lettered, Some(0));
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_lab_dead_letters_exactly_the_poison_and_good_orders_flow() {
    let lab = example("async-poison");
    let (platform, report) = support::run(&lab).await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    assert_eq!(report.results.dead_lettered, Some(5));
    assert_eq!(report.results.reserved, 20);
    // Every dead letter carries its reason.
    let (connection, _) = publisher(&platform).await;
    let channel = connection.create_channel().await.unwrap();
    let mut reasons = Vec::new();
    while let Some(message) = channel
        .basic_get(
            Topology::default().dead_letter_queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        reasons.push(rabbitmq::reason_of(&message.delivery.properties).unwrap());
    }
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.starts_with("not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("missing field")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("quantity")),
        "{reasons:?}"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_after_an_inventory_restart_is_still_ignored() {
    let lab = example("async-idempotency");
    let platform = start(&lab).await;
    let (_connection, publisher) = publisher(&platform).await;
    let placed = order_placed("pizza", 3);
    publisher.publish(&placed).await.unwrap();
    assert!(
        eventually(10, || async {
            stats(&platform).await["reserved_orders"] == 1
        })
        .await
    );

    platform.scale(Service::Inventory, 0).await.unwrap();
    platform.scale(Service::Inventory, 1).await.unwrap();
    publisher.publish(&placed).await.unwrap();
    // A later order, to know the duplicate before it has been handled.
    publisher.publish(&order_placed("salad", 1)).await.unwrap();
    assert!(
        eventually(10, || async {
            stats(&platform).await["reserved_orders"] == 2
        })
        .await
    );
    let stock = get(&platform, Service::Inventory, "/stock").await;
    assert_eq!(
        (stock["pizza"].as_u64(), stock["salad"].as_u64()),
        (Some(97), Some(99))
    );
    platform.shutdown().await;
}

/// Places `n` orders of one burger each; every one accepted.
async fn burgers_accepted(platform: &LocalPlatform, n: usize) {
    for _ in 0..n {
        let body = json!({"item": "burger"});
        let (status, _) = post(platform, Service::Order, "/order", body).await;
        assert_eq!(status, 202);
    }
}

/// The `n` burger orders all settled, each reserved once: inventory's
/// decisions, its stock (100 at the start) and the orders' statuses agree.
async fn each_burger_reserved_once(platform: &LocalPlatform, n: usize) {
    assert!(eventually(20, || all_orders_settled(platform, n)).await);
    let stats = stats(platform).await;
    assert_eq!(stats["reserved_orders"], n, "{stats}");
    assert_eq!(
        get(platform, Service::Inventory, "/stock").await["burger"],
        100 - n
    );
    assert_eq!(order_statuses(platform).await, statuses(&[("reserved", n)]));
}

/// The poison lab's part with inventory aborting after its `commits`-th
/// committed decision; its supervisor restarts it without the crash point.
async fn with_crash_point(
    commits: u32,
) -> (
    LocalPlatform,
    tokio::sync::broadcast::Receiver<ServiceEvent>,
) {
    let mut options = options(&example("async-poison"));
    options.service_env.push((
        Service::Inventory,
        "FOODLAB_FAULT_CRASH_AFTER_COMMITS".into(),
        commits.to_string(),
    ));
    let platform = LocalPlatform::start(options).await.unwrap();
    let events = platform.events();
    platform
        .set_service_env(Service::Inventory, Vec::new())
        .await;
    (platform, events)
}

/// Inventory aborted at its crash point (SIGABRT), reported and restarted.
async fn aborted_and_restarted(
    events: &mut tokio::sync::broadcast::Receiver<ServiceEvent>,
    seconds: u64,
) {
    let death = died_and_restarted(events, Service::Inventory, seconds).await;
    assert!(death.to_string().contains("killed by SIGABRT"), "{death}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_crashing_between_commit_and_ack_never_reserves_twice() {
    let (platform, mut events) = with_crash_point(5).await;
    burgers_accepted(&platform, 20).await;
    aborted_and_restarted(&mut events, 10).await;
    each_burger_reserved_once(&platform, 20).await;
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_given_up_on_stays_failed_through_a_crash_and_takes_no_stock() {
    let (platform, mut events) = with_crash_point(1).await;
    // Failing until the restart, which comes without the faults.
    inventory_fails(&platform, true).await;
    let (status, _) = post(
        &platform,
        Service::Order,
        "/order",
        json!({"item": "salad"}),
    )
    .await;
    assert_eq!(status, 202);
    // Retried three times and dead-lettered, its end (failed) committed, and
    // inventory aborts before that end leaves: the delivery was not acked.
    aborted_and_restarted(&mut events, 20).await;
    // Redelivered to an inventory that no longer fails it: the decision taken
    // is replayed, not taken again.
    assert!(eventually(20, || all_orders_settled(&platform, 1)).await);
    let orders = get(&platform, Service::Order, "/orders").await;
    let order = &orders[0];
    assert_eq!(order["status"], "failed", "{order}");
    assert!(
        order["reason"].as_str().unwrap().contains("dead-lettered"),
        "{order}"
    );
    assert_eq!(stats(&platform).await["reserved_orders"], 0);
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await["salad"],
        100
    );
    let admin = platform.rabbitmq().unwrap();
    let dlq = Topology::default().dead_letter_queue;
    assert!(
        eventually(10, || async {
            admin.queue_depth(&dlq).await.unwrap().messages_ready == 1
        })
        .await,
        "{:?}",
        admin.queue_depth(&dlq).await
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_short_by_a_crash_is_redelivered_and_each_order_reserved_once() {
    let lab = example("async-poison");
    let platform = start(&lab).await;
    let mut events = platform.events();
    // A backlog first, so inventory takes its deliveries in batches.
    platform.scale(Service::Inventory, 0).await.unwrap();
    burgers_accepted(&platform, 30).await;
    let admin = platform.rabbitmq().unwrap().clone();
    assert!(
        eventually(20, || async {
            admin
                .queue_depth(Topology::INVENTORY_QUEUE)
                .await
                .is_ok_and(|depth| depth.messages_ready == 30)
        })
        .await
    );
    // It aborts after the 5th decision is committed, before any result of
    // its batch leaves; the supervisor restarts it without the crash point.
    let crash = vec![("FOODLAB_FAULT_CRASH_AFTER_COMMITS".into(), "5".into())];
    platform.set_service_env(Service::Inventory, crash).await;
    let started = platform.scale(Service::Inventory, 1).await;
    platform
        .set_service_env(Service::Inventory, Vec::new())
        .await;
    match started {
        // It died before it was ready: scaling said so, and it is retried.
        Err(error) => {
            assert!(error.to_string().contains("SIGABRT"), "{error}");
            let restarted = async {
                while !matches!(
                    events.recv().await.unwrap(),
                    ServiceEvent::Restarted {
                        service: Service::Inventory,
                        ..
                    }
                ) {}
            };
            tokio::time::timeout(Duration::from_secs(20), restarted)
                .await
                .unwrap();
        }
        Ok(()) => {
            let death = died_and_restarted(&mut events, Service::Inventory, 20).await;
            assert!(death.to_string().contains("killed by SIGABRT"), "{death}");
        }
    }
    each_burger_reserved_once(&platform, 30).await;
    // The batch committed before the crash came again, and its decisions
    // were replayed, not retaken.
    let replayed = support::messages_counted(
        &platform,
        Service::Inventory,
        Topology::INVENTORY_QUEUE,
        "duplicate",
    )
    .await;
    assert!(replayed >= 5, "{replayed} replayed");
    platform.shutdown().await;
}

/// A RabbitMQ node of this test's own (free ports, temporary data), stopped on drop.
struct PrivateBroker {
    dir: tempfile::TempDir,
    amqp: u16,
    management: u16,
    dist: u16,
}

impl PrivateBroker {
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            amqp: Self::free_port(),
            management: Self::free_port(),
            dist: Self::free_port(),
        }
    }

    fn script(&self, action: &str) -> bool {
        std::process::Command::new(support::repo().join("scripts/rabbitmq.sh"))
            .arg(action)
            .env("RABBITMQ_PORT", self.amqp.to_string())
            .env("RABBITMQ_MGMT_PORT", self.management.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist.to_string())
            .env("FOODLAB_RABBITMQ_DIR", self.dir.path())
            .status()
            .unwrap()
            .success()
    }

    fn broker(&self) -> foodlab_lab::platform::rabbitmq::RabbitBroker {
        foodlab_lab::platform::rabbitmq::RabbitBroker::At {
            management_url: format!("http://127.0.0.1:{}", self.management),
            amqp_host_port: format!("127.0.0.1:{}", self.amqp),
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.script("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_accepted_while_the_broker_is_down_are_reserved_when_it_returns() {
    let node = PrivateBroker::new();
    assert!(node.script("start"));
    let lab = example("async-poison");
    let mut options = options(&lab);
    options.broker = node.broker();
    let platform = LocalPlatform::start(options).await.unwrap();
    for _ in 0..5 {
        post(
            &platform,
            Service::Order,
            "/order",
            json!({"item": "salad"}),
        )
        .await;
    }
    assert!(eventually(10, || all_orders_settled(&platform, 5)).await);

    assert!(node.script("stop"));
    for _ in 0..10 {
        let (status, body) = post(
            &platform,
            Service::Order,
            "/order",
            json!({"item": "salad"}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    // The first five were reserved before the broker went away.
    assert_eq!(
        order_statuses(&platform).await,
        statuses(&[("placed", 10), ("reserved", 5)])
    );
    // Consumers are not ready without a broker; order stays ready (it takes
    // orders into its outbox) and says what it misses.
    let readyz = |service| {
        let url = format!("{}/readyz", platform.endpoint(service).unwrap());
        async move {
            let response = reqwest::get(url).await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, _) = readyz(Service::Inventory).await;
    assert_eq!(
        status, 503,
        "a consumer's readiness follows the broker connection"
    );
    let (status, report) = readyz(Service::Order).await;
    assert_eq!(
        (status, &report["checks"]["rabbitmq"]),
        (200, &json!(false)),
        "{report}"
    );

    assert!(node.script("start"));
    assert!(eventually(30, || all_orders_settled(&platform, 15)).await);
    assert_eq!(
        order_statuses(&platform).await,
        statuses(&[("reserved", 15)])
    );
    assert_eq!(stats(&platform).await["reserved_orders"], 15);
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await["salad"],
        85
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_orders_settle_with_exact_stock_arithmetic() {
    let lab = example("async-poison");
    let platform = start(&lab).await;
    let (status, body) = post(
        &platform,
        Service::Order,
        "/orders/bulk",
        json!({"count": 150, "item": "pizza", "quantity": 1}),
    )
    .await;
    assert_eq!((status, body), (201, json!({"count": 150})));
    assert!(eventually(20, || all_orders_settled(&platform, 150)).await);
    // 100 pizzas in stock: the first 100 decided are reserved, the rest fail.
    assert_eq!(
        order_statuses(&platform).await,
        statuses(&[("reserved", 100), ("failed", 50)])
    );
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await["pizza"],
        0
    );
    let (status, _) = post(
        &platform,
        Service::Order,
        "/orders/bulk",
        json!({"count": 0, "item": "pizza"}),
    )
    .await;
    assert_eq!(status, 422);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_failing_every_retry_is_dead_lettered_and_ends_failed() {
    let lab = example("async-poison");
    let platform = start(&lab).await;
    inventory_fails(&platform, true).await;
    for _ in 0..3 {
        post(
            &platform,
            Service::Order,
            "/order",
            json!({"item": "salad"}),
        )
        .await;
    }
    assert!(eventually(20, || all_orders_settled(&platform, 3)).await);
    let orders = get(&platform, Service::Order, "/orders").await;
    for order in orders.as_array().unwrap() {
        assert_eq!(order["status"], "failed", "{order}");
        assert!(
            order["reason"].as_str().unwrap().contains("dead-lettered"),
            "{order}"
        );
    }
    let admin = platform.rabbitmq().unwrap();
    let dlq = Topology::default().dead_letter_queue;
    assert!(
        eventually(10, || async {
            admin.queue_depth(&dlq).await.unwrap().messages_ready == 3
        })
        .await
    );
    // Faults cover every business endpoint, reads included: lift them to look.
    inventory_fails(&platform, false).await;
    assert_eq!(stats(&platform).await["reserved_orders"], 0);
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await["salad"],
        100
    );
    platform.shutdown().await;
}
