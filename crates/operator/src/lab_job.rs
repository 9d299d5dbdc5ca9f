//! Inside the workload Job: the lab engine against the in-cluster services,
//! with the operator owning faults and chaos. The Job tells the operator
//! when its first order goes out, waits for the operator's restores, and
//! leaves its report (the summary and the full report, `lab_report`), all
//! in the lab's run ConfigMap (`run_channel`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use foodlab_lab::chaos::{ChaosError, Disruptor, WorkloadStart};
use foodlab_lab::faults::FaultApiError;
use foodlab_lab::results::ChaosRecord;
use foodlab_lab::spec::{FoodLabSpec, Transport};
use foodlab_lab::validated::ValidatedLab;
use foodlab_lab::{Quiet, run_lab_with};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::job::{RUN_CONFIG_MAP_ENV, SPEC_ENV};
use crate::platform::KubernetesPlatform;
use foodlab_run_channel::JobReport;
use foodlab_run_channel::channel::{self, JOB_FIELD_MANAGER};
use foodlab_run_channel::full_report;

const POLL: Duration = Duration::from_secs(1);

/// The operator's side of faults and chaos, seen from the Job.
pub struct OperatorChaos {
    config_maps: Api<ConfigMap>,
    name: String,
}

impl OperatorChaos {
    pub fn new(config_maps: Api<ConfigMap>, name: String) -> Self {
        Self { config_maps, name }
    }

    async fn records(&self) -> Option<Vec<ChaosRecord>> {
        let config_map = self.config_maps.get(&self.name).await.ok()?;
        let json = config_map.data?.remove(channel::CHAOS)?;
        serde_json::from_str(&json).ok()
    }
}

/// Every step of the lab has a record, and every record is restored.
pub fn all_restored(lab: &ValidatedLab, records: &[ChaosRecord]) -> bool {
    (0..lab.chaos.len()).all(|i| {
        records
            .iter()
            .any(|r| r.step as usize == i && r.restored_at.is_some())
    })
}

impl Disruptor for OperatorChaos {
    async fn prepare(&self, _lab: &ValidatedLab) -> Result<(), FaultApiError> {
        // The operator applied the faults when the lab claimed its part.
        Ok(())
    }

    async fn chaos(
        &self,
        lab: &ValidatedLab,
        start: WorkloadStart,
    ) -> Result<Vec<ChaosRecord>, ChaosError> {
        channel::write(
            &self.config_maps,
            &self.name,
            channel::WORKLOAD_STARTED_AT,
            start.at.to_string(),
            JOB_FIELD_MANAGER,
        )
        .await
        .map_err(|e| ChaosError::RecordStart(e.into()))?;
        if lab.chaos.is_empty() {
            return Ok(Vec::new());
        }
        // The last step's end, plus the operator's retries of a failing restore.
        let chaos_end = lab
            .chaos
            .iter()
            .map(|d| d.after + d.duration())
            .max()
            .unwrap_or_default();
        // A broker's killed nodes are waited for past the lab's time (the
        // verdict then says they were late).
        let broker_return = match lab.chaos.iter().any(|d| d.target.broker().is_some()) {
            true => lab.within + crate::controller::RESTORE_DEADLINE + POLL * 30,
            false => Duration::ZERO,
        };
        let wait = lab
            .within
            .max(chaos_end + crate::controller::RESTORE_DEADLINE + POLL * 30)
            .max(broker_return);
        let deadline = start.instant + wait;
        loop {
            if let Some(records) = self.records().await
                && all_restored(lab, &records)
            {
                return Ok(records);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChaosError::NotRestoredInTime);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn release(&self, _lab: &ValidatedLab) -> Vec<String> {
        // The operator releases the part when the Job is done.
        Vec::new()
    }
}

pub async fn run(namespace: &str) -> anyhow::Result<bool> {
    let spec = std::env::var(SPEC_ENV).with_context(|| format!("{SPEC_ENV} is not set"))?;
    let spec: FoodLabSpec = serde_json::from_str(&spec).context("the lab spec is not valid")?;
    let channel = std::env::var(RUN_CONFIG_MAP_ENV)
        .with_context(|| format!("{RUN_CONFIG_MAP_ENV} is not set"))?;
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes API access (the Job's ServiceAccount)")?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let chaos = OperatorChaos::new(config_maps.clone(), channel.clone());
    let platform = KubernetesPlatform::new(namespace, None, spec.transport == Transport::Rabbitmq)
        .with_endpoint_slices(Api::namespaced(client, namespace));
    let report = match run_lab_with(&platform, &chaos, &spec, Arc::new(Quiet), shutdown()).await {
        Ok(report) => report,
        Err(error) => {
            // The operator puts the reason in the lab's condition.
            let written = channel::write(
                &config_maps,
                &channel,
                channel::ERROR,
                error.to_string(),
                JOB_FIELD_MANAGER,
            )
            .await;
            if let Err(write_error) = written {
                tracing::error!(%write_error, "cannot write the error to the run ConfigMap");
            }
            return Err(error.into());
        }
    };
    let summary = JobReport {
        results: report.results.clone(),
        verdict: report.verdict,
    };
    let json = serde_json::to_string(&summary)?;
    println!("{json}");
    // The summary is what the operator needs; without the full report only
    // `foodlab report` goes without.
    let full = match full_report::encode(&report) {
        Ok((bytes, halvings)) => {
            if halvings > 0 {
                tracing::warn!(
                    halvings,
                    "the report's series was thinned to fit the ConfigMap"
                );
            }
            Some(bytes)
        }
        Err(error) => {
            tracing::error!(%error, "the full report is not kept");
            None
        }
    };
    full_report::write(&config_maps, &channel, &full_report::patch(json, full))
        .await
        .context("cannot write the report to the run ConfigMap")?;
    Ok(summary.verdict == foodlab_lab::Verdict::Pass)
}

/// SIGTERM (the Job's deadline, or its deletion).
async fn shutdown() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use foodlab_lab::spec::{ChaosAction, Service};

    use super::*;

    fn record(step: u32, restored: bool) -> ChaosRecord {
        ChaosRecord {
            step,
            action: ChaosAction::ScaleToZero,
            target: Service::Inventory.into(),
            disrupted: true,
            original_replicas: Some(1),
            pods: Vec::new(),
            started_at: jiff::Timestamp::UNIX_EPOCH,
            restore_at: None,
            restored_at: restored.then_some(jiff::Timestamp::UNIX_EPOCH),
            error: None,
        }
    }

    #[test]
    fn the_job_waits_for_a_restored_record_of_every_step() {
        let spec: FoodLabSpec = serde_json::from_value(serde_json::json!({
            "transport": "rest", "workload": {"orders": 1}, "chaos": [
                {"action": "ScaleToZero", "target": "inventory", "duration": "1s"},
                {"action": "PodKill", "target": "order", "after": "5s"}
            ]
        }))
        .unwrap();
        let lab = ValidatedLab::new(&spec).unwrap();
        assert!(!all_restored(&lab, &[]));
        assert!(!all_restored(&lab, &[record(0, true)]));
        assert!(!all_restored(&lab, &[record(0, true), record(1, false)]));
        assert!(all_restored(&lab, &[record(1, true), record(0, true)]));
    }
}
