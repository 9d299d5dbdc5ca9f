//! A part kept running while every example of it runs twice, in two
//! different orders: what a cluster install does. Each lab must pass
//! whatever ran on the part before it (stock, faults, chaos, counters).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use foodlab_lab::{LocalPlatform, Quiet, Transport, Verdict, run_lab};
use support::{example, examples, part_options};

/// Runs `names` forwards, then backwards, on one running part; returns
/// every lab that did not pass, with why.
async fn run_twice_on_one_part(transport: Transport, names: &[String]) -> Vec<String> {
    let platform = LocalPlatform::start(part_options(transport)).await.unwrap();
    let pids = platform.pids().await;
    let mut failures = Vec::new();
    for (round, name) in names
        .iter()
        .map(|name| (1, name))
        .chain(names.iter().rev().map(|name| (2, name)))
    {
        let lab = example(name);
        match run_lab(&platform, &lab.spec, Arc::new(Quiet)).await {
            Ok(report) if report.verdict == Verdict::Pass => {}
            Ok(report) => failures.push(format!(
                "{name} (round {round}): {:?}: {}",
                report.verdict,
                serde_json::to_string(&report.results.checks).unwrap()
            )),
            Err(error) => failures.push(format!("{name} (round {round}) could not run: {error}")),
        }
    }
    // The same processes served every lab (chaos restarts aside).
    let survivors = platform.pids().await;
    platform.shutdown().await;
    assert_eq!(survivors.len(), pids.len(), "{survivors:?}");
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sync_example_passes_twice_on_one_running_part() {
    let names = examples("sync-");
    assert_eq!(names.len(), 4, "{names:?}");
    let failures = run_twice_on_one_part(Transport::Rest, &names).await;
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_async_example_passes_twice_on_one_running_part() {
    let names = examples("async-");
    assert_eq!(names.len(), 3, "{names:?}");
    let failures = run_twice_on_one_part(Transport::Rabbitmq, &names).await;
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_streaming_example_passes_twice_on_one_running_part() {
    let names = examples("streaming-");
    assert_eq!(names.len(), 3, "{names:?}");
    let failures = run_twice_on_one_part(Transport::Kafka, &names).await;
    assert!(failures.is_empty(), "{failures:#?}");
}
