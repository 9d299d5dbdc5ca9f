//! The report of labs or of a comparison: a self-contained `report.html`
//! (charts drawn by plotters as SVG, inlined: nothing to fetch to view it),
//! `report.json` with every report and its series, and a CSV per series.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use foodlab_lab::series::{LabSeries, LatencyBin};
use foodlab_lab::stats::Bucket;
use foodlab_lab::{LabReport, Verdict};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

const SIZE: (u32, u32) = (560, 280);
const P50: RGBColor = RGBColor(31, 119, 180);
const P99: RGBColor = RGBColor(255, 127, 14);
const BACKLOG: RGBColor = RGBColor(44, 160, 44);
const BARS: RGBColor = RGBColor(148, 103, 189);
const WINDOW: RGBColor = RGBColor(214, 39, 40);
const CODES: [RGBColor; 5] = [
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// Writes `report.html`, `report.json` and the CSVs into `dir`; returns the
/// path of `report.html`.
pub fn write(dir: &Path, title: &str, labs: &[(String, LabReport)]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::json!({
        "title": title,
        "generatedAt": jiff::Timestamp::now().to_string(),
        "labs": labs.iter().map(|(name, report)| serde_json::json!({"name": name, "report": report})).collect::<Vec<_>>(),
    });
    let write_file = |name: &str, text: &str| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write_file("report.json", &serde_json::to_string_pretty(&json)?)?;
    for (name, report) in labs {
        for (series, text) in csvs(&report.series) {
            write_file(&format!("{}-{series}.csv", file_name(name)), &text)?;
        }
    }
    write_file("report.html", &html(title, labs)?)?;
    Ok(dir.join("report.html"))
}

fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Each series as CSV, by name.
pub fn csvs(series: &LabSeries) -> Vec<(&'static str, String)> {
    let mut codes: Vec<&String> = series
        .latency
        .iter()
        .flat_map(|bin| bin.status_codes.keys())
        .collect();
    codes.sort();
    codes.dedup();
    let mut latency = String::from("at_seconds,answers,p50_ms,p95_ms,p99_ms,max_ms");
    for code in &codes {
        let _ = write!(latency, ",status_{code}");
    }
    latency.push('\n');
    for bin in &series.latency {
        let _ = write!(
            latency,
            "{},{},{},{},{},{}",
            bin.at_seconds, bin.answers, bin.p50_ms, bin.p95_ms, bin.p99_ms, bin.max_ms
        );
        for code in &codes {
            let _ = write!(latency, ",{}", bin.status_codes.get(*code).unwrap_or(&0));
        }
        latency.push('\n');
    }
    let histogram = |buckets: &[Bucket]| {
        let mut text = String::from("from_ms,to_ms,count\n");
        for b in buckets {
            let _ = writeln!(text, "{},{},{}", b.from_ms, b.to_ms, b.count);
        }
        text
    };
    let mut end_to_end = String::from("at_seconds,orders,p50_ms,p95_ms,p99_ms,max_ms\n");
    for bin in &series.end_to_end {
        let _ = writeln!(
            end_to_end,
            "{},{},{},{},{},{}",
            bin.at_seconds, bin.answers, bin.p50_ms, bin.p95_ms, bin.p99_ms, bin.max_ms
        );
    }
    let mut out = vec![
        ("latency", latency),
        ("latency-histogram", histogram(&series.latency_histogram)),
    ];
    if !series.end_to_end.is_empty() {
        out.push(("end-to-end", end_to_end));
    }
    if let Some(buckets) = &series.end_to_end_histogram {
        out.push(("end-to-end-histogram", histogram(buckets)));
    }
    if !series.backlog.is_empty() {
        let mut text = String::from("at_seconds,backlog\n");
        for p in &series.backlog {
            let _ = writeln!(text, "{},{}", p.at_seconds, p.value);
        }
        out.push(("backlog", text));
    }
    let mut windows = String::from("kind,label,from_seconds,to_seconds\n");
    for w in &series.windows {
        let to = w.to_seconds.map(|t| t.to_string()).unwrap_or_default();
        let _ = writeln!(
            windows,
            "{},\"{}\",{},{to}",
            w.kind,
            w.label.replace('"', "\"\""),
            w.from_seconds
        );
    }
    out.push(("windows", windows));
    out
}

fn html(title: &str, labs: &[(String, LabReport)]) -> anyhow::Result<String> {
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>FoodLab {t}</title>\n<style>\
body{{font-family:sans-serif;margin:16px;color:#222;background:#fff}} table{{border-collapse:collapse;margin:8px 0}}\
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}} th{{background:#f3f3f3}}\
td:first-child{{text-align:left}} .charts{{display:grid;grid-template-columns:repeat(2,{w}px);gap:12px}}\
.chart svg{{display:block}} .pass{{color:#1a7f37}} .fail{{color:#c62828}} h2{{margin-top:28px}}</style></head><body>\n\
<h1>FoodLab {t}</h1>\n<p>Generated {at}. Shaded red: chaos and fault windows. Data: <code>report.json</code> and a CSV per series.</p>\n",
        t = escape(title),
        w = SIZE.0,
        at = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S UTC"),
    );
    page.push_str(&summary(labs));
    for (name, report) in labs {
        page.push_str(&section(name, report)?);
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

fn summary(labs: &[(String, LabReport)]) -> String {
    let mut table = String::from(
        "<table id=\"summary\"><tr><th>lab</th><th>verdict</th><th>accepted</th><th>succeeded</th><th>failed</th>\
<th>client p50/p95/p99 ms</th><th>end-to-end p50/p95/p99 ms</th><th>throughput /s</th><th>peak backlog</th>\
<th>drain s</th><th>lost</th><th>duplicated</th></tr>\n",
    );
    let dash = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    for (name, report) in labs {
        let r = &report.results;
        let _ = writeln!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} / {:.1} / {:.1}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            verdict(report.verdict),
            r.accepted,
            r.reserved,
            r.failed,
            r.latency_ms.p50,
            r.latency_ms.p95,
            r.latency_ms.p99,
            dash(
                r.end_to_end_ms
                    .as_ref()
                    .map(|l| format!("{:.1} / {:.1} / {:.1}", l.p50, l.p95, l.p99))
            ),
            r.throughput_per_second,
            dash(r.max_backlog.map(|n| n.to_string())),
            dash(r.drain_seconds.map(|s| format!("{s:.2}"))),
            dash(report.results.lost().map(|n| n.to_string())),
            dash(report.results.duplicated().map(|n| n.to_string())),
        );
    }
    table.push_str("</table>\n");
    table
}

fn verdict(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "<span class=\"pass\">PASS</span>",
        Verdict::Fail => "<span class=\"fail\">FAIL</span>",
    }
}

fn section(name: &str, report: &LabReport) -> anyhow::Result<String> {
    let series = &report.series;
    let mut out = format!(
        "<h2 id=\"lab-{id}\">{n} ({part}): {v}</h2>\n<div class=\"charts\">\n",
        id = file_name(name),
        n = escape(name),
        part = report.transport.part(),
        v = verdict(report.verdict)
    );
    let mut chart = |kind: &str, svg: String| {
        let _ = writeln!(
            out,
            "<div class=\"chart\" data-chart=\"{kind}\">{svg}</div>"
        );
    };
    chart(
        "latency",
        latency_chart(series, "client latency over time", &series.latency)?,
    );
    if !series.end_to_end.is_empty() {
        chart(
            "end-to-end",
            latency_chart(
                series,
                "end-to-end latency by order creation time",
                &series.end_to_end,
            )?,
        );
    }
    chart(
        "latency-distribution",
        histogram_chart("client latency distribution", &series.latency_histogram)?,
    );
    if let Some(buckets) = &series.end_to_end_histogram {
        chart(
            "end-to-end-distribution",
            histogram_chart("end-to-end latency distribution", buckets)?,
        );
    }
    chart("status-codes", status_chart(series)?);
    if !series.backlog.is_empty() {
        chart("backlog", backlog_chart(series)?);
    }
    out.push_str("</div>\n<table><tr><th>expectation</th><th>held</th><th>detail</th></tr>\n");
    for check in &report.results.checks {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            escape(&check.name),
            if check.passed {
                "<span class=\"pass\">yes</span>"
            } else {
                "<span class=\"fail\">NO</span>"
            },
            escape(&check.detail)
        );
    }
    out.push_str("</table>\n");
    Ok(out)
}

fn plot_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart failed: {error}")
}

/// The end of the time axis: the last bin, reading or window.
fn time_span(series: &LabSeries) -> f64 {
    let bins = series
        .latency
        .last()
        .map_or(0.0, |b| b.at_seconds + series.bin_seconds);
    let backlog = series.backlog.last().map_or(0.0, |p| p.at_seconds);
    let windows = series
        .windows
        .iter()
        .map(|w| w.to_seconds.unwrap_or(w.from_seconds))
        .fold(0.0, f64::max);
    bins.max(backlog).max(windows).max(1.0)
}

type TimeChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart over the run's time (seconds from the first order) up to `top`,
/// the chaos and fault windows shaded, what `draw` adds, and its legend.
fn time_chart(
    series: &LabSeries,
    caption: &str,
    y_desc: &str,
    top: f64,
    draw: impl FnOnce(&mut TimeChart<'_, '_>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let end = time_span(series);
        let top = top.max(1.0) * 1.1;
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..end, 0.0..top)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds from the first order")
            .y_desc(y_desc)
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(series.windows.iter().map(|w| {
                Rectangle::new(
                    [(w.from_seconds, 0.0), (w.to_seconds.unwrap_or(end), top)],
                    WINDOW.mix(0.15).filled(),
                )
            }))
            .map_err(plot_error)?;
        draw(&mut chart)?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// A labelled line with a dot at each point (a short run may have one point).
fn line(
    chart: &mut TimeChart<'_, '_>,
    label: &str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    dot: u32,
) -> anyhow::Result<()> {
    chart
        .draw_series(points.iter().map(|p| Circle::new(*p, dot, color.filled())))
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(points, color.stroke_width(2)))
        .map_err(plot_error)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    Ok(())
}

fn latency_chart(series: &LabSeries, caption: &str, bins: &[LatencyBin]) -> anyhow::Result<String> {
    let top = bins.iter().map(|b| b.p99_ms).fold(0.0, f64::max);
    let mid = series.bin_seconds / 2.0;
    let answered = || bins.iter().filter(|b| b.answers > 0);
    time_chart(series, caption, "ms", top, |chart| {
        // p50 over p99, with smaller dots: where they are equal both show.
        line(
            chart,
            "p99",
            P99,
            answered().map(|b| (b.at_seconds + mid, b.p99_ms)).collect(),
            4,
        )?;
        line(
            chart,
            "p50",
            P50,
            answered().map(|b| (b.at_seconds + mid, b.p50_ms)).collect(),
            2,
        )
    })
}

fn status_chart(series: &LabSeries) -> anyhow::Result<String> {
    let mut codes: Vec<&String> = series
        .latency
        .iter()
        .flat_map(|b| b.status_codes.keys())
        .collect();
    codes.sort();
    codes.dedup();
    let top = series.latency.iter().map(|b| b.answers).max().unwrap_or(0) as f64;
    let mid = series.bin_seconds / 2.0;
    let y_desc = format!("answers per {} s", series.bin_seconds);
    time_chart(
        series,
        "answers by status code over time",
        &y_desc,
        top,
        |chart| {
            for (i, code) in codes.iter().enumerate() {
                let points = series
                    .latency
                    .iter()
                    .map(|b| {
                        let n = b.status_codes.get(*code).copied().unwrap_or(0);
                        (b.at_seconds + mid, n as f64)
                    })
                    .collect();
                line(chart, code, CODES[i % CODES.len()], points, 3)?;
            }
            Ok(())
        },
    )
}

fn backlog_chart(series: &LabSeries) -> anyhow::Result<String> {
    let top = series.backlog.iter().map(|p| p.value).max().unwrap_or(0) as f64;
    let caption = "backlog (queue depth or consumer lag)";
    time_chart(series, caption, "messages", top, |chart| {
        let points = series
            .backlog
            .iter()
            .map(|p| (p.at_seconds, p.value as f64))
            .collect();
        line(chart, "backlog", BACKLOG, points, 3)
    })
}

fn histogram_chart(caption: &str, buckets: &[Bucket]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let low = buckets.first().map_or(0.1, |b| (b.to_ms / 1.2).max(0.05));
        let high = buckets
            .last()
            .map_or(1.0, |b| b.to_ms * 1.2)
            .max(low * 10.0);
        let top = buckets.iter().map(|b| b.count).max().unwrap_or(1) as f64 * 1.1;
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d((low..high).log_scale(), 0.0..top)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("ms (log scale)")
            .x_labels(5)
            .x_label_formatter(&|ms| format!("{ms:.0}"))
            .y_desc("orders")
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(buckets.iter().map(|b| {
                Rectangle::new(
                    [(b.from_ms.max(low), 0.0), (b.to_ms, b.count as f64)],
                    BARS.filled(),
                )
            }))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
