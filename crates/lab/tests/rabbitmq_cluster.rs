//! The async-rabbitmq part on three RabbitMQ nodes (`RABBITMQ_NODES=3
//! scripts/rabbitmq.sh`) with quorum queues: a backlog drains while the node
//! that leads the queues, and that every service is connected to, is
//! SIGKILLed and started again; every order is still reserved once, none is
//! lost and none dead-lettered.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use foodlab_lab::platform::rabbitmq::{RabbitAdmin, RabbitBroker};
use foodlab_lab::spec::FaultSpec;
use foodlab_lab::{LocalPlatform, Platform, Quiet, Service, Verdict, run_lab};
use foodlab_transport::rabbitmq::{QueueType, Topology};
use serde_json::Value;
use support::{ThreeNodes, eventually, example, get};

/// Two runs of this test take turns at this port (`ThreeNodes`).
const TURN_PORT: u16 = 5699;

/// The three nodes, and what the lab is given of them.
struct Cluster {
    nodes: ThreeNodes,
    /// `host:port` of each node's AMQP listener, in order.
    hosts: Vec<String>,
    /// Every node's management API, comma-separated: the lab's probes ask
    /// them in turn, so the node killed does not blind them.
    management_urls: String,
}

impl Cluster {
    async fn up() -> Self {
        let nodes = ThreeNodes::up("rabbitmq.sh", "RABBITMQ_NODES", TURN_PORT).await;
        let urls = nodes.call(&["urls"]);
        let hosts = urls
            .split(',')
            .map(|url| foodlab_transport::rabbitmq::url_host(url).to_owned())
            .collect::<Vec<_>>();
        assert_eq!(hosts.len(), 3, "{urls}");
        let management_urls = ["1", "2", "3"]
            .map(|node| nodes.call(&["management", node]))
            .join(",");
        Self {
            nodes,
            hosts,
            management_urls,
        }
    }
}

/// A queue of the lab's vhost as the management API describes it (null
/// while it is not declared).
async fn queue(admin: &RabbitAdmin, name: &str) -> Value {
    admin
        .describe_queue(name)
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Node N's name (`foodlab-<AMQP port>@localhost`) from its `host:port`.
fn node_name(host: &str) -> String {
    let port = host.rsplit(':').next().unwrap();
    format!("foodlab-{port}@localhost")
}

/// Inventory's decisions so far (0 while it is scaled to zero).
async fn decided(platform: &LocalPlatform) -> u64 {
    let url = format!("{}/stats", platform.endpoint(Service::Inventory).unwrap());
    let Ok(response) = reqwest::get(url).await else {
        return 0;
    };
    let stats: Value = response.json().await.unwrap_or_default();
    stats["processed"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_leader_killed_during_a_backlog_drain_loses_no_order_and_reserves_none_twice() {
    const ORDERS: u64 = 400;
    const STOCK: u64 = 10_000;
    const ITEMS: [&str; 3] = ["burger", "pizza", "salad"];

    let cluster = Cluster::up().await;

    // Inventory away for the whole burst, so every order waits in the queue;
    // its decisions slowed so that the drain takes long enough to kill in.
    let mut lab = example("async-backlog-drain");
    lab.spec.workload.orders = ORDERS as u32;
    lab.spec.workload.rate_per_second = Some(50.0);
    let step = &mut lab.spec.chaos[0];
    step.after = Duration::from_secs(1);
    step.duration = Some(Duration::from_secs(10));
    lab.spec.settings.stock = Some(
        ITEMS
            .iter()
            .map(|item| format!("{item}={STOCK}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    lab.spec.faults.inventory = Some(FaultSpec {
        delay_seconds: 0.03,
        ..FaultSpec::default()
    });
    lab.spec.expect.reservations = Some(ORDERS);
    lab.spec.expect.dead_lettered = Some(0);
    lab.spec.expect.within = Some(Duration::from_secs(600));

    let mut options = support::options(&lab);
    options.broker = RabbitBroker::At {
        management_url: cluster.management_urls.clone(),
        amqp_host_port: cluster.hosts.join(","),
    };
    options.queue_type = Some(QueueType::Quorum);
    let platform = LocalPlatform::start(options).await.unwrap();
    let admin = platform.rabbitmq().unwrap().clone();
    let topology = Topology::default();

    // Every queue quorum, replicated on the three nodes, led by the node the
    // services connected to first. (Order is ready before it has declared
    // its queue, and the management API learns of a queue a moment later.)
    let leader = node_name(&cluster.hosts[0]);
    for name in [
        &topology.inventory_queue,
        &topology.notification_queue,
        &topology.order_status_queue,
        &topology.dead_letter_queue,
    ] {
        eventually(120, || async {
            queue(&admin, name).await["members"]
                .as_array()
                .is_some_and(|members| members.len() == 3)
        })
        .await;
        let described = queue(&admin, name).await;
        assert_eq!(described["type"], "quorum", "{name}: {described}");
        assert_eq!(
            described["members"].as_array().map(Vec::len),
            Some(3),
            "{name}: {described}"
        );
    }
    let inventory_queue = queue(&admin, &topology.inventory_queue).await;
    assert_eq!(
        inventory_queue["leader"],
        leader.as_str(),
        "{inventory_queue}"
    );
    let arguments = &inventory_queue["arguments"];
    assert_eq!(
        arguments["x-dead-letter-strategy"], "at-least-once",
        "{arguments}"
    );
    assert_eq!(arguments["x-overflow"], "reject-publish", "{arguments}");

    let chaos = async {
        // In the middle of the drain: inventory is back and has decided a
        // quarter of the backlog.
        assert!(
            eventually(300, || async { decided(&platform).await >= ORDERS / 4 }).await,
            "inventory never drained a quarter of the backlog"
        );
        let pid = cluster.nodes.run(&["pid", "1"]).await;
        let killed_at = Instant::now();
        assert_eq!(cluster.nodes.run(&["kill", "1"]).await, pid);
        let at_kill = decided(&platform).await;
        assert!(
            at_kill < ORDERS,
            "the backlog drained before the kill: nothing was tested"
        );
        // The queues elect leaders on the two nodes left, and inventory,
        // connected again to one of them, goes on draining.
        let moved = eventually(120, || async {
            let now = queue(&admin, &topology.inventory_queue).await;
            now["leader"].as_str().is_some_and(|l| l != leader)
        })
        .await;
        assert!(moved, "{}", queue(&admin, &topology.inventory_queue).await);
        let leader_moved_in = killed_at.elapsed();
        let went_on = eventually(300, || async {
            decided(&platform).await >= (at_kill + ORDERS / 4).min(ORDERS)
        })
        .await;
        let while_down = decided(&platform).await - at_kill;
        assert!(went_on, "only {while_down} orders decided with node 1 down");
        let down_for = killed_at.elapsed();
        cluster.nodes.run(&["start-node", "1"]).await;
        let back = eventually(180, || async {
            let now = queue(&admin, &topology.inventory_queue).await;
            now["online"]
                .as_array()
                .is_some_and(|online| online.iter().any(|n| n == leader.as_str()))
        })
        .await;
        assert!(
            back,
            "node 1 is not back among the queue's members: {}",
            queue(&admin, &topology.inventory_queue).await
        );
        eprintln!(
            "node 1 ({leader}, pid {pid}, leader of the queues) killed with {at_kill} of {ORDERS} \
             orders decided; a new leader in {leader_moved_in:.1?}; {while_down} decided in the \
             {down_for:.1?} it was down; back in the queue {:.1?} after the kill",
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
        "lab {:?} in {:.1} s: accepted {}, reserved {}, failed {}, reservations {:?}, \
         max backlog {:?}, drained in {:?} s, dead-lettered {:?}",
        report.verdict,
        report.elapsed_seconds,
        results.accepted,
        results.reserved,
        results.failed,
        results.reservations,
        results.max_backlog,
        results.drain_seconds,
        results.dead_lettered
    );
    assert_eq!(report.verdict, Verdict::Pass, "{results:#?}");

    // Every accepted order reserved once: none lost, none twice.
    assert_eq!(results.accepted, ORDERS);
    assert_eq!(results.status_codes.get("202"), Some(&ORDERS));
    assert_eq!((results.reserved, results.failed), (ORDERS, 0));
    assert_eq!(results.reservations, Some(ORDERS));
    assert_eq!(results.lost(), Some(0));
    assert_eq!(results.duplicated(), Some(0));
    assert_eq!(results.dead_lettered, Some(0));
    let stats = get(&platform, Service::Inventory, "/stats").await;
    assert_eq!(stats["processed"], ORDERS, "{stats}");
    assert_eq!(stats["reserved_orders"], ORDERS, "{stats}");
    assert_eq!(stats["dead_lettered"], 0, "{stats}");

    // Stock before, less what the reserved orders asked for, is stock after.
    let orders = get(&platform, Service::Order, "/orders").await;
    let orders = orders.as_array().unwrap();
    assert_eq!(orders.len() as u64, ORDERS);
    let mut asked: BTreeMap<String, u64> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for order in orders {
        let status = order["status"].as_str().unwrap();
        *statuses.entry(status.to_owned()).or_default() += 1;
        if matches!(status, "reserved" | "notified") {
            for line in order["items"].as_array().unwrap() {
                *asked
                    .entry(line["item"].as_str().unwrap().to_owned())
                    .or_default() += line["quantity"].as_u64().unwrap();
            }
        }
    }
    assert!(
        statuses.keys().all(|s| s == "reserved" || s == "notified"),
        "{statuses:?}"
    );
    let stock = get(&platform, Service::Inventory, "/stock").await;
    for item in ITEMS {
        let taken = asked.get(item).copied().unwrap_or(0);
        assert_eq!(stock[item], STOCK - taken, "{item}: {stock} {asked:?}");
    }
    assert_eq!(
        asked.values().sum::<u64>(),
        results.stock_consumed.unwrap(),
        "{asked:?}"
    );
    assert_eq!(
        stats["units_reserved"],
        asked.values().sum::<u64>(),
        "{stats}"
    );

    // Nothing left in any queue, nothing in the dead-letter queue.
    for name in [
        &topology.inventory_queue,
        &topology.notification_queue,
        &topology.order_status_queue,
        &topology.dead_letter_queue,
    ] {
        let depth = admin.queue_depth(name).await.unwrap();
        assert_eq!(depth.total(), 0, "{name}: {depth:?}");
    }
    let redelivered = support::messages_counted(
        &platform,
        Service::Inventory,
        &topology.inventory_queue,
        "duplicate",
    )
    .await;
    eprintln!(
        "statuses {statuses:?}; units reserved {asked:?}; {redelivered} deliveries seen again and \
         not reserved again"
    );

    platform.shutdown().await;
    drop(cluster);
}
