//! Running a lab: faults, workload, injections and chaos together; then
//! waiting for the orders to settle, measuring, and the verdict.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foodlab_domain::Faults;

use crate::chaos::{self, ChaosError};
use crate::faults::{FaultApiError, FaultClient};
use crate::measure::{self, Sample};
use crate::observe::{BacklogSampler, Snapshot, wait_queues_empty, wait_settled};
use crate::platform::{Platform, PlatformError};
use crate::results::{AnalyticsTotals, ChaosRecord, LabResults};
use crate::spec::{FoodLabSpec, Service, Transport, Verdict};
use crate::streaming::Analytics;
use crate::verdict::{self, Outcome};
use crate::{inject, workload};

/// How long a lab waits for analytics to have read the log before it starts.
const ANALYTICS_CATCH_UP: Duration = Duration::from_secs(60);

/// How long a lab without `expect.within` waits for its orders to settle.
const DEFAULT_SETTLE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("invalid lab: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Faults(#[from] FaultApiError),
    #[error(transparent)]
    Chaos(#[from] ChaosError),
    #[error("publishing the lab's injected messages failed: {0}")]
    Inject(String),
}

/// Hears about a lab while it runs (progress bars, logs).
pub trait Observer: Send + Sync {
    fn workload_started(&self, _orders: u64) {}
    fn order_answered(&self, _sample: &Sample) {}
    fn note(&self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LabReport {
    pub transport: Transport,
    pub results: LabResults,
    pub chaos: Vec<ChaosRecord>,
    pub verdict: Verdict,
    pub elapsed_seconds: f64,
}

pub async fn run_lab<P: Platform>(
    platform: &P,
    lab: &FoodLabSpec,
    observer: Arc<dyn Observer>,
) -> Result<LabReport, LabError> {
    lab.validate().map_err(LabError::Invalid)?;
    if lab.inject.is_some() && platform.rabbitmq().is_none() {
        // Malformed Kafka events are covered by the streaming part's tests.
        return Err(LabError::Invalid(vec![
            "inject needs the async-rabbitmq part (transport: rabbitmq)".into(),
        ]));
    }
    let started = Instant::now();
    let http = reqwest::Client::new();
    let faults = FaultClient::default();
    for (service, spec) in lab.faults.declared() {
        let faults_of = spec
            .to_faults()
            .map_err(|e| LabError::Invalid(vec![format!("faults.{service}: {e}")]))?;
        faults.set(platform, service, &faults_of).await?;
        observer.note(&format!(
            "faults on {service}: delay {} ms, fail rate {}",
            faults_of.delay_ms, faults_of.fail_rate
        ));
    }
    let analytics = match lab.transport {
        Transport::Kafka => Analytics::of(platform, &http),
        Transport::Rest | Transport::Rabbitmq => None,
    };
    // Analytics reads the whole log whenever it starts, and a previous run's
    // events may still be on their way: count from an idle part.
    let analytics_before = match &analytics {
        Some(analytics) => {
            let totals = analytics
                .caught_up_totals(Instant::now() + ANALYTICS_CATCH_UP)
                .await;
            if totals.is_none() {
                observer.note(
                    "analytics did not catch up with the log: no analytics figures for this run",
                );
            }
            totals
        }
        None => None,
    };
    let before = Snapshot::take(platform, &http).await;
    let sampler = BacklogSampler::start(platform, analytics.clone());

    let order_url = platform.endpoint(Service::Order)?;
    observer.workload_started(u64::from(lab.workload.orders));
    let on_sample = {
        let observer = Arc::clone(&observer);
        Arc::new(move |sample: &Sample| observer.order_answered(sample))
    };
    let origin = tokio::time::Instant::now();
    let workload_started = Instant::now();
    let chaos_steps = futures::future::join_all(
        lab.chaos
            .iter()
            .enumerate()
            .map(|(i, step)| chaos::run_step(platform, &faults, &lab.faults, i, step, origin)),
    );
    let injections = async {
        match (&lab.inject, platform.rabbitmq()) {
            (Some(injection), Some(admin)) => {
                let item = lab.workload.items.first().map_or("burger", String::as_str);
                inject::publish(&admin.amqp_url(), injection, item, lab.workload.quantity)
                    .await
                    .map(drop)
                    .map_err(|e| LabError::Inject(e.to_string()))
            }
            _ => Ok(()),
        }
    };
    let ((samples, workload_time), chaos_records, injected) = tokio::join!(
        workload::run(&lab.workload, &order_url, on_sample),
        chaos_steps,
        injections
    );
    let workload_done = Instant::now();

    // Leave the part as the lab found it, whatever happened. The answers of
    // the sync part are all in; the async parts' orders are still on their
    // way, and the faults apply to them until they settle.
    let chaos = chaos_records.into_iter().collect::<Result<Vec<_>, _>>();
    let settles_later = lab.transport != Transport::Rest && chaos.is_ok() && injected.is_ok();
    if !settles_later {
        clear_faults(platform, &faults, lab).await;
    }
    let chaos = chaos?;
    injected?;

    let mut results = measure::summarize(&samples, workload_time);
    let mut terminal = count_terminal(&samples);
    if lab.transport != Transport::Rest {
        // Accepted orders settle after their answer: wait for them.
        observer.note("waiting for accepted orders to settle");
        let watched: HashSet<String> = samples
            .iter()
            .filter(|s| s.status.is_some_and(|c| (200..300).contains(&c)))
            .filter_map(|s| s.order_id.clone())
            .collect();
        let limit = lab.expect.within.unwrap_or(DEFAULT_SETTLE_LIMIT);
        let settlement = wait_settled(platform, &http, &watched, started + limit).await;
        results.reserved = settlement
            .statuses
            .values()
            .filter(|s| measure::is_reserved(s))
            .count() as u64;
        results.failed = samples.len() as u64 - results.reserved;
        // A request the API refused is final too.
        let refused = (samples.len() - watched.len()) as u64;
        terminal = settlement
            .statuses
            .values()
            .filter(|s| measure::is_terminal(s))
            .count() as u64
            + refused;
        results.end_to_end_ms = Some(measure::summary_of_ms(settlement.end_to_end_ms));
    }
    let limit = lab.expect.within.unwrap_or(DEFAULT_SETTLE_LIMIT);
    if let (Some(analytics), Some(before)) = (&analytics, analytics_before) {
        observer.note("waiting for inventory and analytics to process every event");
        let until = AnalyticsTotals {
            orders: before.orders + results.accepted,
            inventory_events: before.inventory_events + results.accepted,
            failures: before.failures,
        };
        if let Some(at) = analytics.wait_caught_up(until, started + limit).await {
            let seconds = at.duration_since(workload_started).as_secs_f64();
            results.processed_seconds = Some(round3(seconds));
            if seconds > 0.0 {
                results.processed_per_second =
                    Some((results.accepted as f64 / seconds * 10.0).round() / 10.0);
            }
        }
        results.analytics = analytics.totals().await.map(|now| now.since(before));
    }
    if !wait_queues_empty(platform, started + limit).await {
        observer.note("queues still hold messages at the deadline");
    }
    if settles_later {
        clear_faults(platform, &faults, lab).await;
    }
    if let Some(backlog) = sampler.map(BacklogSampler::stop) {
        results.max_backlog = Some(backlog.max());
        // Draining starts when the last disruption is undone (or the
        // workload ends, for a lab without chaos).
        let drain_from = chaos
            .iter()
            .filter_map(|record| record.restored_at)
            .max()
            .map_or(workload_done, instant_of);
        results.drain_seconds = backlog
            .drained_after(drain_from)
            .map(|d| round3(d.as_secs_f64()));
    }
    if let (Some(before), Some(after)) = (before, Snapshot::take(platform, &http).await) {
        results.reservations = Some(after.reservations.saturating_sub(before.reservations));
        results.decided = Some(after.decisions.saturating_sub(before.decisions));
        results.stock_consumed = Some(before.stock.saturating_sub(after.stock));
        if let (Some(b), Some(a)) = (before.dead_letters, after.dead_letters) {
            results.dead_lettered = Some(a.saturating_sub(b));
        }
    }

    if let Some(analytics) = &analytics {
        results.lag_at_end = analytics.total_lag().await;
        if lab.replay {
            observer.note("rewinding analytics to the earliest offsets and reading the log again");
            match analytics.replay(Instant::now() + limit).await {
                Ok(replay) => results.replay = Some(replay),
                Err(error) => observer.note(&format!("replay failed: {error}")),
            }
        }
    }

    let outcome = Outcome {
        orders: u64::from(lab.workload.orders),
        terminal,
        elapsed: started.elapsed(),
    };
    results.checks = verdict::evaluate(&lab.expect, &results, outcome);
    let verdict = verdict::verdict(&results.checks);
    Ok(LabReport {
        transport: lab.transport,
        results,
        chaos,
        verdict,
        elapsed_seconds: round3(started.elapsed().as_secs_f64()),
    })
}

async fn clear_faults<P: Platform>(platform: &P, faults: &FaultClient, lab: &FoodLabSpec) {
    for (service, _) in lab.faults.declared() {
        if let Err(e) = faults.set(platform, service, &Faults::default()).await {
            tracing::warn!(%service, error = %e, "could not clear faults");
        }
    }
}

fn count_terminal(samples: &[Sample]) -> u64 {
    samples
        .iter()
        .filter(|s| s.order_status.as_deref().is_some_and(measure::is_terminal))
        .count() as u64
}

/// The monotonic instant of a wall-clock timestamp in the recent past.
fn instant_of(timestamp: jiff::Timestamp) -> Instant {
    let ago = jiff::Timestamp::now().duration_since(timestamp);
    let ago = Duration::try_from(ago).unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
