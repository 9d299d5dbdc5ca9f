//! Probes: what the lab reads of a running part — queue depths, consumer lag
//! and analytics figures, inventory counters, order statuses, the broker
//! errors the services counted — in one place.

pub mod broker_errors;
pub mod kafka;
pub mod metrics;
pub mod observe;
pub mod rabbitmq;

/// Why a probe read nothing: the three are told apart (a service down, a
/// service failing, an answer of another shape).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{service} is not deployed here")]
    NotDeployed { service: crate::spec::Service },
    #[error("GET {url}: not reachable: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("GET {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: not the answer expected: {detail}")]
    Body { url: String, detail: String },
}

impl ProbeError {
    /// Which of the kinds it is, for logs and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotDeployed { .. } => "not deployed",
            Self::Unreachable { .. } => "unreachable",
            Self::Status { .. } => "status",
            Self::Body { .. } => "body",
        }
    }
}

/// The JSON answer of a successful `GET`.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, ProbeError> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|source| ProbeError::Unreachable {
            url: url.to_owned(),
            source,
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(ProbeError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|source| ProbeError::Unreachable {
            url: url.to_owned(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|e| ProbeError::Body {
        url: url.to_owned(),
        detail: e.to_string(),
    })
}
