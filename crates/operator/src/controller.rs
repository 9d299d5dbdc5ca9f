//! The FoodLab controller: faults kept applied, chaos with a guaranteed
//! restore, the workload as a Job, results and verdict in status.
//!
//! What should be true is recomputed on every reconcile from the spec, the
//! records in status and the clock (`chaos_plan`); a record is written to
//! status before its disruption, so a restarted operator always knows what
//! to undo and when. A finalizer undoes everything before a lab goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foodlab_lab::faults::{FaultApiError, FaultClient};
use foodlab_lab::results::ChaosRecord;
use foodlab_lab::spec::{ChaosAction, FoodLabStatus, Phase, Transport, Verdict};
use foodlab_lab::{FoodLab, Platform, PlatformError, Service};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::chaos_plan::{self, ChaosMove};
use crate::job::{self, JobReport};
use crate::metrics::Metrics;
use crate::platform::{FIELD_MANAGER, KubernetesPlatform};

pub const FINALIZER: &str = "foodlab.dev/restore";
/// How often a running lab is looked at even when nothing is due.
pub const RESYNC: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Faults(#[from] FaultApiError),
    #[error("cannot serialise: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("FoodLab has no namespace")]
    NoNamespace,
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// What reconciles share.
pub struct Context {
    pub client: Client,
    /// Events for `kubectl describe`; tests run without.
    pub recorder: Option<Recorder>,
    pub job_image: String,
    pub job_pull_policy: String,
    /// The clock, injected so tests can be at any time.
    pub now: fn() -> Timestamp,
    pub metrics: Metrics,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Option<Recorder>,
        job_image: String,
        job_pull_policy: String,
    ) -> Self {
        Self {
            client,
            recorder,
            job_image,
            job_pull_policy,
            now: Timestamp::now,
            metrics: Metrics::default(),
            failures: Mutex::default(),
        }
    }

    async fn event(&self, lab: &FoodLab, type_: EventType, reason: &str, note: String) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &lab.object_ref(&())).await {
            tracing::warn!(%error, "could not publish an event");
        }
    }
}

pub async fn reconcile(lab: Arc<FoodLab>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = lab.namespace().ok_or(Error::NoNamespace)?;
    let name = lab.name_any();
    ctx.metrics.reconciled();
    let api: Api<FoodLab> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, lab, |event| async {
        match event {
            Finalizer::Apply(lab) => apply(&lab, &ctx, &api, &namespace).await,
            Finalizer::Cleanup(lab) => cleanup(&lab, &ctx, &namespace).await,
        }
    })
    .instrument(tracing::info_span!("reconcile", lab = %name, %namespace))
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))?;
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&format!("{namespace}/{name}"));
    Ok(action)
}

/// Retries a failing lab with exponential backoff: 2 s, 4 s, ... 5 min.
pub fn error_policy(lab: Arc<FoodLab>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed();
    let key = format!("{}/{}", lab.namespace().unwrap_or_default(), lab.name_any());
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let attempts = failures.entry(key).or_insert(0);
    *attempts = attempts.saturating_add(1);
    let delay = Duration::from_secs(2u64.saturating_pow(*attempts).min(300));
    tracing::warn!(lab = %lab.name_any(), %error, attempts = *attempts, ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn platform_for(lab: &FoodLab, ctx: &Context, namespace: &str) -> KubernetesPlatform {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    KubernetesPlatform::new(
        namespace,
        Some(deployments),
        lab.spec.transport == Transport::Rabbitmq,
    )
}

fn set_condition(status: &mut FoodLabStatus, condition: Condition) {
    status.conditions.retain(|c| c.type_ != condition.type_);
    status.conditions.push(condition);
}

fn ready(
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Writes status with server-side apply, guarded by the resourceVersion the
/// reconcile started from: a reconcile working from a stale copy (the cache
/// had not seen our last write yet) gets a conflict and retries, instead of
/// overwriting newer chaos records.
struct StatusWriter<'a> {
    api: &'a Api<FoodLab>,
    name: String,
    resource_version: Option<String>,
}

impl StatusWriter<'_> {
    async fn write(&mut self, status: &FoodLabStatus) -> Result<(), Error> {
        let mut patch = serde_json::json!({
            "apiVersion": "foodlab.dev/v1alpha1",
            "kind": "FoodLab",
            "status": status,
        });
        if let Some(version) = &self.resource_version {
            patch["metadata"] = serde_json::json!({ "resourceVersion": version });
        }
        let written = self
            .api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        self.resource_version = written.metadata.resource_version;
        Ok(())
    }
}

async fn apply(
    lab: &FoodLab,
    ctx: &Context,
    api: &Api<FoodLab>,
    namespace: &str,
) -> Result<Action, Error> {
    let now = (ctx.now)();
    let generation = lab.metadata.generation;
    let mut writer = StatusWriter {
        api,
        name: lab.name_any(),
        resource_version: lab.metadata.resource_version.clone(),
    };
    let mut status = lab.status.clone().unwrap_or_default();
    let platform = platform_for(lab, ctx, namespace);

    // A spec that was invalid and has been edited since: start afresh.
    let was_invalid = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.reason == "InvalidSpec");
    if was_invalid && status.observed_generation != generation {
        status = FoodLabStatus::default();
    }
    if let Err(problems) = lab.spec.validate() {
        // Whatever ran before the spec turned invalid is undone first.
        restore_everything(lab, ctx, &platform, &mut status, now).await;
        let message = problems.join("; ");
        status.phase = Some(Phase::Failed);
        status.observed_generation = generation;
        set_condition(
            &mut status,
            ready("False", "InvalidSpec", message.clone(), generation, now),
        );
        writer.write(&status).await?;
        ctx.event(lab, EventType::Warning, "InvalidSpec", message)
            .await;
        // Nothing will change until the spec does: no retry loop.
        return Ok(Action::await_change());
    }
    if matches!(status.phase, Some(Phase::Succeeded | Phase::Failed)) {
        return Ok(Action::await_change());
    }
    let started_at = match status.started_at {
        Some(started_at) => started_at,
        None => {
            status.started_at = Some(now);
            status.phase = Some(Phase::Running);
            status.observed_generation = generation;
            set_condition(
                &mut status,
                ready(
                    "False",
                    "Running",
                    "the lab is running".into(),
                    generation,
                    now,
                ),
            );
            writer.write(&status).await?;
            ctx.event(
                lab,
                EventType::Normal,
                "Started",
                format!("{} lab started", lab.spec.transport),
            )
            .await;
            now
        }
    };

    // Chaos first (restores above all), so nothing else can hold a restore up.
    let plan = chaos_plan::plan(&lab.spec.chaos, &status.chaos, started_at, now);
    let mut first_error = None;
    for change in plan.moves {
        let done = match change {
            ChaosMove::Start { step } => {
                start_step(lab, ctx, &mut writer, &platform, &mut status, step, now).await
            }
            ChaosMove::Restore { step } => {
                match restore_step(lab, ctx, &platform, &mut status, step, now).await {
                    Ok(()) => writer.write(&status).await,
                    Err(error) => Err(error),
                }
            }
        };
        if let Err(error) = done {
            first_error.get_or_insert(error);
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    keep_faults_applied(lab, &platform, &status).await;
    let chaos_over = chaos_plan::plan(&lab.spec.chaos, &status.chaos, started_at, now).finished;

    let finished = run_workload(lab, ctx, &mut writer, &mut status, chaos_over, now).await?;
    if finished {
        return Ok(Action::await_change());
    }
    let until_due = plan
        .next_due
        .map(|due| Duration::try_from(due.duration_since(now)).unwrap_or_default());
    Ok(Action::requeue(until_due.map_or(RESYNC, |d| d.min(RESYNC))))
}

/// Undoes every disruption still in place, as far as possible; what cannot
/// be undone is logged (used when the spec turned invalid mid-run).
async fn restore_everything(
    lab: &FoodLab,
    ctx: &Context,
    platform: &KubernetesPlatform,
    status: &mut FoodLabStatus,
    now: Timestamp,
) {
    for change in chaos_plan::restore_all(&status.chaos) {
        if let ChaosMove::Restore { step } = change
            && let Err(error) = restore_step(lab, ctx, platform, status, step, now).await
        {
            tracing::warn!(step, %error, "could not undo a chaos step");
        }
    }
}

/// Faults are re-applied on every reconcile: a restarted pod starts without
/// them. Best effort, and never on a service a chaos step is disrupting
/// (it may have no pods, or carry a Delay/Fail window's faults).
async fn keep_faults_applied(lab: &FoodLab, platform: &KubernetesPlatform, status: &FoodLabStatus) {
    let client = FaultClient::default();
    for (service, spec) in lab.spec.faults.declared() {
        let disrupted = status
            .chaos
            .iter()
            .any(|r| r.target == service && r.restored_at.is_none());
        if disrupted {
            continue;
        }
        let applied = match spec.to_faults() {
            Ok(faults) => client
                .set(platform, service, &faults)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = applied {
            tracing::warn!(%service, %error, "could not apply the lab's faults; will retry");
        }
    }
}

fn base_faults(lab: &FoodLab, service: Service) -> foodlab_domain::Faults {
    lab.spec
        .faults
        .get(service)
        .and_then(|spec| spec.to_faults().ok())
        .unwrap_or_default()
}

async fn start_step(
    lab: &FoodLab,
    ctx: &Context,
    writer: &mut StatusWriter<'_>,
    platform: &KubernetesPlatform,
    status: &mut FoodLabStatus,
    index: usize,
    now: Timestamp,
) -> Result<(), Error> {
    let Some(step) = lab.spec.chaos.get(index) else {
        return Ok(());
    };
    // The record goes to status before the disruption, so it can always be
    // undone; a record whose disruption failed is reused on the next try.
    let position = match status.chaos.iter().position(|r| r.step as usize == index) {
        Some(position) => position,
        None => {
            let original = match step.action {
                ChaosAction::ScaleToZero => Some(platform.replicas(step.target).await?),
                _ => None,
            };
            status.chaos.push(ChaosRecord {
                step: u32::try_from(index).unwrap_or(u32::MAX),
                action: step.action,
                target: step.target,
                disrupted: false,
                original_replicas: original,
                started_at: now,
                restore_at: Some(chaos_plan::restore_at(step, now)),
                restored_at: None,
            });
            writer.write(status).await?;
            status.chaos.len() - 1
        }
    };
    let original = status.chaos[position].original_replicas;
    match step.action {
        ChaosAction::ScaleToZero => platform.scale(step.target, 0).await?,
        ChaosAction::PodKill => {
            let pods: Api<Pod> =
                Api::namespaced(ctx.client.clone(), &lab.namespace().unwrap_or_default());
            let selector = format!("app.kubernetes.io/name={}", step.target);
            for pod in pods.list(&ListParams::default().labels(&selector)).await? {
                pods.delete(&pod.name_any(), &DeleteParams::default())
                    .await?;
            }
        }
        ChaosAction::Delay | ChaosAction::Fail => {
            let base = base_faults(lab, step.target);
            let window = foodlab_lab::chaos::window_faults(step, Some(&base));
            FaultClient::default()
                .set(platform, step.target, &window)
                .await?;
        }
    }
    status.chaos[position].disrupted = true;
    writer.write(status).await?;
    ctx.metrics.chaos_started();
    ctx.event(
        lab,
        EventType::Normal,
        "ChaosStarted",
        format!(
            "{:?} {} (replicas were {})",
            step.action,
            step.target,
            original.map_or("-".into(), |r| r.to_string())
        ),
    )
    .await;
    Ok(())
}

async fn restore_step(
    lab: &FoodLab,
    ctx: &Context,
    platform: &KubernetesPlatform,
    status: &mut FoodLabStatus,
    index: usize,
    now: Timestamp,
) -> Result<(), Error> {
    let Some(record) = status.chaos.iter_mut().find(|r| r.step as usize == index) else {
        return Ok(());
    };
    match record.action {
        ChaosAction::ScaleToZero => {
            match platform
                .scale(record.target, record.original_replicas.unwrap_or(1))
                .await
            {
                // The Deployment is gone (its part was uninstalled): nothing to restore.
                Ok(()) | Err(PlatformError::NotDeployed(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        ChaosAction::Delay | ChaosAction::Fail => {
            FaultClient::default()
                .set(platform, record.target, &base_faults(lab, record.target))
                .await?;
        }
        ChaosAction::PodKill => {}
    }
    record.restored_at = Some(now);
    let note = format!("{:?} {} undone", record.action, record.target);
    ctx.metrics.chaos_restored();
    ctx.event(lab, EventType::Normal, "ChaosRestored", note)
        .await;
    Ok(())
}

/// Starts the workload Job, and once it is done and every disruption undone,
/// records its report. Returns whether the lab is finished.
async fn run_workload(
    lab: &FoodLab,
    ctx: &Context,
    writer: &mut StatusWriter<'_>,
    status: &mut FoodLabStatus,
    chaos_over: bool,
    now: Timestamp,
) -> Result<bool, Error> {
    let namespace = lab.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = job::job_name(lab);
    let generation = lab.metadata.generation;
    let Some(existing) = jobs.get_opt(&name).await? else {
        if status.workload_job.is_some() {
            // Started before and gone now (deleted, or expired after its TTL):
            // placing the orders again would be a second run, not this one.
            status.phase = Some(Phase::Failed);
            status.verdict = Some(Verdict::Fail);
            let message = format!("Job {name} disappeared before its report was read");
            set_condition(
                status,
                ready("False", "WorkloadLost", message.clone(), generation, now),
            );
            writer.write(status).await?;
            ctx.event(lab, EventType::Warning, "WorkloadLost", message)
                .await;
            return Ok(true);
        }
        let job = job::workload_job(lab, &ctx.job_image, &ctx.job_pull_policy)?;
        jobs.create(&PostParams::default(), &job).await?;
        status.workload_job = Some(name.clone());
        writer.write(status).await?;
        ctx.event(
            lab,
            EventType::Normal,
            "WorkloadStarted",
            format!("Job {name} places the orders"),
        )
        .await;
        return Ok(false);
    };
    let job_status = existing.status.unwrap_or_default();
    let done = job_status.succeeded.unwrap_or(0) > 0 || job_status.failed.unwrap_or(0) > 0;
    if !done || !chaos_over {
        return Ok(false);
    }
    match read_report(ctx, &namespace, &name).await? {
        Some(report) => {
            let passed = report.verdict == Verdict::Pass;
            status.phase = Some(if passed {
                Phase::Succeeded
            } else {
                Phase::Failed
            });
            status.verdict = Some(report.verdict);
            let failed_checks: Vec<_> = report
                .results
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            let message = if passed {
                "every expectation held".to_owned()
            } else {
                failed_checks.join("; ")
            };
            status.results = Some(report.results);
            let (state, reason) = if passed {
                ("True", "Passed")
            } else {
                ("False", "ExpectationsFailed")
            };
            set_condition(
                status,
                ready(state, reason, message.clone(), generation, now),
            );
            ctx.event(
                lab,
                EventType::Normal,
                "Completed",
                format!("verdict {}: {message}", report.verdict),
            )
            .await;
        }
        None => {
            status.phase = Some(Phase::Failed);
            status.verdict = Some(Verdict::Fail);
            let message =
                format!("Job {name} ended without a report (see kubectl logs job/{name})");
            set_condition(
                status,
                ready("False", "WorkloadFailed", message.clone(), generation, now),
            );
            ctx.event(lab, EventType::Warning, "WorkloadFailed", message)
                .await;
        }
    }
    writer.write(status).await?;
    Ok(true)
}

/// The report the workload container left as its termination message.
async fn read_report(
    ctx: &Context,
    namespace: &str,
    job: &str,
) -> Result<Option<JobReport>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?;
    let message = list.items.iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
    });
    Ok(message.and_then(|m| serde_json::from_str(&m).ok()))
}

/// Deletion: undo every disruption still in place, clear the faults.
async fn cleanup(lab: &FoodLab, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let now = (ctx.now)();
    let platform = platform_for(lab, ctx, namespace);
    let mut status = lab.status.clone().unwrap_or_default();
    for change in chaos_plan::restore_all(&status.chaos) {
        if let ChaosMove::Restore { step } = change {
            restore_step(lab, ctx, &platform, &mut status, step, now).await?;
        }
    }
    let client = FaultClient::default();
    for (service, _) in lab.spec.faults.declared() {
        if let Err(error) = client.set(&platform, service, &Default::default()).await {
            tracing::warn!(%service, %error, "could not clear faults of a deleted lab");
        }
    }
    ctx.event(
        lab,
        EventType::Normal,
        "Cleaned",
        "disruptions undone, faults cleared".into(),
    )
    .await;
    Ok(Action::await_change())
}
