//! What CI systems read from `foodlab run`: `--json` is one JSON document
//! per lab per line, `--junit FILE` is JUnit XML; the exit status (0 pass,
//! 1 a failed verdict, 2 could not run, 130 interrupted); and a `foodlab run`
//! stopped by SIGTERM mid-lab releases its part (the faults are cleared).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> String {
    format!(
        "{}/../../manifests/examples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// sync-baseline with an expectation it cannot meet (every answer a 503).
fn failing_lab(dir: &Path) -> String {
    let text = std::fs::read_to_string(example("sync-baseline")).unwrap();
    let text = text
        .replace("name: sync-baseline", "name: sync-expects-503")
        .replace("responseStatus: 201", "responseStatus: 503");
    assert!(text.contains("responseStatus: 503"), "{text}");
    let path = dir.join("sync-expects-503.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A lab the schema reads but the engine refuses (a streaming-only
/// expectation on a rest lab).
fn invalid_lab(dir: &Path) -> String {
    let path = dir.join("rest-expects-lag.yaml");
    std::fs::write(
        &path,
        "apiVersion: foodlab.dev/v1alpha1\nkind: FoodLab\nmetadata: {name: rest-expects-lag}\n\
         spec:\n  transport: rest\n  workload: {orders: 5}\n  expect: {lagDrained: true}\n",
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn a_file_that_is_not_a_foodlab_exits_2_before_any_lab_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-lab.yaml");
    std::fs::write(&bad, "kind: FoodLab\nspec: [1, 2]\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .args(["run", "--json"])
        .arg(example("sync-baseline"))
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a FoodLab"), "{stderr}");
    assert!(output.stdout.is_empty(), "no lab ran");
}

#[test]
fn a_lab_that_cannot_run_is_a_json_line_the_batch_goes_on_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .args(["run", "--json"])
        .arg(invalid_lab(dir.path()))
        .arg(example("sync-baseline"))
        .env_remove("FOODLAB_STOCK")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let docs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{stdout}");
    assert_eq!(docs[0]["name"], "rest-expects-lag");
    let error = docs[0]["error"].as_str().unwrap();
    assert!(error.starts_with("invalid lab: "), "{error}");
    assert!(error.contains("lagDrained"), "{error}");
    assert_eq!(docs[1]["name"], "sync-baseline");
    assert_eq!(docs[1]["report"]["verdict"], "Pass");
}

#[test]
fn json_is_one_document_per_line_and_junit_has_a_suite_per_lab() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("labs.xml");
    let output = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .args(["run", "--json", "--reuse-part", "--junit"])
        .arg(&junit)
        .arg("--report")
        .arg(dir.path().join("report"))
        .arg(example("sync-baseline"))
        .arg(failing_lab(dir.path()))
        .env_remove("FOODLAB_STOCK")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let docs: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(docs[0]["name"], "sync-baseline");
    assert_eq!(docs[0]["report"]["verdict"], "Pass");
    assert_eq!(docs[0]["report"]["results"]["statusCodes"]["201"], 100);
    assert_eq!(docs[1]["name"], "sync-expects-503");
    assert_eq!(docs[1]["report"]["verdict"], "Fail");

    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    let names: Vec<&str> = suites
        .iter()
        .map(|s| s.attribute("name").unwrap())
        .collect();
    assert_eq!(names, ["sync-baseline", "sync-expects-503"]);
    let checks = |i: usize| {
        docs[i]["report"]["results"]["checks"]
            .as_array()
            .unwrap()
            .len()
    };
    for (i, suite) in suites.iter().enumerate() {
        let cases: Vec<_> = suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), checks(i), "{xml}");
        assert_eq!(suite.attribute("tests").unwrap(), checks(i).to_string());
    }
    assert_eq!(suites[0].attribute("failures"), Some("0"));
    // Exactly one expectation fails: the response status; its detail is the message.
    assert_eq!(suites[1].attribute("failures"), Some("1"));
    let failures: Vec<_> = suites[1]
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .collect();
    assert_eq!(failures.len(), 1, "{xml}");
    let failed_check = docs[1]["report"]["results"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["passed"] == false)
        .unwrap();
    assert_eq!(
        failures[0].attribute("message"),
        failed_check["detail"].as_str()
    );
    assert_eq!(root.attribute("failures"), Some("1"));

    // --report holds both labs, their series and verdicts.
    let report = dir.path().join("report");
    assert!(stderr.contains(&format!("report: {}", report.join("report.html").display())));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let labs = json["labs"].as_array().unwrap();
    assert_eq!(labs.len(), 2);
    assert_eq!(labs[1]["report"]["verdict"], "Fail");
    let answers: u64 = labs[0]["report"]["series"]["latency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["answers"].as_u64().unwrap())
        .sum();
    assert_eq!(answers, 100);
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        6,
        "two labs, three charts each"
    );
}

/// The `faults changed` lines of a service log, as (delay_ms) in order.
fn fault_delays(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("faults changed"))
        .map(|line| {
            let at = line.find("delay_ms").unwrap();
            line[at..]
                .split([',', ' ', '}'])
                .next()
                .unwrap()
                .trim_start_matches("delay_ms")
                .trim_start_matches(['=', ':', '"'])
                .to_owned()
        })
        .collect()
}

/// Waits (up to two minutes) until a service's log satisfies `ready`.
fn wait_for_log(path: &Path, never: &str, ready: impl Fn(&str) -> bool) {
    let waited = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if ready(&text) {
            return;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "{never}: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_mid_lab_releases_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // sync-delay: inventory answers 2 s late, 20 orders at concurrency 4 (about 10 s).
    let mut child = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .args(["run", "--reuse-part", "--data-dir"])
        .arg(&data)
        .args([example("sync-delay"), example("sync-baseline")])
        .env_remove("FOODLAB_STOCK")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = data.join("sync-rest/logs/inventory.log");
    // Mid-lab: the fault is on and inventory is deciding the lab's orders under it.
    wait_for_log(&log, "the lab never got its fault", |text| {
        fault_delays(text).last().is_some_and(|d| d == "2000")
    });
    wait_for_log(&log, "no order reached inventory under the fault", |text| {
        let lines: Vec<&str> = text.lines().collect();
        lines
            .iter()
            .rposition(|line| line.contains("faults changed"))
            .is_some_and(|fault| {
                fault_delays(lines[fault]) == ["2000"]
                    && lines[fault + 1..]
                        .iter()
                        .any(|line| line.contains("reservation decided"))
            })
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("lab sync-delay released"), "{stderr}");
    // The second lab never ran, and the first printed no report.
    assert!(!stdout.contains("== lab"), "{stdout}");
    let text = std::fs::read_to_string(&log).unwrap();
    let delays = fault_delays(&text);
    assert_eq!(delays.last().map(String::as_str), Some("0"), "{text}");
    assert!(delays.contains(&"2000".to_owned()), "{text}");
}
