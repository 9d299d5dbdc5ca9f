//! Setting a service's faults through its admin API (the same on every platform).

use foodlab_domain::Faults;

use crate::platform::Platform;
use crate::spec::Service;

#[derive(Debug, thiserror::Error)]
#[error("cannot set the faults of {service}: {reason}")]
pub struct FaultApiError {
    pub service: Service,
    pub reason: String,
}

#[derive(Clone)]
pub struct FaultClient {
    http: reqwest::Client,
}

impl Default for FaultClient {
    fn default() -> Self {
        Self {
            // A hung admin endpoint must not hold up a lab (or a reconcile) for ever.
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }
}

impl FaultClient {
    pub async fn set<P: Platform>(
        &self,
        platform: &P,
        service: Service,
        faults: &Faults,
    ) -> Result<(), FaultApiError> {
        let fail = |reason: String| FaultApiError { service, reason };
        let base = platform
            .endpoint(service)
            .map_err(|e| fail(e.to_string()))?;
        let url = format!("{base}/admin/faults");
        let response = self
            .http
            .put(&url)
            .json(faults)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("{url} answered {}", response.status())));
        }
        tracing::info!(%service, delay_ms = faults.delay_ms, fail_rate = faults.fail_rate, "faults set");
        Ok(())
    }
}
