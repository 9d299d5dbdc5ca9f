//! A lab's status: its conditions, and the writer that applies it.

use foodlab_lab::FoodLab;
use foodlab_lab::spec::FoodLabStatus;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::platform::FIELD_MANAGER;

use super::*;

pub(super) fn set_condition(status: &mut FoodLabStatus, condition: Condition) {
    status.conditions.retain(|c| c.type_ != condition.type_);
    status.conditions.push(condition);
}

pub(super) fn ready(
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

pub(super) fn ready_reason(status: &FoodLabStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.as_str())
}

pub(super) fn ready_message(status: &FoodLabStatus) -> Option<&str> {
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
pub(super) struct StatusWriter<'a> {
    pub(super) api: &'a Api<FoodLab>,
    pub(super) name: String,
    pub(super) resource_version: Option<String>,
}

impl StatusWriter<'_> {
    pub(super) async fn write(&mut self, status: &FoodLabStatus) -> Result<(), Error> {
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

/// The `Restored` condition: whether every disruption of a lab that has
/// ended is undone (its time kept while its state stays the same).
pub(super) fn set_restored(run: &mut Run<'_>, restored: bool, reason: &str, message: String) {
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
