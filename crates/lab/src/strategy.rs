//! What differs between the transports, behind one face: what the baseline
//! reads, how accepted orders settle, what is measured at the end.

use std::collections::HashSet;
use std::time::Instant;

use crate::faults::{FIRST_BACKOFF, MAX_BACKOFF};
use crate::measure::{self, Sample};
use crate::observer::Observer;
use crate::platform::Platform;
use crate::probe::kafka::Analytics;
use crate::probe::observe::{
    self, Backlog, BacklogSampler, Snapshot, wait_queues_empty, wait_settled,
};
use crate::results::{AnalyticsTotals, LabResults};
use crate::spec::{Service, Transport};
use crate::validated::ValidatedLab;

/// How long a lab waits for analytics to have read the log before it starts.
pub const ANALYTICS_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the baseline keeps reading inventory's counters before the run
/// goes on without them (a Service briefly not routing).
const BASELINE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The transport's way of settling and measuring.
pub enum Strategy {
    /// sync-rest: every order is final when its answer comes.
    Rest,
    /// async-rabbitmq: accepted orders settle through the queues.
    Rabbitmq,
    /// streaming-kafka: accepted orders settle through the log; analytics counts them.
    Kafka(Option<Analytics>),
}

/// What the part looked like before the workload.
pub struct Baseline {
    pub snapshot: Option<Snapshot>,
    pub analytics: Option<AnalyticsTotals>,
    pub sampler: Option<BacklogSampler>,
}

/// How the workload's orders ended.
pub struct Settled {
    pub terminal: u64,
    pub backlog: Option<Backlog>,
    /// Creation time (ms since the epoch) and creation-to-final-status time
    /// (ms) of each settled order (async parts).
    pub end_to_end: Option<Vec<(i64, f64)>>,
}

impl Strategy {
    pub fn of<P: Platform>(platform: &P, transport: Transport, http: &reqwest::Client) -> Self {
        match transport {
            Transport::Rest => Self::Rest,
            Transport::Rabbitmq => Self::Rabbitmq,
            Transport::Kafka => Self::Kafka(Analytics::of(platform, http)),
        }
    }

    fn analytics(&self) -> Option<&Analytics> {
        match self {
            Self::Kafka(analytics) => analytics.as_ref(),
            Self::Rest | Self::Rabbitmq => None,
        }
    }

    pub async fn baseline<P: Platform>(
        &self,
        platform: &P,
        http: &reqwest::Client,
        observer: &dyn Observer,
    ) -> Baseline {
        // Analytics reads the whole log whenever it starts, and a previous
        // run's events may still be on their way: count from an idle part.
        let analytics = match self.analytics() {
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
        let snapshot = first_snapshot(platform, http).await;
        let sampler = match self {
            Self::Rest => None,
            Self::Rabbitmq | Self::Kafka(_) => {
                BacklogSampler::start(platform, self.analytics().cloned())
            }
        };
        Baseline {
            snapshot,
            analytics,
            sampler,
        }
    }

    /// Waits for the accepted orders (and, on streaming, analytics) until
    /// `deadline`, filling in what settling tells.
    #[allow(clippy::too_many_arguments)]
    pub async fn settle<P: Platform>(
        &self,
        platform: &P,
        http: &reqwest::Client,
        samples: &[Sample],
        baseline: &mut Baseline,
        results: &mut LabResults,
        workload_started: Instant,
        deadline: Instant,
        observer: &dyn Observer,
    ) -> Settled {
        let mut terminal = samples
            .iter()
            .filter(|s| s.order_status.as_deref().is_some_and(observe::is_terminal))
            .count() as u64;
        if matches!(self, Self::Rest) {
            return Settled {
                terminal,
                backlog: None,
                end_to_end: None,
            };
        }
        observer.note("waiting for accepted orders to settle");
        let watched: HashSet<String> = samples
            .iter()
            .filter(|s| s.status.is_some_and(|c| (200..300).contains(&c)))
            .filter_map(|s| s.order_id.clone())
            .collect();
        let settlement = wait_settled(platform, http, &watched, deadline).await;
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
            .filter(|s| observe::is_terminal(s))
            .count() as u64
            + refused;
        results.end_to_end_ms = Some(measure::summary_of_ms(settlement.end_to_end_ms));
        if let (Some(analytics), Some(before)) = (self.analytics(), baseline.analytics) {
            observer.note("waiting for inventory and analytics to process every event");
            let until = AnalyticsTotals {
                orders: before.orders + results.accepted,
                inventory_events: before.inventory_events + results.accepted,
                failures: before.failures,
            };
            if let Some(at) = analytics.wait_caught_up(until, deadline).await {
                let seconds = at.duration_since(workload_started).as_secs_f64();
                results.processed_seconds = Some(round3(seconds));
                if seconds > 0.0 {
                    results.processed_per_second =
                        Some((results.accepted as f64 / seconds * 10.0).round() / 10.0);
                }
            }
            results.analytics = analytics.totals().await.map(|now| now.since(before));
        }
        if !wait_queues_empty(platform, deadline).await {
            observer.note("queues still hold messages at the deadline");
        }
        Settled {
            terminal,
            backlog: baseline.sampler.take().map(BacklogSampler::stop),
            end_to_end: Some(settlement.end_to_end_by_creation),
        }
    }

    /// What the run did to the part's counters, and the streaming figures.
    pub async fn measure<P: Platform>(
        &self,
        platform: &P,
        http: &reqwest::Client,
        lab: &ValidatedLab,
        baseline: &Baseline,
        results: &mut LabResults,
        observer: &dyn Observer,
    ) {
        if let (Some(before), Some(after)) =
            (baseline.snapshot, Snapshot::take(platform, http).await)
        {
            results.reservations = Some(after.reservations.saturating_sub(before.reservations));
            results.decided = Some(after.decisions.saturating_sub(before.decisions));
            results.stock_consumed = Some(before.stock.saturating_sub(after.stock));
            if let (Some(b), Some(a)) = (before.dead_letters, after.dead_letters) {
                results.dead_lettered = Some(a.saturating_sub(b));
            }
        }
        if let Some(analytics) = self.analytics() {
            results.lag_at_end = analytics.total_lag().await;
            if lab.replay {
                observer
                    .note("rewinding analytics to the earliest offsets and reading the log again");
                match analytics.replay(Instant::now() + lab.within).await {
                    Ok(replay) => results.replay = Some(replay),
                    Err(error) => observer.note(&format!("replay failed: {error}")),
                }
            }
        }
    }
}

/// The baseline's counters, read again with a backoff while inventory
/// does not answer.
async fn first_snapshot<P: Platform>(platform: &P, http: &reqwest::Client) -> Option<Snapshot> {
    platform.endpoint(Service::Inventory).ok()?;
    let until = Instant::now() + BASELINE_PATIENCE;
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1u32;
    loop {
        if let Some(snapshot) = Snapshot::take(platform, http).await {
            return Some(snapshot);
        }
        if Instant::now() + backoff >= until {
            tracing::warn!(service = %Service::Inventory, call = "GET /stats, GET /stock", attempt, "baseline counters not readable: no counter figures for this run");
            return None;
        }
        tracing::warn!(service = %Service::Inventory, call = "GET /stats, GET /stock", attempt, "baseline counters not readable; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt += 1;
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
