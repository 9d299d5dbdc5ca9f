//! The time series a lab measures, kept bounded for the report: a
//! million-order lab keeps at most `MAX_BINS` time bins of a log-scale
//! latency histogram each (`stats`), and at most `MAX_POINTS` backlog readings.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::probe::observe::Backlog;
use crate::results::ChaosRecord;
use crate::stats::{Bucket, Latencies, LogHistogram, round3};

/// Time bins kept; past it, neighbouring bins merge and the bin width doubles.
pub const MAX_BINS: usize = 240;
/// Backlog readings kept; past it, neighbours merge keeping their peak.
pub const MAX_POINTS: usize = 600;
/// Bins start this wide (a minute of run in `MAX_BINS`), and double as needed.
const FIRST_WIDTH: Duration = Duration::from_millis(250);

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

/// Time bins from a zero, at most `MAX_BINS`: past it, neighbours merge and
/// the width doubles.
struct Bins {
    width: Duration,
    bins: Vec<Bin>,
}

impl Bins {
    fn new() -> Self {
        Self {
            width: FIRST_WIDTH,
            bins: Vec::new(),
        }
    }

    fn index(&self, offset: Duration) -> usize {
        (offset.as_secs_f64() / self.width.as_secs_f64()) as usize
    }

    fn record(&mut self, offset: Duration, ms: f64, code: Option<String>) {
        while self.index(offset) >= MAX_BINS {
            self.halve();
        }
        let index = self.index(offset);
        if self.bins.len() <= index {
            self.bins.resize_with(index + 1, || Bin {
                latency: LogHistogram::default(),
                codes: BTreeMap::new(),
            });
        }
        let bin = &mut self.bins[index];
        bin.latency.record(ms);
        if let Some(code) = code {
            *bin.codes.entry(code).or_insert(0) += 1;
        }
    }

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

    /// The bins, merged until at least `width` wide.
    fn latency_bins(&mut self, width: Duration) -> Vec<LatencyBin> {
        while self.width < width {
            self.halve();
        }
        let seconds = self.width.as_secs_f64();
        self.bins
            .iter()
            .enumerate()
            .map(|(i, bin)| latency_bin(i as f64 * seconds, &bin.latency, bin.codes.clone()))
            .collect()
    }
}

struct State {
    bins: Bins,
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
                bins: Bins::new(),
                all: LogHistogram::default(),
            }),
        }
    }

    /// An answer that came now: its HTTP status (`None`: no answer) and latency.
    pub fn record(&self, status: Option<u16>, latency: Duration) {
        self.record_at(Instant::now(), status, latency);
    }

    pub fn record_at(&self, at: Instant, status: Option<u16>, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        let code = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        let offset = at.saturating_duration_since(self.zero);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.bins.record(offset, ms, Some(code));
        state.all.record(ms);
    }

    /// The series, with what the later steps saw: the end-to-end times of
    /// the settled orders (async parts) and the backlog.
    pub fn finish(
        &self,
        end_to_end: Option<&mut EndToEnd>,
        backlog: Option<&Backlog>,
        windows: Vec<Window>,
    ) -> LabSeries {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let width = state.bins.width;
        let latency = state.bins.latency_bins(width);
        let (end_to_end, end_to_end_histogram) = match end_to_end {
            Some(e2e) => (
                e2e.bins.latency_bins(width),
                Some(e2e.latencies.histogram().buckets()),
            ),
            None => (Vec::new(), None),
        };
        LabSeries {
            bin_seconds: width.as_secs_f64(),
            latency,
            end_to_end,
            latency_histogram: state.all.buckets(),
            end_to_end_histogram,
            backlog: backlog.map_or_else(Vec::new, |b| decimate(&points(b, self.zero))),
            windows,
        }
    }
}

/// The end-to-end times of settled orders, in bounded memory: all together
/// (for the percentiles) and binned by the orders' creation time.
pub struct EndToEnd {
    /// The wall-clock time of the first order, in ms since the epoch.
    zero_ms: i64,
    bins: Bins,
    latencies: Latencies,
    /// When the last order to settle did, in ms since the epoch.
    last_settled_ms: Option<i64>,
}

impl EndToEnd {
    pub fn new(zero: jiff::Timestamp) -> Self {
        Self {
            zero_ms: zero.as_millisecond(),
            bins: Bins::new(),
            latencies: Latencies::default(),
            last_settled_ms: None,
        }
    }

    /// An order created at `created_ms` (ms since the epoch) that took `ms` to settle.
    pub fn record(&mut self, created_ms: i64, ms: f64) {
        let offset = Duration::from_millis(u64::try_from(created_ms - self.zero_ms).unwrap_or(0));
        self.bins.record(offset, ms, None);
        self.latencies.record(ms);
        // Whole milliseconds: an order's times are kept to the millisecond.
        #[allow(clippy::cast_possible_truncation)]
        let settled = created_ms.saturating_add(ms.round() as i64);
        self.last_settled_ms = Some(self.last_settled_ms.map_or(settled, |t| t.max(settled)));
    }

    /// When the last of the recorded orders settled.
    pub fn last_settled(&self) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_millisecond(self.last_settled_ms?).ok()
    }

    pub fn latencies(&self) -> &Latencies {
        &self.latencies
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
        max_ms: round3(latency.max()),
        status_codes: codes,
    }
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
            // A broker's window is its node's time down: named by the node.
            label: match (record.target.broker(), record.pods.as_slice()) {
                (Some(_), [_, ..]) => format!("{:?} {}", record.action, record.pods.join(", ")),
                _ => format!("{:?} {}", record.action, record.target),
            },
            from_seconds: seconds(record.started_at),
            to_seconds: record.restored_at.map(seconds),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_keeps_at_most_max_bins() {
        let zero = Instant::now();
        let recorder = Recorder::new(zero);
        // One answer a second for an hour: 3600 one-second bins would be too many.
        for s in 0..3600 {
            let code = if s < 1800 { 201 } else { 503 };
            recorder.record_at(
                zero + Duration::from_secs(s),
                Some(code),
                Duration::from_millis(10),
            );
        }
        let series = recorder.finish(None, None, Vec::new());
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
        let zero = jiff::Timestamp::from_millisecond(1_000_000).unwrap();
        let at = |ms: i64| zero.as_millisecond() + ms;
        let recorder = Recorder::new(Instant::now());
        // Orders created over 2 s, the later ones slower; settled in any order.
        let mut e2e = EndToEnd::new(zero);
        for (created, ms) in [(1900, 700.0), (0, 10.0), (1100, 500.0), (100, 20.0)] {
            e2e.record(at(created), ms);
        }
        let series = recorder.finish(Some(&mut e2e), None, Vec::new());
        let bins = &series.end_to_end;
        assert_eq!(bins.len(), 8);
        assert_eq!(bins.iter().map(|b| b.answers).sum::<u64>(), 4);
        assert_eq!((bins[0].answers, bins[0].max_ms), (2, 20.0));
        assert_eq!((bins[4].answers, bins[4].max_ms), (1, 500.0));
        assert_eq!((bins[7].answers, bins[7].max_ms), (1, 700.0));
        let histogram = series.end_to_end_histogram.unwrap();
        assert_eq!(histogram.iter().map(|b| b.count).sum::<u64>(), 4);
        assert_eq!(e2e.latencies().summary().max, 700.0);
        // An hour of orders keeps at most MAX_BINS bins.
        let mut hour = EndToEnd::new(zero);
        for s in 0..3600 {
            hour.record(at(s * 1000), 5.0);
        }
        let series = Recorder::new(Instant::now()).finish(Some(&mut hour), None, Vec::new());
        assert!(
            series.end_to_end.len() <= MAX_BINS,
            "{}",
            series.end_to_end.len()
        );
        assert_eq!(
            series.end_to_end.iter().map(|b| b.answers).sum::<u64>(),
            3600
        );
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
