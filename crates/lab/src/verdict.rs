//! Judging a run against its expectations.

use std::time::Duration;

use crate::results::{ChaosRecord, Check, LabResults};
use crate::spec::{Expectations, Verdict};

/// What the run looked like at the end, beyond the figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub orders: u64,
    pub terminal: u64,
    pub elapsed: Duration,
}

/// One check per declared expectation, in a stable order.
pub fn evaluate(expect: &Expectations, results: &LabResults, outcome: Outcome) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut check = |name: &str, passed: bool, detail: String| {
        checks.push(Check {
            name: name.to_owned(),
            passed,
            detail,
        })
    };
    if expect.all_orders_terminal == Some(true) {
        check(
            "allOrdersTerminal",
            outcome.terminal == outcome.orders,
            format!(
                "{} of {} orders reached a final status",
                outcome.terminal, outcome.orders
            ),
        );
    }
    if expect.all_orders_reserved == Some(true) {
        check(
            "allOrdersReserved",
            results.accepted > 0 && results.reserved == results.accepted,
            format!(
                "{} of {} accepted orders reserved",
                results.reserved, results.accepted
            ),
        );
    }
    if let Some(expected) = expect.reservations {
        let made = results.reservations;
        check(
            "reservations",
            made == Some(expected),
            format!("{} reservations made, expected {expected}", shown(made)),
        );
    }
    if let Some(expected) = expect.dead_lettered {
        let made = results.dead_lettered;
        check(
            "deadLettered",
            made == Some(expected),
            format!(
                "{} messages dead-lettered, expected {expected}",
                shown(made)
            ),
        );
    }
    if let Some(within) = expect.within {
        check(
            "within",
            outcome.elapsed <= within,
            format!(
                "took {:.1} s, allowed {:.1} s",
                outcome.elapsed.as_secs_f64(),
                within.as_secs_f64()
            ),
        );
    }
    if let Some(code) = expect.response_status {
        let matching = results
            .status_codes
            .get(&code.to_string())
            .copied()
            .unwrap_or(0);
        let total: u64 = results.status_codes.values().sum();
        check(
            "responseStatus",
            total > 0 && matching == total,
            format!("{matching} of {total} answers were {code}"),
        );
    }
    if expect.every_event_counted == Some(true) {
        let counted = results.analytics.unwrap_or_default();
        let decided = results.decided.unwrap_or(0);
        let accepted = results.accepted;
        check(
            "everyEventCounted",
            accepted > 0
                && counted.orders == accepted
                && counted.inventory_events == accepted
                && decided == accepted,
            format!(
                "{accepted} accepted; inventory decided {decided}; analytics counted {} orders and {} inventory results",
                counted.orders, counted.inventory_events
            ),
        );
    }
    if let Some(least) = expect.max_lag_at_least {
        let seen = results.max_backlog;
        check(
            "maxLagAtLeast",
            seen.is_some_and(|lag| lag >= least),
            format!(
                "highest consumer lag {}, expected at least {least}",
                shown(seen)
            ),
        );
    }
    if expect.lag_drained == Some(true) {
        let left = results.lag_at_end;
        check(
            "lagDrained",
            left == Some(0),
            format!("consumer lag at the end: {}", shown(left)),
        );
    }
    if expect.replay_identical == Some(true) {
        let (passed, detail) = match &results.replay {
            Some(replay) => (
                replay.identical,
                format!(
                    "before: {}; after: {}; {} events read again in {:.3} s",
                    replay.before, replay.after, replay.events, replay.seconds
                ),
            ),
            None => (false, "no replay happened".to_owned()),
        };
        check("replayIdentical", passed, detail);
    }
    if let Some(bounds) = &expect.latency_ms {
        let p50 = results.latency_ms.p50;
        let p99 = results.latency_ms.p99;
        if let Some(min) = bounds.p50_at_least {
            check(
                "latency.p50AtLeast",
                p50 >= min,
                format!("p50 {p50} ms, at least {min} ms"),
            );
        }
        if let Some(max) = bounds.p50_at_most {
            check(
                "latency.p50AtMost",
                p50 <= max,
                format!("p50 {p50} ms, at most {max} ms"),
            );
        }
        if let Some(max) = bounds.p99_at_most {
            check(
                "latency.p99AtMost",
                p99 <= max,
                format!("p99 {p99} ms, at most {max} ms"),
            );
        }
    }
    checks
}

/// One check per broker PodKill, whatever the lab expects: the killed
/// nodes serving again within the lab's `within` of the workload's start.
/// A broker short of a node past it is not the broker the lab declared.
pub fn brokers_back(
    chaos: &[ChaosRecord],
    workload_start: jiff::Timestamp,
    within: Duration,
) -> Vec<Check> {
    let since_start = |at: jiff::Timestamp| at.duration_since(workload_start).as_secs_f64();
    broker_kills(chaos)
        .map(|record| {
            let nodes = record.pods.join(", ");
            let killed = since_start(record.started_at);
            let (passed, detail) = match record.restored_at {
                Some(back) => (
                    since_start(back) <= within.as_secs_f64(),
                    format!(
                        "{} {nodes} killed at +{killed:.1} s, serving again at +{:.1} s \
                         ({:.1} s to recover), allowed until +{:.1} s",
                        record.target,
                        since_start(back),
                        since_start(back) - killed,
                        within.as_secs_f64()
                    ),
                ),
                None => (
                    false,
                    format!(
                        "{} {nodes} killed at +{killed:.1} s, not serving again{}",
                        record.target,
                        record
                            .error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                ),
            };
            Check {
                name: format!("chaos[{}].brokerBack", record.step),
                passed,
                detail,
            }
        })
        .collect()
}

/// The records of broker nodes killed (a broker target is a PodKill's only).
fn broker_kills(chaos: &[ChaosRecord]) -> impl Iterator<Item = &ChaosRecord> {
    chaos
        .iter()
        .filter(|record| record.target.broker().is_some() && record.disrupted)
}

/// The longest recovery of a killed broker node that came back, in seconds.
pub fn broker_recovery_seconds(chaos: &[ChaosRecord]) -> Option<f64> {
    broker_kills(chaos)
        .filter_map(|record| {
            let back = record.restored_at?;
            Some(back.duration_since(record.started_at).as_secs_f64())
        })
        .reduce(f64::max)
        .map(|seconds| (seconds * 10.0).round() / 10.0)
}

fn shown(value: Option<u64>) -> String {
    value.map_or_else(|| "unknown".to_owned(), |v| v.to_string())
}

pub fn verdict(checks: &[Check]) -> Verdict {
    if checks.iter().all(|c| c.passed) {
        Verdict::Pass
    } else {
        Verdict::Fail
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::results::LatencySummary;
    use crate::spec::{ChaosAction, ChaosTarget, LatencyBounds};

    /// A PodKill of `target`'s first node at +`at` s of the workload (which
    /// starts at the epoch), back at +`back` s.
    fn killed(target: ChaosTarget, at: i64, back: Option<i64>) -> ChaosRecord {
        let t = |s: i64| jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_secs(s);
        ChaosRecord {
            step: 0,
            action: ChaosAction::PodKill,
            target,
            disrupted: true,
            original_replicas: None,
            pods: vec![format!("{target}-1")],
            started_at: t(at),
            restore_at: Some(t(at)),
            restored_at: back.map(t),
            error: back
                .is_none()
                .then(|| format!("{target}: {target}-1 not serving again yet")),
        }
    }

    #[test]
    fn a_killed_broker_node_must_be_back_within_the_labs_time() {
        let within = Duration::from_secs(30);
        let start = jiff::Timestamp::UNIX_EPOCH;
        let back_in_time = brokers_back(&[killed(ChaosTarget::Kafka, 5, Some(12))], start, within);
        assert_eq!(back_in_time.len(), 1);
        assert!(back_in_time[0].passed, "{:?}", back_in_time[0]);
        assert_eq!(back_in_time[0].name, "chaos[0].brokerBack");
        assert_eq!(
            back_in_time[0].detail,
            "kafka kafka-1 killed at +5.0 s, serving again at +12.0 s (7.0 s to recover), \
             allowed until +30.0 s"
        );
        let late = brokers_back(&[killed(ChaosTarget::Rabbitmq, 5, Some(41))], start, within);
        assert!(!late[0].passed);
        let never = brokers_back(&[killed(ChaosTarget::Kafka, 5, None)], start, within);
        assert!(!never[0].passed);
        assert_eq!(
            never[0].detail,
            "kafka kafka-1 killed at +5.0 s, not serving again: kafka: kafka-1 not serving again yet"
        );
        // A service's pods are replaced at once: no check.
        assert!(
            brokers_back(&[killed(ChaosTarget::Inventory, 5, Some(5))], start, within).is_empty()
        );
        assert_eq!(
            broker_recovery_seconds(&[
                killed(ChaosTarget::Kafka, 5, Some(12)),
                killed(ChaosTarget::Inventory, 5, Some(60)),
            ]),
            Some(7.0)
        );
    }

    fn results(codes: &[(&str, u64)], p50: f64, p99: f64) -> LabResults {
        LabResults {
            status_codes: codes
                .iter()
                .map(|(c, n)| ((*c).to_owned(), *n))
                .collect::<BTreeMap<_, _>>(),
            latency_ms: LatencySummary {
                p50,
                p95: p99,
                p99,
                max: p99,
            },
            ..LabResults::default()
        }
    }

    fn outcome(orders: u64, terminal: u64, secs: u64) -> Outcome {
        Outcome {
            orders,
            terminal,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn checks_table() {
        let expect = Expectations {
            all_orders_reserved: None,
            reservations: None,
            dead_lettered: None,
            all_orders_terminal: Some(true),
            within: Some(Duration::from_secs(10)),
            response_status: Some(502),
            latency_ms: Some(LatencyBounds {
                p50_at_least: Some(2000.0),
                p50_at_most: None,
                p99_at_most: Some(3000.0),
            }),
            ..Expectations::default()
        };
        let all_good = evaluate(
            &expect,
            &results(&[("502", 4)], 2100.0, 2500.0),
            outcome(4, 4, 9),
        );
        assert_eq!(all_good.len(), 5);
        assert!(all_good.iter().all(|c| c.passed), "{all_good:?}");
        assert_eq!(verdict(&all_good), Verdict::Pass);

        let bad = evaluate(
            &expect,
            &results(&[("502", 3), ("201", 1)], 1999.0, 3001.0),
            outcome(4, 3, 11),
        );
        let failed: Vec<_> = bad
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "allOrdersTerminal",
                "within",
                "responseStatus",
                "latency.p50AtLeast",
                "latency.p99AtMost"
            ]
        );
        assert_eq!(verdict(&bad), Verdict::Fail);
        assert_eq!(bad[2].detail, "3 of 4 answers were 502");
    }

    #[test]
    fn message_counts_must_be_exact() {
        let expect = Expectations {
            all_orders_reserved: Some(true),
            reservations: Some(10),
            dead_lettered: Some(5),
            ..Expectations::default()
        };
        let mut r = results(&[("202", 20)], 1.0, 2.0);
        r.accepted = 20;
        r.reserved = 20;
        r.reservations = Some(10);
        r.dead_lettered = Some(5);
        let ok = evaluate(&expect, &r, outcome(20, 20, 1));
        assert!(ok.iter().all(|c| c.passed), "{ok:?}");
        r.reservations = Some(11);
        r.dead_lettered = None;
        r.reserved = 19;
        let bad = evaluate(&expect, &r, outcome(20, 20, 1));
        assert!(bad.iter().all(|c| !c.passed), "{bad:?}");
        assert_eq!(bad[2].detail, "unknown messages dead-lettered, expected 5");
    }

    #[test]
    fn no_answers_never_satisfy_a_response_status() {
        let expect = Expectations {
            response_status: Some(201),
            ..Expectations::default()
        };
        let checks = evaluate(&expect, &results(&[], 0.0, 0.0), outcome(0, 0, 0));
        assert!(!checks[0].passed);
    }

    #[test]
    fn streaming_checks_need_every_event_lag_and_an_identical_replay() {
        use crate::results::{AnalyticsTotals, ReplayResults};
        let expect = Expectations {
            every_event_counted: Some(true),
            max_lag_at_least: Some(100),
            lag_drained: Some(true),
            replay_identical: Some(true),
            ..Expectations::default()
        };
        let totals = AnalyticsTotals {
            orders: 50,
            inventory_events: 50,
            failures: 2,
        };
        let mut r = results(&[("202", 50)], 1.0, 2.0);
        r.accepted = 50;
        r.decided = Some(50);
        r.analytics = Some(totals);
        r.max_backlog = Some(120);
        r.lag_at_end = Some(0);
        r.replay = Some(ReplayResults {
            before: totals,
            after: totals,
            identical: true,
            events: 100,
            seconds: 0.01,
            events_per_second: 10_000.0,
        });
        let ok = evaluate(&expect, &r, outcome(50, 50, 1));
        assert_eq!(ok.len(), 4);
        assert!(ok.iter().all(|c| c.passed), "{ok:?}");

        r.analytics = Some(AnalyticsTotals {
            inventory_events: 49,
            ..totals
        });
        r.max_backlog = Some(99);
        r.lag_at_end = None;
        r.replay = None;
        let bad = evaluate(&expect, &r, outcome(50, 50, 1));
        assert!(bad.iter().all(|c| !c.passed), "{bad:?}");
        assert_eq!(bad[2].detail, "consumer lag at the end: unknown");
        assert_eq!(bad[3].detail, "no replay happened");
    }
}
