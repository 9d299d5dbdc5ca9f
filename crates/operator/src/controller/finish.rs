//! How a lab ends: the verdict after the release, a spec that turned
//! invalid, a disruption still in place after the end, a deletion.

use foodlab_lab::spec::{Phase, Verdict};
use foodlab_lab::validated::ValidatedLab;
use foodlab_lab::{FoodLab, PlatformError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::claim::{self};
use foodlab_run_channel::JobReport;

use super::*;

/// Step 1 failed: undo whatever ran before the spec turned invalid, then
/// say why; nothing is retried until the spec changes.
pub(super) async fn invalid(run: &mut Run<'_>, problems: Vec<String>) -> Result<Action, Error> {
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

/// How a running lab ends.
pub(super) enum Ending {
    Report(Box<JobReport>),
    NoReport(String, String),
    Lost(String),
    ChaosFailed(String),
    /// `spec.replicas` could not be applied (why).
    NotScaled(String),
}

/// A lab that ended with a disruption in place: tries again every
/// `RESTORE_RETRY`, holding its part, until it is undone; then gives the
/// part back.
pub(super) async fn undo_after_the_end(run: &mut Run<'_>) -> Result<Action, Error> {
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
pub(super) async fn release_and_finish(
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
pub(super) async fn cleanup(
    lab: &FoodLab,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
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
