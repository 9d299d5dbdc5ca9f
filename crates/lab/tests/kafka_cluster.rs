//! The streaming part on three Kafka nodes (`KAFKA_NODES=3 scripts/kafka.sh`,
//! replication factor 3, min.insync.replicas=2): the node that leads most of
//! the order topic's partitions is SIGKILLed in the middle of a burst and
//! started again, and every order is still decided once and counted once.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use foodlab_lab::platform::kafka::KafkaBroker;
use foodlab_lab::spec::FaultSpec;
use foodlab_lab::{LocalPlatform, Quiet, Service, Verdict, run_lab};
use foodlab_transport::kafka::KafkaArgs;
use rdkafka::consumer::Consumer;
use support::{ThreeNodes, eventually, example, get, messages_counted, read_topic};

/// Two runs of this test take turns at this port (`ThreeNodes`).
const TURN_PORT: u16 = 9199;

/// One partition's leader and in-sync replicas, as the cluster says now.
#[derive(Debug, Clone)]
struct PartitionState {
    leader: i32,
    isr: Vec<i32>,
}

/// The partitions of `topic`; empty while no broker answers.
fn partition_states(args: &KafkaArgs, topic: &str) -> Vec<PartitionState> {
    let group = format!("leaders-{}", uuid::Uuid::new_v4().simple());
    let client = args.observer(&group).unwrap();
    let Ok(metadata) = client.fetch_metadata(Some(topic), Duration::from_secs(10)) else {
        return Vec::new();
    };
    metadata
        .topics()
        .iter()
        .flat_map(|topic| topic.partitions())
        .map(|p| PartitionState {
            leader: p.leader(),
            isr: p.isr().to_vec(),
        })
        .collect()
}

async fn states(args: &KafkaArgs, topic: &str) -> Vec<PartitionState> {
    let (args, topic) = (args.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || partition_states(&args, &topic))
        .await
        .unwrap()
}

/// The node leading the most partitions (the lowest id of a tie).
fn busiest_leader(states: &[PartitionState]) -> i32 {
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    for state in states {
        *led.entry(state.leader).or_default() += 1;
    }
    let most = led.values().copied().max().unwrap();
    led.into_iter().find(|(_, n)| *n == most).unwrap().0
}

/// Inventory's decisions so far (reserved or refused).
async fn decided(platform: &LocalPlatform) -> u64 {
    get(platform, Service::Inventory, "/stats").await["processed"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_three_killed_in_the_middle_of_a_burst_loses_no_order_and_decides_none_twice() {
    // 1,000 of each item; salad runs out after 600, so 400 orders are refused.
    const ORDERS: u64 = 3_000;
    const SALAD: u64 = 600;
    const PLENTY: u64 = 100_000;
    const RESERVED: u64 = ORDERS - (ORDERS / 3 - SALAD);
    const REFUSED: u64 = ORDERS - RESERVED;

    let cluster = ThreeNodes::up("kafka.sh", "KAFKA_NODES", TURN_PORT).await;
    let bootstrap = cluster.call(&["bootstrap"]);

    let mut lab = example("streaming-burst");
    lab.spec.workload.orders = ORDERS as u32;
    lab.spec.settings.stock = Some(format!("burger={PLENTY},pizza={PLENTY},salad={SALAD}"));
    // Decisions slow enough that the kill lands while most orders are still to come.
    lab.spec.faults.inventory = Some(FaultSpec {
        delay_seconds: 0.005,
        ..FaultSpec::default()
    });
    lab.spec.expect.all_orders_reserved = None;
    lab.spec.expect.all_orders_terminal = Some(true);
    lab.spec.expect.reservations = Some(RESERVED);
    lab.spec.expect.within = Some(Duration::from_secs(600));
    let mut options = support::options(&lab);
    options.kafka = KafkaBroker::At {
        brokers: bootstrap.clone(),
    };
    let platform = LocalPlatform::start(options).await.unwrap();
    let names = platform.kafka().unwrap().clone();
    let args = names.args();
    assert_eq!(names.brokers, bootstrap);

    // The services created the run's topics without a replication factor:
    // the cluster's default (3) holds, every replica in sync.
    let before = states(&args, &names.order_topic).await;
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.iter().all(|s| s.isr.len() == 3), "{before:?}");
    let victim = busiest_leader(&before);

    let chaos = async {
        assert!(
            eventually(300, || async { decided(&platform).await >= ORDERS / 10 }).await,
            "inventory never decided a tenth of the burst"
        );
        let pid: u32 = cluster
            .run(&["pid", &victim.to_string()])
            .await
            .parse()
            .unwrap();
        let killed_at = Instant::now();
        let node = victim.to_string();
        assert_eq!(cluster.run(&["kill", &node]).await, pid.to_string());
        let at_kill = decided(&platform).await;
        assert!(
            at_kill < ORDERS,
            "the burst was decided before the kill: nothing was tested"
        );
        // The two nodes left elect new leaders and go on deciding.
        let moved = eventually(120, || async {
            let now = states(&args, &names.order_topic).await;
            now.len() == 3 && now.iter().all(|s| s.leader != victim && s.leader >= 0)
        })
        .await;
        assert!(moved, "{:?}", states(&args, &names.order_topic).await);
        let leaders_moved_in = killed_at.elapsed();
        let went_on = eventually(300, || async {
            decided(&platform).await >= (at_kill + ORDERS / 10).min(ORDERS)
        })
        .await;
        let while_down = decided(&platform).await - at_kill;
        assert!(
            went_on,
            "only {while_down} orders decided with node {victim} down"
        );
        let down_for = killed_at.elapsed();
        cluster.run(&["start-node", &node]).await;
        let caught_up = eventually(180, || async {
            let now = states(&args, &names.order_topic).await;
            now.len() == 3 && now.iter().all(|s| s.isr.contains(&victim))
        })
        .await;
        assert!(
            caught_up,
            "node {victim} is not back in sync: {:?}",
            states(&args, &names.order_topic).await
        );
        eprintln!(
            "node {victim} (pid {pid}, leader of {} of 3 partitions) killed with {at_kill} of {ORDERS} \
             orders decided; leaders moved in {leaders_moved_in:.1?}; {while_down} decided in the \
             {down_for:.1?} it was down; back in sync {:.1?} after the kill",
            before.iter().filter(|s| s.leader == victim).count(),
            killed_at.elapsed()
        );
    };
    let (report, ()) = tokio::join!(
        run_lab(&platform, &lab.spec, std::sync::Arc::new(Quiet)),
        chaos
    );
    let report = report.unwrap();
    let results = &report.results;
    eprintln!(
        "lab {:?} in {:.1} s: accepted {}, reserved {}, failed {}, decided {:?}, lag at end {:?}, \
         analytics {:?}, processed in {:?} s",
        report.verdict,
        report.elapsed_seconds,
        results.accepted,
        results.reserved,
        results.failed,
        results.decided,
        results.lag_at_end,
        results.analytics,
        results.processed_seconds
    );
    assert_eq!(report.verdict, Verdict::Pass, "{results:#?}");

    // Every accepted order decided once: none lost, none reserved twice.
    assert_eq!(results.accepted, ORDERS);
    assert_eq!(results.status_codes.get("202"), Some(&ORDERS));
    assert_eq!(results.reserved + results.failed, results.accepted);
    assert_eq!((results.reserved, results.failed), (RESERVED, REFUSED));
    assert_eq!(results.decided, Some(ORDERS));
    assert_eq!(results.lost(), Some(0));
    assert_eq!(results.reservations, Some(RESERVED));
    assert_eq!(results.duplicated(), Some(0));
    assert_eq!(results.stock_consumed, Some(RESERVED));
    let stats = get(&platform, Service::Inventory, "/stats").await;
    assert_eq!(stats["processed"], ORDERS, "{stats}");
    assert_eq!(stats["reserved_orders"], RESERVED, "{stats}");
    assert_eq!(stats["out_of_stock_orders"], REFUSED, "{stats}");
    assert_eq!(stats["units_reserved"], RESERVED, "{stats}");
    let stock = get(&platform, Service::Inventory, "/stock").await;
    let per_item = ORDERS / 3;
    assert_eq!(stock["burger"], PLENTY - per_item, "{stock}");
    assert_eq!(stock["pizza"], PLENTY - per_item, "{stock}");
    assert_eq!(stock["salad"], 0, "{stock}");
    let counts = get(&platform, Service::Order, "/orders/counts").await;
    assert_eq!(
        (&counts["reserved"], &counts["failed"], &counts["placed"]),
        (&RESERVED.into(), &REFUSED.into(), &0.into()),
        "{counts}"
    );

    // One result per order on the result topic, however often one was
    // produced again after the kill: each carries its decision's message id.
    let results_read = read_topic(&args, &names.inventory_topic).await;
    let mut ids_per_order: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut types: BTreeMap<&str, u64> = BTreeMap::new();
    for result in &results_read {
        ids_per_order
            .entry(result["order_id"].as_str().unwrap())
            .or_default()
            .insert(result["message_id"].as_str().unwrap());
        *types.entry(result["type"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(ids_per_order.len() as u64, ORDERS);
    assert!(ids_per_order.values().all(|ids| ids.len() == 1));
    let redelivered = messages_counted(
        &platform,
        Service::Inventory,
        &names.order_topic,
        "duplicate",
    )
    .await;
    eprintln!(
        "{} results on {} for {ORDERS} orders ({types:?}); {redelivered} order events read again \
         and not decided again",
        results_read.len(),
        names.inventory_topic
    );

    // Analytics' totals exact, and no group lags.
    let counted = results.analytics.unwrap();
    assert_eq!(
        (counted.orders, counted.inventory_events, counted.failures),
        (ORDERS, ORDERS, REFUSED)
    );
    assert_eq!(results.lag_at_end, Some(0));
    let figures = get(&platform, Service::Analytics, "/metrics").await;
    assert_eq!(figures["total_orders"], ORDERS, "{figures}");
    assert_eq!(figures["total_inventory_events"], ORDERS, "{figures}");
    assert_eq!(figures["failures"], REFUSED, "{figures}");
    let lag = get(&platform, Service::Analytics, "/lag").await;
    let groups = lag["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{lag}");
    assert!(groups.iter().all(|g| g["total_lag"] == 0), "{lag}");

    platform.shutdown().await;
    drop(cluster);
}
