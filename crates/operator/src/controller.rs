//! The FoodLab controller: the lab lifecycle on a cluster.
//!
//! Each reconcile is a short pipeline: validate → (not started yet) check
//! that the part is installed and claim it (`claim`), or wait Queued →
//! (running) read the run ConfigMap (`run_channel`), run the chaos on the
//! workload's clock, keep the faults applied, run the workload Job →
//! (done) release the part (every disruption undone, every fault cleared)
//! and write the verdict. What should be true is recomputed every time from
//! the spec, the records in status and the clock (`chaos_plan`); a record is
//! written to status before its disruption, so a restarted operator always
//! knows what to undo and when. A disruption is undone whatever it takes:
//! a lab that ends with one still in place (the API refusing the restore)
//! keeps its part, its finalizer and a `Restored=False` condition, and
//! tries again every few seconds until it is undone. A deleted lab undoes
//! what its own records say is in place before its finalizer goes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foodlab_domain::Faults;
use foodlab_lab::disruption::{self, FaultSink};
use foodlab_lab::faults::FaultClient;
use foodlab_lab::results::{ChaosRecord, ReplicasRecord};
use foodlab_lab::spec::{FoodLabStatus, Phase, Verdict};
use foodlab_lab::validated::ValidatedLab;
use foodlab_lab::{FoodLab, Platform, PlatformError, Service};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::chaos_plan::{self, ChaosMove};
use crate::claim::{self, Claim};
use crate::job::{self, JobReport};
use crate::metrics::Metrics;
use crate::platform::{FIELD_MANAGER, KubernetesPlatform};
use crate::run_channel;

pub const FINALIZER: &str = "foodlab.dev/restore";
/// How often a running lab is looked at even when nothing is due.
pub const RESYNC: Duration = Duration::from_secs(10);
/// How often a queued lab, or a lab waiting for its workload's first
/// order, looks again (besides the watch events that wake it).
pub const POLL: Duration = Duration::from_secs(2);
/// How long a restore (or the release) that keeps failing is retried past
/// its due time before the lab is reported failed with the reason. The
/// restore itself goes on for as long as it takes.
pub const RESTORE_DEADLINE: Duration = Duration::from_secs(60);
/// How often a lab whose disruption is not undone tries again once it has
/// ended (or is being deleted).
pub const RESTORE_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("cannot serialise: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("FoodLab has no namespace")]
    NoNamespace,
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What reconciles share.
pub struct Context {
    pub client: Client,
    /// Events for `kubectl describe`; tests run without.
    pub recorder: Option<Recorder>,
    pub job_image: String,
    pub job_pull_policy: String,
    /// The ServiceAccount the workload Job runs as.
    pub job_service_account: String,
    /// The clock, injected so tests can be at any time.
    pub now: fn() -> Timestamp,
    /// Service URLs instead of Service DNS (tests).
    pub endpoints: Option<BTreeMap<Service, String>>,
    pub metrics: Metrics,
    /// One client (and connection pool) for every admin call of every reconcile.
    faults: FaultClient,
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
            job_service_account: job::DEFAULT_SERVICE_ACCOUNT.to_owned(),
            now: Timestamp::now,
            endpoints: None,
            metrics: Metrics::default(),
            faults: FaultClient::default(),
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

    fn platform(&self, lab: &FoodLab, namespace: &str) -> KubernetesPlatform {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let platform = KubernetesPlatform::new(
            namespace,
            Some(deployments),
            lab.spec.transport == foodlab_lab::Transport::Rabbitmq,
        )
        .with_endpoint_slices(Api::namespaced(self.client.clone(), namespace))
        .with_pods(Api::namespaced(self.client.clone(), namespace));
        match &self.endpoints {
            Some(endpoints) => platform.with_endpoints(endpoints.clone()),
            None => platform,
        }
    }
}

pub async fn reconcile(lab: Arc<FoodLab>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = lab.namespace().ok_or(Error::NoNamespace)?;
    let name = lab.name_any();
    ctx.metrics.reconciled();
    let began = std::time::Instant::now();
    let api: Api<FoodLab> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, lab, |event| async {
        match event {
            Finalizer::Apply(lab) => apply(&lab, &ctx, &api, &namespace).await,
            Finalizer::Cleanup(lab) => cleanup(&lab, &ctx, &namespace).await,
        }
    })
    .instrument(tracing::info_span!("reconcile", lab = %name, %namespace))
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconcile_took(began.elapsed());
    let action = action?;
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&format!("{namespace}/{name}"));
    Ok(action)
}

/// Retries a failing lab with exponential backoff (2 s, 4 s, ... 5 min),
/// but never past a restore that is due: a disruption is undone at its
/// `restoreAt` plus at most one reconcile, whatever failed before.
pub fn error_policy(lab: Arc<FoodLab>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed();
    let key = format!("{}/{}", lab.namespace().unwrap_or_default(), lab.name_any());
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let attempts = failures.entry(key).or_insert(0);
    *attempts = attempts.saturating_add(1);
    let backoff = Duration::from_secs(2u64.saturating_pow(*attempts).min(300));
    let delay = backoff_until_restore(&lab, backoff, (ctx.now)());
    tracing::warn!(lab = %lab.name_any(), %error, attempts = *attempts, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// `backoff`, cut short by the next restore due among the lab's records.
pub fn backoff_until_restore(lab: &FoodLab, backoff: Duration, now: Timestamp) -> Duration {
    let in_place = lab.status.as_ref().is_some_and(FoodLabStatus::in_place);
    if lab.metadata.deletion_timestamp.is_some() && in_place {
        // Being deleted: every disruption is due now.
        return backoff.min(RESTORE_RETRY);
    }
    let next_restore = lab
        .status
        .iter()
        .flat_map(|s| &s.chaos)
        .filter(|r| r.restored_at.is_none())
        .map(|r| r.restore_at.unwrap_or(r.started_at))
        .min();
    match next_restore {
        Some(at) => backoff.min(until(now, at)).max(Duration::from_secs(1)),
        None => backoff,
    }
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or_default()
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
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

fn ready_reason(status: &FoodLabStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str())
}

fn ready_message(status: &FoodLabStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.as_str())
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

/// One reconcile's view of a lab.
struct Run<'a> {
    lab: &'a FoodLab,
    ctx: &'a Context,
    namespace: &'a str,
    platform: KubernetesPlatform,
    writer: StatusWriter<'a>,
    status: FoodLabStatus,
    now: Timestamp,
}

impl<'a> Run<'a> {
    fn new(lab: &'a FoodLab, ctx: &'a Context, api: &'a Api<FoodLab>, namespace: &'a str) -> Self {
        Self {
            lab,
            ctx,
            namespace,
            platform: ctx.platform(lab, namespace),
            writer: StatusWriter {
                api,
                name: lab.name_any(),
                resource_version: lab.metadata.resource_version.clone(),
            },
            status: lab.status.clone().unwrap_or_default(),
            now: (ctx.now)(),
        }
    }

    fn generation(&self) -> Option<i64> {
        self.lab.metadata.generation
    }

    fn set_ready(&mut self, state: &str, reason: &str, message: String) {
        let condition = ready(state, reason, message, self.generation(), self.now);
        set_condition(&mut self.status, condition);
    }

    /// Ends the lab: final phase, verdict, Ready condition, event.
    async fn fail(&mut self, reason: &str, message: String) -> Result<Action, Error> {
        self.status.phase = Some(Phase::Failed);
        self.status.verdict = Some(Verdict::Fail);
        self.status.observed_generation = self.generation();
        self.set_ready("False", reason, message.clone());
        self.writer.write(&self.status).await?;
        self.ctx
            .event(self.lab, EventType::Warning, reason, message)
            .await;
        Ok(Action::await_change())
    }
}

async fn apply(
    lab: &FoodLab,
    ctx: &Context,
    api: &Api<FoodLab>,
    namespace: &str,
) -> Result<Action, Error> {
    let mut run = Run::new(lab, ctx, api, namespace);
    // A spec that was invalid and has been edited since: start afresh.
    if ready_reason(&run.status) == Some("InvalidSpec")
        && run.status.observed_generation != lab.metadata.generation
    {
        run.status = FoodLabStatus::default();
    }
    // Ended with a disruption in place (whatever its spec says now).
    if run.status.phase.is_some_and(finished) && run.status.in_place() {
        return undo_after_the_end(&mut run).await;
    }
    let validated = match ValidatedLab::new(&lab.spec) {
        Ok(validated) => validated,
        Err(problems) => return invalid(&mut run, problems).await,
    };
    match run.status.phase {
        Some(Phase::Succeeded | Phase::Failed) => Ok(Action::await_change()),
        _ if run.status.started_at.is_none() => start(&mut run, &validated).await,
        _ => running(&mut run, &validated).await,
    }
}

/// Step 1 failed: undo whatever ran before the spec turned invalid, then
/// say why; nothing is retried until the spec changes.
async fn invalid(run: &mut Run<'_>, problems: Vec<String>) -> Result<Action, Error> {
    let mut unrestored = Vec::new();
    if run.status.started_at.is_some() && !run.status.phase.is_some_and(finished) {
        let uncleared;
        (unrestored, uncleared) = release_part(run, None).await;
        for problem in unrestored.iter().chain(&uncleared) {
            tracing::warn!(%problem, "could not release the part of a lab whose spec turned invalid");
        }
        if unrestored.is_empty() {
            claim::release(&run.ctx.client, run.namespace, run.lab).await?;
        } else {
            set_restored(run, false, "Retrying", unrestored.join("; "));
        }
    }
    run.status.phase = Some(Phase::Failed);
    run.status.observed_generation = run.generation();
    let message = problems.join("; ");
    run.set_ready("False", "InvalidSpec", message.clone());
    run.writer.write(&run.status).await?;
    run.ctx
        .event(run.lab, EventType::Warning, "InvalidSpec", message)
        .await;
    // A disruption not undone is tried again (the lab holds its part until then).
    Ok(if unrestored.is_empty() {
        Action::await_change()
    } else {
        Action::requeue(RESTORE_RETRY)
    })
}

fn finished(phase: Phase) -> bool {
    matches!(phase, Phase::Succeeded | Phase::Failed)
}

/// Step 2: the part must be installed, and free; then the lab runs.
async fn start(run: &mut Run<'_>, lab: &ValidatedLab) -> Result<Action, Error> {
    let mut missing = Vec::new();
    for service in lab.transport.services() {
        match run.platform.replicas(*service).await {
            Ok(_) => {}
            Err(PlatformError::NotDeployed(_)) => missing.push(service.name()),
            Err(error) => return Err(error.into()),
        }
    }
    if !missing.is_empty() {
        let part = lab.transport.part();
        let message = format!(
            "the {part} part is not installed in namespace {}: no Deployment {} \
             (install it with `helm upgrade --install {part} charts/{part}`)",
            run.namespace,
            missing.join(", ")
        );
        return run.fail("PartNotInstalled", message).await;
    }
    match claim::claim(&run.ctx.client, run.namespace, run.lab).await? {
        Claim::Queued { holder } => {
            let message = format!(
                "waiting for lab {holder} to finish: one lab at a time runs on the part in namespace {}",
                run.namespace
            );
            let already = run.status.phase == Some(Phase::Queued)
                && run
                    .status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.message == message);
            if !already {
                run.status.phase = Some(Phase::Queued);
                run.status.observed_generation = run.generation();
                run.set_ready("False", "Queued", message.clone());
                run.writer.write(&run.status).await?;
                run.ctx.metrics.queued();
                run.ctx
                    .event(run.lab, EventType::Normal, "Queued", message)
                    .await;
            }
            Ok(Action::requeue(POLL))
        }
        Claim::Held => {
            run.status.started_at = Some(run.now);
            run.status.phase = Some(Phase::Running);
            run.status.observed_generation = run.generation();
            run.set_ready("False", "Running", "the lab is running".into());
            run.writer.write(&run.status).await?;
            run.ctx
                .event(
                    run.lab,
                    EventType::Normal,
                    "Started",
                    format!("{} lab claimed its part", lab.transport),
                )
                .await;
            Ok(Action::requeue(Duration::ZERO))
        }
    }
}

/// Steps 3–5 on a cluster: faults, chaos on the workload's clock, the Job;
/// then the release and the verdict.
async fn running(run: &mut Run<'_>, lab: &ValidatedLab) -> Result<Action, Error> {
    let config_maps: Api<ConfigMap> = Api::namespaced(run.ctx.client.clone(), run.namespace);
    let channel_name = run_channel::name(run.lab);
    let channel = config_maps.get_opt(&channel_name).await?;
    let state = channel
        .as_ref()
        .and_then(|cm| run_channel::read(cm, run.lab));
    if run.status.workload_started_at.is_none()
        && let Some(at) = state.as_ref().and_then(|s| s.workload_started_at)
    {
        run.status.workload_started_at = Some(at);
        run.writer.write(&run.status).await?;
    }

    // Chaos first (restores above all), so nothing else can hold a restore up.
    let told = channel
        .as_ref()
        .and_then(|cm| cm.data.as_ref()?.get(run_channel::CHAOS).cloned());
    let chaos = run_chaos(run, lab, &config_maps, &channel_name, told).await?;
    keep_faults_applied(run, lab).await;

    let jobs: Api<Job> = Api::namespaced(run.ctx.client.clone(), run.namespace);
    let job_name = job::job_name(run.lab);
    let existing = jobs
        .get_opt(&job_name)
        .await?
        .filter(|j| run_channel::owned_by(&j.metadata, run.lab));
    let Some(existing) = existing else {
        if run.status.workload_job.is_some() {
            // Started before and gone now (deleted, or expired after its TTL):
            // placing the orders again would be a second run, not this one.
            release_and_finish(run, lab, Ending::Lost(job_name)).await?;
            return Ok(Action::await_change());
        }
        match apply_replicas(run, lab).await? {
            Shape::Ready => {}
            Shape::Waiting(why) => {
                let message = format!("waiting for spec.replicas: {why}");
                if ready_message(&run.status) != Some(message.as_str()) {
                    run.set_ready("False", "Scaling", message);
                    run.writer.write(&run.status).await?;
                }
                return Ok(Action::requeue(POLL));
            }
            Shape::Refused(why) => {
                release_and_finish(run, lab, Ending::NotScaled(why)).await?;
                return Ok(Action::await_change());
            }
        }
        if !lab.replicas.is_empty() {
            // The pods that became ready since this reconcile began get the faults too.
            keep_faults_applied(run, lab).await;
        }
        if channel.is_none() {
            config_maps
                .create(&PostParams::default(), &run_channel::config_map(run.lab))
                .await?;
        }
        let job = job::workload_job(
            run.lab,
            lab,
            &run.ctx.job_image,
            &run.ctx.job_pull_policy,
            &run.ctx.job_service_account,
        )?;
        jobs.create(&PostParams::default(), &job).await?;
        run.status.workload_job = Some(job_name.clone());
        run.writer.write(&run.status).await?;
        run.ctx
            .event(
                run.lab,
                EventType::Normal,
                "WorkloadStarted",
                format!("Job {job_name} applies the settings and places the orders"),
            )
            .await;
        return Ok(Action::requeue(POLL));
    };
    let job_status = existing.status.unwrap_or_default();
    let job_failed = job_status.failed.unwrap_or(0) > 0;
    let job_done = job_status.succeeded.unwrap_or(0) > 0 || job_failed;
    let ending = match (&chaos.failure, job_done) {
        (Some(failure), _) => Some(Ending::ChaosFailed(failure.clone())),
        // The Job waits for the restores; a Job that failed first ends the lab now.
        (None, true) if chaos.finished || job_failed => {
            let (report, error) = state.map_or((None, None), |s| (s.report, s.error));
            Some(match (report, error) {
                (Some(Ok(report)), _) => Ending::Report(Box::new(report)),
                (Some(Err(problem)), _) => Ending::NoReport(job_name, problem),
                (None, Some(error)) => Ending::NoReport(job_name, error),
                (None, None) => Ending::NoReport(job_name, job_failure_reason(&job_status)),
            })
        }
        _ => None,
    };
    if let Some(ending) = ending {
        return release_and_finish(run, lab, ending).await;
    }
    let wait = if run.status.workload_started_at.is_none() {
        POLL
    } else {
        RESYNC
    };
    Ok(Action::requeue(
        chaos
            .next_due
            .map_or(wait, |due| until(run.now, due).min(wait)),
    ))
}

fn job_failure_reason(status: &k8s_openapi::api::batch::v1::JobStatus) -> String {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or("Failed"),
                c.message.as_deref().unwrap_or("")
            )
        })
        .unwrap_or_else(|| "it wrote no report".into())
}

/// How a running lab ends.
enum Ending {
    Report(Box<JobReport>),
    NoReport(String, String),
    Lost(String),
    ChaosFailed(String),
    /// `spec.replicas` could not be applied (why).
    NotScaled(String),
}

/// How long the pods `spec.replicas` asks for may take to be ready.
pub const REPLICAS_READY_WITHIN: Duration = Duration::from_secs(180);

/// What applying `spec.replicas` came to this reconcile.
enum Shape {
    /// Every service runs at its replicas, each pod ready.
    Ready,
    Waiting(String),
    Refused(String),
}

/// Before the workload: each service `spec.replicas` names runs at that
/// many pods. Its record (with the replicas it had) goes to status before
/// the scale, so every ending puts them back; more than one pod only where
/// they share a PostgreSQL. Ready once that many pods of each are ready.
async fn apply_replicas(run: &mut Run<'_>, lab: &ValidatedLab) -> Result<Shape, Error> {
    let mut waiting = Vec::new();
    for (service, replicas) in lab.replicas.declared() {
        let position = match run
            .status
            .replicas
            .iter()
            .position(|r| r.service == service)
        {
            Some(position) => position,
            None => {
                if replicas > 1
                    && let Some(why) = run.platform.cannot_scale_out(service).await?
                {
                    return Ok(Shape::Refused(format!("spec.replicas.{service}: {why}")));
                }
                let original = run.platform.replicas(service).await?;
                run.status.replicas.push(ReplicasRecord {
                    service,
                    replicas,
                    original_replicas: Some(original),
                    scaled: false,
                    scaled_at: run.now,
                    restored_at: None,
                    error: None,
                });
                run.writer.write(&run.status).await?;
                run.status.replicas.len() - 1
            }
        };
        if !run.status.replicas[position].scaled {
            let scaled = run.platform.scale(service, replicas).await;
            let record = &mut run.status.replicas[position];
            match scaled {
                Ok(()) => {
                    record.scaled = true;
                    record.error = None;
                    let note = format!(
                        "{service} at {replicas} replicas for the lab (was {})",
                        record
                            .original_replicas
                            .map_or("-".into(), |r| r.to_string())
                    );
                    run.writer.write(&run.status).await?;
                    run.ctx
                        .event(run.lab, EventType::Normal, "Scaled", note)
                        .await;
                }
                Err(error) => {
                    record.error = Some(error.to_string());
                    run.writer.write(&run.status).await?;
                    waiting.push(format!("{service}: {error}"));
                    continue;
                }
            }
        }
        let ready = run.platform.endpoints(service).await.map_or(0, |e| e.len());
        if ready != replicas as usize {
            waiting.push(format!("{service} has {ready} of {replicas} pods ready"));
        }
    }
    if waiting.is_empty() {
        return Ok(Shape::Ready);
    }
    let since = run.status.replicas.iter().map(|r| r.scaled_at).min();
    if since.is_some_and(|at| run.now >= plus(at, REPLICAS_READY_WITHIN)) {
        return Ok(Shape::Refused(format!(
            "not ready within {} s: {}",
            REPLICAS_READY_WITHIN.as_secs(),
            waiting.join("; ")
        )));
    }
    Ok(Shape::Waiting(waiting.join("; ")))
}

/// Every service `spec.replicas` scaled put back at the replicas it had
/// (`disruption::restore_replicas`); what could not be.
async fn restore_replicas(run: &mut Run<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    for position in 0..run.status.replicas.len() {
        let record = run.status.replicas[position].clone();
        if record.restored_at.is_some() {
            continue;
        }
        // Put back even if the scale seemed to fail: it may have been made.
        let restored =
            disruption::restore_replicas(&run.platform, record.service, record.original_replicas)
                .await;
        let record = &mut run.status.replicas[position];
        match restored {
            Ok(()) => {
                record.restored_at = Some(run.now);
                record.error = None;
                let note = format!(
                    "{} back at {} replicas",
                    record.service,
                    record
                        .original_replicas
                        .map_or("-".into(), |r| r.to_string())
                );
                run.ctx
                    .event(run.lab, EventType::Normal, "ReplicasRestored", note)
                    .await;
            }
            Err(error) => {
                record.error = Some(error.clone());
                problems.push(format!("spec.replicas.{}: {error}", record.service));
            }
        }
    }
    problems
}

/// What the chaos of this reconcile came to.
struct ChaosTurn {
    finished: bool,
    next_due: Option<Timestamp>,
    /// A step that could not be applied, or restored by its deadline.
    failure: Option<String>,
}

/// Runs the chaos moves due now, timed from the workload's first order, and
/// brings the run ConfigMap's records to what status says (`told`: what it
/// holds now), so a write that failed once is made on the next reconcile.
async fn run_chaos(
    run: &mut Run<'_>,
    lab: &ValidatedLab,
    config_maps: &Api<ConfigMap>,
    channel: &str,
    told: Option<String>,
) -> Result<ChaosTurn, Error> {
    let Some(origin) = run.status.workload_started_at else {
        return Ok(ChaosTurn {
            finished: lab.chaos.is_empty(),
            next_due: None,
            failure: None,
        });
    };
    let plan = chaos_plan::plan(&lab.chaos, &run.status.chaos, origin, run.now);
    let changed = !plan.moves.is_empty();
    for change in plan.moves {
        match change {
            ChaosMove::Start { step } => start_step(run, lab, step).await?,
            ChaosMove::Restore { step } => {
                if let Err(error) = restore_step(run, Some(lab), step).await {
                    tracing::warn!(step, %error, "could not undo a chaos step; will retry");
                }
            }
        }
    }
    if changed {
        run.writer.write(&run.status).await?;
    }
    // The Job waits for the restores and measures the drain from them.
    let records = run_channel::chaos_json(&run.status.chaos);
    if !run.status.chaos.is_empty() && told.as_deref() != Some(records.as_str()) {
        run_channel::write(
            config_maps,
            channel,
            run_channel::CHAOS,
            records,
            FIELD_MANAGER,
        )
        .await?;
    }
    let after = chaos_plan::plan(&lab.chaos, &run.status.chaos, origin, run.now);
    Ok(ChaosTurn {
        finished: after.finished,
        next_due: plan.next_due,
        failure: chaos_failure(&run.status.chaos, run.now),
    })
}

/// A step whose window ended without the disruption ever being applied, or
/// whose restore kept failing past `RESTORE_DEADLINE`.
fn chaos_failure(records: &[ChaosRecord], now: Timestamp) -> Option<String> {
    records.iter().find_map(|r| {
        let error = r.error.as_deref()?;
        let what = format!("chaos[{}] {:?} {}", r.step, r.action, r.target);
        if r.restored_at.is_some() && !r.disrupted {
            return Some(format!("{what} could not be applied: {error}"));
        }
        let due = r.restore_at.unwrap_or(r.started_at);
        (r.restored_at.is_none() && now >= plus(due, RESTORE_DEADLINE))
            .then(|| format!("{what} could not be restored by its deadline: {error}"))
    })
}

/// Faults are re-applied on every reconcile: a restarted pod starts without
/// them. Best effort, on every service of the part (none where the lab
/// declares none), never on a service a chaos step is disrupting.
/// Every ready pod of a service gets them (one that became ready since the
/// last reconcile included), and status says on how many they are.
async fn keep_faults_applied(run: &mut Run<'_>, lab: &ValidatedLab) {
    let client = &run.ctx.faults;
    let mut in_place = run.status.faults_in_place.clone();
    for (service, faults) in &lab.faults {
        let disrupted = run
            .status
            .chaos
            .iter()
            .any(|r| r.target == *service && r.restored_at.is_none());
        if disrupted {
            continue;
        }
        match client.set(&run.platform, *service, faults).await {
            Ok(pods) => {
                in_place.insert(service.to_string(), u32::try_from(pods).unwrap_or(u32::MAX));
            }
            Err(error) => {
                tracing::warn!(%service, %error, "could not apply the lab's faults; will retry");
            }
        }
    }
    // Written with the reconcile's next status write (the Job's creation,
    // a chaos record, the verdict), not one of its own per reconcile.
    run.status.faults_in_place = in_place;
}

async fn start_step(run: &mut Run<'_>, lab: &ValidatedLab, index: usize) -> Result<(), Error> {
    let Some(step) = lab.chaos.get(index) else {
        return Ok(());
    };
    // The record goes to status before the disruption, so it can always be
    // undone; a record whose disruption failed is reused on the next try.
    let position = match run
        .status
        .chaos
        .iter()
        .position(|r| r.step as usize == index)
    {
        Some(position) => position,
        None => {
            run.status.chaos.push(ChaosRecord {
                step: u32::try_from(index).unwrap_or(u32::MAX),
                action: step.action(),
                target: step.target,
                disrupted: false,
                original_replicas: None,
                pods: Vec::new(),
                started_at: run.now,
                restore_at: Some(chaos_plan::restore_at(step, run.now)),
                restored_at: None,
                error: None,
            });
            run.status.chaos.len() - 1
        }
    };
    if run.status.chaos[position].original_replicas.is_none() {
        match step.original_replicas(&run.platform).await {
            Ok(replicas) => run.status.chaos[position].original_replicas = replicas,
            Err(error) => {
                run.status.chaos[position].error = Some(error.to_string());
                return Ok(());
            }
        }
    }
    run.writer.write(&run.status).await?;
    let sink = PodFaults(&run.ctx.faults, &run.platform);
    match step
        .apply(&run.platform, &sink, &lab.faults_of(step.target))
        .await
    {
        Ok(pods) => {
            let record = &mut run.status.chaos[position];
            record.disrupted = true;
            record.error = None;
            record.pods.extend(pods);
            run.ctx.metrics.chaos_started();
            let what = match (&record.original_replicas, record.pods.as_slice()) {
                (Some(replicas), _) => format!(" (replicas were {replicas})"),
                (None, []) => String::new(),
                (None, pods) => format!(" (pods {})", pods.join(", ")),
            };
            let note = format!("{:?} {}{what}", step.action(), step.target);
            run.ctx
                .event(run.lab, EventType::Normal, "ChaosStarted", note)
                .await;
        }
        Err(error) => {
            tracing::warn!(step = index, %error, "could not apply a chaos step; will retry");
            run.status.chaos[position].error = Some(error);
        }
    }
    Ok(())
}

/// The lab's faults through the admin API of every ready pod.
struct PodFaults<'a>(&'a FaultClient, &'a KubernetesPlatform);

impl FaultSink for PodFaults<'_> {
    async fn set_faults(&self, service: Service, faults: Faults) -> Result<(), String> {
        self.0
            .set(self.1, service, &faults)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Undoes one recorded step; on failure the record keeps the reason and
/// the step is tried again on the next reconcile.
async fn restore_step(
    run: &mut Run<'_>,
    lab: Option<&ValidatedLab>,
    index: usize,
) -> Result<(), String> {
    let Some(position) = run
        .status
        .chaos
        .iter()
        .position(|r| r.step as usize == index)
    else {
        return Ok(());
    };
    let record = run.status.chaos[position].clone();
    // After the end a window's faults go back to none, as the release left them.
    let base = lab.map(|l| l.faults_of(record.target)).unwrap_or_default();
    let sink = PodFaults(&run.ctx.faults, &run.platform);
    let undone = disruption::undo(&record, &run.platform, &sink, &base).await;
    let record = &mut run.status.chaos[position];
    match undone {
        Ok(()) => {
            record.restored_at = Some(run.now);
            let note = format!("{:?} {} undone", record.action, record.target);
            run.ctx.metrics.chaos_restored();
            run.ctx
                .event(run.lab, EventType::Normal, "ChaosRestored", note)
                .await;
            Ok(())
        }
        Err(error) => {
            // A step never applied keeps the reason it failed for.
            if record.disrupted {
                record.error = Some(error.clone());
            }
            Err(error)
        }
    }
}

/// Every recorded disruption still in place undone; what could not be.
async fn undo_disruptions(run: &mut Run<'_>, lab: Option<&ValidatedLab>) -> Vec<String> {
    let mut problems = Vec::new();
    for change in chaos_plan::restore_all(&run.status.chaos) {
        if let ChaosMove::Restore { step } = change
            && let Err(error) = restore_step(run, lab, step).await
        {
            problems.push(format!("chaos[{step}]: {error}"));
        }
    }
    // Last: a ScaleToZero of a scaled service restores the lab's replicas first.
    problems.extend(restore_replicas(run).await);
    problems
}

/// Every fault of the part cleared, on every ready pod; what could not be.
async fn clear_faults(run: &Run<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    for service in run.lab.spec.transport.services() {
        if let Err(error) = run
            .ctx
            .faults
            .set(&run.platform, *service, &Faults::default())
            .await
        {
            problems.push(error.to_string());
        }
    }
    problems
}

/// The release: every recorded disruption undone, every fault of the
/// part cleared. Returns what could not be undone, and what else could not be.
async fn release_part(run: &mut Run<'_>, lab: Option<&ValidatedLab>) -> (Vec<String>, Vec<String>) {
    let unrestored = undo_disruptions(run, lab).await;
    let uncleared = clear_faults(run).await;
    (unrestored, uncleared)
}

/// The `Restored` condition: whether every disruption of a lab that has
/// ended is undone (its time kept while its state stays the same).
fn set_restored(run: &mut Run<'_>, restored: bool, reason: &str, message: String) {
    let state = if restored { "True" } else { "False" };
    let since = run
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Restored" && c.status == state)
        .map_or(run.now, |c| c.last_transition_time.0);
    let generation = run.generation();
    set_condition(
        &mut run.status,
        Condition {
            type_: "Restored".into(),
            status: state.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: Time(since),
        },
    );
}

/// A lab that ended with a disruption in place: tries again every
/// `RESTORE_RETRY`, holding its part, until it is undone; then gives the
/// part back.
async fn undo_after_the_end(run: &mut Run<'_>) -> Result<Action, Error> {
    // After the end a step's faults go back to none, as the release left them.
    let problems = undo_disruptions(run, None).await;
    if !problems.is_empty() {
        set_restored(run, false, "Retrying", problems.join("; "));
        run.writer.write(&run.status).await?;
        return Ok(Action::requeue(RESTORE_RETRY));
    }
    set_restored(run, true, "Restored", "every disruption undone".into());
    run.writer.write(&run.status).await?;
    run.ctx
        .event(
            run.lab,
            EventType::Normal,
            "Restored",
            "every disruption undone after the lab ended; part released".into(),
        )
        .await;
    claim::release(&run.ctx.client, run.namespace, run.lab).await?;
    Ok(Action::await_change())
}

/// The last step: release, then the verdict; a release that fails is
/// retried until `RESTORE_DEADLINE` after the first attempt, then the lab
/// fails with what could not be released. A disruption not undone keeps
/// the part (`Restored=False`) and is tried again until it is.
async fn release_and_finish(
    run: &mut Run<'_>,
    lab: &ValidatedLab,
    ending: Ending,
) -> Result<Action, Error> {
    let (unrestored, uncleared) = release_part(run, Some(lab)).await;
    let problems: Vec<String> = unrestored.iter().chain(&uncleared).cloned().collect();
    if !problems.is_empty() {
        let since = run
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Released" && c.status == "False")
            .map_or(run.now, |c| c.last_transition_time.0);
        if run.now < plus(since, RESTORE_DEADLINE) {
            let generation = run.generation();
            set_condition(
                &mut run.status,
                Condition {
                    type_: "Released".into(),
                    status: "False".into(),
                    reason: "Retrying".into(),
                    message: problems.join("; "),
                    observed_generation: generation,
                    last_transition_time: Time(since),
                },
            );
            run.writer.write(&run.status).await?;
            return Ok(Action::requeue(POLL));
        }
    }
    run.status.conditions.retain(|c| c.type_ != "Released");
    if !unrestored.is_empty() {
        set_restored(run, false, "Retrying", unrestored.join("; "));
    }
    let unreleased = if problems.is_empty() {
        String::new()
    } else {
        format!("; not released: {}", problems.join("; "))
    };
    let action = match ending {
        Ending::Report(report) => {
            let report = *report;
            let passed = report.verdict == Verdict::Pass && problems.is_empty();
            let failed_checks: Vec<_> = report
                .results
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            let message = if failed_checks.is_empty() {
                format!("every expectation held{unreleased}")
            } else {
                format!("{}{unreleased}", failed_checks.join("; "))
            };
            run.status.phase = Some(if passed {
                Phase::Succeeded
            } else {
                Phase::Failed
            });
            run.status.verdict = Some(if problems.is_empty() {
                report.verdict
            } else {
                Verdict::Fail
            });
            run.status.results = Some(report.results);
            let (state, reason) = match (passed, problems.is_empty()) {
                (true, _) => ("True", "Passed"),
                (false, true) => ("False", "ExpectationsFailed"),
                (false, false) => ("False", "ReleaseFailed"),
            };
            run.set_ready(state, reason, message.clone());
            run.writer.write(&run.status).await?;
            run.ctx
                .event(
                    run.lab,
                    EventType::Normal,
                    "Completed",
                    format!(
                        "verdict {}: {message}",
                        run.status.verdict.unwrap_or(Verdict::Fail)
                    ),
                )
                .await;
            Action::await_change()
        }
        Ending::NoReport(job, why) => {
            let message = format!(
                "Job {job} ended without a report: {why} (see kubectl logs job/{job}){unreleased}"
            );
            run.fail("WorkloadFailed", message).await?
        }
        Ending::Lost(job) => {
            let message = format!("Job {job} disappeared before its report was read{unreleased}");
            run.fail("WorkloadLost", message).await?
        }
        Ending::ChaosFailed(failure) => {
            run.fail("ChaosFailed", format!("{failure}{unreleased}"))
                .await?
        }
        Ending::NotScaled(why) => {
            run.fail("ReplicasNotApplied", format!("{why}{unreleased}"))
                .await?
        }
    };
    if !unrestored.is_empty() {
        // The part stays this lab's until the disruption is undone.
        return Ok(Action::requeue(RESTORE_RETRY));
    }
    claim::release(&run.ctx.client, run.namespace, run.lab).await?;
    Ok(action)
}

/// Deletion: whatever the lab's own records say is still disrupted is
/// undone first, whether or not it still holds the Lease (a foreground
/// deletion lets the garbage collector take the Lease while the finalizer
/// holds the lab). Then a lab that owns its part clears the faults and
/// gives it back; a lab that does not (queued, or long finished) touches
/// nothing else: another lab may be running there.
async fn cleanup(lab: &FoodLab, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let api: Api<FoodLab> = Api::namespaced(ctx.client.clone(), namespace);
    let mut run = Run::new(lab, ctx, &api, namespace);
    let validated = ValidatedLab::new(&lab.spec).ok();
    let in_place = run.status.in_place();
    let unrestored = undo_disruptions(&mut run, validated.as_ref()).await;
    // The finalizer stays until every disruption is undone.
    if !unrestored.is_empty() {
        return Err(Error::Platform(PlatformError::Setup(unrestored.join("; "))));
    }
    let owns_part = match claim::holder(&ctx.client, namespace).await? {
        Some(holder) => holder == claim::identity(lab),
        // The Lease went first: the part is this lab's if it was running.
        None => run.status.started_at.is_some() && !run.status.phase.is_some_and(finished),
    };
    if !owns_part {
        if in_place {
            ctx.event(
                lab,
                EventType::Normal,
                "Cleaned",
                "disruptions undone".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    for problem in clear_faults(&run).await {
        tracing::warn!(%problem, "could not clear faults of a deleted lab");
    }
    claim::release(&ctx.client, namespace, lab).await?;
    ctx.event(
        lab,
        EventType::Normal,
        "Cleaned",
        "disruptions undone, faults cleared, part released".into(),
    )
    .await;
    Ok(Action::await_change())
}
