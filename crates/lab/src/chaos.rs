//! Running chaos steps against a platform, each with its restore.

use std::time::Duration;

use foodlab_domain::Faults;
use tokio::time::Instant;

use crate::faults::FaultClient;
use crate::platform::Platform;
use crate::results::ChaosRecord;
use crate::spec::{ChaosAction, ChaosStep, ServiceFaults};

#[derive(Debug, thiserror::Error)]
#[error("chaos {action:?} on {target}: {reason}")]
pub struct ChaosError {
    pub action: ChaosAction,
    pub target: crate::spec::Service,
    pub reason: String,
}

/// The faults a Delay/Fail window puts on its target, on top of the lab's own.
pub fn window_faults(step: &ChaosStep, base: Option<&Faults>) -> Faults {
    let mut faults = base.cloned().unwrap_or_default();
    match step.action {
        ChaosAction::Delay => {
            faults.delay_ms = Faults::delay_ms_from_seconds(step.delay_seconds.unwrap_or(0.0))
                .unwrap_or(faults.delay_ms);
        }
        ChaosAction::Fail => faults.fail_rate = step.fail_rate.unwrap_or(1.0),
        ChaosAction::ScaleToZero | ChaosAction::PodKill => {}
    }
    faults
}

/// Runs one step: waits until `after` (from `origin`), disrupts, waits the
/// duration, restores. The record tells what happened when.
pub async fn run_step<P: Platform>(
    platform: &P,
    faults: &FaultClient,
    base_faults: &ServiceFaults,
    index: usize,
    step: &ChaosStep,
    origin: Instant,
) -> Result<ChaosRecord, ChaosError> {
    tokio::time::sleep_until(origin + step.after).await;
    let fail = |reason: String| ChaosError {
        action: step.action,
        target: step.target,
        reason,
    };
    let duration = step.duration.unwrap_or(Duration::ZERO);
    let started_at = jiff::Timestamp::now();
    let restore_at = started_at
        .checked_add(jiff::SignedDuration::try_from(duration).unwrap_or_default())
        .ok();
    let mut record = ChaosRecord {
        step: u32::try_from(index).unwrap_or(u32::MAX),
        action: step.action,
        target: step.target,
        disrupted: true,
        original_replicas: None,
        started_at,
        restore_at,
        restored_at: None,
    };
    let base = base_faults
        .get(step.target)
        .map(|spec| spec.to_faults())
        .transpose()
        .map_err(|e| fail(e.to_string()))?;
    tracing::info!(action = ?step.action, target = %step.target, ?duration, "chaos step starts");
    match step.action {
        // Locally a pod kill is a stop and a start: a scale to zero lasting no time.
        ChaosAction::ScaleToZero | ChaosAction::PodKill => {
            let original = platform
                .replicas(step.target)
                .await
                .map_err(|e| fail(e.to_string()))?;
            record.original_replicas = Some(original);
            platform
                .scale(step.target, 0)
                .await
                .map_err(|e| fail(e.to_string()))?;
            tokio::time::sleep(duration).await;
            platform
                .scale(step.target, original.max(1))
                .await
                .map_err(|e| fail(e.to_string()))?;
            reapply(platform, faults, step, base.as_ref()).await?;
        }
        ChaosAction::Delay | ChaosAction::Fail => {
            faults
                .set(platform, step.target, &window_faults(step, base.as_ref()))
                .await
                .map_err(|e| fail(e.to_string()))?;
            tokio::time::sleep(duration).await;
            faults
                .set(platform, step.target, &base.clone().unwrap_or_default())
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    record.restored_at = Some(jiff::Timestamp::now());
    tracing::info!(action = ?step.action, target = %step.target, "chaos step restored");
    Ok(record)
}

/// A restarted service starts without the lab's faults; put them back.
async fn reapply<P: Platform>(
    platform: &P,
    faults: &FaultClient,
    step: &ChaosStep,
    base: Option<&Faults>,
) -> Result<(), ChaosError> {
    if let Some(base) = base {
        faults
            .set(platform, step.target, base)
            .await
            .map_err(|e| ChaosError {
                action: step.action,
                target: step.target,
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Service;

    fn step(action: ChaosAction) -> ChaosStep {
        ChaosStep {
            action,
            target: Service::Inventory,
            after: Duration::ZERO,
            duration: Some(Duration::from_secs(1)),
            delay_seconds: Some(2.0),
            fail_rate: None,
        }
    }

    #[test]
    fn windows_add_to_the_labs_own_faults() {
        let base = Faults {
            delay_ms: 100,
            fail_rate: 0.1,
            fail_status: 503,
        };
        let delayed = window_faults(&step(ChaosAction::Delay), Some(&base));
        assert_eq!((delayed.delay_ms, delayed.fail_rate), (2000, 0.1));
        let failing = window_faults(&step(ChaosAction::Fail), Some(&base));
        assert_eq!(
            (failing.delay_ms, failing.fail_rate, failing.fail_status),
            (100, 1.0, 503)
        );
        assert_eq!(window_faults(&step(ChaosAction::Fail), None).fail_rate, 1.0);
    }
}
