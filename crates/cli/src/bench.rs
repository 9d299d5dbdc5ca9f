//! `foodlab bench`: figures, not assertions. Each phase prints its figures
//! and, from every service's hop histograms, where the time went; `--json`
//! writes the whole run as one document so two runs can be compared.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use foodlab_lab::faults::FaultClient;
use foodlab_lab::measure::{Sample, Tally};
use foodlab_lab::probe::kafka::Analytics;
use foodlab_lab::probe::observe::{Snapshot, order_cursor, wait_settled};
use foodlab_lab::results::AnalyticsTotals;
use foodlab_lab::spec::{Replicas, Workload};
use foodlab_lab::stats::Latencies;
use foodlab_lab::{LocalOptions, LocalPlatform, Platform, Service, Transport, workload};

use crate::bench_scale::cpu_seconds_of;
use crate::hop_report::{HopFigure, Scrape};
use crate::machine::Machine;
use crate::progress::Progress;
use foodlab_lab::stats::round3;

/// The longest any wait of the bench may take (a backlog queued, drained, a burst processed).
const WAIT_AT_MOST: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
pub struct BenchSize {
    pub latency_orders: u32,
    pub throughput_orders: u32,
    pub concurrency: u32,
}

/// Everything one `foodlab bench PART` measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub part: String,
    /// Where the services kept their state.
    pub database: Backend,
    /// The part's shape (`inventory=3`), empty at one replica each.
    pub replicas: String,
    /// Nodes of the part's broker (1 for sync-rest, which has none).
    pub broker_nodes: u32,
    pub started_at: String,
    pub machine: Machine,
    pub phases: Vec<Phase>,
}

/// Where a bench's services keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// As the lines for people say it.
    fn shown(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite WAL",
            Self::Postgres => "one PostgreSQL",
        }
    }
}

/// One measured phase: its figures and, per service, its hops and the
/// CPU it spent per unit of the phase (an order, a message, an event).
#[derive(Debug, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub description: String,
    pub figures: BTreeMap<&'static str, f64>,
    pub hops: BTreeMap<String, Vec<HopFigure>>,
    pub unit: &'static str,
    pub cpu_ms_per_unit: BTreeMap<String, f64>,
}

/// What a phase counts: `count` of `unit`.
struct Units {
    unit: &'static str,
    count: f64,
}

fn orders(count: f64) -> Units {
    Units {
        unit: "order",
        count,
    }
}

/// Enough of every item that no phase runs out.
const STOCK: u64 = 1_000_000_000;

/// Where a bench runs: one replica of each service on SQLite files unless told.
pub struct BenchSetup {
    pub replicas: Replicas,
    /// Nodes of the part's broker (1 or 3).
    pub broker_nodes: u32,
    pub database_url: Option<String>,
}

pub async fn run(
    transport: Transport,
    size: BenchSize,
    setup: BenchSetup,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut options = LocalOptions::new(transport);
    options.replicas = setup.replicas.clone();
    options.broker_nodes = setup.broker_nodes;
    options.database_url = setup.database_url.clone();
    let machine = Machine::describe();
    eprintln!("machine: {}", machine.line());
    let progress = Progress::new(true, format!("bench {}: ", transport.part()));
    progress.step("starting the part");
    let platform = LocalPlatform::start(options).await?;
    progress.step("setting the stock");
    // Through the admin API: a database kept from earlier runs has its own levels.
    let levels = BTreeMap::from([("burger", STOCK), ("pizza", STOCK), ("salad", STOCK)]);
    let clients =
        FaultClient::new().and_then(|admin| Ok((admin, foodlab_lab::faults::http_client()?)));
    let http = match clients {
        Ok((admin, http)) => match admin.set_stock(&platform, &levels).await {
            Ok(_) => http,
            Err(error) => {
                platform.shutdown().await;
                return Err(error.into());
            }
        },
        Err(error) => {
            platform.shutdown().await;
            return Err(error.into());
        }
    };
    let mut bench = Bench {
        platform: &platform,
        progress: progress.clone(),
        // Timeouts on every call: a service that hangs fails the bench instead of holding it.
        http,
        report: BenchReport {
            part: transport.part().to_owned(),
            database: if setup.database_url.is_some() {
                Backend::Postgres
            } else {
                Backend::Sqlite
            },
            replicas: setup.replicas.to_string(),
            broker_nodes: setup.broker_nodes,
            started_at: jiff::Timestamp::now().to_string(),
            machine,
            phases: Vec::new(),
        },
    };
    let outcome = tokio::select! {
        figures = bench.measure(transport, size) => Some(figures),
        () = crate::interrupt::interrupted() => None,
    };
    progress.step("stopping the part");
    platform.shutdown().await;
    progress.finish();
    match outcome {
        Some(figures) => {
            figures?;
            if json {
                println!("{}", serde_json::to_string(&bench.report)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(crate::exit::code(crate::exit::INTERRUPTED)),
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

fn unexpected(tally: &Tally, status: u16) -> f64 {
    tally.other_than(status) as f64
}

/// The percentiles a phase reports, in ms: p50, p99, p99.9, max.
fn percentiles(latencies: &Latencies) -> [f64; 4] {
    [50.0, 99.0, 99.9, 100.0].map(|p| round3(latencies.percentile(p)))
}

/// The same percentiles as a phase's named figures.
fn percentile_figures([p50, p99, p999, max]: [f64; 4]) -> [(&'static str, f64); 4] {
    [
        ("p50_ms", p50),
        ("p99_ms", p99),
        ("p999_ms", p999),
        ("max_ms", max),
    ]
}

struct Bench<'a> {
    platform: &'a LocalPlatform,
    /// The step under way; the lines for people go through it.
    progress: Progress,
    http: reqwest::Client,
    report: BenchReport,
}

/// A service's process ids and the CPU seconds they have spent together
/// (a phase with a process restarted counts from its start).
type Cpu = (Vec<u32>, f64);

/// Every service's hop histograms and CPU at one moment.
struct Hops(Vec<(Service, Scrape, Option<Cpu>)>);

impl Bench<'_> {
    async fn measure(&mut self, transport: Transport, size: BenchSize) -> anyhow::Result<()> {
        let order_url = self.platform.endpoint(Service::Order)?;
        match transport {
            Transport::Rest => self.sync_rest(&order_url, size).await?,
            Transport::Rabbitmq => self.async_rabbitmq(&order_url, size).await?,
            Transport::Kafka => self.streaming_kafka(&order_url).await?,
        }
        Ok(())
    }

    /// Places `workload`'s orders, counting them on the progress line as `step`.
    async fn place(
        &self,
        step: &str,
        workload: &Workload,
        order_url: &str,
    ) -> anyhow::Result<(Tally, Duration)> {
        self.progress.orders(step, u64::from(workload.orders));
        let progress = self.progress.clone();
        let counted = Arc::new(move |_: &Sample| progress.order_done());
        Ok(workload::run(workload, order_url, counted).await?)
    }

    /// Each service's hop histograms (its first process's) and the CPU all
    /// of its processes have spent.
    async fn hops(&self) -> Hops {
        let mut scrapes = Vec::new();
        for service in self.platform.services() {
            if let Ok(base) = self.platform.endpoint(service) {
                let pids: Vec<u32> = self
                    .platform
                    .replica_pids(service)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                let spent: Option<f64> = pids.iter().map(|pid| cpu_seconds_of(*pid)).sum();
                let cpu = spent
                    .filter(|_| !pids.is_empty())
                    .map(|spent| (pids, spent));
                scrapes.push((service, Scrape::take(&self.http, &base).await, cpu));
            }
        }
        Hops(scrapes)
    }

    /// Records a phase, printing its line, where its time went and each
    /// service's CPU per unit.
    async fn phase(
        &mut self,
        name: &'static str,
        description: String,
        units: Units,
        figures: Vec<(&'static str, f64)>,
        before: &Hops,
    ) {
        self.progress.say(&format!("  {description}"));
        self.progress
            .step(format!("{name}: reading the services' metrics"));
        let after = self.hops().await;
        let mut hops = BTreeMap::new();
        let mut cpu_ms_per_unit = BTreeMap::new();
        for (service, now, cpu) in &after.0 {
            let earlier = before.0.iter().find(|(s, _, _)| s == service);
            // A service restarted during the phase (the drain) started from zero.
            let spent = match (cpu, earlier.and_then(|(_, _, c)| c.as_ref())) {
                (Some((pids, now)), Some((then_pids, then))) if pids == then_pids => {
                    Some(now - then)
                }
                (Some((_, now)), _) => Some(*now),
                (None, _) => None,
            };
            if let Some(spent) = spent.filter(|_| units.count > 0.0) {
                cpu_ms_per_unit.insert(service.to_string(), round3(spent * 1000.0 / units.count));
            }
            let earlier = earlier
                .map(|(_, scrape, _)| scrape.clone())
                .unwrap_or_default();
            let figures = now.since(&earlier);
            if figures.is_empty() {
                continue;
            }
            for hop in &figures {
                self.progress.say(&format!(
                    "      {:<13} {:<22} p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  ({})",
                    service.to_string(),
                    hop.hop,
                    hop.p50_ms,
                    hop.p99_ms,
                    hop.p999_ms,
                    hop.count
                ));
            }
            hops.insert(service.to_string(), figures);
        }
        let cpu: Vec<String> = cpu_ms_per_unit
            .iter()
            .map(|(service, ms)| format!("{service} {ms:.3}"))
            .collect();
        self.progress.say(&format!(
            "      CPU ms per {}: {}",
            units.unit,
            cpu.join(", ")
        ));
        self.report.phases.push(Phase {
            name,
            description,
            figures: figures.into_iter().collect(),
            hops,
            unit: units.unit,
            cpu_ms_per_unit,
        });
    }

    async fn sync_rest(&mut self, order_url: &str, size: BenchSize) -> anyhow::Result<()> {
        self.progress.say(&format!(
            "sync-rest chain (order → inventory → notification, {} on every hop)",
            self.report.database.shown()
        ));
        // Warm-up: connection pools, SQLite caches, page faults.
        let warm_up = workload_of(500, size.concurrency);
        self.place("warm-up", &warm_up, order_url).await?;

        let before = self.hops().await;
        let (samples, _) = self
            .place("latency", &workload_of(size.latency_orders, 1), order_url)
            .await?;
        let shown = percentiles(&samples.latency);
        let [p50, p99, p999, max] = shown;
        let non_201 = unexpected(&samples, 201);
        self.phase(
            "latency",
            format!(
                "concurrency 1:  {} orders  p50 {p50:.3} ms  p99 {p99:.3} ms  p99.9 {p999:.3} ms  max {max:.3} ms  (non-201: {non_201})",
                size.latency_orders
            ),
            orders(f64::from(size.latency_orders)),
            vec![
                ("orders", f64::from(size.latency_orders)),
                ("non_201", non_201),
            ]
            .into_iter()
            .chain(percentile_figures(shown))
            .collect(),
            &before,
        )
        .await;

        let before = self.hops().await;
        let (samples, took) = self
            .place(
                "throughput",
                &workload_of(size.throughput_orders, size.concurrency),
                order_url,
            )
            .await?;
        let shown = percentiles(&samples.latency);
        let [p50, p99, p999, _] = shown;
        let per_second = round3(f64::from(size.throughput_orders) / took.as_secs_f64());
        let non_201 = unexpected(&samples, 201);
        self.phase(
            "throughput",
            format!(
                "concurrency {}: {} orders  {per_second:.0} orders/s  p50 {p50:.3} ms  p99 {p99:.3} ms  p99.9 {p999:.3} ms  (non-201: {non_201})",
                size.concurrency, size.throughput_orders
            ),
            orders(f64::from(size.throughput_orders)),
            vec![
                ("orders", f64::from(size.throughput_orders)),
                ("concurrency", f64::from(size.concurrency)),
                ("orders_per_second", per_second),
                ("non_201", non_201),
            ]
            .into_iter()
            .chain(percentile_figures(shown))
            .collect(),
            &before,
        )
        .await;
        Ok(())
    }

    async fn async_rabbitmq(&mut self, order_url: &str, size: BenchSize) -> anyhow::Result<()> {
        self.progress.say(&format!(
            "async-rabbitmq (outbox + publisher confirms, manual acks, {}, persistent messages)",
            self.report.database.shown()
        ));
        let warm_up = workload_of(500, size.concurrency);
        self.place("warm-up", &warm_up, order_url).await?;

        let accept_cursor = self.cursor().await?;
        let before = self.hops().await;
        let (samples, _) = self
            .place("accept", &workload_of(size.latency_orders, 1), order_url)
            .await?;
        let shown = percentiles(&samples.latency);
        let [p50, p99, p999, _] = shown;
        let non_202 = unexpected(&samples, 202);
        self.phase(
            "accept",
            format!(
                "accept (POST /order → 202), concurrency 1: {} orders  p50 {p50:.3} ms  p99 {p99:.3} ms  p99.9 {p999:.3} ms  (non-202: {non_202})",
                size.latency_orders
            ),
            orders(f64::from(size.latency_orders)),
            vec![
                ("orders", f64::from(size.latency_orders)),
                ("non_202", non_202),
            ]
            .into_iter()
            .chain(percentile_figures(shown))
            .collect(),
            &before,
        )
        .await;
        // The next phase starts on a part with no backlog left from this one.
        self.progress
            .step("accept: waiting for the accepted orders to settle");
        self.settle(accept_cursor, samples.accepted()).await;

        let rate = 500.0;
        let steady = Workload {
            rate_per_second: Some(rate),
            concurrency: None,
            ..workload_of(5000, 1)
        };
        let steady_cursor = self.cursor().await?;
        let before = self.hops().await;
        let (samples, took) = self
            .place(&format!("end to end at {rate}/s"), &steady, order_url)
            .await?;
        self.progress
            .step("end to end: waiting for the orders to settle");
        let end_to_end = self.settle(steady_cursor, samples.accepted()).await;
        let shown = percentiles(&end_to_end);
        let [p50, p99, p999, max] = shown;
        let settled = end_to_end.count() as f64;
        self.phase(
            "end_to_end",
            format!(
                "end to end (placed → reserved) at {rate} orders/s: {} orders in {:.1} s  p50 {p50:.1} ms  p99 {p99:.1} ms  p99.9 {p999:.1} ms  max {max:.1} ms  (settled: {settled})",
                samples.answers(),
                took.as_secs_f64()
            ),
            orders(samples.answers() as f64),
            vec![
                ("orders", samples.answers() as f64),
                ("rate_per_second", rate),
                ("settled", settled),
            ]
            .into_iter()
            .chain(percentile_figures(shown))
            .collect(),
            &before,
        )
        .await;

        let backlog = 10_000;
        let admin = self
            .platform
            .rabbitmq()
            .ok_or_else(|| anyhow::anyhow!("no broker"))?
            .clone();
        let queue = foodlab_transport::rabbitmq::Topology::INVENTORY_QUEUE;
        self.progress.step("drain: stopping inventory");
        let original = self.platform.replicas(Service::Inventory).await?;
        self.platform.scale(Service::Inventory, 0).await?;
        let queued = async {
            self.place(
                "drain: queueing a backlog",
                &workload_of(backlog, size.concurrency),
                order_url,
            )
            .await?;
            self.progress
                .step("drain: waiting for the broker to hold the backlog");
            let queued_by = Instant::now() + WAIT_AT_MOST;
            while admin.queue_depth(queue).await?.messages_ready < u64::from(backlog) {
                anyhow::ensure!(
                    Instant::now() < queued_by,
                    "the {backlog} orders were not all queued within {WAIT_AT_MOST:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(error) = queued {
            // Inventory back as it was, whatever stopped the backlog; the
            // backlog's error is the one to report.
            if let Err(restore) = self.platform.scale(Service::Inventory, original).await {
                tracing::warn!(%restore, "inventory not restored after the backlog failed");
            }
            return Err(error);
        }
        let before = self.hops().await;
        self.progress
            .step("drain: inventory restarted, draining the backlog");
        let started = Instant::now();
        self.platform.scale(Service::Inventory, original).await?;
        while admin.queue_depth(queue).await?.messages_ready > 0 {
            anyhow::ensure!(
                started.elapsed() < WAIT_AT_MOST,
                "the backlog did not drain within {WAIT_AT_MOST:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        let per_second = round3(f64::from(backlog) / took.as_secs_f64());
        self.phase(
            "drain",
            format!(
                "drain of a {backlog}-message backlog (inventory restarted, readiness included): {:.2} s  {per_second:.0} msg/s",
                took.as_secs_f64()
            ),
            Units {
                unit: "message",
                count: f64::from(backlog),
            },
            vec![
                ("messages", f64::from(backlog)),
                ("seconds", round3(took.as_secs_f64())),
                ("messages_per_second", per_second),
            ],
            &before,
        )
        .await;
        Ok(())
    }

    /// The order service's change cursor: what a phase places comes after it.
    async fn cursor(&self) -> anyhow::Result<i64> {
        order_cursor(self.platform, &self.http)
            .await
            .map_err(|e| anyhow::anyhow!("the order service's cursor cannot be read: {e}"))
    }

    /// Waits (up to a minute) for the `accepted` orders placed after
    /// `since` to settle; their end-to-end times.
    async fn settle(&self, since: i64, accepted: u64) -> Latencies {
        let mut settled = Latencies::default();
        wait_settled(
            self.platform,
            &self.http,
            since,
            accepted,
            |_, ms| settled.record(ms),
            Instant::now() + Duration::from_secs(60),
        )
        .await;
        settled
    }

    /// Inventory's decisions so far (every outcome).
    async fn decisions(&self) -> anyhow::Result<u64> {
        Snapshot::take(self.platform, &self.http)
            .await
            .map(|snapshot| snapshot.decisions)
            .map_err(|e| anyhow::anyhow!("inventory's counters cannot be read: {e}"))
    }

    async fn streaming_kafka(&mut self, order_url: &str) -> anyhow::Result<()> {
        self.progress.say(
            "streaming-kafka (outbox → idempotent producer acks=all, 3 partitions, inventory-group and analytics-group)",
        );
        let analytics = Analytics::of(self.platform, &self.http)
            .ok_or_else(|| anyhow::anyhow!("the part runs no analytics service"))?;
        let bulk = |count: u64| {
            self.http
                .post(format!("{order_url}/orders/bulk"))
                .json(&serde_json::json!({"count": count, "item": "burger", "quantity": 1}))
                // Ten thousand orders in one request: longer than one call's timeout.
                .timeout(WAIT_AT_MOST)
                .send()
        };
        let deadline = || Instant::now() + WAIT_AT_MOST;

        // A database kept from earlier runs holds their decisions: count from here.
        let decided_before = self.decisions().await?;
        // Warm-up: producer, consumers and their groups, SQLite caches.
        self.progress.step("warm-up: 1000 orders in one request");
        bulk(1000).await?.error_for_status()?;
        self.progress
            .step("warm-up: waiting for inventory and analytics to process it");
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
        let before = self.hops().await;
        self.progress
            .step(format!("burst: {burst} orders in one request"));
        let started = Instant::now();
        bulk(burst).await?.error_for_status()?;
        self.progress
            .step("burst: waiting for inventory and analytics to process it");
        let accepted = started.elapsed().as_secs_f64();
        let mut inventory_done = None;
        let target = AnalyticsTotals {
            orders: 1000 + burst,
            inventory_events: 1000 + burst,
            failures: 0,
        };
        let analytics_done = loop {
            if inventory_done.is_none() && self.decisions().await? >= decided_before + 1000 + burst
            {
                inventory_done = Some(started.elapsed());
            }
            if let Some(totals) = analytics.totals().await
                && totals.orders >= target.orders
                && totals.inventory_events >= target.inventory_events
                && inventory_done.is_some()
            {
                break started.elapsed().as_secs_f64();
            }
            anyhow::ensure!(
                started.elapsed() < WAIT_AT_MOST,
                "the burst was not processed within {WAIT_AT_MOST:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let inventory_done = inventory_done.map_or(analytics_done, |d| d.as_secs_f64());
        let per_second = round3(burst as f64 / analytics_done);
        self.phase(
            "burst",
            format!(
                "burst: {burst} orders accepted (POST /orders/bulk → 201) in {accepted:.3} s; inventory decided all after {inventory_done:.3} s; analytics counted every order and result after {analytics_done:.3} s ({per_second:.0} orders/s end to end)"
            ),
            orders(burst as f64),
            vec![
                ("orders", burst as f64),
                ("accepted_seconds", round3(accepted)),
                ("inventory_seconds", round3(inventory_done)),
                ("analytics_seconds", round3(analytics_done)),
                ("orders_per_second", per_second),
            ],
            &before,
        )
        .await;

        let before = self.hops().await;
        self.progress
            .step("replay: analytics reads the log again from the start");
        let replay = analytics
            .replay(deadline())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        self.phase(
            "replay",
            format!(
                "replay (analytics rewound to the earliest offsets): {} events read again in {:.3} s  {:.0} events/s  (totals identical: {})",
                replay.events, replay.seconds, replay.events_per_second, replay.identical
            ),
            Units {
                unit: "event",
                count: replay.events as f64,
            },
            vec![
                ("events", replay.events as f64),
                ("seconds", replay.seconds),
                ("events_per_second", replay.events_per_second),
                ("identical", if replay.identical { 1.0 } else { 0.0 }),
            ],
            &before,
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_reports_p50_p99_p999_and_the_maximum() {
        let mut latencies = Latencies::default();
        for ms in 1..=1000 {
            latencies.record(f64::from(ms));
        }
        assert_eq!(percentiles(&latencies), [500.0, 990.0, 999.0, 1000.0]);
        assert_eq!(percentiles(&Latencies::default()), [0.0; 4]);
    }
}
