//! `foodlab bench`: figures, not assertions.

use std::process::ExitCode;
use std::sync::Arc;

use foodlab_lab::measure::{Sample, latency_summary};
use foodlab_lab::spec::Workload;
use foodlab_lab::{LocalOptions, LocalPlatform, Platform, Service, Transport, workload};

pub async fn run(
    transport: Transport,
    latency_orders: u32,
    throughput_orders: u32,
    concurrency: u32,
) -> anyhow::Result<ExitCode> {
    let mut options = LocalOptions::new(transport);
    options.env.push((
        "FOODLAB_STOCK".into(),
        "burger=1000000000,pizza=1000000000,salad=1000000000".into(),
    ));
    let platform = LocalPlatform::start(options).await?;
    let order_url = platform.endpoint(Service::Order)?;
    let outcome = tokio::select! {
        figures = measure(&order_url, latency_orders, throughput_orders, concurrency) => Some(figures),
        () = super::interrupted() => None,
    };
    platform.shutdown().await;
    let Some(()) = outcome else {
        return Ok(ExitCode::from(130));
    };
    Ok(ExitCode::SUCCESS)
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

async fn measure(order_url: &str, latency_orders: u32, throughput_orders: u32, concurrency: u32) {
    let ignore: Arc<dyn Fn(&Sample) + Send + Sync> = Arc::new(|_| {});
    println!("sync-rest chain (order → inventory → notification, SQLite WAL on every hop)");
    // Warm-up: connection pools, SQLite caches, page faults.
    workload::run(&workload_of(500, concurrency), order_url, ignore.clone()).await;

    let (samples, _) =
        workload::run(&workload_of(latency_orders, 1), order_url, ignore.clone()).await;
    let latency = latency_summary(&samples);
    let failures = samples.iter().filter(|s| s.status != Some(201)).count();
    println!(
        "  concurrency 1:  {latency_orders} orders  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (non-201: {failures})",
        latency.p50, latency.p99, latency.max
    );

    let (samples, took) = workload::run(
        &workload_of(throughput_orders, concurrency),
        order_url,
        ignore,
    )
    .await;
    let latency = latency_summary(&samples);
    let failures = samples.iter().filter(|s| s.status != Some(201)).count();
    println!(
        "  concurrency {concurrency}: {throughput_orders} orders  {:.0} orders/s  p50 {:.3} ms  p99 {:.3} ms  (non-201: {failures})",
        f64::from(throughput_orders) / took.as_secs_f64(),
        latency.p50,
        latency.p99
    );
}
