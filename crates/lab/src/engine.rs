//! One lab lifecycle on every platform, as a pipeline of named steps:
//!
//! validate → claim the part → prepare (settings, faults) → baseline →
//! workload (chaos timed from its first order) → settle → measure →
//! verdict, and release (every disruption undone, every fault cleared) on
//! every ending: success, failure, error, timeout and interruption.
//!
//! What differs per transport is behind `strategy::Strategy`; who applies
//! faults and runs chaos (the engine itself, or the operator on a cluster)
//! is behind `chaos::Disruptor`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::chaos::{ChaosError, Direct, Disruptor, RESTORE_RETRY, WorkloadStart, retry};
use crate::claim::{self, Claim};
use crate::faults::{ADMIN_PATIENCE, ClientError, FaultApiError, FaultClient};
use crate::measure::{self, Sample, Tally};
use crate::observer::{LabStep, Observer};
use crate::platform::{Platform, PlatformError};
use crate::probe::observe::Backlog;
use crate::results::{ChaosRecord, LabResults};
use crate::series::{self, LabSeries, Recorder};
use crate::spec::{FoodLabSpec, Service, Transport, Verdict};
use crate::stats::round3;
use crate::strategy::{Reach, Strategy};
use crate::validated::{SLACK, ValidatedLab};
use crate::verdict::{self, Outcome};
use crate::{inject, workload};

/// Why a lab ended without a report, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("invalid lab: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Workload(#[from] workload::WorkloadError),
    #[error("preparing the part failed: {0}")]
    Prepare(#[from] FaultApiError),
    #[error(transparent)]
    Chaos(#[from] ChaosError),
    #[error("publishing the lab's injected messages failed: {0}")]
    Inject(#[source] foodlab_transport::rabbitmq::AmqpError),
    #[error(
        "the lab did not end within {:?} (expect.within {within:?} plus {slack:?}): stopped at the {step} step",
        *within + *slack
    )]
    Timeout {
        within: Duration,
        slack: Duration,
        /// The step the lab was at when its time ran out.
        step: &'static str,
    },
    #[error("the lab was interrupted")]
    Interrupted,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LabReport {
    pub transport: Transport,
    pub results: LabResults,
    pub chaos: Vec<ChaosRecord>,
    pub verdict: Verdict,
    pub elapsed_seconds: f64,
    /// What the run measured over time, bounded (for the report).
    pub series: LabSeries,
    /// What the release could not undo (empty when the part is as it was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreleased: Vec<String>,
}

/// Runs a lab on a platform; the engine applies its faults and runs its chaos.
pub async fn run_lab<P: Platform>(
    platform: &P,
    lab: &FoodLabSpec,
    observer: Arc<dyn Observer>,
) -> Result<LabReport, LabError> {
    run_lab_with(
        platform,
        &Direct::new(platform)?,
        lab,
        observer,
        std::future::pending(),
    )
    .await
}

/// Runs a lab with `disruptor` owning its faults and chaos, until it ends
/// or `interrupt` completes; releases the part either way.
pub async fn run_lab_with<P: Platform, D: Disruptor>(
    platform: &P,
    disruptor: &D,
    spec: &FoodLabSpec,
    observer: Arc<dyn Observer>,
    interrupt: impl Future<Output = ()>,
) -> Result<LabReport, LabError> {
    run_lab_with_slack(platform, disruptor, spec, observer, interrupt, SLACK).await
}

/// `run_lab_with`, timing the lab out `slack` after `expect.within`
/// instead of `validated::SLACK` after it.
pub async fn run_lab_with_slack<P: Platform, D: Disruptor>(
    platform: &P,
    disruptor: &D,
    spec: &FoodLabSpec,
    observer: Arc<dyn Observer>,
    interrupt: impl Future<Output = ()>,
    slack: Duration,
) -> Result<LabReport, LabError> {
    let lab = validate(platform, spec)?;
    let admin = FaultClient::new()?;
    tokio::pin!(interrupt);
    // A lab interrupted while it waits for the part has nothing to release.
    let _claim: Claim = tokio::select! {
        claim = claim::claim(platform, observer.as_ref()) => claim?,
        () = &mut interrupt => return Err(LabError::Interrupted),
    };
    let started = Instant::now();
    let step = Step::new(observer.as_ref());
    let ran = tokio::select! {
        ran = tokio::time::timeout(lab.within + slack, run(platform, disruptor, &lab, &admin, &observer, started, &step)) => {
            ran.unwrap_or_else(|_| Err(LabError::Timeout { within: lab.within, slack, step: step.get() }))
        }
        () = &mut interrupt => Err(LabError::Interrupted),
        () = reapply_after_restarts(platform, disruptor, &lab, &admin, observer.as_ref()) => {
            unreachable!("re-applying after restarts runs until the lab ends")
        }
    };
    let unreleased = release(disruptor, &lab, observer.as_ref()).await;
    let mut report = ran?;
    report.unreleased = unreleased;
    Ok(report)
}

/// Step 1: the spec as typed values, and the platform able to run it.
fn validate<P: Platform>(platform: &P, spec: &FoodLabSpec) -> Result<ValidatedLab, LabError> {
    let lab = ValidatedLab::new(spec).map_err(LabError::Invalid)?;
    if lab.inject.is_some() && platform.rabbitmq().is_none() {
        return Err(LabError::Invalid(vec![
            "inject needs the async-rabbitmq part (transport: rabbitmq)".into(),
        ]));
    }
    Ok(lab)
}

/// The step a lab is at, for the reason of a timeout; each step's start is
/// told to the observer.
struct Step<'o> {
    at: std::sync::Mutex<LabStep>,
    observer: &'o dyn Observer,
}

impl<'o> Step<'o> {
    fn new(observer: &'o dyn Observer) -> Self {
        Self {
            at: std::sync::Mutex::new(LabStep::Prepare),
            observer,
        }
    }
    fn set(&self, step: LabStep) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = step;
        self.observer.step_started(step);
    }
    fn get(&self) -> &'static str {
        self.at.lock().unwrap_or_else(|p| p.into_inner()).name()
    }
}

/// The steps between claim and release.
async fn run<P: Platform, D: Disruptor>(
    platform: &P,
    disruptor: &D,
    lab: &ValidatedLab,
    admin: &FaultClient,
    observer: &Arc<dyn Observer>,
    started: Instant,
    step: &Step<'_>,
) -> Result<LabReport, LabError> {
    step.set(LabStep::Prepare);
    prepare(platform, disruptor, lab, admin, observer.as_ref()).await?;
    // It also rewinds analytics (`/admin/reset-offsets`): it sends the admin token.
    let http = admin.http().clone();
    let strategy = Strategy::of(platform, lab.transport, &http);
    let reach = Reach {
        platform,
        http: &http,
        observer: observer.as_ref(),
    };
    step.set(LabStep::Baseline);
    let mut baseline = strategy.baseline(&reach).await;
    step.set(LabStep::Workload);
    let done = workload(platform, disruptor, lab, observer).await?;
    step.set(LabStep::Settle);

    let summary = measure::summarize(&done.tally, done.workload_time);
    let deadline = started + lab.within;
    let mut settled = strategy
        .settle(&reach, &done.tally, &mut baseline, &done.start, deadline)
        .await;
    let last_settled = settled
        .end_to_end
        .as_ref()
        .and_then(crate::series::EndToEnd::last_settled);
    let drain = drain_seconds(
        settled.backlog.as_ref(),
        last_settled,
        &done.chaos,
        done.ended,
    );
    let series = done.recorder.finish(
        settled.end_to_end.as_mut(),
        settled.backlog.as_ref(),
        windows(lab, &done, Instant::now()),
    );
    step.set(LabStep::Measure);
    let measured = strategy.measure(&reach, lab, &baseline).await;
    let mut results = measure::assemble(summary, &settled, measured, drain);

    let outcome = Outcome {
        orders: u64::from(lab.workload.orders),
        terminal: settled.terminal,
        elapsed: started.elapsed(),
    };
    results.checks = verdict::evaluate(&lab.expect, &results, outcome);
    results.checks.extend(verdict::brokers_back(
        &done.chaos,
        done.start.at,
        lab.within,
    ));
    results.broker_recovery_seconds = verdict::broker_recovery_seconds(&done.chaos);
    let verdict = verdict::verdict(&results.checks);
    Ok(LabReport {
        transport: lab.transport,
        results,
        chaos: done.chaos,
        verdict,
        elapsed_seconds: round3(started.elapsed().as_secs_f64()),
        series,
        unreleased: Vec::new(),
    })
}

/// Step 3: the lab's settings (stock levels, dependency timeout) and faults
/// on the running part, through the services' admin APIs.
async fn prepare<P: Platform, D: Disruptor>(
    platform: &P,
    disruptor: &D,
    lab: &ValidatedLab,
    admin: &FaultClient,
    observer: &dyn Observer,
) -> Result<(), LabError> {
    // Right after an install or a restore the Services may not route yet.
    admin
        .clone()
        .patient(ADMIN_PATIENCE.min(lab.within))
        .apply_settings(platform, &lab.settings)
        .await?;
    disruptor.prepare(lab).await?;
    for (service, faults) in lab
        .faults
        .iter()
        .filter(|(_, f)| f.delay_ms > 0 || f.fail_rate > 0.0)
    {
        observer.note(&format!(
            "faults on {service}: delay {} ms, fail rate {}",
            faults.delay_ms, faults.fail_rate
        ));
    }
    Ok(())
}

/// While the lab runs: a service the platform restarted comes back with its
/// start-up flags only, so it gets the lab's runtime settings and its
/// current faults again (stock is durable: inventory keeps its levels).
/// Never returns.
async fn reapply_after_restarts<P: Platform, D: Disruptor>(
    platform: &P,
    disruptor: &D,
    lab: &ValidatedLab,
    admin: &FaultClient,
    observer: &dyn Observer,
) {
    if let Some(mut restarts) = platform.restarts() {
        while let Some(service) = restarts.next().await {
            let reapplied = retry(tokio::time::Instant::now() + RESTORE_RETRY, || async {
                if service == Service::Order {
                    admin
                        .set_dependency_timeout(platform, lab.settings.dependency_timeout)
                        .await?;
                }
                disruptor.restarted(lab, service).await
            })
            .await;
            match reapplied {
                Ok(()) => {
                    tracing::info!(%service, "lab settings and faults re-applied after a restart");
                    observer.note(&format!(
                        "{service} restarted: the lab's settings and faults re-applied"
                    ));
                }
                Err(error) => {
                    tracing::error!(%service, %error, "could not re-apply the lab's settings and faults after a restart");
                    observer.note(&format!(
                        "{service} restarted without the lab's settings and faults: {error}"
                    ));
                }
            }
        }
    }
    std::future::pending().await
}

/// What the workload step leaves for the next steps.
struct WorkloadDone {
    tally: Tally,
    workload_time: Duration,
    start: WorkloadStart,
    ended: Instant,
    chaos: Vec<ChaosRecord>,
    recorder: Arc<Recorder>,
}

/// The chaos windows, and the lab-wide faults over the whole workload.
/// The lab's faults are in place from the first order until the release,
/// after settling (`until`): an async part's backlog drains under them.
fn windows(lab: &ValidatedLab, done: &WorkloadDone, until: Instant) -> Vec<series::Window> {
    let faults_end = round3(
        until
            .saturating_duration_since(done.start.instant.into_std())
            .as_secs_f64(),
    );
    let mut windows: Vec<series::Window> = lab
        .faults
        .iter()
        .filter(|(_, f)| f.delay_ms > 0 || f.fail_rate > 0.0)
        .map(|(service, f)| series::Window {
            kind: "fault".into(),
            label: format!(
                "{service}: delay {} ms, fail rate {}",
                f.delay_ms, f.fail_rate
            ),
            from_seconds: 0.0,
            to_seconds: Some(faults_end),
        })
        .collect();
    windows.extend(series::chaos_windows(&done.chaos, done.start.at));
    windows
}

/// Step 5: the orders, the injections and the chaos together; chaos counts
/// `after` from the first order and is over (restored) when this returns.
async fn workload<P: Platform, D: Disruptor>(
    platform: &P,
    disruptor: &D,
    lab: &ValidatedLab,
    observer: &Arc<dyn Observer>,
) -> Result<WorkloadDone, LabError> {
    let order_url = platform.endpoint(Service::Order)?;
    observer.workload_started(u64::from(lab.workload.orders));
    let recorder = Arc::new(Recorder::new(Instant::now()));
    let on_sample = {
        let observer = Arc::clone(observer);
        let recorder = Arc::clone(&recorder);
        Arc::new(move |sample: &Sample| {
            recorder.record(sample.status, sample.latency);
            observer.order_answered(sample);
        })
    };
    let injections = async {
        match (&lab.inject, platform.rabbitmq()) {
            (Some(injection), Some(admin)) => {
                let item = lab.workload.items.first().map_or("burger", String::as_str);
                inject::publish(&admin.amqp_url(), injection, item, lab.workload.quantity)
                    .await
                    .map(drop)
                    .map_err(LabError::Inject)
            }
            _ => Ok(()),
        }
    };
    // The first order goes out as the workload starts: that is the chaos clock's zero.
    let start = WorkloadStart::now();
    let placed = async {
        let placed = workload::run(&lab.workload, &order_url, on_sample).await;
        (placed, Instant::now())
    };
    let ((placed, ended), chaos, injected) =
        tokio::join!(placed, disruptor.chaos(lab, start), injections);
    let chaos = chaos?;
    injected?;
    let (tally, workload_time) = placed?;
    Ok(WorkloadDone {
        tally,
        workload_time,
        start,
        ended,
        chaos,
        recorder,
    })
}

/// Draining starts when the last disruption is undone (or the workload
/// ends, for a lab without chaos) and ends once the last accepted order has
/// settled (`last_settled`) and the backlog is next seen empty. The broker's
/// depth can lag (RabbitMQ's management figures are a few seconds old): an
/// empty reading before the orders settled is not the end of the drain.
pub fn drain_seconds(
    backlog: Option<&Backlog>,
    last_settled: Option<jiff::Timestamp>,
    chaos: &[ChaosRecord],
    workload_ended: Instant,
) -> Option<f64> {
    let from = chaos
        .iter()
        .filter_map(|record| record.restored_at)
        .max()
        .map_or(workload_ended, instant_of);
    let settled = last_settled.map(|at| instant_of(at).max(from));
    let emptied = backlog.and_then(|b| b.empty_from(settled.unwrap_or(from)));
    let end = emptied.or(settled)?;
    Some(round3(end.saturating_duration_since(from).as_secs_f64()))
}

/// The last step, on every ending.
async fn release<D: Disruptor>(
    disruptor: &D,
    lab: &ValidatedLab,
    observer: &dyn Observer,
) -> Vec<String> {
    let problems = disruptor.release(lab).await;
    for problem in &problems {
        tracing::error!(%problem, "the release could not undo a change to the part");
        observer.note(&format!("not released: {problem}"));
    }
    problems
}

/// The monotonic instant of a wall-clock timestamp in the recent past.
fn instant_of(timestamp: jiff::Timestamp) -> Instant {
    let ago = jiff::Timestamp::now().duration_since(timestamp);
    let ago = Duration::try_from(ago).unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}
