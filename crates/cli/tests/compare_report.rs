//! `foodlab compare` on this machine with small numbers, and its report:
//! the table's three rows, figures consistent with each part's model,
//! report.json and the CSVs holding the series, and report.html drawn by
//! a real headless Chromium (a screenshot checked for the charts' colours).
//!
//! Chromium comes from `scripts/install-chromium.sh` (Debian's package);
//! `FOODLAB_CHROMIUM` names another binary.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const ORDERS: u64 = 12;

const COMPARISON: &str = "\
apiVersion: foodlab.dev/v1alpha1
kind: FoodLabComparison
metadata: {name: small-slow-inventory}
spec:
  workload: {orders: 12, concurrency: 4, items: [burger, pizza]}
  faults: {inventory: {delaySeconds: 0.5}}
  within: 120s
";

struct Run {
    dir: PathBuf,
    stdout: String,
    stderr: String,
}

/// `--json`: a line per part, each its report, and no table.
#[test]
fn compare_json_is_a_report_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("comparison.yaml");
    let one_part = COMPARISON
        .replace("small-slow-inventory", "json-on-sync-rest")
        .replace("spec:\n", "spec:\n  parts: [rest]\n")
        .replace("delaySeconds: 0.5", "delaySeconds: 0.01");
    std::fs::write(&file, one_part).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .args(["compare", "--json"])
        .arg(&file)
        .env_remove("FOODLAB_STOCK")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["name"], "sync-rest");
    assert_eq!(lines[0]["report"]["results"]["statusCodes"]["201"], ORDERS);
    assert_eq!(lines[0]["report"]["verdict"], "Pass");
}

/// The comparison the tests below read, run once per test run: once per
/// process under `cargo test` (its tests share the process), and once for
/// all the processes of a nextest run (a process per test): the first to
/// create the run's directory runs it, the others wait for its outcome.
fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let id = std::env::var("NEXTEST_RUN_ID")
            .unwrap_or_else(|_| format!("process-{}", std::process::id()));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("compare-report-{id}"));
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        match std::fs::create_dir(&dir) {
            Ok(()) => compare(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => wait_for_outcome(&dir),
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let (stdout, stderr) = (read("stdout"), read("stderr"));
        assert_eq!(read("status"), "0", "{stdout}\n{stderr}");
        Run {
            dir: dir.join("report"),
            stdout,
            stderr,
        }
    })
}

/// Runs the comparison, leaving its output in `dir`; `status` last.
fn compare(dir: &Path) {
    let file = dir.join("comparison.yaml");
    std::fs::write(&file, COMPARISON).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .arg("compare")
        .arg(&file)
        .arg("--report")
        .arg(dir.join("report"))
        .env_remove("FOODLAB_STOCK")
        .output()
        .unwrap();
    std::fs::write(dir.join("stdout"), &output.stdout).unwrap();
    std::fs::write(dir.join("stderr"), &output.stderr).unwrap();
    let status = output
        .status
        .code()
        .map_or_else(|| format!("{}", output.status), |code| code.to_string());
    // Written whole, then renamed: a waiting process never reads half of it.
    std::fs::write(dir.join("status.part"), status).unwrap();
    std::fs::rename(dir.join("status.part"), dir.join("status")).unwrap();
}

/// Waits (up to 20 minutes) for another process's comparison in `dir`.
fn wait_for_outcome(dir: &Path) {
    let waited = Instant::now();
    while !dir.join("status").exists() {
        assert!(
            waited.elapsed() < Duration::from_secs(20 * 60),
            "the comparison in {} never ended",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn report_json() -> Value {
    let text = std::fs::read_to_string(run().dir.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn lab<'a>(json: &'a Value, part: &str) -> &'a Value {
    json["labs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == part)
        .map(|l| &l["report"])
        .unwrap()
}

#[test]
fn the_table_has_a_row_per_part_and_the_delay_is_where_each_model_puts_it() {
    let run = run();
    for part in ["sync-rest", "async-rabbitmq", "streaming-kafka"] {
        let rows = run
            .stdout
            .lines()
            .filter(|l| l.starts_with(&format!("│ {part} ")))
            .count();
        assert_eq!(rows, 1, "{part}: {}", run.stdout);
    }
    let report = run.dir.join("report.html");
    assert!(
        run.stderr
            .contains(&format!("report: {}", report.display())),
        "{}",
        run.stderr
    );
    let json = report_json();
    let names: Vec<&str> = json["labs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sync-rest", "async-rabbitmq", "streaming-kafka"]);

    // sync-rest: every answer waited for inventory's 0.5 s.
    let sync = &lab(&json, "sync-rest")["results"];
    assert_eq!(sync["statusCodes"]["201"], ORDERS);
    assert_eq!(sync["reserved"], ORDERS);
    assert!(
        sync["latencyMs"]["p50"].as_f64().unwrap() >= 500.0,
        "{sync}"
    );
    assert!(sync.get("endToEndMs").is_none(), "{sync}");
    // The async parts accept before inventory is asked: the delay is end to end only.
    for part in ["async-rabbitmq", "streaming-kafka"] {
        let r = &lab(&json, part)["results"];
        assert_eq!(r["statusCodes"]["202"], ORDERS, "{part}");
        assert_eq!(r["reserved"], ORDERS, "{part}");
        assert_eq!(r["reservations"], ORDERS, "{part}");
        assert!(
            r["latencyMs"]["p99"].as_f64().unwrap() < 500.0,
            "{part}: {r}"
        );
        assert!(
            r["endToEndMs"]["p50"].as_f64().unwrap() >= 500.0,
            "{part}: {r}"
        );
        // The backlog drains after the workload: the drain lasts at least
        // until the slowest order settled (created no earlier than the first).
        let drain = r["drainSeconds"].as_f64().unwrap();
        let slowest = r["endToEndMs"]["max"].as_f64().unwrap() / 1000.0;
        let workload = r["workloadSeconds"].as_f64().unwrap();
        assert!(
            drain >= slowest - workload - 0.01,
            "{part}: drain {drain} s, slowest order {slowest} s, workload {workload} s"
        );
        // The lab's fault stays in place (and shaded) until the drain is over.
        let window = &lab(&json, part)["series"]["windows"][0];
        let until = window["toSeconds"].as_f64().unwrap();
        assert!(
            until >= workload + drain - 0.01,
            "{part}: fault window to {until} s, drained at {} s",
            workload + drain
        );
    }
    assert!(sync.get("drainSeconds").is_none(), "{sync}");
}

#[test]
fn report_json_and_the_csvs_hold_the_series() {
    let json = report_json();
    for part in ["sync-rest", "async-rabbitmq", "streaming-kafka"] {
        let series = &lab(&json, part)["series"];
        let answers: u64 = series["latency"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["answers"].as_u64().unwrap())
            .sum();
        assert_eq!(answers, ORDERS, "{part}");
        let histogram: u64 = series["latencyHistogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(histogram, ORDERS, "{part}");
        // The lab-wide fault is a window over the workload.
        let windows = series["windows"].as_array().unwrap();
        assert_eq!(windows.len(), 1, "{part}");
        assert_eq!(windows[0]["kind"], "fault");
        assert!(
            windows[0]["label"]
                .as_str()
                .unwrap()
                .contains("delay 500 ms")
        );

        let csv = read_csv(&run().dir.join(format!("{part}-latency.csv")));
        assert_eq!(
            &csv[0][..6],
            [
                "at_seconds",
                "answers",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "max_ms"
            ]
        );
        let code = if part == "sync-rest" {
            "status_201"
        } else {
            "status_202"
        };
        let column = csv[0].iter().position(|c| c == code).unwrap();
        let sum = |col: usize| -> u64 {
            csv[1..]
                .iter()
                .map(|r| r[col].parse::<u64>().unwrap())
                .sum()
        };
        assert_eq!(sum(1), ORDERS, "{part}");
        assert_eq!(sum(column), ORDERS, "{part}");
        let histogram = read_csv(&run().dir.join(format!("{part}-latency-histogram.csv")));
        assert_eq!(histogram[0], ["from_ms", "to_ms", "count"]);
        let counted: u64 = histogram[1..]
            .iter()
            .map(|r| r[2].parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted, ORDERS, "{part}");
    }
    for part in ["async-rabbitmq", "streaming-kafka"] {
        let series = &lab(&json, part)["series"];
        let e2e: u64 = series["endToEndHistogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(e2e, ORDERS, "{part}");
        let by_creation: u64 = series["endToEnd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["answers"].as_u64().unwrap())
            .sum();
        assert_eq!(by_creation, ORDERS, "{part}");
        let csv = read_csv(&run().dir.join(format!("{part}-end-to-end.csv")));
        assert_eq!(csv[0][..2], ["at_seconds", "orders"]);
        let orders: u64 = csv[1..].iter().map(|r| r[1].parse::<u64>().unwrap()).sum();
        assert_eq!(orders, ORDERS, "{part}");
        let backlog = read_csv(&run().dir.join(format!("{part}-backlog.csv")));
        assert_eq!(backlog[0], ["at_seconds", "backlog"]);
        assert!(backlog.len() > 1, "{part}: no backlog readings");
        assert_eq!(
            backlog.len() - 1,
            series["backlog"].as_array().unwrap().len()
        );
    }
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// Pixels of one colour in an RGBA or RGB screenshot.
fn pixels_of(png: &Path, colour: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::fs::File::open(png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    buffer[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p[..3] == colour)
        .count()
}

#[test]
fn chromium_draws_the_report_charts() {
    let report = run().dir.join("report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    // Self-contained: nothing to fetch.
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(
        !html.contains("<script src") && !html.contains("<link"),
        "{html}"
    );
    assert_eq!(html.matches("data-chart=\"latency\"").count(), 3);
    assert_eq!(html.matches("data-chart=\"end-to-end\"").count(), 2);
    let work = tempfile::tempdir().unwrap();
    let shot = work.path().join("report.png");
    let chromium = std::env::var("FOODLAB_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let output = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,2000")
        .arg(format!("file://{}", report.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {chromium} ({e}): scripts/install-chromium.sh installs it")
        });
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The charts' own colours are on the page: latency lines and dots
    // (p50 blue, p99 orange), the distributions' bars, the status code
    // lines; well beyond what the legends alone hold (about 30 pixels each).
    let blue = pixels_of(&shot, [31, 119, 180]);
    let orange = pixels_of(&shot, [255, 127, 14]);
    let bars = pixels_of(&shot, [148, 103, 189]);
    let green = pixels_of(&shot, [44, 160, 44]);
    eprintln!("chart pixels: p50 {blue}, p99 {orange}, bars {bars}, status {green}");
    assert!(orange > 100, "p99 line: {orange} pixels");
    assert!(blue > 250, "p50 line: {blue} pixels");
    assert!(bars > 10_000, "histogram bars: {bars} pixels");
    assert!(green > 1000, "status code line: {green} pixels");
}
