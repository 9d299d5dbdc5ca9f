//! Where an order's time went: each service's hop histograms
//! (`foodlab_hop_duration_seconds{hop}`, and the HTTP handler's
//! `foodlab_http_request_duration_seconds`), scraped from `/admin/metrics`
//! before and after a phase of a bench, and read as percentiles of what
//! that phase alone added.

use std::collections::BTreeMap;

use foodlab_lab::probe::metrics;
use foodlab_lab::stats::round3;
use serde::Serialize;

/// One histogram's cumulative bucket counts: (upper bound in seconds, count).
#[derive(Debug, Clone, Default, PartialEq)]
struct Buckets(Vec<(f64, u64)>);

impl Buckets {
    fn count(&self) -> u64 {
        self.0.last().map_or(0, |(_, n)| *n)
    }

    /// What `self` holds beyond `earlier` (same bounds; a bound missing
    /// from `earlier` counted as zero).
    fn since(&self, earlier: Option<&Self>) -> Self {
        let before = |le: f64| {
            earlier
                .and_then(|e| e.0.iter().find(|(b, _)| *b == le))
                .map_or(0, |(_, n)| *n)
        };
        Self(
            self.0
                .iter()
                .map(|(le, n)| (*le, n.saturating_sub(before(*le))))
                .collect(),
        )
    }

    /// The `q` quantile (0..1) in seconds, interpolated inside its bucket
    /// (the `histogram_quantile` rule); none without observations.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(le, cumulative) in &self.0 {
            if cumulative as f64 >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let inside = (cumulative - lower.1) as f64;
                let into = if inside > 0.0 {
                    (rank - lower.1 as f64) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * into);
            }
            lower = (le, cumulative);
        }
        Some(lower.0)
    }
}

/// Every hop histogram of one service at one moment, by hop name
/// (`POST /order` and the like for HTTP handlers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape(BTreeMap<String, Buckets>);

const HOP: &str = "foodlab_hop_duration_seconds";
const HTTP: &str = "foodlab_http_request_duration_seconds";

impl Scrape {
    /// Reads the OpenMetrics text of `/admin/metrics`.
    #[cfg(test)]
    fn parse(text: &str) -> Self {
        Self::of(&metrics::parse(text))
    }

    /// The hop histograms of a parsed `/admin/metrics`.
    fn of(parsed: &prometheus_parse::Scrape) -> Self {
        let mut histograms: BTreeMap<String, Buckets> = BTreeMap::new();
        for sample in &parsed.samples {
            let prometheus_parse::Value::Histogram(counts) = &sample.value else {
                continue;
            };
            let labels = &sample.labels;
            let name = match sample.metric.as_str() {
                HOP => match labels.get("hop") {
                    Some(hop) => hop.to_owned(),
                    None => continue,
                },
                HTTP => match (
                    labels.get("method"),
                    labels.get("route"),
                    labels.get("status"),
                ) {
                    // Only answered requests that did their work: 2xx.
                    (Some(method), Some(route), Some(status)) if status.starts_with('2') => {
                        format!("{method} {route}")
                    }
                    _ => continue,
                },
                _ => continue,
            };
            let buckets = &mut histograms.entry(name).or_default().0;
            for bucket in counts {
                let (le, count) = (bucket.less_than, bucket.count as u64);
                // Several label sets (e.g. 201 and 202) of one name add up.
                match buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, n)) => *n += count,
                    None => buckets.push((le, count)),
                }
            }
        }
        for buckets in histograms.values_mut() {
            buckets.0.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Self(histograms)
    }

    /// Scrapes a service; an empty scrape when it does not answer.
    pub async fn take(http: &reqwest::Client, base: &str) -> Self {
        match metrics::scrape(http, base).await {
            Ok(parsed) => Self::of(&parsed),
            Err(_) => Self::default(),
        }
    }

    /// The hops of what happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Vec<HopFigure> {
        self.0
            .iter()
            .filter_map(|(hop, now)| {
                let added = now.since(earlier.0.get(hop));
                let ms = |q| added.quantile(q).map(|s| round3(s * 1000.0));
                Some(HopFigure {
                    hop: hop.clone(),
                    count: added.count(),
                    p50_ms: ms(0.5)?,
                    p99_ms: ms(0.99)?,
                    p999_ms: ms(0.999)?,
                })
            })
            .collect()
    }
}

/// One hop of one service over one phase of a bench.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HopFigure {
    pub hop: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE foodlab_hop_duration_seconds histogram
foodlab_hop_duration_seconds_sum{hop="store_commit"} 0.01
foodlab_hop_duration_seconds_count{hop="store_commit"} 10
foodlab_hop_duration_seconds_bucket{le="0.001",hop="store_commit"} 10
foodlab_hop_duration_seconds_bucket{le="0.002",hop="store_commit"} 10
foodlab_hop_duration_seconds_bucket{le="+Inf",hop="store_commit"} 10
"#;

    const AFTER: &str = r#"# TYPE foodlab_hop_duration_seconds histogram
foodlab_hop_duration_seconds_bucket{le="0.001",hop="store_commit"} 60
foodlab_hop_duration_seconds_bucket{le="0.002",hop="store_commit"} 109
foodlab_hop_duration_seconds_bucket{le="+Inf",hop="store_commit"} 110
# TYPE foodlab_http_request_duration_seconds histogram
foodlab_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/order",status="202"} 100
foodlab_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/order",status="202"} 100
foodlab_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/order",status="422"} 0
foodlab_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/order",status="422"} 7
# EOF
"#;

    #[test]
    fn a_phase_is_what_the_histograms_gained_during_it() {
        let figures = Scrape::parse(AFTER).since(&Scrape::parse(BEFORE));
        let commit = figures.iter().find(|f| f.hop == "store_commit").unwrap();
        // 100 new: 50 up to 1 ms, 49 in (1, 2] ms, 1 beyond.
        assert_eq!(commit.count, 100);
        assert_eq!(commit.p50_ms, 1.0);
        assert_eq!(commit.p99_ms, 2.0);
        assert_eq!(commit.p999_ms, 2.0);
        let handler = figures.iter().find(|f| f.hop == "POST /order").unwrap();
        // Only the 2xx answers count.
        assert_eq!(handler.count, 100);
        assert_eq!(handler.p50_ms, 0.5);
    }

    #[test]
    fn a_hop_without_observations_in_the_phase_is_left_out() {
        let same = Scrape::parse(BEFORE);
        assert!(same.since(&same).is_empty());
        assert!(
            Scrape::parse("garbage\n")
                .since(&Scrape::default())
                .is_empty()
        );
    }
}
