//! The workload Job's last write against a mocked API server (tower-test):
//! one merge patch of the run ConfigMap, as `foodlab-workload` (whose Role
//! may only get and patch ConfigMaps), carrying the summary the operator
//! copies to status and the full report `foodlab report` reads.

#![allow(clippy::unwrap_used)]

use foodlab_lab::results::{Check, LabResults};
use foodlab_lab::series::{LabSeries, LatencyBin, MAX_BINS};
use foodlab_lab::{LabReport, Transport, Verdict};
use foodlab_operator::rbac;
use foodlab_run_channel::JobReport;
use foodlab_run_channel::{channel, full_report};
use http::{Request, Response};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::client::Body;
use kube::{Api, Client};

const NAME: &str = "backlog-drain-run-0b7e4c1e";

fn report() -> LabReport {
    LabReport {
        transport: Transport::Rabbitmq,
        results: LabResults {
            accepted: 2000,
            reserved: 2000,
            checks: (0..100)
                .map(|i| Check {
                    name: format!("check {i}"),
                    passed: true,
                    detail: format!("{i} of 100"),
                })
                .collect(),
            ..LabResults::default()
        },
        chaos: Vec::new(),
        verdict: Verdict::Pass,
        elapsed_seconds: 30.5,
        series: LabSeries {
            bin_seconds: 0.5,
            latency: (0..MAX_BINS)
                .map(|i| LatencyBin {
                    at_seconds: i as f64 * 0.5,
                    answers: 8,
                    p50_ms: 1.5,
                    p95_ms: 3.0,
                    p99_ms: 4.5,
                    max_ms: 9.0,
                    status_codes: [("202".to_owned(), 8)].into(),
                })
                .collect(),
            ..LabSeries::default()
        },
        unreleased: Vec::new(),
    }
}

#[tokio::test]
async fn the_job_patches_summary_and_full_report_in_one_request() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api: Api<ConfigMap> = Api::namespaced(Client::new(service, "default"), "default");
    let report = report();
    let summary = serde_json::to_string(&JobReport {
        results: report.results.clone(),
        verdict: report.verdict,
    })
    .unwrap();
    let (full, _) = full_report::encode(&report).unwrap();
    let patch = full_report::patch(summary.clone(), Some(full));
    let write = tokio::spawn(async move { full_report::write(&api, NAME, &patch).await });

    let (request, send) = handle.next_request().await.unwrap();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    assert_eq!(
        (request.method().as_str(), path.as_str()),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/backlog-drain-run-0b7e4c1e"
        )
    );
    assert_eq!(
        request.headers()["content-type"],
        "application/merge-patch+json"
    );
    assert!(query.contains("fieldManager=foodlab-workload"), "{query}");
    // What the workload's Role grants, and what the operator may do too.
    let needed = rbac::needed("PATCH", &path, &query).unwrap();
    assert_eq!(
        (
            needed.group.as_str(),
            needed.resource.as_str(),
            needed.verb.as_str()
        ),
        ("", "configmaps", "patch")
    );
    assert!(rbac::permits(&needed));
    let body = request.into_body().collect_bytes().await.unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["binaryData", "data"]);
    let stored: ConfigMap = serde_json::from_value(sent).unwrap();
    let data = stored.data.clone().unwrap_or_default();
    assert_eq!(data.len(), 1);
    assert_eq!(data[channel::REPORT], summary);
    let back = full_report::read(&stored).unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&report).unwrap()
    );
    assert_eq!(back.series.latency.len(), MAX_BINS);
    assert_eq!(back.results.checks.len(), 100);
    send.send_response(
        Response::builder()
            .status(200)
            .body(Body::from(serde_json::to_vec(&stored).unwrap()))
            .unwrap(),
    );
    write.await.unwrap().unwrap();
}
