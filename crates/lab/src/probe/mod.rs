//! Probes: what the lab reads of a running part — queue depths, consumer lag
//! and analytics figures, inventory counters, order statuses — in one place.

pub mod kafka;
pub mod observe;
pub mod rabbitmq;

/// A JSON answer of a successful `GET`; `None` for any failure.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Option<T> {
    http.get(url)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()
}
