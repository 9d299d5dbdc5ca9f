//! Inside the workload Job: run the lab engine against the in-cluster
//! services and leave the report as the container's termination message.

use std::sync::Arc;

use anyhow::Context as _;
use foodlab_lab::spec::{FoodLabSpec, Transport};
use foodlab_lab::{Quiet, run_lab};

use crate::job::{JobReport, SPEC_ENV};
use crate::platform::KubernetesPlatform;

const TERMINATION_LOG: &str = "/dev/termination-log";

pub async fn run(namespace: &str) -> anyhow::Result<bool> {
    let spec = std::env::var(SPEC_ENV).with_context(|| format!("{SPEC_ENV} is not set"))?;
    let spec: FoodLabSpec = serde_json::from_str(&spec).context("the lab spec is not valid")?;
    let platform = KubernetesPlatform::new(namespace, None, spec.transport == Transport::Rabbitmq);
    let report = run_lab(&platform, &spec, Arc::new(Quiet)).await?;
    let summary = JobReport {
        results: report.results,
        verdict: report.verdict,
    };
    let json = serde_json::to_string(&summary)?;
    println!("{json}");
    if let Err(error) = std::fs::write(TERMINATION_LOG, &json) {
        tracing::warn!(%error, "cannot write the termination message");
    }
    Ok(summary.verdict == foodlab_lab::Verdict::Pass)
}
