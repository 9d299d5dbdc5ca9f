//! A part scaled out on one PostgreSQL: three inventory processes competing
//! for one queue reserve every order once, whatever is redelivered and
//! whichever of them dies, and answer alike; a lab's faults reach all three;
//! two analytics processes in one group count the group's totals.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use foodlab_domain::Faults;
use foodlab_lab::faults::FaultClient;
use foodlab_lab::spec::{Inject, Replicas};
use foodlab_lab::{FoodLab, LocalPlatform, Platform, Quiet, Service, Transport, Verdict, run_lab};
use foodlab_store::Database;
use foodlab_store::testing::TestDatabase;
use serde_json::{Value, json};
use support::{
    died_and_restarted, eventually, get_url, messages_counted_at, part_options, post, sigkill,
};

const ORDERS: u64 = 10_000;
const DUPLICATED: u64 = 200;
const COPIES: u32 = 3;
const STOCK: u64 = 12_000;

async fn three_inventories(transport: Transport, db: &TestDatabase) -> LocalPlatform {
    let Database::Postgres(url) = &db.database else {
        panic!("a PostgreSQL test database was asked for");
    };
    let mut options = part_options(transport);
    options.replicas = Replicas::parse("inventory=3").unwrap();
    options.database_url = Some(url.clone());
    options
        .env
        .push(("FOODLAB_STOCK".into(), format!("burger={STOCK}")));
    LocalPlatform::start(options).await.unwrap()
}

/// `GET path` on every inventory process.
async fn on_each_inventory(platform: &LocalPlatform, path: &str) -> Vec<Value> {
    let mut answers = Vec::new();
    for endpoint in platform.endpoints(Service::Inventory).await.unwrap() {
        answers.push(get_url(&format!("{endpoint}{path}")).await);
    }
    answers
}

/// The `delay_ms` of every inventory process's `/admin/faults`.
async fn delays(platform: &LocalPlatform) -> Vec<Value> {
    on_each_inventory(platform, "/admin/faults")
        .await
        .into_iter()
        .map(|faults| faults["delay_ms"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_inventories_on_one_queue_reserve_each_order_once_through_a_sigkill() {
    let db = foodlab_store::testing::postgres().await;
    let platform = three_inventories(Transport::Rabbitmq, &db).await;
    let order = platform.endpoint(Service::Order).unwrap();
    let inventories = platform.endpoints(Service::Inventory).await.unwrap();
    assert_eq!(inventories.len(), 3);
    let mut events = platform.events();

    let bulk = json!({"count": ORDERS, "item": "burger", "quantity": 1});
    let (status, body) = post(&platform, Service::Order, "/orders/bulk", bulk).await;
    assert_eq!(status, 201, "{body}");
    // A producer that retried: the same order and message id, three times.
    let amqp = platform.rabbitmq().unwrap().amqp_url();
    let inject = Inject {
        duplicate_orders: DUPLICATED as u32,
        copies: COPIES,
        poison_messages: 0,
    };
    let duplicated = foodlab_lab::inject::publish(&amqp, &inject, "burger", 1)
        .await
        .unwrap();
    assert_eq!(duplicated.len() as u64, DUPLICATED);

    // One of the three dies in the middle of the drain, its deliveries unacked.
    let reserved = |stats: &Value| stats["reserved_orders"].as_u64().unwrap_or(0);
    assert!(
        eventually(120, || async {
            reserved(&get_url(&format!("{}/stats", inventories[0])).await) >= ORDERS / 4
        })
        .await,
        "the drain never reached a quarter of the orders"
    );
    let second = platform.replica_pids(Service::Inventory).await[1].unwrap();
    sigkill(second);
    // Read at once: the restart that follows can outlast the rest of the drain.
    let at_the_kill = reserved(&get_url(&format!("{}/stats", inventories[0])).await);
    assert!(
        at_the_kill < ORDERS + DUPLICATED,
        "the drain was over before the kill ({at_the_kill} reserved): nothing was tested"
    );
    died_and_restarted(&mut events, Service::Inventory, 30).await;

    let all = ORDERS + DUPLICATED;
    assert!(
        eventually(180, || async {
            let counts = get_url(&format!("{order}/orders/counts")).await;
            counts["reserved"].as_u64() == Some(ORDERS)
                && reserved(&get_url(&format!("{}/stats", inventories[0])).await) == all
        })
        .await,
        "not every order was reserved: {} / {}",
        get_url(&format!("{order}/orders/counts")).await,
        get_url(&format!("{}/stats", inventories[0])).await
    );
    // Settled: nothing more arrives late (a redelivery reserving again).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let counts = get_url(&format!("{order}/orders/counts")).await;
    for status in ["placed", "failed", "timeout", "notified"] {
        assert_eq!(counts[status], json!(0), "{status}: {counts}");
    }
    let stocks = on_each_inventory(&platform, "/stock").await;
    for stock in &stocks {
        assert_eq!(stock["burger"], json!(STOCK - all), "{stocks:?}");
    }
    for stats in on_each_inventory(&platform, "/stats").await {
        assert_eq!(reserved(&stats), all, "{stats}");
        assert_eq!(stats["out_of_stock_orders"], json!(0), "{stats}");
    }
    for order_id in duplicated.iter().take(5) {
        let reservation = get_url(&format!("{}/reservations/{order_id}", inventories[2])).await;
        assert_eq!(
            reservation["order_id"],
            json!(order_id.to_string()),
            "{reservation}"
        );
    }
    // Competing consumers: the two that lived both took a share of the queue.
    let mut shares = Vec::new();
    for replica in [0, 2] {
        shares
            .push(messages_counted_at(&inventories[replica], "inventory_queue", "processed").await);
    }
    assert!(
        shares.iter().all(|&n| n > 0 && n < all),
        "processed by the first and third: {shares:?} of {all}"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_reaches_every_inventory_process_and_is_cleared_on_all() {
    let db = foodlab_store::testing::postgres().await;
    let platform = three_inventories(Transport::Rest, &db).await;
    let faults = Faults {
        delay_ms: 150,
        ..Faults::default()
    };
    let client = FaultClient::new().unwrap().patient(Duration::from_secs(10));
    let reached = client
        .set(&platform, Service::Inventory, &faults)
        .await
        .unwrap();
    assert_eq!(reached, 3);
    assert_eq!(
        delays(&platform).await,
        [json!(150), json!(150), json!(150)]
    );

    // Orders go round the three and reserve from one stock.
    let order = platform.endpoint(Service::Order).unwrap();
    for _ in 0..6 {
        let response = reqwest::Client::new()
            .post(format!("{order}/order"))
            .json(&json!({"item": "burger", "quantity": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
    for stock in on_each_inventory(&platform, "/stock").await {
        assert_eq!(stock["burger"], json!(STOCK - 12));
    }

    // Scaled to one, the processes stopped are not asked (they would not answer).
    platform.scale(Service::Inventory, 1).await.unwrap();
    let reached = client
        .set(&platform, Service::Inventory, &Faults::default())
        .await
        .unwrap();
    assert_eq!(reached, 1);
    platform.scale(Service::Inventory, 3).await.unwrap();
    // Started again, the other two have the start-up faults (none), as a new pod has.
    assert_eq!(delays(&platform).await, [json!(0), json!(0), json!(0)]);
    platform.shutdown().await;
}

/// A lab of `manifests/scale-out/` run on one machine at the replicas it
/// declares; the database is returned with the platform, as it must outlive it.
async fn run_scale_out_lab(name: &str) -> (TestDatabase, LocalPlatform, foodlab_lab::LabReport) {
    let db = foodlab_store::testing::postgres().await;
    let Database::Postgres(url) = &db.database else {
        panic!("a PostgreSQL test database was asked for");
    };
    let path = support::repo().join(format!("manifests/scale-out/{name}.yaml"));
    let lab: FoodLab = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(lab.spec.replicas.get(Service::Inventory), Some(3));
    let mut options = support::options(&lab);
    options.database_url = Some(url.clone());
    let platform = LocalPlatform::start(options).await.unwrap();
    assert_eq!(
        platform.endpoints(Service::Inventory).await.unwrap().len(),
        3
    );
    let report = run_lab(&platform, &lab.spec, std::sync::Arc::new(Quiet))
        .await
        .unwrap();
    (db, platform, report)
}

/// The record of a lab's one PodKill: which of the three inventories it
/// killed (its replica number), checked to be exactly one of them.
fn killed_one_inventory(report: &foodlab_lab::LabReport) -> usize {
    let record = &report.chaos[0];
    assert!(
        record.disrupted && record.restored_at.is_some(),
        "{record:?}"
    );
    let names: Vec<String> = (0..3)
        .map(|n| foodlab_lab::platform::local::process_name(Service::Inventory, n))
        .collect();
    match record.pods.as_slice() {
        [pod] => names
            .iter()
            .position(|name| name == pod)
            .unwrap_or_else(|| panic!("{pod} is not one of {names:?}")),
        pods => panic!("mode one killed {pods:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_one_of_three_down_lab_passes_and_fails_at_most_the_calls_in_flight() {
    let (_db, platform, report) = run_scale_out_lab("sync-one-of-three-down").await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    let killed = killed_one_inventory(&report);
    let r = &report.results;
    assert_eq!(r.accepted + r.failed, 3000, "{r:?}");
    assert!(
        r.failed <= 8,
        "{} failed: more than the calls in flight",
        r.failed
    );
    assert_eq!(r.stock_consumed, Some(r.reserved), "{r:?}");
    println!(
        "inventory replica {killed} killed: {} reserved, {} failed",
        r.reserved, r.failed
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streaming_rebalance_lab_reserves_every_order_once_through_the_kill() {
    let (_db, platform, report) = run_scale_out_lab("streaming-rebalance").await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    let killed = killed_one_inventory(&report);
    let r = &report.results;
    assert_eq!(
        (r.accepted, r.reserved, r.reservations, r.stock_consumed),
        (10_000, 10_000, Some(10_000), Some(10_000)),
        "{r:?}"
    );
    println!("inventory replica {killed} killed mid-burst: {r:?}");
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_competing_consumers_lab_passes_at_three_inventories() {
    let (_db, platform, report) = run_scale_out_lab("async-competing-consumers").await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    let r = &report.results;
    assert_eq!(
        (r.accepted, r.reserved, r.reservations),
        (2000, 2000, Some(2000))
    );
    assert_eq!(r.stock_consumed, Some(2000));
    for stock in on_each_inventory(&platform, "/stock").await {
        assert_eq!(
            (&stock["burger"], &stock["pizza"]),
            (&json!(4000), &json!(4000))
        );
    }
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shape_the_part_cannot_run_is_refused_before_anything_starts() {
    let refused = |transport, shape: &str, database_url: Option<&str>| {
        let mut options = part_options(transport);
        options.replicas = Replicas::parse(shape).unwrap();
        options.database_url = database_url.map(str::to_owned);
        async move {
            LocalPlatform::start(options)
                .await
                .err()
                .expect("the part started")
                .to_string()
        }
    };
    let no_database = refused(Transport::Rabbitmq, "inventory=2", None).await;
    assert!(
        no_database
            .contains("inventory=2: more than one process of a service needs a shared database"),
        "{no_database}"
    );
    // The spec's own rules, the same for `foodlab up --replicas` as for a lab.
    let url = Some("postgres://foodlab:foodlab@127.0.0.1:1/foodlab");
    let missing = refused(Transport::Rest, "analytics=1", url).await;
    assert!(
        missing.contains("the sync-rest part has no analytics service"),
        "{missing}"
    );
}

/// Two analytics processes in one group, one SIGKILLed while the orders
/// stream: each reads its share of the partitions, and either answers with
/// the group's totals; a replay asked of one is read again by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_analytics_in_one_group_count_the_group_s_totals_through_a_kill_and_a_replay() {
    const BATCHES: u64 = 10;
    let db = foodlab_store::testing::postgres().await;
    let Database::Postgres(url) = &db.database else {
        panic!("a PostgreSQL test database was asked for");
    };
    let mut options = part_options(Transport::Kafka);
    options.replicas = Replicas::parse("analytics=2").unwrap();
    options.database_url = Some(url.clone());
    options
        .env
        .push(("FOODLAB_STOCK".into(), format!("burger={STOCK}")));
    let platform = LocalPlatform::start(options).await.unwrap();
    let analytics = platform.endpoints(Service::Analytics).await.unwrap();
    assert_eq!(analytics.len(), 2);
    let order_topic = platform.kafka().unwrap().order_topic.clone();
    let mut events = platform.events();
    let stream = async {
        for _ in 0..BATCHES {
            let bulk = json!({"count": 100, "item": "burger", "quantity": 1});
            let (status, body) = post(&platform, Service::Order, "/orders/bulk", bulk).await;
            assert_eq!(status, 201, "{body}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let kill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sigkill(platform.replica_pids(Service::Analytics).await[1].unwrap());
        died_and_restarted(&mut events, Service::Analytics, 30).await;
    };
    tokio::join!(stream, kill);
    let orders = 100 * BATCHES;
    let figures = |endpoint: String| async move { get_url(&format!("{endpoint}/metrics")).await };
    let counted = |endpoint: &String| {
        let endpoint = endpoint.clone();
        async move {
            let now = figures(endpoint).await;
            now["total_orders"] == orders && now["total_inventory_events"] == orders
        }
    };
    for endpoint in &analytics {
        assert!(
            eventually(60, || counted(endpoint)).await,
            "{}",
            figures(endpoint.clone()).await
        );
    }
    // What each member has read of the order topic so far (since its last start).
    let read_of = |endpoint: &String| {
        let (endpoint, topic) = (endpoint.clone(), order_topic.clone());
        async move {
            messages_counted_at(&endpoint, &topic, "processed").await
                + messages_counted_at(&endpoint, &topic, "duplicate").await
        }
    };
    let mut read_before = Vec::new();
    for endpoint in &analytics {
        read_before.push(read_of(endpoint).await);
    }
    let before = figures(analytics[0].clone()).await;
    assert_eq!(before["duplicates"], json!(0), "{before}");

    // A replay asked of the second: both members rewind their partitions.
    let response = reqwest::Client::new()
        .post(format!("{}/admin/reset-offsets", analytics[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["events"], json!(2 * orders), "{answer}");
    let replayed = eventually(60, || async {
        let now = figures(analytics[0].clone()).await;
        now["last_replay"]["seconds"].is_number() && now["replays"] == 2
    })
    .await;
    let after = figures(analytics[0].clone()).await;
    assert!(replayed, "{after}");
    for figure in [
        "total_orders",
        "total_inventory_events",
        "reserved",
        "failures",
        "orders_by_minute",
        "elapsed_seconds",
        "duplicates",
    ] {
        assert_eq!(
            before[figure], after[figure],
            "{figure}: {before} vs {after}"
        );
    }
    assert_eq!(after["last_replay"]["events"], json!(2 * orders), "{after}");
    // Both members read a share of the order topic again, and the shares make
    // it whole. (Not counted before the replay: a member killed early may come
    // back after the other has read everything.)
    let mut shares = Vec::new();
    for (endpoint, before) in analytics.iter().zip(&read_before) {
        let now = read_of(endpoint).await;
        let share = now.checked_sub(*before).unwrap_or_else(|| {
            panic!("{endpoint}: read {now} after the replay, {before} before: it restarted")
        });
        assert!(
            share > 0,
            "{endpoint}: read none of the order topic in the replay"
        );
        shares.push(share);
    }
    assert_eq!(shares.iter().sum::<u64>(), orders, "{shares:?}");
    assert_eq!(
        figures(analytics[1].clone()).await["total_orders"],
        json!(orders)
    );
    platform.shutdown().await;
}

/// A PodKill of mode `one` on three inventories, declared by the lab: one
/// process killed (SIGKILL: grace period 0) and named in the record, the
/// other two untouched, the killed one started again, every order terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_kill_of_mode_one_kills_exactly_one_of_three_inventories_and_names_it() {
    let db = foodlab_store::testing::postgres().await;
    let platform = three_inventories(Transport::Rest, &db).await;
    let spec: foodlab_lab::FoodLabSpec = serde_json::from_value(json!({
        "transport": "rest",
        "workload": {"orders": 400, "concurrency": 4, "items": ["burger"]},
        "faults": {"inventory": {"delaySeconds": 0.005}},
        "settings": {"stock": format!("burger={STOCK}")},
        "chaos": [{"action": "PodKill", "target": "inventory", "after": "500ms", "mode": "one"}],
        "expect": {"allOrdersTerminal": true}
    }))
    .unwrap();
    let before = platform.replica_pids(Service::Inventory).await;
    let mut events = platform.events();
    let report = run_lab(&platform, &spec, std::sync::Arc::new(Quiet))
        .await
        .unwrap();
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    let killed = killed_one_inventory(&report);
    died_and_restarted(&mut events, Service::Inventory, 30).await;
    let after = platform.replica_pids(Service::Inventory).await;
    for replica in 0..3 {
        let replaced = before[replica] != after[replica];
        assert_eq!(
            replaced,
            replica == killed,
            "replica {replica}: {before:?} -> {after:?}, replica {killed} killed"
        );
    }
    let r = &report.results;
    assert_eq!(r.accepted + r.failed, 400, "{r:?}");
    // At most the calls in flight on the killed one fail.
    assert!(r.failed <= 4, "{r:?}");
    platform.shutdown().await;
}
