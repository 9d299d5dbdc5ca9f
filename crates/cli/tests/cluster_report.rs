//! `foodlab report NAME` against a stand-in Kubernetes API (plain HTTP on
//! 127.0.0.1, reached through a kubeconfig as on a cluster): the full report
//! the workload Job left in the lab's run ConfigMap becomes report.html with
//! the lab's charts, report.json and the CSVs; a missing lab, a lab without
//! a report yet and an unreadable report are errors that say so.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use foodlab_lab::results::{ChaosRecord, Check, LabResults, LatencySummary};
use foodlab_lab::series::{LabSeries, LatencyBin, Point, Window};
use foodlab_lab::spec::{ChaosAction, Service};
use foodlab_lab::stats::Bucket;
use foodlab_lab::{LabReport, Transport, Verdict};
use foodlab_run_channel::full_report;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;

const NAMESPACE: &str = "labs";

fn uid(n: u8) -> String {
    format!("{n}{n}{n}{n}{n}{n}{n}{n}-1111-2222-3333-444455556666")
}

/// An async-rabbitmq lab of 400 orders over 10 s, inventory down from 2 s to 5 s.
fn report() -> LabReport {
    let bins = (0..40)
        .map(|i| LatencyBin {
            at_seconds: f64::from(i) * 0.25,
            answers: 10,
            p50_ms: 2.0 + f64::from(i % 4),
            p95_ms: 6.0,
            p99_ms: 9.0 + f64::from(i % 3),
            max_ms: 12.0,
            status_codes: BTreeMap::from([("202".to_owned(), 10)]),
        })
        .collect::<Vec<_>>();
    let buckets = (0..20)
        .map(|i| Bucket {
            from_ms: f64::from(i),
            to_ms: f64::from(i + 1),
            count: 20,
        })
        .collect::<Vec<_>>();
    let at = |s: i64| jiff::Timestamp::from_second(1_780_000_000 + s).unwrap();
    LabReport {
        transport: Transport::Rabbitmq,
        results: LabResults {
            accepted: 400,
            reserved: 400,
            status_codes: BTreeMap::from([("202".to_owned(), 400)]),
            latency_ms: LatencySummary {
                p50: 3.0,
                p95: 6.0,
                p99: 10.0,
                max: 12.0,
            },
            max_backlog: Some(180),
            drain_seconds: Some(1.5),
            checks: vec![Check {
                name: "every accepted order settles".into(),
                passed: true,
                detail: "400 of 400".into(),
            }],
            ..LabResults::default()
        },
        chaos: vec![ChaosRecord {
            step: 0,
            action: ChaosAction::ScaleToZero,
            target: Service::Inventory.into(),
            disrupted: true,
            original_replicas: Some(1),
            pods: Vec::new(),
            started_at: at(2),
            restore_at: Some(at(5)),
            restored_at: Some(at(5)),
            error: None,
        }],
        verdict: Verdict::Pass,
        elapsed_seconds: 14.5,
        series: LabSeries {
            bin_seconds: 0.25,
            end_to_end: bins
                .iter()
                .map(|b| LatencyBin {
                    status_codes: BTreeMap::new(),
                    p50_ms: b.p50_ms * 10.0,
                    ..b.clone()
                })
                .collect(),
            latency: bins,
            latency_histogram: buckets.clone(),
            end_to_end_histogram: Some(buckets),
            backlog: (0..20u32)
                .map(|i| Point {
                    at_seconds: f64::from(i) * 0.5,
                    value: if (4..10).contains(&i) {
                        30 * u64::from(i)
                    } else {
                        0
                    },
                })
                .collect(),
            windows: vec![Window {
                kind: "chaos".into(),
                label: "ScaleToZero inventory".into(),
                from_seconds: 2.0,
                to_seconds: Some(5.0),
            }],
        },
        unreleased: Vec::new(),
    }
}

fn lab(name: &str, uid: &str, phase: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "foodlab.dev/v1alpha1", "kind": "FoodLab",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid},
        "spec": {"transport": "rabbitmq", "workload": {"orders": 400}},
        "status": {"phase": phase, "conditions": [{
            "type": "Ready", "status": "False", "reason": "WorkloadRunning", "message": "",
            "lastTransitionTime": "2026-12-01T08:00:00Z"
        }]}
    })
}

/// The run ConfigMap `<lab>-run-<uid8>`, owned by the lab of `owner_uid`.
fn run_config_map(
    lab: &str,
    uid8: &str,
    owner_uid: &str,
    full: Option<Vec<u8>>,
) -> serde_json::Value {
    // The summary comes with the full report; `Some(empty)`: the summary alone.
    let mut config_map = ConfigMap {
        data: full
            .as_ref()
            .map(|_| BTreeMap::from([("report".to_owned(), "{}".to_owned())])),
        ..ConfigMap::default()
    };
    config_map.metadata = ObjectMeta {
        name: Some(format!("{lab}-run-{uid8}")),
        namespace: Some(NAMESPACE.into()),
        owner_references: Some(vec![OwnerReference {
            api_version: "foodlab.dev/v1alpha1".into(),
            kind: "FoodLab".into(),
            name: lab.into(),
            uid: owner_uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..ObjectMeta::default()
    };
    config_map.binary_data = full
        .filter(|b| !b.is_empty())
        .map(|b| BTreeMap::from([(full_report::KEY.to_owned(), ByteString(b))]));
    let mut json = serde_json::to_value(&config_map).unwrap();
    json["apiVersion"] = "v1".into();
    json["kind"] = "ConfigMap".into();
    json
}

/// Serves GETs of these paths (404 for any other) until the test ends.
fn api_server(objects: BTreeMap<String, serde_json::Value>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = request_line.split(' ').nth(1).unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            let (status, body) = match objects.get(path) {
                Some(object) if request_line.starts_with("GET ") => ("200 OK", object.clone()),
                _ => (
                    "404 Not Found",
                    serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "NotFound", "code": 404,
                        "message": format!("{path} not found"),
                    }),
                ),
            };
            let body = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn kubeconfig(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\n\
clusters: [{{name: lab, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
users: [{{name: lab, user: {{}}}}]\n\
contexts: [{{name: lab, context: {{cluster: lab, user: lab, namespace: {NAMESPACE}}}}}]\n"
        ),
    )
    .unwrap();
    path
}

fn foodlab_report(dir: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .arg("report")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn foodlab_report_writes_the_labs_charts_from_its_run_config_map() {
    let report = report();
    let (full, halvings) = full_report::encode(&report).unwrap();
    assert_eq!(halvings, 0);
    let foodlabs = format!("/apis/foodlab.dev/v1alpha1/namespaces/{NAMESPACE}/foodlabs");
    let config_maps = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    let mut objects = BTreeMap::new();
    let mut add = |name: &str, n: u8, phase: &str, owner: u8, data: Option<Vec<u8>>| {
        objects.insert(format!("{foodlabs}/{name}"), lab(name, &uid(n), phase));
        let uid8 = uid(n)[..8].to_owned();
        objects.insert(
            format!("{config_maps}/{name}-run-{uid8}"),
            run_config_map(name, &uid8, &uid(owner), data),
        );
    };
    add("async-done", 1, "Succeeded", 1, Some(full.clone()));
    add("async-running", 2, "Running", 2, None);
    add(
        "async-garbage",
        3,
        "Succeeded",
        3,
        Some(b"not gzip".to_vec()),
    );
    // Recreated under the same name: the ConfigMap is the previous lab's.
    add("async-recreated", 4, "Running", 5, Some(full));
    add("async-summary-only", 6, "Succeeded", 6, Some(Vec::new()));
    // The Job failed before any report (the operator's condition says why).
    add("async-failed", 7, "Failed", 7, None);
    let port = api_server(objects);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), port);

    let out = dir.path().join("out");
    let output = foodlab_report(
        dir.path(),
        &kubeconfig,
        &[
            "async-done",
            "-n",
            NAMESPACE,
            "--report",
            out.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("report: {}", out.join("report.html").display())),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("== lab async-done: PASS"), "{stdout}");

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("async-done (async-rabbitmq)"), "{html}");
    for chart in [
        "latency",
        "end-to-end",
        "latency-distribution",
        "end-to-end-distribution",
        "status-codes",
        "backlog",
    ] {
        assert_eq!(
            html.matches(&format!("data-chart=\"{chart}\"")).count(),
            1,
            "{chart}"
        );
    }
    assert_eq!(html.matches("<svg").count(), 6);
    assert!(html.contains("every accepted order settles"));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["title"], "async-done");
    let labs = json["labs"].as_array().unwrap();
    assert_eq!(labs.len(), 1);
    assert_eq!(labs[0]["name"], "async-done");
    assert_eq!(labs[0]["report"], serde_json::to_value(&report).unwrap());

    let latency = std::fs::read_to_string(out.join("async-done-latency.csv")).unwrap();
    assert_eq!(latency.lines().count(), 1 + 40);
    let backlog = std::fs::read_to_string(out.join("async-done-backlog.csv")).unwrap();
    assert_eq!(backlog.lines().count(), 1 + 20);
    for csv in [
        "latency-histogram",
        "end-to-end",
        "end-to-end-histogram",
        "windows",
    ] {
        assert!(out.join(format!("async-done-{csv}.csv")).exists(), "{csv}");
    }

    // --json: the report as one line, as `run --json` prints a lab's.
    let output = foodlab_report(
        dir.path(),
        &kubeconfig,
        &[
            "async-done",
            "-n",
            NAMESPACE,
            "--json",
            "--report",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(line["name"], "async-done");
    assert_eq!(line["report"], serde_json::to_value(&report).unwrap());

    // The kube config's namespace, and the default directory.
    let output = foodlab_report(dir.path(), &kubeconfig, &["async-done"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        dir.path()
            .join(".foodlab/report/async-done/report.html")
            .exists()
    );

    let fails = |args: &[&str]| {
        let output = foodlab_report(dir.path(), &kubeconfig, args);
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let missing = fails(&["nope"]);
    assert!(
        missing.contains("error: no FoodLab nope in namespace labs"),
        "{missing}"
    );
    let elsewhere = fails(&["async-done", "-n", "other"]);
    assert!(
        elsewhere.contains("no FoodLab async-done in namespace other"),
        "{elsewhere}"
    );
    let running = fails(&["async-running"]);
    assert!(
        running.contains(
            "error: FoodLab async-running has no report yet: phase Running (WorkloadRunning)"
        ),
        "{running}"
    );
    let recreated = fails(&["async-recreated"]);
    assert!(
        recreated.contains("FoodLab async-recreated has no report yet"),
        "{recreated}"
    );
    let summary_only = fails(&["async-summary-only"]);
    assert!(
        summary_only.contains("error: FoodLab async-summary-only ended without a full report"),
        "{summary_only}"
    );
    let failed = fails(&["async-failed"]);
    assert!(
        failed.contains("error: FoodLab async-failed ended without a report: phase Failed"),
        "{failed}"
    );
    let garbage = fails(&["async-garbage"]);
    assert!(
        garbage.contains(
            "error: the report of FoodLab async-garbage (ConfigMap async-garbage-run-33333333) is unreadable: the report is not gzip data"
        ),
        "{garbage}"
    );
}
