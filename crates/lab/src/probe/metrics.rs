//! A service's `/admin/metrics` (OpenMetrics text), read and parsed once
//! here for every figure taken from it.

use prometheus_parse::{Sample, Scrape, Value};

/// Parses OpenMetrics text; nothing when it is not.
pub fn parse(text: &str) -> Scrape {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    // Only reading a line can fail, and these are read already.
    Scrape::parse(lines).unwrap_or(Scrape {
        docs: Default::default(),
        samples: Vec::new(),
    })
}

/// The metrics of the service (replica) at `endpoint`.
pub async fn scrape(http: &reqwest::Client, endpoint: &str) -> Result<Scrape, reqwest::Error> {
    let url = format!("{}/admin/metrics", endpoint.trim_end_matches('/'));
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(parse(&text))
}

/// The value of a counter sample (`None` for a sample of another type).
pub fn counter(sample: &Sample) -> Option<u64> {
    match sample.value {
        Value::Counter(value) | Value::Untyped(value) => Some(value as u64),
        _ => None,
    }
}
