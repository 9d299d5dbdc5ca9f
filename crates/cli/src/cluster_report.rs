//! `foodlab report NAME`: the report of a lab that ran on a cluster, from the
//! full report its workload Job left in the lab's run ConfigMap, written as
//! `foodlab run --report` writes it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use foodlab_lab::spec::{FoodLabStatus, Phase};
use foodlab_lab::{FoodLab, LabReport};
use foodlab_run_channel::{channel, full_report};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

pub async fn run(
    name: &str,
    namespace: Option<&str>,
    dir: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes API access (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let namespace = namespace.unwrap_or(client.default_namespace()).to_owned();
    let report = fetch(client, &namespace, name).await?;
    if json {
        println!("{}", crate::report::json_line(name, &report)?);
    } else {
        crate::report::print(name, &report);
    }
    let path = crate::html::write(dir, name, &[(name.to_owned(), report)])?;
    eprintln!("report: {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// The full report of lab `name`, or why there is none.
pub async fn fetch(client: kube::Client, namespace: &str, name: &str) -> anyhow::Result<LabReport> {
    let labs: Api<FoodLab> = Api::namespaced(client.clone(), namespace);
    let lab = labs
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read FoodLab {name} in namespace {namespace}"))?
        .ok_or_else(|| anyhow!("no FoodLab {name} in namespace {namespace}"))?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, namespace);
    let channel = channel::name(&lab);
    let config_map = config_maps
        .get_opt(&channel)
        .await
        .with_context(|| format!("cannot read ConfigMap {channel} in namespace {namespace}"))?
        // A ConfigMap of the same name from another lab is no report of this one.
        .filter(|cm| channel::owned_by(&cm.metadata, &lab));
    match config_map.as_ref().and_then(full_report::read) {
        Some(Ok(report)) => Ok(report),
        Some(Err(reason)) => {
            bail!("the report of FoodLab {name} (ConfigMap {channel}) is unreadable: {reason}")
        }
        None if summary_only(config_map.as_ref()) => bail!(
            "FoodLab {name} ended without a full report (its workload could not keep one): \
             its results are in its status (kubectl get foodlab {name} -o yaml)"
        ),
        None if ended(lab.status.as_ref()) => bail!(
            "FoodLab {name} ended without a report: {}",
            state(lab.status.as_ref())
        ),
        None => bail!(
            "FoodLab {name} has no report yet: {}",
            state(lab.status.as_ref())
        ),
    }
}

/// The Job wrote its summary (for status) but no full report beside it.
fn summary_only(config_map: Option<&ConfigMap>) -> bool {
    config_map
        .and_then(|cm| cm.data.as_ref())
        .is_some_and(|data| data.contains_key(channel::REPORT))
}

fn ended(status: Option<&FoodLabStatus>) -> bool {
    matches!(
        status.and_then(|s| s.phase),
        Some(Phase::Succeeded | Phase::Failed)
    )
}

/// The lab's phase, and the reason of its Ready condition when it has one.
fn state(status: Option<&FoodLabStatus>) -> String {
    let phase = status
        .and_then(|s| s.phase)
        .map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if !c.message.is_empty() => format!("phase {phase} ({}: {})", c.reason, c.message),
        Some(c) => format!("phase {phase} ({})", c.reason),
        None => format!("phase {phase}"),
    }
}
