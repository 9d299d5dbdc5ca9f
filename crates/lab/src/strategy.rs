//! What differs between the transports, behind one face: what the baseline
//! reads, how accepted orders settle, what is measured at the end.

use std::future::Future;
use std::time::Instant;

use foodlab_domain::{Backoff, OrderStatus};

use crate::chaos::WorkloadStart;
use crate::faults::{FIRST_BACKOFF, MAX_BACKOFF};
use crate::measure::{Measured, Settled, Tally};
use crate::observer::Observer;
use crate::platform::Platform;
use crate::probe::ProbeError;
use crate::probe::broker_errors::ErrorCounts;
use crate::probe::kafka::Analytics;
use crate::probe::observe::{
    BacklogSampler, Snapshot, order_cursor, wait_queues_empty, wait_settled,
};
use crate::results::AnalyticsTotals;
use crate::series::EndToEnd;
use crate::spec::{Service, Transport};
use crate::stats::round3;
use crate::validated::ValidatedLab;

/// How long a lab waits for analytics to have read the log before it starts.
pub const ANALYTICS_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the baseline keeps reading inventory's counters (and order's
/// cursor) before the run goes on without them (a Service briefly not routing).
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
    /// The order service's cursor (async parts): the lab's orders are the
    /// ones placed after it, as the claim keeps other labs off the part.
    pub order_cursor: Option<i64>,
    /// The broker errors the services had counted (async parts).
    pub broker_errors: Option<ErrorCounts>,
}

/// Where a strategy looks: the part, the lab's HTTP client (it carries the
/// admin token), and who hears what it waits for.
pub struct Reach<'a, P> {
    pub platform: &'a P,
    pub http: &'a reqwest::Client,
    pub observer: &'a dyn Observer,
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

    pub async fn baseline<P: Platform>(&self, reach: &Reach<'_, P>) -> Baseline {
        let Reach {
            platform,
            http,
            observer,
        } = *reach;
        // Analytics reads the whole log at its group's first start (or a
        // replay), and a previous run's events may still be on their way:
        // count from an idle part.
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
        let snapshot = match platform.endpoint(Service::Inventory) {
            Ok(_) => {
                patiently(Service::Inventory, "GET /stats, GET /stock", || {
                    Snapshot::take(platform, http)
                })
                .await
            }
            Err(_) => None,
        };
        let broker_errors = match self {
            Self::Rest => None,
            Self::Rabbitmq | Self::Kafka(_) => {
                let services = self.transport().services();
                let counts = ErrorCounts::read(platform, http, services).await;
                if counts.is_none() {
                    observer.note("no service's /admin/metrics was readable: the broker errors seen are not measured");
                }
                counts
            }
        };
        let (order_cursor, sampler) = match self {
            Self::Rest => (None, None),
            Self::Rabbitmq | Self::Kafka(_) => {
                let cursor = patiently(Service::Order, "GET /orders/cursor", || {
                    order_cursor(platform, http)
                })
                .await;
                if cursor.is_none() {
                    observer.note("the order service's cursor was not readable: the accepted orders cannot be followed");
                }
                (
                    cursor,
                    BacklogSampler::start(platform, self.analytics().cloned()),
                )
            }
        };
        Baseline {
            snapshot,
            analytics,
            sampler,
            order_cursor,
            broker_errors,
        }
    }

    fn transport(&self) -> Transport {
        match self {
            Self::Rest => Transport::Rest,
            Self::Rabbitmq => Transport::Rabbitmq,
            Self::Kafka(_) => Transport::Kafka,
        }
    }

    /// Waits for the accepted orders (and, on streaming, analytics) until
    /// `deadline`; what settling tells.
    pub async fn settle<P: Platform>(
        &self,
        reach: &Reach<'_, P>,
        tally: &Tally,
        baseline: &mut Baseline,
        start: &WorkloadStart,
        deadline: Instant,
    ) -> Settled {
        let Reach {
            platform,
            http,
            observer,
        } = *reach;
        let terminal = tally.orders_whose_status(OrderStatus::is_terminal);
        if matches!(self, Self::Rest) {
            return Settled {
                terminal,
                ..Settled::default()
            };
        }
        observer.note("waiting for accepted orders to settle");
        let accepted = tally.accepted();
        let mut end_to_end = EndToEnd::new(start.at);
        let settlement = match baseline.order_cursor {
            Some(since) => {
                let on_settled = |created, ms| end_to_end.record(created, ms);
                Some(wait_settled(platform, http, since, accepted, on_settled, deadline).await)
            }
            None => None,
        };
        let reserved = settlement
            .as_ref()
            .map_or(0, |s| s.orders_whose_status(OrderStatus::is_reserved));
        let settled = settlement
            .as_ref()
            .map_or(0, |s| s.orders_whose_status(OrderStatus::is_terminal));
        // Only an order a request lost (placed, its answer not received)
        // could make these exceed the accepted ones.
        let reserved = reserved.min(accepted);
        let mut outcome = Settled {
            reserved_and_failed: Some((reserved, tally.answers() - reserved)),
            // A request the API refused is final too.
            terminal: settled.min(accepted) + (tally.answers() - accepted),
            // Without the cursor nothing was measured: no figure, not zeros.
            end_to_end_ms: settlement
                .is_some()
                .then(|| end_to_end.latencies().summary()),
            ..Settled::default()
        };
        if let (Some(analytics), Some(before)) = (self.analytics(), baseline.analytics) {
            observer.note("waiting for inventory and analytics to process every event");
            let until = AnalyticsTotals {
                orders: before.orders + accepted,
                inventory_events: before.inventory_events + accepted,
                failures: before.failures,
            };
            if let Some(at) = analytics.wait_caught_up(until, deadline).await {
                let seconds = at.duration_since(start.instant.into_std()).as_secs_f64();
                outcome.processed_seconds = Some(round3(seconds));
                if seconds > 0.0 {
                    outcome.processed_per_second =
                        Some((accepted as f64 / seconds * 10.0).round() / 10.0);
                }
            }
            outcome.analytics = analytics.totals().await.map(|now| now.since(before));
        }
        if !wait_queues_empty(platform, deadline).await {
            observer.note("queues still hold messages at the deadline");
        }
        outcome.backlog = baseline.sampler.take().map(BacklogSampler::stop);
        outcome.end_to_end = Some(end_to_end);
        outcome
    }

    /// What the run did to the part's counters, and the streaming figures.
    pub async fn measure<P: Platform>(
        &self,
        reach: &Reach<'_, P>,
        lab: &ValidatedLab,
        baseline: &Baseline,
    ) -> Measured {
        let Reach {
            platform,
            http,
            observer,
        } = *reach;
        let mut measured = Measured::default();
        if let (Some(before), Some(after)) =
            (baseline.snapshot, Snapshot::take(platform, http).await.ok())
        {
            measured.reservations = Some(after.reservations.saturating_sub(before.reservations));
            measured.decided = Some(after.decisions.saturating_sub(before.decisions));
            measured.stock_consumed = Some(before.stock.saturating_sub(after.stock));
            if let (Some(b), Some(a)) = (before.dead_letters, after.dead_letters) {
                measured.dead_lettered = Some(a.saturating_sub(b));
            }
        }
        if let Some(before) = &baseline.broker_errors {
            let services = self.transport().services();
            measured.broker_errors = ErrorCounts::read(platform, http, services)
                .await
                .map(|after| after.since(before));
        }
        if let Some(analytics) = self.analytics() {
            measured.lag_at_end = analytics.total_lag().await;
            if lab.replay {
                observer
                    .note("rewinding analytics to the earliest offsets and reading the log again");
                match analytics.replay(Instant::now() + lab.within).await {
                    Ok(replay) => measured.replay = Some(replay),
                    Err(error) => observer.note(&format!("replay failed: {error}")),
                }
            }
        }
        measured
    }
}

/// What `read` gives, read again with a backoff while `service` does not
/// answer, for up to `BASELINE_PATIENCE`.
async fn patiently<T, F: Future<Output = Result<T, ProbeError>>>(
    service: Service,
    call: &str,
    read: impl Fn() -> F,
) -> Option<T> {
    let until = Instant::now() + BASELINE_PATIENCE;
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut attempt = 1u32;
    loop {
        let error = match read().await {
            Ok(value) => return Some(value),
            Err(error) => error,
        };
        if Instant::now() + backoff.peek() >= until {
            tracing::warn!(%service, call, attempt, %error, "baseline not readable: the run goes on without it");
            return None;
        }
        tracing::warn!(%service, call, attempt, %error, "baseline not readable; retrying");
        tokio::time::sleep(backoff.pause()).await;
        attempt += 1;
    }
}
