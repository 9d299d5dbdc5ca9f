//! From answers to figures: status counts, latency percentiles, throughput.

use std::collections::BTreeMap;
use std::time::Duration;

use foodlab_domain::OrderStatus;

use crate::probe::observe::Backlog;
use crate::probe::observe::count_whose_status;
use crate::results::{
    AnalyticsTotals, BrokerErrorCounts, LabResults, LatencySummary, ReplayResults,
};
use crate::series::EndToEnd;
use crate::stats::{Latencies, round3};

/// One `POST /order` as the workload saw it (handed on, not kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// HTTP status, or `None` when no answer came (connection error, client timeout).
    pub status: Option<u16>,
    pub latency: Duration,
    /// The order's status in the answer, if the answer carried one.
    pub order_status: Option<Reported>,
}

/// An order status as an answer carried it: one the API defines, or a text
/// it does not (counted apart, and neither reserved nor final).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    Known(OrderStatus),
    Unknown,
}

/// What the workload's answers add up to, in memory that does not grow
/// with the orders: counts by status code and by the answers' order
/// status, and the latencies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Answers by HTTP status code; `error` for no answer at all.
    pub status_codes: BTreeMap<String, u64>,
    /// Answers by the order status they carried (none: not counted).
    pub order_statuses: BTreeMap<OrderStatus, u64>,
    /// Answers whose order status is none the API defines.
    pub unknown_order_statuses: u64,
    pub latency: Latencies,
}

impl Tally {
    pub fn record(&mut self, sample: &Sample) {
        let code = sample
            .status
            .map_or_else(|| "error".to_owned(), |s| s.to_string());
        *self.status_codes.entry(code).or_insert(0) += 1;
        match sample.order_status {
            Some(Reported::Known(status)) => *self.order_statuses.entry(status).or_insert(0) += 1,
            Some(Reported::Unknown) => self.unknown_order_statuses += 1,
            None => {}
        }
        self.latency.record(sample.latency.as_secs_f64() * 1000.0);
    }

    /// Every answer (or its absence) recorded.
    pub fn answers(&self) -> u64 {
        self.status_codes.values().sum()
    }

    /// The answers with a 2xx status.
    pub fn accepted(&self) -> u64 {
        self.status_codes
            .iter()
            .filter(|(code, _)| code.parse::<u16>().is_ok_and(|c| (200..300).contains(&c)))
            .map(|(_, n)| n)
            .sum()
    }

    /// The answers with another status than `code` (or none).
    pub fn other_than(&self, code: u16) -> u64 {
        self.answers()
            - self
                .status_codes
                .get(&code.to_string())
                .copied()
                .unwrap_or(0)
    }

    /// The answers whose order status matches `which` (an unknown one never does).
    pub fn orders_whose_status(&self, which: impl Fn(OrderStatus) -> bool) -> u64 {
        count_whose_status(&self.order_statuses, which)
    }

    pub fn latency_summary(&self) -> LatencySummary {
        self.latency.summary()
    }
}

/// The figures of a workload whose answers were final (the sync-rest part).
pub fn summarize(tally: &Tally, workload: Duration) -> LabResults {
    let answers = tally.answers();
    let reserved = tally.orders_whose_status(OrderStatus::is_reserved);
    let seconds = workload.as_secs_f64();
    LabResults {
        accepted: tally.accepted(),
        reserved,
        failed: answers - reserved,
        status_codes: tally.status_codes.clone(),
        latency_ms: tally.latency_summary(),
        throughput_per_second: if seconds > 0.0 {
            round3(answers as f64 / seconds)
        } else {
            0.0
        },
        workload_seconds: round3(seconds),
        ..LabResults::default()
    }
}

/// How the workload's orders ended, and what settling measured.
#[derive(Default)]
pub struct Settled {
    /// Orders whose status is final (an answer the API refused included).
    pub terminal: u64,
    /// Reserved and failed, by the order service's statuses (async parts:
    /// after settling; sync: the answers say).
    pub reserved_and_failed: Option<(u64, u64)>,
    /// Creation-to-final-status times, summarized (async parts, with the cursor).
    pub end_to_end_ms: Option<LatencySummary>,
    /// Streaming: when inventory and analytics had processed every event.
    pub processed_seconds: Option<f64>,
    pub processed_per_second: Option<f64>,
    /// Streaming: analytics' totals over the run.
    pub analytics: Option<AnalyticsTotals>,
    pub backlog: Option<Backlog>,
    /// Creation-to-final-status times of the settled orders (async parts).
    pub end_to_end: Option<EndToEnd>,
}

/// What the part's counters and the log say after the run.
#[derive(Default)]
pub struct Measured {
    pub reservations: Option<u64>,
    pub decided: Option<u64>,
    pub stock_consumed: Option<u64>,
    pub dead_lettered: Option<u64>,
    pub lag_at_end: Option<u64>,
    pub replay: Option<ReplayResults>,
    /// The broker errors the services counted over the run (async parts).
    pub broker_errors: Option<BrokerErrorCounts>,
}

/// The lab's results, built once: the workload's `summary`, then what
/// settling and the end of the run measured, and the drain.
pub fn assemble(
    summary: LabResults,
    settled: &Settled,
    measured: Measured,
    drain_seconds: Option<f64>,
) -> LabResults {
    let (reserved, failed) = settled
        .reserved_and_failed
        .unwrap_or((summary.reserved, summary.failed));
    LabResults {
        reserved,
        failed,
        end_to_end_ms: settled.end_to_end_ms.clone(),
        processed_seconds: settled.processed_seconds,
        processed_per_second: settled.processed_per_second,
        analytics: settled.analytics,
        max_backlog: settled.backlog.as_ref().map(Backlog::max),
        drain_seconds,
        reservations: measured.reservations,
        decided: measured.decided,
        stock_consumed: measured.stock_consumed,
        dead_lettered: measured.dead_lettered,
        lag_at_end: measured.lag_at_end,
        replay: measured.replay,
        broker_errors: measured.broker_errors,
        ..summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::percentile;

    fn sample(status: Option<u16>, ms: u64, order_status: Option<OrderStatus>) -> Sample {
        Sample {
            status,
            latency: Duration::from_millis(ms),
            order_status: order_status.map(Reported::Known),
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

    fn tally(samples: &[Sample]) -> Tally {
        let mut tally = Tally::default();
        for sample in samples {
            tally.record(sample);
        }
        tally
    }

    #[test]
    fn summary_counts_codes_outcomes_and_rate() {
        let samples = vec![
            sample(Some(201), 10, Some(OrderStatus::Notified)),
            sample(Some(201), 20, Some(OrderStatus::Reserved)),
            sample(Some(409), 5, Some(OrderStatus::Failed)),
            sample(Some(502), 30, Some(OrderStatus::Failed)),
            sample(None, 40, None),
        ];
        let results = summarize(&tally(&samples), Duration::from_secs(2));
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

    #[test]
    fn an_unknown_order_status_is_counted_apart_and_neither_reserved_nor_final() {
        let mut tally = tally(&[
            sample(Some(201), 10, Some(OrderStatus::Reserved)),
            sample(Some(202), 10, Some(OrderStatus::Placed)),
        ]);
        tally.record(&Sample {
            status: Some(201),
            latency: Duration::from_millis(10),
            order_status: Some(Reported::Unknown),
        });
        assert_eq!(tally.unknown_order_statuses, 1);
        assert_eq!(
            tally.order_statuses,
            BTreeMap::from([(OrderStatus::Placed, 1), (OrderStatus::Reserved, 1)])
        );
        assert_eq!(tally.orders_whose_status(OrderStatus::is_terminal), 1);
        let results = summarize(&tally, Duration::from_secs(1));
        assert_eq!(
            (results.accepted, results.reserved, results.failed),
            (3, 1, 2)
        );
    }

    #[test]
    fn a_million_answers_keep_the_tally_bounded_and_the_counts_exact() {
        let mut tally = Tally::default();
        let mut size_after_first_100k = 0;
        for i in 0..1_000_000u64 {
            let (status, order_status) = match i % 4 {
                0 => (Some(503), Some(OrderStatus::Failed)),
                1 => (None, None),
                _ => (Some(202), Some(OrderStatus::Placed)),
            };
            tally.record(&sample(status, i % 700, order_status));
            if i == 100_000 {
                size_after_first_100k = tally.latency.heap_bytes();
            }
        }
        assert_eq!(tally.latency.heap_bytes(), size_after_first_100k);
        assert!(tally.latency.histogram().buckets().len() <= 140);
        assert_eq!(
            tally.status_codes,
            BTreeMap::from([
                ("202".to_owned(), 500_000),
                ("503".to_owned(), 250_000),
                ("error".to_owned(), 250_000),
            ])
        );
        assert_eq!(
            tally.order_statuses,
            BTreeMap::from([
                (OrderStatus::Failed, 250_000),
                (OrderStatus::Placed, 500_000)
            ])
        );
        assert_eq!((tally.answers(), tally.accepted()), (1_000_000, 500_000));
        assert_eq!(tally.other_than(202), 500_000);
        assert_eq!(tally.latency.count(), 1_000_000);
        assert_eq!(tally.latency_summary().max, 699.0);
    }
}
