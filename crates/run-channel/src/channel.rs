//! The lab's run ConfigMap: how the workload Job and the operator talk.
//!
//! The operator creates it (owned by the FoodLab, so it goes with the lab)
//! before the Job. The Job writes `workloadStartedAt` when it places its
//! first order (the operator times chaos from it) and `report` when it is
//! done (no 4 KiB termination-message limit: a ConfigMap holds up to 1 MiB).
//! A Job that fails writes `error` instead of `report`. The operator writes `chaos`, the records of its disruptions, so the Job
//! can wait for the restores and measure the drain from them.

use std::collections::BTreeMap;

use foodlab_lab::FoodLab;
use foodlab_lab::results::ChaosRecord;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Resource};

pub const WORKLOAD_STARTED_AT: &str = "workloadStartedAt";
pub const REPORT: &str = "report";
pub const CHAOS: &str = "chaos";
/// Why the Job ended without a report.
pub const ERROR: &str = "error";
/// The field manager of the Job's writes.
pub const JOB_FIELD_MANAGER: &str = "foodlab-workload";

/// `<lab>-run-<uid prefix>`: a recreated lab gets a ConfigMap of its own.
pub fn name(lab: &FoodLab) -> String {
    crate::names::named(lab, "run")
}

pub fn config_map(lab: &FoodLab) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name(lab)),
            namespace: lab.metadata.namespace.clone(),
            labels: Some(crate::names::labels(lab)),
            owner_references: lab.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::new()),
        ..ConfigMap::default()
    }
}

/// What the run ConfigMap says, read by the operator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunState {
    pub workload_started_at: Option<jiff::Timestamp>,
    /// The report, or why it cannot be read.
    pub report: Option<Result<JobReport, String>>,
    /// Why the Job ended without a report, in its own words.
    pub error: Option<String>,
}

/// `None` when the ConfigMap belongs to another lab of the same name.
pub fn read(config_map: &ConfigMap, lab: &FoodLab) -> Option<RunState> {
    if !owned_by(&config_map.metadata, lab) {
        return None;
    }
    let data = config_map.data.clone().unwrap_or_default();
    Some(RunState {
        workload_started_at: data.get(WORKLOAD_STARTED_AT).and_then(|at| at.parse().ok()),
        report: data.get(REPORT).map(|json| {
            serde_json::from_str(json).map_err(|e| format!("the report is not valid: {e}"))
        }),
        error: data.get(ERROR).cloned(),
    })
}

/// Whether an object's controller is this very lab (same UID, not just the name).
pub fn owned_by(meta: &ObjectMeta, lab: &FoodLab) -> bool {
    let Some(uid) = lab.metadata.uid.as_deref() else {
        return false;
    };
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}

/// Writes one key of the ConfigMap (a merge patch: other keys stay).
pub async fn write(
    api: &Api<ConfigMap>,
    name: &str,
    key: &str,
    value: String,
    manager: &str,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({ "data": { key: value } });
    let params = PatchParams {
        field_manager: Some(manager.to_owned()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// The chaos records, as the operator passes them to the Job.
pub fn chaos_json(records: &[ChaosRecord]) -> String {
    serde_json::to_string(records).unwrap_or_else(|_| "[]".into())
}

/// What the workload reports back, in the run ConfigMap.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobReport {
    pub results: foodlab_lab::results::LabResults,
    pub verdict: foodlab_lab::Verdict,
}
