//! `spec.replicas` on a cluster: each service recorded, scaled for the lab
//! and put back on every ending.

use std::time::Duration;

use foodlab_lab::Platform;
use foodlab_lab::disruption::{self};
use foodlab_lab::results::ReplicasRecord;
use foodlab_lab::validated::ValidatedLab;
use kube::runtime::events::EventType;

use super::*;

/// How long the pods `spec.replicas` asks for may take to be ready.
pub const REPLICAS_READY_WITHIN: Duration = Duration::from_secs(180);

/// What applying `spec.replicas` came to this reconcile.
pub(super) enum Shape {
    /// Every service runs at its replicas, each pod ready.
    Ready,
    Waiting(String),
    Refused(String),
}

/// Before the workload: each service `spec.replicas` names runs at that
/// many pods. Its record (with the replicas it had) goes to status before
/// the scale, so every ending puts them back; more than one pod only where
/// they share a PostgreSQL. Ready once that many pods of each are ready.
pub(super) async fn apply_replicas(run: &mut Run<'_>, lab: &ValidatedLab) -> Result<Shape, Error> {
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
                    tracing::warn!(%service, replicas, %error, "could not scale for spec.replicas; will retry");
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
pub(super) async fn restore_replicas(run: &mut Run<'_>) -> Vec<String> {
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
                tracing::warn!(service = %record.service, %error, "could not put spec.replicas back; will retry");
                record.error = Some(error.to_string());
                problems.push(format!("spec.replicas.{}: {error}", record.service));
            }
        }
    }
    problems
}
