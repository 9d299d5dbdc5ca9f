//! `foodlab bench async-rabbitmq --scale 20000,200000`: the same lab at
//! growing sizes through the real engine, to show that a lab's cost grows
//! with its orders, not with their square: the engine's memory stays flat
//! and each service's CPU per order stays the same. The lines for people
//! go to stderr, every figure as one JSON document to stdout.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use foodlab_lab::spec::FoodLabSpec;
use foodlab_lab::stats::round3;
use foodlab_lab::{LocalOptions, LocalPlatform, Service, Transport, Verdict, run_lab};
use procfs::process::Process;
use serde::Serialize;

use crate::progress::Progress;

/// Closed loop: 32 orders in flight keep two shared cores busy without
/// queueing requests in the client.
const CONCURRENCY: u32 = 32;

/// What one size cost.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleFigures {
    pub orders: u32,
    /// The whole lab: baseline, workload, settling, measuring.
    pub seconds: f64,
    pub verdict: Verdict,
    pub accepted: u64,
    pub reserved: u64,
    pub failed: u64,
    /// Answers to `POST /order` by status code (`error`: no answer).
    pub status_codes: BTreeMap<String, u64>,
    pub end_to_end_p50_ms: f64,
    pub end_to_end_p99_ms: f64,
    /// The lab process's resident memory before the lab, its highest
    /// reading during it (every 100 ms), at the end, and that peak less
    /// the reading before (KiB).
    pub lab_rss_before_kib: u64,
    pub lab_rss_peak_kib: u64,
    pub lab_rss_end_kib: u64,
    pub lab_rss_growth_kib: u64,
    /// VmHWM: the process's peak since it started (not per size).
    pub lab_rss_lifetime_peak_kib: u64,
    /// CPU seconds (user + system) per 1000 orders: the lab process and each service.
    pub lab_cpu_seconds_per_1000: f64,
    pub cpu_seconds_per_1000: BTreeMap<String, f64>,
}

pub async fn run(transport: Transport, sizes: &[u32], json: bool) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        transport == Transport::Rabbitmq,
        "--scale runs the async-rabbitmq part (the part whose orders settle after the answer)"
    );
    let starting = Progress::new(true, "");
    starting.step("starting the async-rabbitmq part");
    let platform = LocalPlatform::start(LocalOptions::new(transport)).await;
    starting.finish();
    let platform = platform?;
    let outcome = tokio::select! {
        figures = measure(&platform, sizes) => Some(figures),
        () = crate::interrupt::interrupted() => None,
    };
    platform.shutdown().await;
    match outcome {
        Some(figures) => {
            let figures = figures?;
            // The lines for people went to stderr as each size ended.
            if json {
                println!("{}", serde_json::to_string(&figures)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(crate::exit::code(crate::exit::INTERRUPTED)),
    }
}

/// Runs the lab at each size in turn on one part: a later size also runs
/// on top of the orders of the earlier ones.
async fn measure(platform: &LocalPlatform, sizes: &[u32]) -> anyhow::Result<Vec<ScaleFigures>> {
    eprintln!(
        "async-rabbitmq lab at growing sizes (concurrency {CONCURRENCY}, one part, the engine in this process)"
    );
    let mut all = Vec::new();
    for &orders in sizes {
        let progress = Progress::new(true, format!("{orders} orders: "));
        progress.step("preparing");
        let figures = one_size(platform, orders, &progress).await;
        progress.finish();
        let figures = figures?;
        eprintln!(
            "  {:>7} orders: {:>6.1} s  {}  answers {:?}  reserved {}  e2e p50/p99 {:.1}/{:.1} ms  lab RSS {} → peak {} (+{}) → {} KiB  CPU s per 1000 orders: lab {:.3}, {}",
            figures.orders,
            figures.seconds,
            figures.verdict,
            figures.status_codes,
            figures.reserved,
            figures.end_to_end_p50_ms,
            figures.end_to_end_p99_ms,
            figures.lab_rss_before_kib,
            figures.lab_rss_peak_kib,
            figures.lab_rss_growth_kib,
            figures.lab_rss_end_kib,
            figures.lab_cpu_seconds_per_1000,
            figures
                .cpu_seconds_per_1000
                .iter()
                .map(|(service, s)| format!("{service} {s:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        all.push(figures);
    }
    Ok(all)
}

fn lab_spec(orders: u32) -> anyhow::Result<FoodLabSpec> {
    // Two minutes, plus a minute per 10,000 orders (far more than they take).
    let within = 120 + u64::from(orders) * 60 / 10_000;
    let stock = u64::from(orders) + 1000;
    serde_json::from_value(serde_json::json!({
        "transport": "rabbitmq",
        "settings": {"stock": format!("burger={stock},pizza={stock},salad={stock}")},
        "workload": {
            "orders": orders,
            "concurrency": CONCURRENCY,
            "items": ["burger", "pizza", "salad"],
        },
        "expect": {"allOrdersTerminal": true, "allOrdersReserved": true, "within": format!("{within}s")},
    }))
    .context("the scale lab's spec")
}

async fn one_size(
    platform: &LocalPlatform,
    orders: u32,
    progress: &Progress,
) -> anyhow::Result<ScaleFigures> {
    let spec = lab_spec(orders)?;
    let pids = platform.pids().await;
    let services = [Service::Order, Service::Inventory, Service::Notification];
    let cpu_before: Vec<Option<f64>> = services
        .iter()
        .map(|s| pids.get(s).and_then(|pid| cpu_seconds_of(*pid)))
        .collect();
    let lab_cpu_before = own_cpu_seconds().unwrap_or_default();
    let rss_before = own_memory().map_or(0, |m| m.rss_kib);
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                if let Some(memory) = own_memory() {
                    peak.fetch_max(memory.rss_kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let report = run_lab(platform, &spec, Arc::new(progress.clone())).await;
    sampler.abort();
    let report = report?;
    let per_1000 = |seconds: f64| round3(seconds * 1000.0 / f64::from(orders));
    let lab_cpu = own_cpu_seconds().unwrap_or_default() - lab_cpu_before;
    let pids_after = platform.pids().await;
    let mut cpu = BTreeMap::new();
    for (service, before) in services.iter().zip(cpu_before) {
        // A service restarted during the lab has no figure: its counter restarted.
        if let (Some(before), Some(pid)) = (before, pids.get(service))
            && pids_after.get(service) == Some(pid)
            && let Some(after) = cpu_seconds_of(*pid)
        {
            cpu.insert(service.to_string(), per_1000(after - before));
        }
    }
    let rss_peak = peak.load(Ordering::Relaxed);
    let memory_end = own_memory();
    let results = &report.results;
    let end_to_end = results.end_to_end_ms.clone().unwrap_or_default();
    Ok(ScaleFigures {
        orders,
        seconds: report.elapsed_seconds,
        verdict: report.verdict,
        accepted: results.accepted,
        reserved: results.reserved,
        failed: results.failed,
        status_codes: results.status_codes.clone(),
        end_to_end_p50_ms: end_to_end.p50,
        end_to_end_p99_ms: end_to_end.p99,
        lab_rss_before_kib: rss_before,
        lab_rss_peak_kib: rss_peak,
        lab_rss_end_kib: memory_end.as_ref().map_or(0, |m| m.rss_kib),
        lab_rss_growth_kib: rss_peak.saturating_sub(rss_before),
        lab_rss_lifetime_peak_kib: memory_end.as_ref().map_or(0, |m| m.peak_kib),
        lab_cpu_seconds_per_1000: per_1000(lab_cpu),
        cpu_seconds_per_1000: cpu,
    })
}

/// This process's resident memory (KiB).
struct Memory {
    rss_kib: u64,
    /// VmHWM: the highest resident memory since the process started.
    peak_kib: u64,
}

fn own_memory() -> Option<Memory> {
    let status = Process::myself().ok()?.status().ok()?;
    Some(Memory {
        rss_kib: status.vmrss?,
        peak_kib: status.vmhwm?,
    })
}

/// User plus system CPU seconds this process has spent.
fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(&Process::myself().ok()?)
}

/// User plus system CPU seconds process `pid` has spent; none once it has exited.
pub(crate) fn cpu_seconds_of(pid: u32) -> Option<f64> {
    cpu_seconds(&Process::new(i32::try_from(pid).ok()?).ok()?)
}

fn cpu_seconds(process: &Process) -> Option<f64> {
    let stat = process.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_figures() {
        let memory = own_memory().unwrap();
        assert!(memory.rss_kib > 0);
        assert!(memory.peak_kib >= memory.rss_kib);
        // Spin until the kernel has counted a tick of CPU time.
        let started = std::time::Instant::now();
        while own_cpu_seconds().unwrap() == 0.0 {
            assert!(started.elapsed() < Duration::from_secs(10));
        }
        let pid = std::process::id();
        let mine = cpu_seconds_of(pid).unwrap();
        assert!(mine > 0.0 && mine <= own_cpu_seconds().unwrap());
    }

    #[test]
    fn a_process_that_has_exited_has_no_cpu_figure() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(cpu_seconds_of(pid), None);
    }

    #[test]
    fn the_scale_lab_is_a_valid_lab() {
        let spec = lab_spec(20_000).unwrap();
        let lab = foodlab_lab::validated::ValidatedLab::new(&spec).unwrap();
        assert_eq!(lab.workload.orders, 20_000);
        assert_eq!(lab.workload.concurrency, Some(CONCURRENCY));
        assert_eq!(lab.within, Duration::from_secs(240));
    }
}
