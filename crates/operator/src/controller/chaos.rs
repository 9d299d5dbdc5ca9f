//! The chaos of a running lab: the moves the plan says are due, each
//! recorded before its disruption; the faults kept in place; the release.

use foodlab_domain::Faults;
use foodlab_lab::Service;
use foodlab_lab::disruption::{self, DisruptionError, FaultSink};
use foodlab_lab::faults::{FaultApiError, FaultClient};
use foodlab_lab::results::ChaosRecord;
use foodlab_lab::validated::ValidatedLab;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::events::EventType;

use crate::chaos_plan::{self, ChaosMove};
use crate::platform::{FIELD_MANAGER, KubernetesPlatform};
use foodlab_run_channel::channel;

use super::*;

/// What the chaos of this reconcile came to.
pub(super) struct ChaosTurn {
    pub(super) finished: bool,
    pub(super) next_due: Option<Timestamp>,
    /// A step that could not be applied, or restored by its deadline.
    pub(super) failure: Option<String>,
}

/// Runs the chaos moves due now, timed from the workload's first order, and
/// brings the run ConfigMap's records to what status says (`told`: what it
/// holds now), so a write that failed once is made on the next reconcile.
pub(super) async fn run_chaos(
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
    let records = channel::chaos_json(&run.status.chaos);
    if !run.status.chaos.is_empty() && told.as_deref() != Some(records.as_str()) {
        channel::write(config_maps, channel, channel::CHAOS, records, FIELD_MANAGER).await?;
    }
    let after = chaos_plan::plan(&lab.chaos, &run.status.chaos, origin, run.now);
    Ok(ChaosTurn {
        finished: after.finished,
        next_due: plan.next_due,
        failure: chaos_failure(&run.status.chaos, run.now, plus(origin, lab.within)),
    })
}

/// A step whose window ended without the disruption ever being applied, or
/// whose restore kept failing past `RESTORE_DEADLINE` (whether or not it has
/// been made since: a part disrupted that much longer than the lab said is
/// not the lab it declared). A broker's killed nodes are waited for until
/// `RESTORE_DEADLINE` after the lab's time (`within_end`): the verdict says
/// whether they were back within it.
pub(super) fn chaos_failure(
    records: &[ChaosRecord],
    now: Timestamp,
    within_end: Timestamp,
) -> Option<String> {
    records.iter().find_map(|r| {
        let error = r.error.as_deref()?;
        let what = format!("chaos[{}] {:?} {}", r.step, r.action, r.target);
        if r.restored_at.is_some() && !r.disrupted {
            return Some(format!("{what} could not be applied: {error}"));
        }
        let restore_at = r.restore_at.unwrap_or(r.started_at);
        let from = match r.target.broker() {
            Some(_) => restore_at.max(within_end),
            None => restore_at,
        };
        let deadline = plus(from, RESTORE_DEADLINE);
        match r.restored_at {
            None => (now >= deadline)
                .then(|| format!("{what} could not be restored by its deadline: {error}")),
            Some(restored) => (restored > deadline).then(|| {
                let late = restored.duration_since(deadline).as_secs();
                format!(
                    "{what} could not be restored by its deadline: restored {late} s after it \
                     (until then: {error})"
                )
            }),
        }
    })
}

/// Faults are re-applied on every reconcile: a restarted pod starts without
/// them. Best effort, on every service of the part (none where the lab
/// declares none), never on a service a chaos step is disrupting.
/// Every ready pod of a service gets them (one that became ready since the
/// last reconcile included), and status says on how many they are.
pub(super) async fn keep_faults_applied(run: &mut Run<'_>, lab: &ValidatedLab) {
    let client = run.ctx.faults.of(run.namespace);
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

pub(super) async fn start_step(
    run: &mut Run<'_>,
    lab: &ValidatedLab,
    index: usize,
) -> Result<(), Error> {
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
            run.status.chaos.push(step.started(index, run.now, None));
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
    let sink = PodFaults(run.ctx.faults.of(run.namespace), &run.platform);
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
            run.status.chaos[position].error = Some(error.to_string());
        }
    }
    Ok(())
}

/// The lab's faults through the admin API of every ready pod.
pub(super) struct PodFaults<'a>(&'a FaultClient, &'a KubernetesPlatform);

impl FaultSink for PodFaults<'_> {
    async fn set_faults(&self, service: Service, faults: Faults) -> Result<(), FaultApiError> {
        self.0.set(self.1, service, &faults).await.map(drop)
    }
}

/// Undoes one recorded step; on failure the record keeps the reason and
/// the step is tried again on the next reconcile.
pub(super) async fn restore_step(
    run: &mut Run<'_>,
    lab: Option<&ValidatedLab>,
    index: usize,
) -> Result<(), DisruptionError> {
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
    let sink = PodFaults(run.ctx.faults.of(run.namespace), &run.platform);
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
                record.error = Some(error.to_string());
            }
            Err(error)
        }
    }
}

/// Every recorded disruption still in place undone; what could not be.
pub(super) async fn undo_disruptions(run: &mut Run<'_>, lab: Option<&ValidatedLab>) -> Vec<String> {
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
pub(super) async fn clear_faults(run: &Run<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    for service in run.lab.spec.transport.services() {
        if let Err(error) = run
            .ctx
            .faults
            .of(run.namespace)
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
pub(super) async fn release_part(
    run: &mut Run<'_>,
    lab: Option<&ValidatedLab>,
) -> (Vec<String>, Vec<String>) {
    let unrestored = undo_disruptions(run, lab).await;
    let uncleared = clear_faults(run).await;
    (unrestored, uncleared)
}

#[cfg(test)]
mod tests {
    use foodlab_lab::spec::{ChaosAction, ChaosTarget};

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(seconds)
    }

    /// A PodKill at +5 s whose nodes are not back yet.
    fn unrestored_kill(target: ChaosTarget) -> ChaosRecord {
        ChaosRecord {
            step: 0,
            action: ChaosAction::PodKill,
            target,
            disrupted: true,
            original_replicas: None,
            pods: vec!["kafka-1".into()],
            started_at: at(5),
            restore_at: Some(at(5)),
            restored_at: None,
            error: Some("kafka: kafka-1 not serving again yet".into()),
        }
    }

    #[test]
    fn a_broker_s_killed_nodes_are_waited_for_until_past_the_labs_time() {
        let records = [unrestored_kill(ChaosTarget::Kafka)];
        let within_end = at(300);
        // Past the 60 s a restore is given, but within the lab's time.
        assert_eq!(chaos_failure(&records, at(120), within_end), None);
        assert_eq!(chaos_failure(&records, at(359), within_end), None);
        assert_eq!(
            chaos_failure(&records, at(360), within_end).as_deref(),
            Some(
                "chaos[0] PodKill kafka could not be restored by its deadline: \
                 kafka: kafka-1 not serving again yet"
            )
        );
        // A service's restore has its 60 s, whatever the lab's time.
        let records = [unrestored_kill(ChaosTarget::Inventory)];
        assert!(chaos_failure(&records, at(65), within_end).is_some());
    }
}
