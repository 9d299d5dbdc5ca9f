//! The time series a lab measures, kept bounded for the report: a
//! million-order lab keeps at most `MAX_BINS` time bins of a log-scale
//! latency histogram each, and at most `MAX_POINTS` backlog readings.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::measure::Sample;
use crate::probe::observe::Backlog;
use crate::results::ChaosRecord;

/// Time bins kept; past it, neighbouring bins merge and the bin width doubles.
pub const MAX_BINS: usize = 240;
/// Backlog readings kept; past it, neighbours merge keeping their peak.
pub const MAX_POINTS: usize = 600;
/// Bins start this wide (a minute of run in `MAX_BINS`), and double as needed.
const FIRST_WIDTH: Duration = Duration::from_millis(250);
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

    fn merge(&mut self, other: &Self) {
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
        let rank = ((p / 100.0 * total as f64).ceil() as u64).clamp(1, total);
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

/// One bucket of a latency distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    pub from_ms: f64,
    pub to_ms: f64,
    pub count: u64,
}

/// One time bin of the answers to `POST /order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyBin {
    /// Seconds from the first order to the start of the bin.
    pub at_seconds: f64,
    pub answers: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers by status code (`error`: no answer); empty for end-to-end bins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status_codes: BTreeMap<String, u64>,
}

/// One backlog reading (queue depth or consumer lag).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub at_seconds: f64,
    pub value: u64,
}

/// A span of the run with a disruption on: a chaos step or a lab-wide fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// `chaos` or `fault`.
    pub kind: String,
    pub label: String,
    pub from_seconds: f64,
    /// `None`: not undone before the lab ended.
    pub to_seconds: Option<f64>,
}

/// The series of one lab, as the report draws them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabSeries {
    /// Width of each latency bin.
    pub bin_seconds: f64,
    /// Client latency and status codes over time.
    pub latency: Vec<LatencyBin>,
    /// Distribution of client latency.
    pub latency_histogram: Vec<Bucket>,
    /// End-to-end latency by the orders' creation time, in bins `binSeconds`
    /// wide (wider when orders were created over more than `MAX_BINS` of
    /// them); `answers`: the orders created in the bin that settled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub end_to_end: Vec<LatencyBin>,
    /// Distribution of end-to-end latency (parts that settle after the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_to_end_histogram: Option<Vec<Bucket>>,
    /// Queue depth (async-rabbitmq) or consumer lag (streaming-kafka) over time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backlog: Vec<Point>,
    /// Chaos and fault windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
}

struct Bin {
    latency: LogHistogram,
    codes: BTreeMap<String, u64>,
}

struct State {
    width: Duration,
    bins: Vec<Bin>,
    all: LogHistogram,
}

/// Records each answer as it comes, in bounded memory.
pub struct Recorder {
    zero: Instant,
    state: Mutex<State>,
}

impl Recorder {
    pub fn new(zero: Instant) -> Self {
        Self {
            zero,
            state: Mutex::new(State {
                width: FIRST_WIDTH,
                bins: Vec::new(),
                all: LogHistogram::default(),
            }),
        }
    }

    /// An answer that came now.
    pub fn record(&self, sample: &Sample) {
        self.record_at(Instant::now(), sample);
    }

    pub fn record_at(&self, at: Instant, sample: &Sample) {
        let ms = sample.latency.as_secs_f64() * 1000.0;
        let code = sample
            .status
            .map_or_else(|| "error".to_owned(), |s| s.to_string());
        let offset = at.saturating_duration_since(self.zero);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = (offset.as_secs_f64() / state.width.as_secs_f64()) as usize;
        while index >= MAX_BINS {
            state.halve();
            index = (offset.as_secs_f64() / state.width.as_secs_f64()) as usize;
        }
        while state.bins.len() <= index {
            state.bins.push(Bin {
                latency: LogHistogram::default(),
                codes: BTreeMap::new(),
            });
        }
        let bin = &mut state.bins[index];
        bin.latency.record(ms);
        *bin.codes.entry(code).or_insert(0) += 1;
        state.all.record(ms);
    }

    /// The series, with what the later steps saw.
    /// `end_to_end`: (creation time in ms since the epoch, end-to-end ms) per
    /// settled order; `started_at`: the wall-clock time of the first order.
    pub fn finish(
        &self,
        end_to_end: Option<&[(i64, f64)]>,
        started_at: jiff::Timestamp,
        backlog: Option<&Backlog>,
        windows: Vec<Window>,
    ) -> LabSeries {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let width = state.width.as_secs_f64();
        let latency = state
            .bins
            .iter()
            .enumerate()
            .map(|(i, bin)| latency_bin(i as f64 * width, &bin.latency, bin.codes.clone()))
            .collect();
        let end_to_end_ms: Option<Vec<f64>> =
            end_to_end.map(|orders| orders.iter().map(|(_, ms)| *ms).collect());
        LabSeries {
            bin_seconds: width,
            latency,
            end_to_end: end_to_end.map_or_else(Vec::new, |orders| {
                end_to_end_bins(orders, started_at.as_millisecond(), state.width)
            }),
            latency_histogram: state.all.buckets(),
            end_to_end_histogram: end_to_end_ms.map(|ms| LogHistogram::of(&ms).buckets()),
            backlog: backlog.map_or_else(Vec::new, |b| decimate(&points(b, self.zero))),
            windows,
        }
    }
}

impl State {
    fn halve(&mut self) {
        self.width *= 2;
        let bins = std::mem::take(&mut self.bins);
        let mut merged: Vec<Bin> = Vec::with_capacity(bins.len() / 2 + 1);
        for (i, bin) in bins.into_iter().enumerate() {
            if i % 2 == 0 {
                merged.push(bin);
            } else if let Some(last) = merged.last_mut() {
                last.latency.merge(&bin.latency);
                for (code, n) in bin.codes {
                    *last.codes.entry(code).or_insert(0) += n;
                }
            }
        }
        self.bins = merged;
    }
}

fn latency_bin(
    at_seconds: f64,
    latency: &LogHistogram,
    codes: BTreeMap<String, u64>,
) -> LatencyBin {
    LatencyBin {
        at_seconds: round3(at_seconds),
        answers: latency.count(),
        p50_ms: latency.percentile(50.0),
        p95_ms: latency.percentile(95.0),
        p99_ms: latency.percentile(99.0),
        max_ms: round3(latency.max),
        status_codes: codes,
    }
}

/// End-to-end latency binned by creation time: bins at least `width` wide,
/// wider if the orders were created over more than `MAX_BINS` of them.
fn end_to_end_bins(orders: &[(i64, f64)], zero_ms: i64, width: Duration) -> Vec<LatencyBin> {
    let offset =
        |created: i64| Duration::from_millis(u64::try_from(created - zero_ms).unwrap_or(0));
    let last = orders
        .iter()
        .map(|(c, _)| offset(*c))
        .max()
        .unwrap_or_default();
    let mut width = width;
    while last.as_secs_f64() / width.as_secs_f64() >= MAX_BINS as f64 {
        width *= 2;
    }
    let mut bins: Vec<LogHistogram> = Vec::new();
    for (created, ms) in orders {
        let index = (offset(*created).as_secs_f64() / width.as_secs_f64()) as usize;
        if bins.len() <= index {
            bins.resize_with(index + 1, LogHistogram::default);
        }
        bins[index].record(*ms);
    }
    bins.iter()
        .enumerate()
        .map(|(i, h)| latency_bin(i as f64 * width.as_secs_f64(), h, BTreeMap::new()))
        .collect()
}

fn points(backlog: &Backlog, zero: Instant) -> Vec<Point> {
    backlog
        .samples
        .iter()
        .map(|(at, value)| Point {
            at_seconds: round3(at.saturating_duration_since(zero).as_secs_f64()),
            value: *value,
        })
        .collect()
}

/// At most `MAX_POINTS` points: each group of neighbours becomes its peak.
pub fn decimate(points: &[Point]) -> Vec<Point> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let group = points.len().div_ceil(MAX_POINTS);
    points
        .chunks(group)
        .filter_map(|chunk| chunk.iter().max_by_key(|p| p.value).copied())
        .collect()
}

/// The chaos steps' windows, from their records, in seconds from `start`.
pub fn chaos_windows(records: &[ChaosRecord], start: jiff::Timestamp) -> Vec<Window> {
    let seconds = |t: jiff::Timestamp| round3(t.duration_since(start).as_secs_f64().max(0.0));
    records
        .iter()
        .map(|record| Window {
            kind: "chaos".into(),
            label: format!("{:?} {}", record.action, record.target),
            from_seconds: seconds(record.started_at),
            to_seconds: record.restored_at.map(seconds),
        })
        .collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: u16, ms: u64) -> Sample {
        Sample {
            status: Some(status),
            latency: Duration::from_millis(ms),
            order_status: None,
            order_id: None,
        }
    }

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
    fn a_long_run_keeps_at_most_max_bins() {
        let zero = Instant::now();
        let recorder = Recorder::new(zero);
        // One answer a second for an hour: 3600 one-second bins would be too many.
        for s in 0..3600 {
            let code = if s < 1800 { 201 } else { 503 };
            recorder.record_at(zero + Duration::from_secs(s), &sample(code, 10));
        }
        let series = recorder.finish(None, jiff::Timestamp::now(), None, Vec::new());
        assert!(series.latency.len() <= MAX_BINS, "{}", series.latency.len());
        assert_eq!(series.bin_seconds, 16.0);
        assert_eq!(series.latency.len(), 225);
        assert_eq!(series.latency.iter().map(|b| b.answers).sum::<u64>(), 3600);
        let codes = |code: &str| {
            series
                .latency
                .iter()
                .map(|b| b.status_codes.get(code).copied().unwrap_or(0))
                .sum::<u64>()
        };
        assert_eq!(codes("201"), 1800);
        assert_eq!(codes("503"), 1800);
        assert_eq!(
            series
                .latency_histogram
                .iter()
                .map(|b| b.count)
                .sum::<u64>(),
            3600
        );
    }

    #[test]
    fn end_to_end_is_binned_by_creation_time() {
        let zero = 1_000_000;
        // Orders created over 2 s, the later ones slower.
        let orders = [
            (zero, 10.0),
            (zero + 100, 20.0),
            (zero + 1100, 500.0),
            (zero + 1900, 700.0),
        ];
        let bins = end_to_end_bins(&orders, zero, Duration::from_millis(250));
        assert_eq!(bins.len(), 8);
        assert_eq!(bins.iter().map(|b| b.answers).sum::<u64>(), 4);
        assert_eq!((bins[0].answers, bins[0].max_ms), (2, 20.0));
        assert_eq!((bins[4].answers, bins[4].max_ms), (1, 500.0));
        assert_eq!((bins[7].answers, bins[7].max_ms), (1, 700.0));
        // An hour of orders keeps at most MAX_BINS bins.
        let hour: Vec<(i64, f64)> = (0..3600).map(|s| (zero + s * 1000, 5.0)).collect();
        assert!(end_to_end_bins(&hour, zero, Duration::from_millis(250)).len() <= MAX_BINS);
    }

    #[test]
    fn decimation_keeps_the_peak() {
        let points: Vec<Point> = (0..6000)
            .map(|i| Point {
                at_seconds: f64::from(i) / 10.0,
                value: if i == 4321 { 999 } else { 1 },
            })
            .collect();
        let kept = decimate(&points);
        assert_eq!(kept.len(), MAX_POINTS);
        assert_eq!(kept.iter().map(|p| p.value).max(), Some(999));
    }
}
