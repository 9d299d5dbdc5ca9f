//! The statistics of latencies: a log-scale histogram (bounded, for any
//! number of answers), exact values while few, nearest-rank percentiles.

use serde::{Deserialize, Serialize};

use crate::results::LatencySummary;

/// Buckets per decade of the latency histogram (about 12 % wide each).
const PER_DECADE: f64 = 20.0;
/// The histogram covers 0.1 ms to 10^6 ms (beyond goes to the last bucket).
const LOWEST_MS: f64 = 0.1;
const BUCKETS: usize = 7 * PER_DECADE as usize;

/// Latencies in milliseconds in log-spaced buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct LogHistogram {
    counts: Vec<u64>,
    max: f64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            max: 0.0,
        }
    }
}

impl LogHistogram {
    pub fn of(ms: &[f64]) -> Self {
        let mut histogram = Self::default();
        for value in ms {
            histogram.record(*value);
        }
        histogram
    }

    fn bucket(ms: f64) -> usize {
        if ms <= LOWEST_MS {
            return 0;
        }
        let index = ((ms / LOWEST_MS).log10() * PER_DECADE).ceil() as usize;
        index.min(BUCKETS - 1)
    }

    /// The upper bound of a bucket, in ms.
    fn upper(index: usize) -> f64 {
        LOWEST_MS * 10f64.powf(index as f64 / PER_DECADE)
    }

    pub fn record(&mut self, ms: f64) {
        self.counts[Self::bucket(ms)] += 1;
        self.max = self.max.max(ms);
    }

    /// The largest latency recorded (0 for none).
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Adds another histogram's counts (two time bins becoming one).
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding the nearest-rank percentile
    /// (at most the largest value seen); 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = nearest_rank(p, total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return round3(Self::upper(index).min(self.max));
            }
        }
        round3(self.max)
    }

    /// The non-empty buckets.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, count)| Bucket {
                from_ms: if index == 0 {
                    0.0
                } else {
                    round3(Self::upper(index - 1))
                },
                to_ms: round3(Self::upper(index)),
                count: *count,
            })
            .collect()
    }
}

/// Latencies kept exactly while they are few (every figure of a small lab
/// is exact), and always in a `LogHistogram` (a large lab's percentiles are
/// its bucket bounds): at most `EXACT_UP_TO` values, whatever the count.
#[derive(Debug, Clone, PartialEq)]
pub struct Latencies {
    histogram: LogHistogram,
    /// Every value so far; dropped when there are more than `EXACT_UP_TO`.
    exact: Option<Vec<f64>>,
}

/// The most latencies kept one by one.
pub const EXACT_UP_TO: usize = 10_000;

impl Default for Latencies {
    fn default() -> Self {
        Self {
            histogram: LogHistogram::default(),
            exact: Some(Vec::new()),
        }
    }
}

impl Latencies {
    pub fn record(&mut self, ms: f64) {
        self.histogram.record(ms);
        if let Some(exact) = &mut self.exact {
            if exact.len() < EXACT_UP_TO {
                exact.push(ms);
            } else {
                self.exact = None;
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.count()
    }

    pub fn histogram(&self) -> &LogHistogram {
        &self.histogram
    }

    /// Whether the percentiles are exact (every value is still kept).
    pub fn is_exact(&self) -> bool {
        self.exact.is_some()
    }

    /// Bytes held, whatever was recorded: the histogram and the exact values.
    pub fn heap_bytes(&self) -> usize {
        self.histogram.counts.capacity() * size_of::<u64>()
            + self
                .exact
                .as_ref()
                .map_or(0, |v| v.capacity() * size_of::<f64>())
    }

    /// The nearest-rank percentile `p` (exact while every value is kept,
    /// else its bucket's upper bound, capped by the max); 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        match &self.exact {
            Some(exact) => {
                let mut sorted = exact.clone();
                sorted.sort_by(f64::total_cmp);
                round3(percentile(&sorted, p))
            }
            None => self.histogram.percentile(p),
        }
    }

    /// p50, p95, p99 and the max.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            p50: self.percentile(50.0),
            p95: self.percentile(95.0),
            p99: self.percentile(99.0),
            max: round3(self.histogram.max),
        }
    }
}

/// Nearest-rank percentile of sorted values; 0 for no values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[nearest_rank(p, sorted.len() as u64) as usize - 1]
}

/// The 1-based rank of the `p` percentile among `count` values. The
/// epsilon keeps p99.9 of 1,000 values at rank 999: 99.9 % of 1000 is
/// 999.000...1 in binary fractions, which would round up to the maximum.
fn nearest_rank(p: f64, count: u64) -> u64 {
    ((p * count as f64 / 100.0 - 1e-9).ceil() as u64).clamp(1, count.max(1))
}

/// One bucket of a latency distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    pub from_ms: f64,
    pub to_ms: f64,
    pub count: u64,
}

/// Rounded to three decimals, as figures are reported.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_bounds_capped_by_the_max() {
        let histogram = LogHistogram::of(&(1..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!(histogram.count(), 100);
        let p50 = histogram.percentile(50.0);
        // A bucket is about 12 % wide.
        assert!((50.0..=56.3).contains(&p50), "{p50}");
        assert_eq!(histogram.percentile(100.0), 100.0);
        assert_eq!(LogHistogram::default().percentile(50.0), 0.0);
        let buckets = histogram.buckets();
        assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), 100);
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].to_ms <= w[1].from_ms + 1e-9)
        );
    }

    #[test]
    fn latencies_are_exact_while_few_and_bounded_when_many() {
        let mut latencies = Latencies::default();
        for ms in [10.0, 20.0, 5.0, 30.0, 40.0] {
            latencies.record(ms);
        }
        assert!(latencies.is_exact());
        assert_eq!(
            latencies.summary(),
            LatencySummary {
                p50: 20.0,
                p95: 40.0,
                p99: 40.0,
                max: 40.0
            }
        );
        let mut many = Latencies::default();
        for i in 0..=EXACT_UP_TO {
            many.record(1.0 + (i % 1000) as f64);
        }
        assert!(!many.is_exact());
        let bytes = many.heap_bytes();
        assert_eq!(bytes, BUCKETS * size_of::<u64>());
        for i in 0..1_000_000u32 {
            many.record(f64::from(i % 5000) / 10.0);
        }
        assert_eq!(many.heap_bytes(), bytes);
        assert_eq!(many.count(), (EXACT_UP_TO + 1 + 1_000_000) as u64);
        let summary = many.summary();
        assert_eq!(summary.max, 1000.0);
        // From the buckets: within one bucket (about 12 %) above the true value.
        assert!((250.0..=250.0 * 1.13).contains(&summary.p50), "{summary:?}");
    }
}
