//! A service's admin API, the same on every platform: its faults
//! (`PUT /admin/faults`), inventory's stock levels (`PUT /admin/stock`) and
//! order's dependency timeout (`PUT /admin/settings`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use foodlab_domain::{Backoff, Faults};
use serde::Serialize;

use crate::platform::{Platform, PlatformError};
use crate::spec::Service;
use crate::validated::LabSettings;

#[derive(Debug, thiserror::Error)]
#[error("cannot set the {what} of {service}: {reason}")]
pub struct FaultApiError {
    pub service: Service,
    pub what: &'static str,
    #[source]
    pub reason: AdminCallError,
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminCallError {
    /// The platform could not say where the service's replicas are.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("no replica is ready")]
    NoReplicaReady,
    /// Not reachable, or no answer in time.
    #[error("PUT {url}: {}", causes(.source))]
    Unanswered { url: String, source: reqwest::Error },
    #[error("PUT {url} answered {status}: {detail}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        /// The answer's body.
        detail: String,
    },
    /// The patience ran out while the calls kept failing; the last failure.
    #[error("{last} (still failing after {attempts} attempts)")]
    Exhausted {
        attempts: u32,
        #[source]
        last: Box<AdminCallError>,
    },
}

impl AdminCallError {
    /// Whether trying again may help: not reachable, timed out, or a 5xx
    /// (e.g. 502/503 from a proxy); a 4xx (bad setting, token refused)
    /// fails again.
    fn is_transient(&self) -> bool {
        match self {
            Self::NoReplicaReady | Self::Unanswered { .. } | Self::Exhausted { .. } => true,
            Self::Status { status, .. } => status.is_server_error(),
            Self::Platform(_) => false,
        }
    }
}

/// The lab's HTTP client could not be made (no TLS or resolver on this machine).
#[derive(Debug, thiserror::Error)]
#[error("cannot make the lab's HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// The token the services' admin APIs ask for, where they ask for one (a
/// cluster: the chart's Secret, in the operator's and the Job's environment).
pub const ADMIN_TOKEN_ENV: &str = "FOODLAB_ADMIN_TOKEN";

/// How long any call of the lab to a service may take, its answer included:
/// a hung service must not hold up a lab (or a reconcile) until its deadline.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The one client the lab reads and sets the services with: timeouts, and
/// the admin token where `FOODLAB_ADMIN_TOKEN` is set.
pub fn http_client() -> Result<reqwest::Client, ClientError> {
    http_with_token(&std::env::var(ADMIN_TOKEN_ENV).unwrap_or_default())
}

/// The lab's client, sending `Authorization: Bearer <token>` unless the
/// token is empty.
pub fn http_with_token(token: &str) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(HTTP_TIMEOUT);
    let token = token.trim();
    let mut headers = reqwest::header::HeaderMap::new();
    if !token.is_empty() {
        match reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(mut value) => {
                value.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
            Err(_) => tracing::warn!("the admin token is not a valid header value; not sent"),
        }
    }
    Ok(builder.default_headers(headers).build()?)
}

/// How long a lab's admin call keeps retrying a service that is not
/// reachable yet (a Service not routed right after an install or a restore).
pub const ADMIN_PATIENCE: Duration = Duration::from_secs(60);
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One attempt by default (a reconcile retries on its own); `patient` for
/// the lab's calls, which retry transient failures until their patience ends.
#[derive(Clone)]
pub struct FaultClient {
    http: reqwest::Client,
    patience: Duration,
}

impl FaultClient {
    /// One attempt per call, sending `FOODLAB_ADMIN_TOKEN` where it is set.
    pub fn new() -> Result<Self, ClientError> {
        Ok(Self {
            http: http_client()?,
            patience: Duration::ZERO,
        })
    }

    /// One attempt per call, sending `token` (none when empty).
    pub fn with_token(token: &str) -> Result<Self, ClientError> {
        Ok(Self {
            http: http_with_token(token)?,
            patience: Duration::ZERO,
        })
    }

    /// Its HTTP client (timeouts, the admin token), for the lab's other calls.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Retries connection failures, timeouts and 5xx answers with a backoff
    /// (0.2 s doubling to 2 s) for up to `patience`; a 4xx fails at once.
    pub fn patient(self, patience: Duration) -> Self {
        Self { patience, ..self }
    }

    /// Sets `faults` on every replica of `service`; returns how many.
    pub async fn set<P: Platform>(
        &self,
        platform: &P,
        service: Service,
        faults: &Faults,
    ) -> Result<usize, FaultApiError> {
        let replicas = self
            .put(platform, service, "faults", "/admin/faults", faults)
            .await?;
        tracing::info!(%service, replicas, delay_ms = faults.delay_ms, fail_rate = faults.fail_rate, "faults set");
        Ok(replicas)
    }

    /// Inventory's stock levels and order's dependency timeout.
    pub async fn apply_settings<P: Platform>(
        &self,
        platform: &P,
        settings: &LabSettings,
    ) -> Result<(), FaultApiError> {
        let stock: &BTreeMap<String, u64> = &settings.stock;
        self.set_stock(platform, stock).await?;
        self.set_dependency_timeout(platform, settings.dependency_timeout)
            .await?;
        tracing::info!(?stock, dependency_timeout = ?settings.dependency_timeout, "settings applied");
        Ok(())
    }

    /// Inventory's stock levels of the items named (`PUT /admin/stock`); the
    /// others keep theirs.
    pub async fn set_stock<P: Platform, K: Serialize + Ord>(
        &self,
        platform: &P,
        levels: &BTreeMap<K, u64>,
    ) -> Result<(), FaultApiError> {
        self.put(
            platform,
            Service::Inventory,
            "stock",
            "/admin/stock",
            levels,
        )
        .await
        .map(drop)
    }

    /// Order's dependency timeout alone (stock is durable; this is not).
    pub async fn set_dependency_timeout<P: Platform>(
        &self,
        platform: &P,
        timeout: Duration,
    ) -> Result<(), FaultApiError> {
        let timeout = humantime::format_duration(timeout).to_string();
        self.put(
            platform,
            Service::Order,
            "settings",
            "/admin/settings",
            &serde_json::json!({ "dependencyTimeout": timeout }),
        )
        .await
        .map(drop)
    }

    async fn put<P: Platform, B: Serialize + ?Sized>(
        &self,
        platform: &P,
        service: Service,
        what: &'static str,
        path: &str,
        body: &B,
    ) -> Result<usize, FaultApiError> {
        let fail = |reason| FaultApiError {
            service,
            what,
            reason,
        };
        let bases = self.replicas_of(platform, service).await.map_err(fail)?;
        for base in &bases {
            self.put_to(&format!("{base}{path}"), body)
                .await
                .map_err(fail)?;
        }
        Ok(bases.len())
    }

    /// Every replica's base URL; none ready yet (a pod starting) is retried
    /// like an unreachable service.
    async fn replicas_of<P: Platform>(
        &self,
        platform: &P,
        service: Service,
    ) -> Result<Vec<String>, AdminCallError> {
        let what = format!("the replicas of {service}");
        self.patiently(&what, || async {
            match platform.endpoints(service).await? {
                bases if bases.is_empty() => Err(AdminCallError::NoReplicaReady),
                bases => Ok(bases),
            }
        })
        .await
    }

    /// One replica's admin call, retried while its failures are transient.
    async fn put_to<B: Serialize + ?Sized>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<(), AdminCallError> {
        self.patiently(&format!("PUT {url}"), || self.put_once(url, body))
            .await
    }

    /// `attempt` until it succeeds, fails for good, or the patience is spent;
    /// transient failures are tried again after a backoff.
    async fn patiently<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, AdminCallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AdminCallError>>,
    {
        let until = Instant::now() + self.patience;
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut tries = 1u32;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) if !error.is_transient() => return Err(error),
                Err(error) if Instant::now() + backoff.peek() >= until => {
                    return Err(if tries > 1 {
                        AdminCallError::Exhausted {
                            attempts: tries,
                            last: Box::new(error),
                        }
                    } else {
                        error
                    });
                }
                Err(error) => {
                    tracing::warn!(call = %what, attempt = tries, %error, "admin call failed; retrying");
                    tokio::time::sleep(backoff.pause()).await;
                    tries += 1;
                }
            }
        }
    }

    async fn put_once<B: Serialize + ?Sized>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<(), AdminCallError> {
        let response = self
            .http
            .put(url)
            .json(body)
            .send()
            .await
            .map_err(|source| AdminCallError::Unanswered {
                url: url.to_owned(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(AdminCallError::Status {
            url: url.to_owned(),
            status,
            detail: response.text().await.unwrap_or_default(),
        })
    }
}

/// An error with its causes (reqwest's own message omits "connection refused").
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
