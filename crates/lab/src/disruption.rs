//! One chaos executor, for the engine on one machine and the operator on a
//! cluster: what each disruption does to a `Platform`, and how a recorded
//! one is undone (the restore rule, written once).

use std::future::Future;
use std::time::Duration;

use foodlab_domain::Faults;
use rand::Rng;
use rand::seq::SliceRandom;

use crate::faults::FaultApiError;
use crate::platform::{Platform, PlatformError};
use crate::results::ChaosRecord;
use crate::spec::{Broker, ChaosAction, ChaosTarget, PodSelection, Service, Target};
use crate::validated::{Disruption, DisruptionKind};

/// Where a Delay or Fail window's faults go: every replica of the service.
pub trait FaultSink: Send + Sync {
    fn set_faults(
        &self,
        service: Service,
        faults: Faults,
    ) -> impl Future<Output = Result<(), FaultApiError>> + Send;
}

/// Why a disruption could not be applied or undone.
#[derive(Debug, thiserror::Error)]
pub enum DisruptionError {
    /// Scaling, reading the replicas or listing the pods failed.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Faults(#[from] FaultApiError),
    #[error("{0} has no running pod to kill")]
    NoPodToKill(ChaosTarget),
    #[error("{pod}: {source}")]
    KillPod { pod: String, source: PlatformError },
    /// Only a PodKill takes a broker as its target (the lab's validation says so).
    #[error("{action:?} needs a service as its target, not {target}")]
    NotAService {
        action: ChaosAction,
        target: ChaosTarget,
    },
    /// A broker's killed nodes are not serving again yet.
    #[error("{broker}: {} not serving again yet", .nodes.join(", "))]
    NotBack { broker: Broker, nodes: Vec<String> },
}

/// The service `action` disrupts (every action but a broker's PodKill has one).
fn service_of(action: ChaosAction, target: ChaosTarget) -> Result<Service, DisruptionError> {
    target
        .service()
        .ok_or(DisruptionError::NotAService { action, target })
}

impl Disruption {
    fn service(&self) -> Result<Service, DisruptionError> {
        service_of(self.action(), self.target)
    }

    /// When it must be undone, had it started at `started_at` (a killed
    /// pod is replaced by its Deployment: at once).
    pub fn restore_at(&self, started_at: jiff::Timestamp) -> jiff::Timestamp {
        let duration =
            jiff::SignedDuration::try_from(self.duration()).unwrap_or(jiff::SignedDuration::MAX);
        started_at
            .checked_add(duration)
            .unwrap_or(jiff::Timestamp::MAX)
    }

    /// Its record as step `index` starts, written before the disruption:
    /// not disrupted yet, with what undoing it needs.
    pub fn started(
        &self,
        index: usize,
        started_at: jiff::Timestamp,
        original_replicas: Option<u32>,
    ) -> ChaosRecord {
        ChaosRecord {
            step: u32::try_from(index).unwrap_or(u32::MAX),
            action: self.action(),
            target: self.target,
            disrupted: false,
            original_replicas,
            pods: Vec::new(),
            started_at,
            restore_at: Some(self.restore_at(started_at)),
            restored_at: None,
            error: None,
        }
    }

    /// What undoing it will need, read before anything changes: the
    /// replicas a ScaleToZero puts back.
    pub async fn original_replicas<P: Platform>(
        &self,
        platform: &P,
    ) -> Result<Option<u32>, PlatformError> {
        match self.kind {
            DisruptionKind::ScaleToZero { .. } => match self.target.service() {
                Some(service) => platform.replicas(service).await.map(Some),
                None => Ok(None),
            },
            DisruptionKind::PodKill { .. }
            | DisruptionKind::Delay { .. }
            | DisruptionKind::Fail { .. } => Ok(None),
        }
    }

    /// Applies it; returns the pods a PodKill killed, by name. `base` is the
    /// target's own faults, which a window adds to.
    pub async fn apply<P: Platform, F: FaultSink>(
        &self,
        platform: &P,
        faults: &F,
        base: &Faults,
    ) -> Result<Vec<String>, DisruptionError> {
        match self.kind {
            DisruptionKind::ScaleToZero { .. } => {
                platform.scale(self.service()?, 0).await?;
                Ok(Vec::new())
            }
            DisruptionKind::PodKill {
                selection,
                grace_period,
            } => kill_pods(platform, self.target, selection, grace_period).await,
            DisruptionKind::Delay { .. } | DisruptionKind::Fail { .. } => {
                faults
                    .set_faults(self.service()?, self.window_faults(base))
                    .await?;
                Ok(Vec::new())
            }
        }
    }
}

/// Undoes what a record says is in place. A ScaleToZero goes back to
/// exactly the replicas recorded before it (none recorded: it never
/// scaled); a window's end puts back the target's own faults (`base`); a
/// service's pod kill leaves nothing to undo (its Deployment replaces the
/// pods at once), a broker's is undone once every killed node serves again
/// (its StatefulSet recreates them under their names, and until they are
/// back the broker runs short of its replicas).
pub async fn undo<P: Platform, F: FaultSink>(
    record: &ChaosRecord,
    platform: &P,
    faults: &F,
    base: &Faults,
) -> Result<(), DisruptionError> {
    let service = || service_of(record.action, record.target);
    match record.action {
        ChaosAction::ScaleToZero => {
            restore_replicas(platform, service()?, record.original_replicas).await?;
        }
        ChaosAction::Delay | ChaosAction::Fail => {
            faults.set_faults(service()?, base.clone()).await?;
        }
        ChaosAction::PodKill => {
            if let Some(broker) = record.target.broker() {
                let nodes = platform.broker_nodes_down(broker, &record.pods).await?;
                if !nodes.is_empty() {
                    return Err(DisruptionError::NotBack { broker, nodes });
                }
            }
        }
    }
    Ok(())
}

/// Puts a service back at the replicas recorded before it was scaled:
/// exactly those, and nothing when none were recorded (it was never
/// scaled). The rule for a ScaleToZero's end and a lab's `spec.replicas`.
pub async fn restore_replicas<P: Platform>(
    platform: &P,
    service: Service,
    original: Option<u32>,
) -> Result<(), PlatformError> {
    let Some(replicas) = original else {
        return Ok(());
    };
    match platform.scale(service, replicas).await {
        // The service is gone (its part was uninstalled): nothing to restore.
        Err(PlatformError::NotDeployed(_)) => Ok(()),
        scaled => scaled,
    }
}

async fn kill_pods<P: Platform>(
    platform: &P,
    target: ChaosTarget,
    selection: PodSelection,
    grace: Duration,
) -> Result<Vec<String>, DisruptionError> {
    let running = match target.which() {
        Target::Service(service) => platform.pods(service).await?,
        Target::Broker(broker) => platform.broker_nodes(broker).await?,
    };
    if running.is_empty() {
        return Err(DisruptionError::NoPodToKill(target));
    }
    let picked = pick(selection, running);
    for pod in &picked {
        let killed = match target.which() {
            Target::Service(service) => platform.kill_pod(service, pod, grace).await,
            Target::Broker(broker) => platform.kill_broker_node(broker, pod, grace).await,
        };
        killed.map_err(|source| DisruptionError::KillPod {
            pod: pod.clone(),
            source,
        })?;
    }
    tracing::info!(%target, pods = ?picked, grace_ms = grace.as_millis(), "pods killed");
    Ok(picked)
}

/// The pods `selection` picks of `running`, at random where it says so,
/// in name order.
pub fn pick(selection: PodSelection, mut running: Vec<String>) -> Vec<String> {
    let mut rng = rand::rng();
    let count = selection.count(running.len(), |max| rng.random_range(0..=max));
    running.shuffle(&mut rng);
    running.truncate(count);
    running.sort();
    running
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("inventory-{i}")).collect()
    }

    #[test]
    fn each_mode_picks_as_chaos_mesh_counts() {
        let cases = [
            (PodSelection::One, 3, 1),
            (PodSelection::One, 0, 0),
            (PodSelection::All, 3, 3),
            (PodSelection::Fixed(2), 3, 2),
            (PodSelection::Fixed(5), 3, 3),
            (PodSelection::FixedPercent(50), 4, 2),
            // Rounded down, but a percentage of a part never kills nothing.
            (PodSelection::FixedPercent(10), 3, 1),
            (PodSelection::FixedPercent(100), 3, 3),
        ];
        for (selection, running, killed) in cases {
            let picked = pick(selection, pods(running));
            assert_eq!(picked.len(), killed, "{selection:?} of {running}");
            assert!(picked.iter().all(|p| pods(running).contains(p)));
            assert!(picked.is_sorted(), "{picked:?}");
        }
    }

    #[test]
    fn random_max_percent_draws_up_to_its_share() {
        // 50 % of 4 is at most 2; the draw asked for more is held to it.
        assert_eq!(
            PodSelection::RandomMaxPercent(50).count(4, |max| max + 7),
            2
        );
        assert_eq!(PodSelection::RandomMaxPercent(50).count(4, |_| 0), 0);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(pick(PodSelection::RandomMaxPercent(50), pods(4)).len());
        }
        assert_eq!(seen, [0, 1, 2].into());
    }

    #[test]
    fn one_picks_each_pod_some_of_the_time() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.extend(pick(PodSelection::One, pods(3)));
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }
}
