//! The streaming-kafka labs and failure cases, against the project's Apache
//! Kafka on 127.0.0.1 (started by its script if needed), inspected with
//! Kafka's own tools as well. Each platform gets topics and consumer groups
//! of its own.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use foodlab_lab::{LocalPlatform, Platform, Service, Verdict};
use foodlab_transport::kafka::{self, KafkaArgs};
use rdkafka::message::OwnedHeaders;
use serde_json::{Value, json};
use support::{
    all_orders_settled, died_and_restarted, eventually, example, get, get_url, messages_counted,
    options, order_statuses, post, read_topic, run, statuses,
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
    assert_eq!(answer["partitions_rewound_here"], 6, "{answer}");
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

/// How many orders the results on the inventory topic are for, checking that
/// each is a reservation with one message id (a result produced again, after
/// a crash or a rebalance, carries the same id).
fn orders_reserved_once_each(results: &[Value]) -> usize {
    let mut ids_per_order: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for result in results {
        assert_eq!(result["type"], "InventoryReserved", "{result}");
        ids_per_order
            .entry(result["order_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(result["message_id"].as_str().unwrap().to_owned());
    }
    assert!(ids_per_order.values().all(|ids| ids.len() == 1));
    ids_per_order.len()
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
    assert_eq!(orders_reserved_once_each(&results), 400);
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
    let producer = args.producer("test-poison", &Default::default()).unwrap();
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

/// Runs one of Kafka's own command-line tools (`scripts/kafka.sh run`); whether
/// it succeeded, and what it printed (stdout, then stderr).
async fn kafka_tool(args: &[&str]) -> (bool, String) {
    let mut command = std::process::Command::new(support::repo().join("scripts/kafka.sh"));
    command.arg("run").args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// One row of `kafka-consumer-groups --describe` or `--reset-offsets`.
#[derive(Debug)]
struct GroupRow {
    topic: String,
    partition: i32,
    /// LAG of `--describe`, NEW-OFFSET of `--reset-offsets` (`-`, as
    /// before a first commit, reads as -1).
    figure: i64,
    /// CONSUMER-ID of `--describe`: `-` when no member holds the partition.
    consumer: String,
}

/// The tool's rows for `group`, in the order it printed them.
fn group_rows(printed: &str, group: &str, figure_column: usize) -> Vec<GroupRow> {
    printed
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|columns| columns.first() == Some(&group))
        .map(|columns| GroupRow {
            topic: columns[1].to_owned(),
            partition: columns[2].parse().unwrap(),
            figure: match columns[figure_column] {
                "-" => -1,
                figure => figure.parse().unwrap(),
            },
            consumer: columns.get(6).copied().unwrap_or("-").to_owned(),
        })
        .collect()
}

async fn describe_group(
    names: &foodlab_lab::platform::kafka::KafkaNames,
    group: &str,
) -> Vec<GroupRow> {
    let (ok, printed) = kafka_tool(&[
        "kafka-consumer-groups",
        "--bootstrap-server",
        &names.brokers,
        "--describe",
        "--group",
        group,
    ])
    .await;
    assert!(ok, "{printed}");
    group_rows(&printed, group, 5)
}

async fn reset_to_earliest(names: &foodlab_lab::platform::kafka::KafkaNames) -> (bool, String) {
    kafka_tool(&[
        "kafka-consumer-groups",
        "--bootstrap-server",
        &names.brokers,
        "--group",
        &names.analytics_group,
        "--topic",
        &names.order_topic,
        "--topic",
        &names.inventory_topic,
        "--reset-offsets",
        "--to-earliest",
        "--execute",
    ])
    .await
}

const FIGURES: [&str; 4] = [
    "total_orders",
    "total_inventory_events",
    "failures",
    "reserved",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_kafka_consumer_groups_reset_while_analytics_is_stopped() {
    let lab = example("streaming-replay");
    let mut options = options(&lab);
    // Some orders refused, so the replay has failures to reproduce.
    options.service_env.push((
        Service::Inventory,
        "FOODLAB_FAULT_FAIL_RATE".into(),
        "0.1".into(),
    ));
    let platform = LocalPlatform::start(options).await.unwrap();
    let names = platform.kafka().unwrap().clone();
    bulk(&platform, 150).await;
    assert!(eventually(60, || all_orders_settled(&platform, 150)).await);
    assert!(
        eventually(30, || async {
            let figures = get(&platform, Service::Analytics, "/metrics").await;
            let lag = get(&platform, Service::Analytics, "/lag").await;
            figures["total_inventory_events"] == 150 && lag["groups"][0]["total_lag"] == 0
        })
        .await
    );
    let before = get(&platform, Service::Analytics, "/metrics").await;
    assert_eq!(before["total_orders"], 150, "{before}");

    // While analytics reads, it is a member of the group, and the tool refuses.
    let (_, printed) = reset_to_earliest(&names).await;
    assert!(
        printed.contains("can only be reset if the group"),
        "{printed}"
    );
    assert!(
        group_rows(&printed, &names.analytics_group, 3).is_empty(),
        "{printed}"
    );

    platform.scale(Service::Analytics, 0).await.unwrap();
    let (ok, printed) = reset_to_earliest(&names).await;
    assert!(ok, "{printed}");
    let reset = group_rows(&printed, &names.analytics_group, 3);
    assert_eq!(reset.len(), 6, "3 partitions of 2 topics: {printed}");
    assert!(reset.iter().all(|row| row.figure == 0), "{printed}");
    // The group's committed offsets are back at the start: the whole log lags.
    let lagging = describe_group(&names, &names.analytics_group).await;
    assert_eq!(lagging.iter().map(|row| row.figure).sum::<i64>(), 300);

    platform.scale(Service::Analytics, 1).await.unwrap();
    assert!(
        eventually(60, || async {
            let lag = get(&platform, Service::Analytics, "/lag").await;
            let figures = get(&platform, Service::Analytics, "/metrics").await;
            lag["groups"][0]["total_lag"] == 0 && figures["last_replay"]["seconds"].is_number()
        })
        .await
    );
    // The offsets read again are ones the group's store has: nothing is
    // counted twice, and no replay was needed.
    let after = get(&platform, Service::Analytics, "/metrics").await;
    assert_eq!(after["replays"], 1, "{after}");
    assert_eq!(after["duplicates"], 0, "{after}");
    for figure in FIGURES {
        assert_eq!(
            before[figure], after[figure],
            "{figure}: {before} vs {after}"
        );
    }
    let members = describe_group(&names, &names.analytics_group).await;
    assert_eq!(members.len(), 6);
    assert!(
        members
            .iter()
            .all(|row| row.figure == 0 && row.consumer != "-"),
        "{members:?}"
    );
    platform.shutdown().await;
}

async fn throttle(platform: &LocalPlatform, ms: u64) {
    let (status, answer) = post(
        platform,
        Service::Analytics,
        "/admin/throttle",
        json!({ "ms": ms }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_groups_describe_shows_analytics_lag_under_a_throttle_then_none() {
    let lab = example("streaming-lag");
    let platform = LocalPlatform::start(options(&lab)).await.unwrap();
    let names = platform.kafka().unwrap().clone();
    // Each event waits a second: the log grows far faster than analytics reads it.
    throttle(&platform, 1000).await;
    bulk(&platform, 100).await;
    assert!(eventually(60, || all_orders_settled(&platform, 100)).await);

    let throttled = describe_group(&names, &names.analytics_group).await;
    assert_eq!(throttled.len(), 6, "{throttled:?}");
    let lag: i64 = throttled.iter().map(|row| row.figure).sum();
    assert!(lag > 0, "{throttled:?}");
    assert!(
        throttled
            .iter()
            .all(|row| row.consumer.starts_with("analytics")),
        "{throttled:?}"
    );
    let topics: BTreeSet<&str> = throttled.iter().map(|row| row.topic.as_str()).collect();
    assert_eq!(
        topics,
        BTreeSet::from([names.order_topic.as_str(), names.inventory_topic.as_str()])
    );

    throttle(&platform, 0).await;
    assert!(
        eventually(60, || async {
            get(&platform, Service::Analytics, "/lag").await["groups"][0]["total_lag"] == 0
        })
        .await
    );
    let drained = describe_group(&names, &names.analytics_group).await;
    assert_eq!(drained.len(), 6, "{drained:?}");
    assert!(drained.iter().all(|row| row.figure == 0), "{drained:?}");
    let partitions: BTreeSet<i32> = drained.iter().map(|row| row.partition).collect();
    assert_eq!(partitions, BTreeSet::from([0, 1, 2]));
    let figures = get(&platform, Service::Analytics, "/metrics").await;
    assert_eq!(
        (&figures["total_orders"], &figures["total_inventory_events"]),
        (&json!(100), &json!(100)),
        "{figures}"
    );
    platform.shutdown().await;

    // The run's own topics and groups go with it.
    let (ok, topics) = kafka_tool(&[
        "kafka-topics",
        "--bootstrap-server",
        &names.brokers,
        "--list",
    ])
    .await;
    assert!(ok, "{topics}");
    for topic in [&names.order_topic, &names.inventory_topic] {
        assert!(
            !topics.lines().any(|line| line == topic),
            "{topic} left: {topics}"
        );
    }
    let (ok, groups) = kafka_tool(&[
        "kafka-consumer-groups",
        "--bootstrap-server",
        &names.brokers,
        "--list",
    ])
    .await;
    assert!(ok, "{groups}");
    for group in [
        &names.analytics_group,
        &names.inventory_group,
        &names.order_group,
    ] {
        assert!(
            !groups.lines().any(|line| line == group),
            "{group} left: {groups}"
        );
    }
}

/// A broker of the test's own (`scripts/kafka.sh` on another port, data in a
/// temporary directory), stopped when dropped.
struct OwnBroker {
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnBroker {
    fn script(&self, command: &str) {
        let status = std::process::Command::new(support::repo().join("scripts/kafka.sh"))
            .arg(command)
            .env("KAFKA_PORT", self.port.to_string())
            .env("FOODLAB_KAFKA_DIR", self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "kafka.sh {command} on port {}", self.port);
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.script("stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_in_the_middle_of_a_burst_loses_no_order_and_reserves_none_twice() {
    let broker = OwnBroker {
        port: 19092,
        dir: tempfile::tempdir().unwrap(),
    };
    tokio::task::block_in_place(|| broker.script("start"));
    let lab = example("streaming-burst");
    let mut options = options(&lab);
    options.kafka = foodlab_lab::platform::kafka::KafkaBroker::At {
        brokers: broker.brokers(),
    };
    options.env = vec![("FOODLAB_STOCK".into(), "burger=2000".into())];
    // Decisions slow enough that the restart lands while orders are still coming.
    options.service_env.push((
        Service::Inventory,
        "FOODLAB_FAULT_DELAY_MS".into(),
        "5".into(),
    ));
    let platform = LocalPlatform::start(options).await.unwrap();
    bulk(&platform, 1000).await;
    assert!(
        eventually(60, || async {
            get(&platform, Service::Inventory, "/stats").await["reserved_orders"]
                .as_u64()
                .is_some_and(|n| n >= 50)
        })
        .await
    );
    tokio::task::block_in_place(|| broker.script("stop"));
    let at_stop = get(&platform, Service::Inventory, "/stats").await["reserved_orders"]
        .as_u64()
        .unwrap();
    assert!(
        at_stop < 1000,
        "the burst was over before the broker stopped"
    );
    tokio::task::block_in_place(|| broker.script("start"));

    assert!(eventually(120, || all_orders_settled(&platform, 1000)).await);
    assert_eq!(
        order_statuses(&platform).await,
        statuses(&[("reserved", 1000)])
    );
    let stats = get(&platform, Service::Inventory, "/stats").await;
    assert_eq!(stats["reserved_orders"], 1000, "{stats}");
    assert_eq!(stats["units_reserved"], 1000, "{stats}");
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await["burger"],
        1000
    );
    // One decision per order: however often a result was produced again,
    // it carries the same message id.
    let results = read_topic(
        &kafka_args(&platform),
        &platform.kafka().unwrap().inventory_topic,
    )
    .await;
    let mut ids_per_order: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for result in &results {
        ids_per_order
            .entry(result["order_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(result["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids_per_order.len(), 1000);
    assert!(ids_per_order.values().all(|ids| ids.len() == 1));
    // After the broker's restart analytics' group rejoins before it reads on;
    // on two busy cores that has taken over 60 s. The count stays exact.
    let counted = eventually(120, || async {
        let figures = get(&platform, Service::Analytics, "/metrics").await;
        figures["total_orders"] == 1000 && figures["total_inventory_events"] == 1000
    })
    .await;
    let figures = get(&platform, Service::Analytics, "/metrics").await;
    assert!(
        counted,
        "analytics counted {} orders and {} inventory events of 1000 each within 120 s (lag: {})",
        figures["total_orders"],
        figures["total_inventory_events"],
        get(&platform, Service::Analytics, "/lag").await
    );
    platform.shutdown().await;
}

/// Three inventory processes on one PostgreSQL split the three partitions of
/// the order topic as one consumer group; one is SIGKILLed in the middle of a
/// 10,000-order burst, the group rebalances, and every order is decided once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_inventories_in_one_group_decide_each_order_once_through_a_rebalance() {
    const ORDERS: u64 = 10_000;
    const STOCK: u64 = 12_000;
    let db = foodlab_store::testing::postgres().await;
    let foodlab_store::Database::Postgres(url) = &db.database else {
        panic!("a PostgreSQL test database was asked for");
    };
    let mut options = options(&example("streaming-burst"));
    options.replicas = foodlab_lab::spec::Replicas::parse("inventory=3").unwrap();
    options.database_url = Some(url.clone());
    options.env = vec![("FOODLAB_STOCK".into(), format!("burger={STOCK}"))];
    let platform = LocalPlatform::start(options).await.unwrap();
    let names = platform.kafka().unwrap().clone();
    let inventories = platform.endpoints(Service::Inventory).await.unwrap();
    let mut events = platform.events();

    // `kafka-consumer-groups --describe`: three members, a partition each.
    let members = || async {
        describe_group(&names, &names.inventory_group)
            .await
            .into_iter()
            .filter(|row| row.topic == names.order_topic && row.consumer != "-")
            .map(|row| row.consumer)
            .collect::<BTreeSet<String>>()
    };
    let joined = eventually(60, || async { members().await.len() == 3 }).await;
    assert!(joined, "the group has members {:?}", members().await);

    bulk(&platform, ORDERS).await;
    let reserved = |stats: &Value| stats["reserved_orders"].as_u64().unwrap_or(0);
    let first_stats = format!("{}/stats", inventories[0]);
    let stats_of_first = || get_url(&first_stats);
    assert!(
        eventually(120, || async {
            reserved(&stats_of_first().await) >= ORDERS / 4
        })
        .await,
        "the burst never reached a quarter of the orders"
    );
    let second = platform.replica_pids(Service::Inventory).await[1].unwrap();
    support::sigkill(second);
    // Read at once: the restart that follows can outlast the rest of the burst.
    let at_kill = reserved(&stats_of_first().await);
    assert!(
        at_kill < ORDERS,
        "the burst was decided before the kill: nothing was tested"
    );
    died_and_restarted(&mut events, Service::Inventory, 30).await;

    let order = platform.endpoint(Service::Order).unwrap();
    assert!(
        eventually(180, || async {
            get_url(&format!("{order}/orders/counts")).await["reserved"] == ORDERS
        })
        .await,
        "{}",
        get_url(&format!("{order}/orders/counts")).await
    );
    for inventory in &inventories {
        let stats = get_url(&format!("{inventory}/stats")).await;
        assert_eq!(reserved(&stats), ORDERS, "{stats}");
        assert_eq!(stats["units_reserved"], ORDERS, "{stats}");
        let stock = get_url(&format!("{inventory}/stock")).await;
        assert_eq!(stock["burger"], STOCK - ORDERS, "{stock}");
    }
    // One decision per order on the result topic, however often it was read.
    let results = read_topic(&kafka_args(&platform), &names.inventory_topic).await;
    assert_eq!(orders_reserved_once_each(&results) as u64, ORDERS);
    // The lag drained: the group committed to the end of every partition.
    assert!(
        eventually(60, || async {
            describe_group(&names, &names.inventory_group)
                .await
                .iter()
                .filter(|row| row.topic == names.order_topic)
                .all(|row| row.figure == 0)
        })
        .await
    );
    platform.shutdown().await;
}

/// Analytics SIGKILLed while orders keep coming: the restarted reader joins,
/// rewinds to the earliest offsets while events are still being written,
/// and counts every one of them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_restarted_in_the_middle_of_a_stream_counts_every_event() {
    let mut options = options(&example("streaming-burst"));
    options.env = vec![("FOODLAB_STOCK".into(), "burger=100000".into())];
    let platform = LocalPlatform::start(options).await.unwrap();
    let mut events = platform.events();
    let batches = 20;
    let stream = async {
        for _ in 0..batches {
            bulk(&platform, 100).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let restart = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        support::sigkill(platform.pids().await[&Service::Analytics]);
        died_and_restarted(&mut events, Service::Analytics, 30).await;
    };
    tokio::join!(stream, restart);
    let orders = 100 * batches;
    let counted = eventually(60, || async {
        let figures = get(&platform, Service::Analytics, "/metrics").await;
        figures["total_orders"] == orders && figures["total_inventory_events"] == orders
    })
    .await;
    let figures = get(&platform, Service::Analytics, "/metrics").await;
    platform.shutdown().await;
    assert!(counted, "{figures}");
}
