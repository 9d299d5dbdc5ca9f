//! The sync-rest example labs, run on the local platform: real service
//! processes on 127.0.0.1, shortened where a person would wait seconds.
//! Needs the service binaries: `cargo build --workspace --bins` (make test does).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use foodlab_lab::spec::{ChaosAction, ChaosStep, FaultSpec};
use foodlab_lab::{Platform, Service, Verdict};
use serde_json::json;
use support::{alive, eventually, example, get, order_statuses, post, start, statuses};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_lab_answers_every_order_201_and_decrements_stock() {
    let mut lab = example("sync-baseline");
    lab.spec.workload.orders = 30;
    let (platform, report) = support::run(&lab).await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    assert_eq!(report.results.status_codes.get("201"), Some(&30));
    assert_eq!(report.results.reserved, 30);
    // Items go round burger, pizza, salad: 10 of each.
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await,
        json!({"burger": 90, "pizza": 90, "salad": 90})
    );
    assert_eq!(
        order_statuses(&platform).await,
        statuses(&[("notified", 30)])
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_lab_adds_the_injected_delay_to_every_order() {
    let mut lab = example("sync-delay");
    assert_eq!(
        lab.spec.faults.inventory.as_ref().unwrap().delay_seconds,
        2.0
    );
    lab.spec.faults.inventory = Some(FaultSpec {
        delay_seconds: 0.3,
        ..FaultSpec::default()
    });
    lab.spec.expect.latency_ms.as_mut().unwrap().p50_at_least = Some(300.0);
    lab.spec.workload.orders = 8;
    let (platform, report) = support::run(&lab).await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    assert!(
        report.results.latency_ms.p50 >= 300.0,
        "{:?}",
        report.results.latency_ms
    );
    assert_eq!(report.results.status_codes.get("201"), Some(&8));
    // The lab clears its faults when it is done.
    let faults = get(&platform, Service::Inventory, "/admin/faults").await;
    assert_eq!(faults["delay_ms"], 0);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_lab_cascades_inventory_500_to_502_for_every_order() {
    let lab = example("sync-failure");
    let (platform, report) = support::run(&lab).await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    assert_eq!(report.results.status_codes.get("502"), Some(&20));
    assert_eq!(report.results.status_codes.len(), 1);
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await,
        json!({"burger": 100, "pizza": 100, "salad": 100})
    );
    assert_eq!(order_statuses(&platform).await, statuses(&[("failed", 20)]));
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_lab_gives_504_close_to_the_timeout_not_the_delay() {
    let mut lab = example("sync-timeout");
    lab.spec.settings.dependency_timeout = Some(Duration::from_millis(500));
    lab.spec.faults.inventory.as_mut().unwrap().delay_seconds = 1.5;
    let bounds = lab.spec.expect.latency_ms.as_mut().unwrap();
    bounds.p50_at_least = Some(500.0);
    bounds.p50_at_most = Some(1000.0);
    lab.spec.workload.orders = 4;
    let (platform, report) = support::run(&lab).await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:#?}");
    assert_eq!(report.results.status_codes.get("504"), Some(&4));
    assert!(
        report.results.latency_ms.max < 1000.0,
        "{:?}",
        report.results.latency_ms
    );
    assert_eq!(order_statuses(&platform).await, statuses(&[("timeout", 4)]));
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_keeps_stock_and_reservations_across_a_restart() {
    let lab = example("sync-baseline");
    let platform = start(&lab).await;
    let (status, order) = post(
        &platform,
        Service::Order,
        "/order",
        json!({"item": "pizza", "quantity": 7}),
    )
    .await;
    assert_eq!(status, 201);
    let order_id = order["order_id"].as_str().unwrap().to_owned();

    platform.scale(Service::Inventory, 0).await.unwrap();
    assert_eq!(platform.replicas(Service::Inventory).await.unwrap(), 0);
    let (status, problem) = post(
        &platform,
        Service::Order,
        "/order",
        json!({"item": "pizza"}),
    )
    .await;
    assert_eq!(status, 503, "{problem}");

    platform.scale(Service::Inventory, 1).await.unwrap();
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await["pizza"],
        93
    );
    let reservation = get(
        &platform,
        Service::Inventory,
        &format!("/reservations/{order_id}"),
    )
    .await;
    assert_eq!(reservation["outcome"], "reserved");
    // Replaying the reservation after the restart changes nothing.
    let (status, replay) = post(
        &platform,
        Service::Inventory,
        "/reserve",
        json!({"order_id": order_id, "item": "pizza", "quantity": 7}),
    )
    .await;
    assert_eq!((status, replay["replayed"].as_bool()), (200, Some(true)));
    assert_eq!(
        get(&platform, Service::Inventory, "/stock").await["pizza"],
        93
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_inventory_to_zero_mid_run_gives_503_then_recovers() {
    let mut lab = example("sync-baseline");
    lab.spec.workload.orders = 40;
    lab.spec.workload.rate_per_second = Some(40.0);
    lab.spec.workload.concurrency = None;
    lab.spec.chaos = vec![ChaosStep {
        action: ChaosAction::ScaleToZero,
        target: Service::Inventory.into(),
        after: Duration::from_millis(200),
        duration: Some(Duration::from_millis(400)),
        delay_seconds: None,
        fail_rate: None,
        mode: None,
        value: None,
        grace_period: None,
    }];
    lab.spec.expect.response_status = None;
    let (platform, report) = support::run(&lab).await;
    let codes = &report.results.status_codes;
    let created = codes.get("201").copied().unwrap_or(0);
    let unavailable = codes.get("503").copied().unwrap_or(0);
    assert_eq!(created + unavailable, 40, "{codes:?}");
    assert!(unavailable >= 5, "{codes:?}");
    assert!(created >= 10, "{codes:?}");
    let record = &report.chaos[0];
    assert_eq!(record.original_replicas, Some(1));
    assert!(record.restored_at.is_some());
    assert_eq!(platform.replicas(Service::Inventory).await.unwrap(), 1);
    let stock = get(&platform, Service::Inventory, "/stock").await;
    let left: u64 = ["burger", "pizza", "salad"]
        .iter()
        .map(|i| stock[i].as_u64().unwrap())
        .sum();
    assert_eq!(
        300 - left,
        created,
        "every 201 reserved exactly one item, no 503 did"
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_service_process_outlives_the_platform() {
    let lab = example("sync-baseline");
    let platform = start(&lab).await;
    let stopped = platform.pids().await;
    assert_eq!(stopped.len(), 3);
    platform.shutdown().await;
    for (service, pid) in &stopped {
        assert!(
            !alive(*pid),
            "{service} ({pid}) still running after shutdown"
        );
    }

    // Dropped without a shutdown (an early return, a panic): killed on drop.
    let platform = start(&lab).await;
    let dropped = platform.pids().await;
    drop(platform);
    // The supervisors' tasks end (and kill their children) on the runtime's threads.
    let gone = eventually(10, || async { dropped.values().all(|pid| !alive(*pid)) }).await;
    for (service, pid) in &dropped {
        assert!(
            gone && !alive(*pid),
            "{service} ({pid}) still running after drop"
        );
    }
}
