//! From raw samples to figures: status counts, latency percentiles, throughput.

use std::collections::BTreeMap;
use std::time::Duration;

use foodlab_domain::OrderStatus;

use crate::results::{LabResults, LatencySummary};

/// One `POST /order` as the workload saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// HTTP status, or `None` when no answer came (connection error, client timeout).
    pub status: Option<u16>,
    pub latency: Duration,
    /// The order's status in the answer, if the answer carried one.
    pub order_status: Option<String>,
    pub order_id: Option<String>,
}

/// Nearest-rank percentile of sorted values; 0 for no values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn latency_summary(samples: &[Sample]) -> LatencySummary {
    summary_of_ms(
        samples
            .iter()
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .collect(),
    )
}

/// Percentiles of latencies given in milliseconds.
pub fn summary_of_ms(mut ms: Vec<f64>) -> LatencySummary {
    ms.sort_by(f64::total_cmp);
    LatencySummary {
        p50: round3(percentile(&ms, 50.0)),
        p95: round3(percentile(&ms, 95.0)),
        p99: round3(percentile(&ms, 99.0)),
        max: round3(ms.last().copied().unwrap_or_default()),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Whether an order status, as the API shows it, holds stock.
pub fn is_reserved(status: &str) -> bool {
    status
        .parse::<OrderStatus>()
        .is_ok_and(OrderStatus::is_reserved)
}

/// The figures of a workload whose answers were final (the sync-rest part).
pub fn summarize(samples: &[Sample], workload: Duration) -> LabResults {
    let mut status_codes = BTreeMap::new();
    for sample in samples {
        let key = sample
            .status
            .map_or_else(|| "error".to_owned(), |s| s.to_string());
        *status_codes.entry(key).or_insert(0) += 1;
    }
    let accepted = samples
        .iter()
        .filter(|s| s.status.is_some_and(|c| (200..300).contains(&c)))
        .count() as u64;
    let reserved = samples
        .iter()
        .filter(|s| s.order_status.as_deref().is_some_and(is_reserved))
        .count() as u64;
    let seconds = workload.as_secs_f64();
    LabResults {
        accepted,
        reserved,
        failed: samples.len() as u64 - reserved,
        status_codes,
        latency_ms: latency_summary(samples),
        throughput_per_second: if seconds > 0.0 {
            round3(samples.len() as f64 / seconds)
        } else {
            0.0
        },
        workload_seconds: round3(seconds),
        ..LabResults::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: Option<u16>, ms: u64, order_status: Option<&str>) -> Sample {
        Sample {
            status,
            latency: Duration::from_millis(ms),
            order_status: order_status.map(str::to_owned),
            order_id: None,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 95.0), 95.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn summary_counts_codes_outcomes_and_rate() {
        let samples = vec![
            sample(Some(201), 10, Some("notified")),
            sample(Some(201), 20, Some("reserved")),
            sample(Some(409), 5, Some("failed")),
            sample(Some(502), 30, Some("failed")),
            sample(None, 40, None),
        ];
        let results = summarize(&samples, Duration::from_secs(2));
        assert_eq!(results.accepted, 2);
        assert_eq!(results.reserved, 2);
        assert_eq!(results.failed, 3);
        assert_eq!(
            results.status_codes,
            BTreeMap::from([
                ("201".to_owned(), 2),
                ("409".to_owned(), 1),
                ("502".to_owned(), 1),
                ("error".to_owned(), 1),
            ])
        );
        assert_eq!(results.latency_ms.p50, 20.0);
        assert_eq!(results.latency_ms.max, 40.0);
        assert_eq!(results.throughput_per_second, 2.5);
    }
}
