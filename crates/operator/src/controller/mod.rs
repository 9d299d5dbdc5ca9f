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
//!
//! Here the pipeline itself; beside it `status` (the conditions and the
//! status writer), `replicas` (a lab's `spec.replicas`, applied and put
//! back), `chaos` (the plan's moves, the faults kept in place, the release)
//! and `finish` (every way a lab ends: the verdict, an invalid spec, a
//! disruption still in place after the end, a deletion).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foodlab_lab::spec::{FoodLabStatus, Phase, Verdict};
use foodlab_lab::validated::ValidatedLab;
use foodlab_lab::{FoodLab, Platform, PlatformError, Service};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::admin_tokens::AdminTokens;
use crate::claim::{self, Claim};
use crate::job::{self};
use crate::metrics::Metrics;
use crate::platform::KubernetesPlatform;
use foodlab_run_channel::channel;

mod chaos;
mod finish;
mod replicas;
mod status;

use chaos::*;
use finish::*;
use replicas::*;
use status::*;

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
    /// The clock, injected so tests can be at any time.
    pub now: fn() -> Timestamp,
    /// Service URLs instead of Service DNS (tests).
    pub endpoints: Option<BTreeMap<Service, String>>,
    pub metrics: Metrics,
    /// The admin clients (and connection pools) of every reconcile, one per
    /// namespace: each sends its namespace's token.
    pub faults: AdminTokens,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Option<Recorder>,
        job_image: String,
        job_pull_policy: String,
        faults: AdminTokens,
    ) -> Self {
        Self {
            client,
            recorder,
            job_image,
            job_pull_policy,
            now: Timestamp::now,
            endpoints: None,
            metrics: Metrics::default(),
            faults,
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
        .with_pods(Api::namespaced(self.client.clone(), namespace))
        .with_stateful_sets(Api::namespaced(self.client.clone(), namespace));
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

fn finished(phase: Phase) -> bool {
    matches!(phase, Phase::Succeeded | Phase::Failed)
}

/// Step 2: the part must be installed (its broker with the lab's nodes),
/// and free; then the lab runs.
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
    // The broker's nodes are the part's, as installed: a lab does not change them.
    if let Some(broker) = lab.transport.broker() {
        let installed = run.platform.broker_replicas(broker).await?;
        if let Some(why) = crate::platform::broker_shape_mismatch(
            broker,
            lab.transport.part(),
            lab.broker_nodes,
            installed,
        ) {
            return run.fail("BrokerNodesDiffer", why).await;
        }
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
    let channel_name = channel::name(run.lab);
    let channel = config_maps.get_opt(&channel_name).await?;
    let state = channel.as_ref().and_then(|cm| channel::read(cm, run.lab));
    if run.status.workload_started_at.is_none()
        && let Some(at) = state.as_ref().and_then(|s| s.workload_started_at)
    {
        run.status.workload_started_at = Some(at);
        run.writer.write(&run.status).await?;
    }

    // Chaos first (restores above all), so nothing else can hold a restore up.
    let told = channel
        .as_ref()
        .and_then(|cm| cm.data.as_ref()?.get(channel::CHAOS).cloned());
    let chaos = run_chaos(run, lab, &config_maps, &channel_name, told).await?;
    keep_faults_applied(run, lab).await;

    let jobs: Api<Job> = Api::namespaced(run.ctx.client.clone(), run.namespace);
    let job_name = job::job_name(run.lab);
    let existing = jobs
        .get_opt(&job_name)
        .await?
        .filter(|j| channel::owned_by(&j.metadata, run.lab));
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
                .create(&PostParams::default(), &channel::config_map(run.lab))
                .await?;
        }
        grant_run_channel(run).await?;
        let job = job::workload_job(run.lab, lab, &run.ctx.job_image, &run.ctx.job_pull_policy)?;
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

/// The Job's identity and its access to its run ConfigMap (made again after
/// a create that failed half-way: what exists already is left as it is).
async fn grant_run_channel(run: &Run<'_>) -> Result<(), Error> {
    let (account, role, binding) = job::run_channel_access(run.lab);
    let client = &run.ctx.client;
    let made = |result: Result<(), kube::Error>| match result {
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => other,
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), run.namespace);
    made(
        accounts
            .create(&PostParams::default(), &account)
            .await
            .map(drop),
    )?;
    let roles: Api<Role> = Api::namespaced(client.clone(), run.namespace);
    made(roles.create(&PostParams::default(), &role).await.map(drop))?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), run.namespace);
    made(
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .map(drop),
    )?;
    Ok(())
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
