//! Running a lab: faults, workload and chaos together, then the verdict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foodlab_domain::Faults;

use crate::chaos::{self, ChaosError};
use crate::faults::{FaultApiError, FaultClient};
use crate::measure::{self, Sample};
use crate::platform::{Platform, PlatformError};
use crate::results::{ChaosRecord, LabResults};
use crate::spec::{FoodLabSpec, Service, Transport, Verdict};
use crate::verdict::{self, Outcome};
use crate::workload;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("invalid lab: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Faults(#[from] FaultApiError),
    #[error(transparent)]
    Chaos(#[from] ChaosError),
}

/// Hears about a lab while it runs (progress bars, logs).
pub trait Observer: Send + Sync {
    fn workload_started(&self, _orders: u64) {}
    fn order_answered(&self, _sample: &Sample) {}
    fn note(&self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LabReport {
    pub transport: Transport,
    pub results: LabResults,
    pub chaos: Vec<ChaosRecord>,
    pub verdict: Verdict,
    pub elapsed_seconds: f64,
}

pub async fn run_lab<P: Platform>(
    platform: &P,
    lab: &FoodLabSpec,
    observer: Arc<dyn Observer>,
) -> Result<LabReport, LabError> {
    lab.validate().map_err(LabError::Invalid)?;
    let started = Instant::now();
    let faults = FaultClient::default();
    for (service, spec) in lab.faults.declared() {
        let faults_of = spec
            .to_faults()
            .map_err(|e| LabError::Invalid(vec![format!("faults.{service}: {e}")]))?;
        faults.set(platform, service, &faults_of).await?;
        observer.note(&format!(
            "faults on {service}: delay {} ms, fail rate {}",
            faults_of.delay_ms, faults_of.fail_rate
        ));
    }

    let order_url = platform.endpoint(Service::Order)?;
    observer.workload_started(u64::from(lab.workload.orders));
    let on_sample = {
        let observer = Arc::clone(&observer);
        Arc::new(move |sample: &Sample| observer.order_answered(sample))
    };
    let origin = tokio::time::Instant::now();
    let chaos_steps = futures::future::join_all(
        lab.chaos
            .iter()
            .map(|step| chaos::run_step(platform, &faults, &lab.faults, step, origin)),
    );
    let ((samples, workload_time), chaos_records) = tokio::join!(
        workload::run(&lab.workload, &order_url, on_sample),
        chaos_steps
    );

    // Leave the part as the lab found it, whatever happened above.
    for (service, _) in lab.faults.declared() {
        if let Err(e) = faults.set(platform, service, &Faults::default()).await {
            tracing::warn!(%service, error = %e, "could not clear faults");
        }
    }
    let chaos = chaos_records.into_iter().collect::<Result<Vec<_>, _>>()?;

    let mut results = measure::summarize(&samples, workload_time);
    let outcome = Outcome {
        orders: u64::from(lab.workload.orders),
        terminal: samples
            .iter()
            .filter(|s| {
                s.order_status
                    .as_deref()
                    .and_then(|st| st.parse::<foodlab_domain::OrderStatus>().ok())
                    .is_some_and(foodlab_domain::OrderStatus::is_terminal)
            })
            .count() as u64,
        elapsed: started.elapsed(),
    };
    results.checks = verdict::evaluate(&lab.expect, &results, outcome);
    let verdict = verdict::verdict(&results.checks);
    Ok(LabReport {
        transport: lab.transport,
        results,
        chaos,
        verdict,
        elapsed_seconds: round1(started.elapsed()),
    })
}

fn round1(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}
