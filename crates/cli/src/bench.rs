//! `foodlab bench`: figures, not assertions.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foodlab_lab::measure::{Sample, Tally};
use foodlab_lab::probe::kafka::Analytics;
use foodlab_lab::probe::observe::{Snapshot, order_cursor, wait_settled};
use foodlab_lab::results::AnalyticsTotals;
use foodlab_lab::series::Latencies;
use foodlab_lab::spec::Workload;
use foodlab_lab::{LocalOptions, LocalPlatform, Platform, Service, Transport, workload};

#[derive(Debug, Clone, Copy)]
pub struct BenchSize {
    pub latency_orders: u32,
    pub throughput_orders: u32,
    pub concurrency: u32,
}

pub async fn run(transport: Transport, size: BenchSize) -> anyhow::Result<ExitCode> {
    let mut options = LocalOptions::new(transport);
    options.env.push((
        "FOODLAB_STOCK".into(),
        "burger=1000000000,pizza=1000000000,salad=1000000000".into(),
    ));
    let platform = LocalPlatform::start(options).await?;
    let outcome = tokio::select! {
        figures = measure(&platform, transport, size) => Some(figures),
        () = super::interrupted() => None,
    };
    platform.shutdown().await;
    match outcome {
        Some(figures) => figures.map(|()| ExitCode::SUCCESS),
        None => Ok(ExitCode::from(130)),
    }
}

fn workload_of(orders: u32, concurrency: u32) -> Workload {
    Workload {
        orders,
        rate_per_second: None,
        concurrency: Some(concurrency),
        items: vec!["burger".into(), "pizza".into(), "salad".into()],
        quantity: 1,
    }
}

fn ignore() -> Arc<dyn Fn(&Sample) + Send + Sync> {
    Arc::new(|_| {})
}

fn unexpected(tally: &Tally, status: u16) -> u64 {
    tally.other_than(status)
}

async fn measure(
    platform: &LocalPlatform,
    transport: Transport,
    size: BenchSize,
) -> anyhow::Result<()> {
    let order_url = platform.endpoint(Service::Order)?;
    match transport {
        Transport::Rest => sync_rest(&order_url, size).await,
        Transport::Rabbitmq => async_rabbitmq(platform, &order_url, size).await?,
        Transport::Kafka => streaming_kafka(platform, &order_url).await?,
    }
    Ok(())
}

async fn sync_rest(order_url: &str, size: BenchSize) {
    println!("sync-rest chain (order → inventory → notification, SQLite WAL on every hop)");
    // Warm-up: connection pools, SQLite caches, page faults.
    workload::run(&workload_of(500, size.concurrency), order_url, ignore()).await;

    let (samples, _) =
        workload::run(&workload_of(size.latency_orders, 1), order_url, ignore()).await;
    let latency = samples.latency_summary();
    println!(
        "  concurrency 1:  {} orders  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (non-201: {})",
        size.latency_orders,
        latency.p50,
        latency.p99,
        latency.max,
        unexpected(&samples, 201)
    );

    let (samples, took) = workload::run(
        &workload_of(size.throughput_orders, size.concurrency),
        order_url,
        ignore(),
    )
    .await;
    let latency = samples.latency_summary();
    println!(
        "  concurrency {}: {} orders  {:.0} orders/s  p50 {:.3} ms  p99 {:.3} ms  (non-201: {})",
        size.concurrency,
        size.throughput_orders,
        f64::from(size.throughput_orders) / took.as_secs_f64(),
        latency.p50,
        latency.p99,
        unexpected(&samples, 201)
    );
}

async fn async_rabbitmq(
    platform: &LocalPlatform,
    order_url: &str,
    size: BenchSize,
) -> anyhow::Result<()> {
    println!(
        "async-rabbitmq (outbox + publisher confirms, manual acks, SQLite WAL, persistent messages)"
    );
    let http = reqwest::Client::new();
    workload::run(&workload_of(500, size.concurrency), order_url, ignore()).await;

    let (samples, _) =
        workload::run(&workload_of(size.latency_orders, 1), order_url, ignore()).await;
    let accept = samples.latency_summary();
    println!(
        "  accept (POST /order → 202), concurrency 1: {} orders  p50 {:.3} ms  p99 {:.3} ms  (non-202: {})",
        size.latency_orders,
        accept.p50,
        accept.p99,
        unexpected(&samples, 202)
    );

    let steady = Workload {
        rate_per_second: Some(500.0),
        concurrency: None,
        ..workload_of(5000, 1)
    };
    let since = order_cursor(platform, &http)
        .await
        .ok_or_else(|| anyhow::anyhow!("the order service's cursor cannot be read"))?;
    let (samples, took) = workload::run(&steady, order_url, ignore()).await;
    let mut settled = Latencies::default();
    wait_settled(
        platform,
        &http,
        since,
        samples.accepted(),
        |_, ms| settled.record(ms),
        Instant::now() + Duration::from_secs(60),
    )
    .await;
    let end_to_end = settled.summary();
    println!(
        "  end to end (placed → reserved) at 500 orders/s: {} orders in {:.1} s  p50 {:.1} ms  p99 {:.1} ms  (settled: {})",
        samples.answers(),
        took.as_secs_f64(),
        end_to_end.p50,
        end_to_end.p99,
        settled.count()
    );

    let backlog = 10_000;
    platform.scale(Service::Inventory, 0).await?;
    workload::run(&workload_of(backlog, size.concurrency), order_url, ignore()).await;
    let admin = platform
        .rabbitmq()
        .ok_or_else(|| anyhow::anyhow!("no broker"))?
        .clone();
    let queue = "inventory_queue";
    while admin.queue_depth(queue).await?.messages_ready < u64::from(backlog) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    platform.scale(Service::Inventory, 1).await?;
    while admin.queue_depth(queue).await?.messages_ready > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    println!(
        "  drain of a {backlog}-message backlog (inventory restarted, readiness included): {:.2} s  {:.0} msg/s",
        took.as_secs_f64(),
        f64::from(backlog) / took.as_secs_f64()
    );
    Ok(())
}

/// Inventory's decisions so far (every outcome).
async fn decisions(platform: &LocalPlatform, http: &reqwest::Client) -> anyhow::Result<u64> {
    Snapshot::take(platform, http)
        .await
        .map(|snapshot| snapshot.decisions)
        .ok_or_else(|| anyhow::anyhow!("inventory's counters cannot be read"))
}

async fn streaming_kafka(platform: &LocalPlatform, order_url: &str) -> anyhow::Result<()> {
    println!(
        "streaming-kafka (outbox → idempotent producer acks=all, 3 partitions, inventory-group and analytics-group)"
    );
    let http = reqwest::Client::new();
    let analytics = Analytics::of(platform, &http)
        .ok_or_else(|| anyhow::anyhow!("the part runs no analytics service"))?;
    let bulk = |count: u64| {
        http.post(format!("{order_url}/orders/bulk"))
            .json(&serde_json::json!({"count": count, "item": "burger", "quantity": 1}))
            .send()
    };
    let deadline = || Instant::now() + Duration::from_secs(120);

    // Warm-up: producer, consumers and their groups, SQLite caches.
    bulk(1000).await?.error_for_status()?;
    let warm = AnalyticsTotals {
        orders: 1000,
        inventory_events: 1000,
        failures: 0,
    };
    analytics
        .wait_caught_up(warm, deadline())
        .await
        .ok_or_else(|| anyhow::anyhow!("the warm-up burst was not processed in time"))?;

    let burst: u64 = 10_000;
    let started = Instant::now();
    bulk(burst).await?.error_for_status()?;
    let accepted = started.elapsed();
    println!(
        "  burst: {burst} orders accepted (POST /orders/bulk → 201) in {:.3} s",
        accepted.as_secs_f64()
    );
    let mut inventory_done = None;
    let target = AnalyticsTotals {
        orders: 1000 + burst,
        inventory_events: 1000 + burst,
        failures: 0,
    };
    let analytics_done = loop {
        if inventory_done.is_none() && decisions(platform, &http).await? >= 1000 + burst {
            inventory_done = Some(started.elapsed());
        }
        if let Some(totals) = analytics.totals().await
            && totals.orders >= target.orders
            && totals.inventory_events >= target.inventory_events
            && inventory_done.is_some()
        {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the burst was not processed within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let inventory_done = inventory_done.unwrap_or(analytics_done);
    println!(
        "  burst processed: inventory decided all {burst} after {:.3} s; analytics counted every order and result after {:.3} s ({:.0} orders/s end to end)",
        inventory_done.as_secs_f64(),
        analytics_done.as_secs_f64(),
        burst as f64 / analytics_done.as_secs_f64()
    );

    let replay = analytics
        .replay(deadline())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "  replay (analytics rewound to the earliest offsets): {} events read again in {:.3} s  {:.0} events/s  (totals identical: {})",
        replay.events, replay.seconds, replay.events_per_second, replay.identical
    );
    Ok(())
}
