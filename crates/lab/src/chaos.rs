//! Who owns a lab's faults and chaos while it runs (`Disruptor`), and the
//! engine's own implementation (`Direct`): each chaos step timed from the
//! workload's first order, with its restore, and a ledger of what is
//! disrupted so that the release undoes it whatever way the lab ends.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use foodlab_domain::Faults;
use tokio::time::Instant;

use crate::disruption::{self, DisruptionError, FaultSink};
use crate::faults::{ClientError, FaultApiError, FaultClient};
use crate::platform::Platform;
use crate::results::ChaosRecord;
use crate::spec::{ChaosAction, ChaosTarget, Service};
use crate::validated::{Disruption, ValidatedLab};

/// How long a step that cannot be restored, or a release that fails, is retried.
pub const RESTORE_RETRY: Duration = Duration::from_secs(30);
const RETRY_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// One step could not be applied or undone.
    #[error("chaos {action:?} on {target}: could not be {stage}: {source}")]
    Step {
        action: ChaosAction,
        target: ChaosTarget,
        stage: Stage,
        #[source]
        source: DisruptionError,
    },
    /// The workload's start could not be written where the chaos is
    /// timed from (a cluster's run ConfigMap).
    #[error("chaos: cannot record the workload's start: {0}")]
    RecordStart(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The records never said every step was restored, by the deadline.
    #[error("chaos: the operator did not restore every chaos step in time")]
    NotRestoredInTime,
}

/// Where a chaos step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Applied,
    Restored,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Applied => "applied",
            Self::Restored => "restored",
        })
    }
}

/// The workload's first order, on both clocks: chaos steps count `after` from it.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadStart {
    pub at: jiff::Timestamp,
    pub instant: Instant,
}

impl WorkloadStart {
    pub fn now() -> Self {
        Self {
            at: jiff::Timestamp::now(),
            instant: Instant::now(),
        }
    }
}

/// Who applies a lab's faults and runs its chaos: the engine itself on one
/// machine (`Direct`), the operator on a cluster (the workload Job only
/// tells it when the workload starts and waits for its records).
pub trait Disruptor: Send + Sync {
    /// Before the baseline: every service of the part carries the lab's
    /// faults and nothing else.
    fn prepare(&self, lab: &ValidatedLab)
    -> impl Future<Output = Result<(), FaultApiError>> + Send;

    /// The lab's chaos, timed from `start`; returns once every step is undone.
    fn chaos(
        &self,
        lab: &ValidatedLab,
        start: WorkloadStart,
    ) -> impl Future<Output = Result<Vec<ChaosRecord>, ChaosError>> + Send;

    /// On every ending: every disruption undone, every fault cleared.
    /// Returns what could not be, after retrying.
    fn release(&self, lab: &ValidatedLab) -> impl Future<Output = Vec<String>> + Send;

    /// `service` was restarted by the platform while the lab runs and came
    /// back without faults: it gets the ones it had (a chaos window's included).
    fn restarted(
        &self,
        _lab: &ValidatedLab,
        _service: Service,
    ) -> impl Future<Output = Result<(), FaultApiError>> + Send {
        async { Ok(()) }
    }
}

/// The engine runs faults and chaos itself, against any platform.
pub struct Direct<'a, P> {
    platform: &'a P,
    client: FaultClient,
    /// What is disrupted now, by step: each record is in here before its
    /// disruption, so a release always undoes it.
    active: Mutex<BTreeMap<usize, ChaosRecord>>,
    /// The faults last set on each service. Held while they are sent, so a
    /// restarted service's faults never overtake a window's start or end.
    faults: tokio::sync::Mutex<BTreeMap<Service, Faults>>,
}

impl<P: Platform> FaultSink for Direct<'_, P> {
    async fn set_faults(&self, service: Service, faults: Faults) -> Result<(), FaultApiError> {
        self.put_faults(service, faults).await
    }
}

impl<'a, P: Platform> Direct<'a, P> {
    /// Setting faults with the lab's client (`faults::http_client`).
    pub fn new(platform: &'a P) -> Result<Self, ClientError> {
        Ok(Self::with_client(platform, FaultClient::new()?))
    }

    fn with_client(platform: &'a P, client: FaultClient) -> Self {
        Self {
            platform,
            client: client.patient(crate::faults::ADMIN_PATIENCE),
            active: Mutex::default(),
            faults: tokio::sync::Mutex::default(),
        }
    }

    async fn put_faults(&self, service: Service, faults: Faults) -> Result<(), FaultApiError> {
        let mut set = self.faults.lock().await;
        set.insert(service, faults.clone());
        self.client
            .set(self.platform, service, &faults)
            .await
            .map(drop)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, ChaosRecord>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts one disruption back (`disruption::undo`); a service a scale
    /// started again has none of the lab's faults, so they go back too.
    async fn undo(&self, lab: &ValidatedLab, record: &ChaosRecord) -> Result<(), DisruptionError> {
        let base = lab.faults_of(record.target);
        disruption::undo(record, self.platform, self, &base).await?;
        if record.action == ChaosAction::ScaleToZero
            && let Some(service) = record.target.service()
        {
            self.set_faults(service, base).await?;
        }
        Ok(())
    }

    /// Records the step (with what undoing it needs), then applies it. A
    /// retry keeps the original of the first try: a try that failed may have
    /// been applied, and the replicas read now be the disrupted ones.
    async fn disrupt(
        &self,
        lab: &ValidatedLab,
        index: usize,
        step: &Disruption,
        started_at: jiff::Timestamp,
    ) -> Result<ChaosRecord, DisruptionError> {
        let recorded = self.ledger().get(&index).map(|r| r.original_replicas);
        let original_replicas = match recorded {
            Some(original) => original,
            None => step.original_replicas(self.platform).await?,
        };
        let record = step.started(index, started_at, original_replicas);
        self.ledger().insert(index, record.clone());
        let pods = step
            .apply(self.platform, self, &lab.faults_of(step.target))
            .await?;
        let mut ledger = self.ledger();
        let record = ledger.entry(index).or_insert(record);
        record.disrupted = true;
        record.pods = pods;
        Ok(record.clone())
    }

    /// Waits until `after` (from the workload's start), disrupts, waits the
    /// duration, restores. A disruption that cannot be applied is retried
    /// until its restore time; a restore, for `RESTORE_RETRY`. A broker's
    /// killed nodes are waited for until the lab's `within` is over and
    /// `RESTORE_RETRY` more, so that a node back late is still recorded (the
    /// verdict then says it was late).
    async fn run_step(
        &self,
        lab: &ValidatedLab,
        index: usize,
        step: &Disruption,
        start: WorkloadStart,
    ) -> Result<ChaosRecord, ChaosError> {
        tokio::time::sleep_until(start.instant + step.after).await;
        let fail = |stage| {
            move |source| ChaosError::Step {
                action: step.action(),
                target: step.target,
                stage,
                source,
            }
        };
        let duration = step.duration();
        let started_at = jiff::Timestamp::now();
        let restore_instant = Instant::now() + duration;
        tracing::info!(action = ?step.action(), target = %step.target, ?duration, "chaos step starts");
        let mut record = retry(restore_instant, || {
            self.disrupt(lab, index, step, started_at)
        })
        .await
        .map_err(fail(Stage::Applied))?;
        tokio::time::sleep_until(restore_instant).await;
        let restore_until = match step.target.broker() {
            Some(_) => (start.instant + lab.within).max(Instant::now()) + RESTORE_RETRY,
            None => Instant::now() + RESTORE_RETRY,
        };
        retry(restore_until, || self.undo(lab, &record))
            .await
            .map_err(fail(Stage::Restored))?;
        self.ledger().remove(&index);
        tracing::info!(action = ?step.action(), target = %step.target, pods = ?record.pods, "chaos step restored");
        record.restored_at = Some(jiff::Timestamp::now());
        Ok(record)
    }
}

impl<P: Platform> Disruptor for Direct<'_, P> {
    async fn prepare(&self, lab: &ValidatedLab) -> Result<(), FaultApiError> {
        for (service, faults) in &lab.faults {
            self.put_faults(*service, faults.clone()).await?;
        }
        Ok(())
    }

    async fn restarted(&self, lab: &ValidatedLab, service: Service) -> Result<(), FaultApiError> {
        let set = self.faults.lock().await;
        let faults = set
            .get(&service)
            .cloned()
            .unwrap_or_else(|| lab.faults_of(service));
        self.client.set(self.platform, service, &faults).await?;
        tracing::info!(%service, delay_ms = faults.delay_ms, fail_rate = faults.fail_rate, "faults re-applied after a restart");
        Ok(())
    }

    async fn chaos(
        &self,
        lab: &ValidatedLab,
        start: WorkloadStart,
    ) -> Result<Vec<ChaosRecord>, ChaosError> {
        let steps = lab
            .chaos
            .iter()
            .enumerate()
            .map(|(i, step)| self.run_step(lab, i, step, start));
        futures::future::join_all(steps).await.into_iter().collect()
    }

    async fn release(&self, lab: &ValidatedLab) -> Vec<String> {
        let mut problems = Vec::new();
        let active: Vec<ChaosRecord> = self.ledger().values().cloned().collect();
        for record in active {
            match retry(Instant::now() + RESTORE_RETRY, || self.undo(lab, &record)).await {
                Ok(()) => {
                    tracing::info!(action = ?record.action, target = %record.target, "chaos step undone on release")
                }
                Err(e) => problems.push(format!("{:?} {}: {e}", record.action, record.target)),
            }
        }
        self.ledger().clear();
        for service in lab.transport.services() {
            let cleared = retry(Instant::now() + RESTORE_RETRY, || async {
                match self.put_faults(*service, Faults::default()).await {
                    Ok(()) => Ok(()),
                    // A service the platform does not run has no faults to clear.
                    Err(_) if self.platform.endpoint(*service).is_err() => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
            if let Err(e) = cleared {
                problems.push(e.to_string());
            }
        }
        problems
    }
}

/// Calls `attempt` until it succeeds or `until` passes; the last error otherwise.
pub async fn retry<T, E, F, Fut>(until: Instant, mut attempt: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() + RETRY_EVERY >= until => return Err(error),
            Err(error) => {
                tracing::warn!(%error, "retrying");
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}
