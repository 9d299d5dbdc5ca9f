//! The results of a lab as tables.

use comfy_table::{Cell, Color, Table, presets::UTF8_FULL_CONDENSED};
use foodlab_lab::{LabReport, Verdict};

pub fn print(name: &str, report: &LabReport) {
    let r = &report.results;
    let mut figures = Table::new();
    figures
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["measure", "value"]);
    let codes = r
        .status_codes
        .iter()
        .map(|(code, n)| format!("{code}×{n}"))
        .collect::<Vec<_>>()
        .join("  ");
    let rows: Vec<(&str, String)> = vec![
        ("transport", report.transport.part().to_owned()),
        ("orders accepted", r.accepted.to_string()),
        ("orders reserved", r.reserved.to_string()),
        ("orders failed", r.failed.to_string()),
        ("status codes", codes),
        (
            "latency p50 / p95 / p99 / max",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} ms",
                r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.max
            ),
        ),
        (
            "throughput",
            format!("{:.1} orders/s", r.throughput_per_second),
        ),
        ("workload time", format!("{:.2} s", r.workload_seconds)),
        ("lab time", format!("{:.1} s", report.elapsed_seconds)),
    ];
    let optional: Vec<(&str, Option<String>)> = vec![
        (
            "end to end p50 / p95 / p99 / max",
            r.end_to_end_ms.as_ref().map(|l| {
                format!(
                    "{:.1} / {:.1} / {:.1} / {:.1} ms",
                    l.p50, l.p95, l.p99, l.max
                )
            }),
        ),
        ("reservations made", r.reservations.map(|n| n.to_string())),
        ("stock consumed", r.stock_consumed.map(|n| n.to_string())),
        (
            "peak backlog (queue depth or consumer lag)",
            r.max_backlog.map(|n| format!("{n} messages")),
        ),
        ("drain time", r.drain_seconds.map(|s| format!("{s:.2} s"))),
        (
            "broker node back after",
            r.broker_recovery_seconds.map(|s| format!("{s:.1} s")),
        ),
        (
            "broker errors seen",
            r.broker_errors.as_ref().map(ToString::to_string),
        ),
        ("dead-lettered", r.dead_lettered.map(|n| n.to_string())),
        (
            "orders decided by inventory",
            r.decided.map(|n| n.to_string()),
        ),
        ("analytics counted", r.analytics.map(|a| a.to_string())),
        (
            "all processed after",
            r.processed_seconds.map(|s| {
                format!(
                    "{s:.2} s ({:.0} orders/s)",
                    r.processed_per_second.unwrap_or_default()
                )
            }),
        ),
        (
            "consumer lag at the end",
            r.lag_at_end.map(|n| n.to_string()),
        ),
        (
            "replay",
            r.replay.as_ref().map(|p| {
                format!(
                    "{} events in {:.3} s ({:.0}/s); totals identical: {}",
                    p.events, p.seconds, p.events_per_second, p.identical
                )
            }),
        ),
    ];
    let mut rows = rows;
    rows.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
    for (measure, value) in rows {
        figures.add_row([measure.to_owned(), value]);
    }
    for record in &report.chaos {
        let pods = match record.pods.as_slice() {
            [] => String::new(),
            pods => format!(" ({})", pods.join(", ")),
        };
        figures.add_row([
            format!("chaos {:?} {}{pods}", record.action, record.target),
            format!(
                "{} → {}",
                clock(record.started_at),
                record
                    .restored_at
                    .map_or_else(|| "not restored".to_owned(), clock)
            ),
        ]);
    }
    let mut checks = Table::new();
    checks
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["expectation", "held", "detail"]);
    for check in &r.checks {
        let held = if check.passed {
            Cell::new("yes").fg(Color::Green)
        } else {
            Cell::new("NO").fg(Color::Red)
        };
        checks.add_row(vec![Cell::new(&check.name), held, Cell::new(&check.detail)]);
    }
    let verdict = match report.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
    };
    println!("\n== lab {name}: {verdict}\n{figures}");
    if !r.checks.is_empty() {
        println!("{checks}");
    }
}

fn clock(t: jiff::Timestamp) -> String {
    t.strftime("%H:%M:%S%.3f UTC").to_string()
}

/// A lab's report as `--json` prints it: one line, `{"name": …, "report": …}`.
pub fn json_line(name: &str, report: &LabReport) -> serde_json::Result<String> {
    serde_json::to_string(&serde_json::json!({"name": name, "report": report}))
}
