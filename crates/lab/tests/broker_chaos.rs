//! Broker chaos as a lab declares it (`target: kafka`, `target: rabbitmq`):
//! the examples on three nodes, a node killed by the lab's own chaos step
//! and started again by the local platform, as a StatefulSet recreates its
//! pod; and a node that is back too late fails the lab, naming it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use foodlab_lab::results::ChaosRecord;
use foodlab_lab::spec::{Broker, ChaosTarget};
use foodlab_lab::{LabReport, LocalPlatform, Quiet, Verdict, run_lab};
use support::{ThreeNodes, example, examples_on};

/// The turns the three-node tests of each broker take (`ThreeNodes`).
const KAFKA_TURN: u16 = 9199;
const RABBITMQ_TURN: u16 = 5699;

fn failed_checks(report: &LabReport) -> Vec<String> {
    report
        .results
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect()
}

/// The one chaos record: a node of `broker` killed, and back.
fn one_node_killed_and_back(chaos: &[ChaosRecord], broker: Broker) -> &ChaosRecord {
    assert_eq!(chaos.len(), 1, "{chaos:?}");
    let record = &chaos[0];
    assert_eq!(record.target, ChaosTarget::from(broker));
    assert!(record.disrupted, "{record:?}");
    assert_eq!(record.pods.len(), 1, "{record:?}");
    assert!(
        record.pods[0].starts_with(&format!("{broker}-")),
        "{record:?}"
    );
    assert!(record.restored_at.is_some(), "{record:?}");
    record
}

#[test]
fn the_three_node_examples_are_one_per_broker() {
    assert_eq!(examples_on("streaming-", 3), ["streaming-broker-kill"]);
    assert_eq!(examples_on("async-", 3), ["async-broker-kill"]);
}

/// Runs the three-node example `name` on the project's broker (`script`,
/// with its `env`=3, taking `turn`): it passes, one node of `broker` was
/// killed and is back, and the kill landed while messages were still
/// waiting (the backlog at the first sample after it above zero). The
/// report, and the node killed.
async fn killed_in_flight(
    name: &str,
    broker: Broker,
    (script, env, turn): (&'static str, &'static str, u16),
) -> (LabReport, String) {
    let _nodes = ThreeNodes::up(script, env, turn).await;
    let lab = example(name);
    let (platform, report) = support::run(&lab).await;
    platform.shutdown().await;
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "{:#?}",
        failed_checks(&report)
    );
    let node = one_node_killed_and_back(&report.chaos, broker).pods[0].clone();
    let killed_at = report
        .series
        .windows
        .iter()
        .find(|w| w.kind == "chaos")
        .unwrap()
        .from_seconds;
    // The samples on either side of the kill: RabbitMQ may answer 0 for a
    // quorum queue in the one after (read while its leader moves), and a
    // Kafka lag may only build once the node is gone (the one before).
    let backlog = &report.series.backlog;
    let before = backlog.iter().rev().find(|p| p.at_seconds <= killed_at);
    let after = backlog.iter().find(|p| p.at_seconds > killed_at);
    let waiting = before.into_iter().chain(after).map(|p| p.value).max();
    assert!(
        waiting.is_some_and(|n| n > 0),
        "{node} killed at +{killed_at} s with nothing waiting ({waiting:?}): nothing was tested"
    );
    (report, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_broker_killed_in_the_middle_of_a_burst_loses_no_order_and_decides_none_twice() {
    let (report, node) = killed_in_flight(
        "streaming-broker-kill",
        Broker::Kafka,
        ("kafka.sh", "KAFKA_NODES", KAFKA_TURN),
    )
    .await;
    let results = &report.results;
    assert_eq!(results.accepted, 10_000);
    assert_eq!(results.reserved, 10_000);
    assert_eq!(results.reservations, Some(10_000));
    assert_eq!(results.decided, Some(10_000));
    assert_eq!((results.lost(), results.duplicated()), (Some(0), Some(0)));
    assert_eq!(results.lag_at_end, Some(0));
    // Measured, but not necessarily seen: a node the services were not
    // talking to may go without any client noticing.
    let errors = results.broker_errors.as_ref().unwrap();
    eprintln!(
        "kafka: {node} killed, serving again after {:.1} s; {:.0} orders/s accepted, \
         processed in {:.1} s; broker errors seen: {errors}",
        results.broker_recovery_seconds.unwrap(),
        results.throughput_per_second,
        results.processed_seconds.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_node_killed_during_a_drain_loses_no_order_and_reserves_none_twice() {
    let (report, node) = killed_in_flight(
        "async-broker-kill",
        Broker::Rabbitmq,
        ("rabbitmq.sh", "RABBITMQ_NODES", RABBITMQ_TURN),
    )
    .await;
    let results = &report.results;
    assert_eq!(results.accepted, 2_000);
    assert_eq!(results.reserved, 2_000);
    assert_eq!(results.reservations, Some(2_000));
    assert_eq!(results.dead_lettered, Some(0));
    assert_eq!((results.lost(), results.duplicated()), (Some(0), Some(0)));
    // Measured, but not necessarily seen: no service may have been
    // connected to the node killed.
    let errors = results.broker_errors.as_ref().unwrap();
    eprintln!(
        "rabbitmq: {node} killed with a backlog of up to {} messages, serving again after \
         {:.1} s; drained {:.1} s after; broker errors seen: {errors}",
        results.max_backlog.unwrap_or_default(),
        results.broker_recovery_seconds.unwrap(),
        results.drain_seconds.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_node_back_after_the_labs_time_fails_the_lab_naming_it() {
    const ORDERS: u32 = 300;
    let _nodes = ThreeNodes::up("kafka.sh", "KAFKA_NODES", KAFKA_TURN).await;
    let mut lab = example("streaming-broker-kill");
    lab.spec.workload.orders = ORDERS;
    lab.spec.workload.concurrency = Some(4);
    lab.spec.chaos[0].after = Duration::from_secs(1);
    lab.spec.expect.reservations = Some(u64::from(ORDERS));
    lab.spec.expect.within = Some(Duration::from_secs(8));
    let mut options = support::options(&lab);
    // As a StatefulSet that cannot place the pod again for a while.
    let held_down = Duration::from_secs(15);
    options.broker_restart_after = held_down;
    let platform = LocalPlatform::start(options).await.unwrap();
    let report = run_lab(&platform, &lab.spec, std::sync::Arc::new(Quiet))
        .await
        .unwrap();
    platform.shutdown().await;

    assert_eq!(report.verdict, Verdict::Fail);
    let back = report
        .results
        .checks
        .iter()
        .find(|c| c.name == "chaos[0].brokerBack")
        .unwrap();
    assert!(!back.passed, "{back:?}");
    let record = one_node_killed_and_back(&report.chaos, Broker::Kafka);
    assert!(
        back.detail
            .starts_with(&format!("kafka {} killed at +1.", record.pods[0])),
        "{back:?}"
    );
    assert!(back.detail.ends_with("allowed until +8.0 s"), "{back:?}");
    // The restore is recorded when the node serves again, however late.
    let down_for = record
        .restored_at
        .unwrap()
        .duration_since(record.started_at);
    assert!(down_for >= held_down.try_into().unwrap(), "{record:?}");
    // The orders themselves went through: only the broker's return failed
    // the lab (and the time it took, waiting for it), and analytics may still
    // be catching up on the log when the lab ends after the late return.
    assert_eq!(report.results.reservations, Some(u64::from(ORDERS)));
    let failed: Vec<&str> = report
        .results
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        failed.starts_with(&["within"]) && failed.ends_with(&["chaos[0].brokerBack"]),
        "{failed:?}"
    );
    let catching_up = ["everyEventCounted", "lagDrained"];
    assert!(
        failed[1..failed.len() - 1]
            .iter()
            .all(|name| catching_up.contains(name)),
        "{failed:?}"
    );
}
