//! The reconciler against a mocked API server (tower-test), one scenario
//! per test: each asserts the requests the operator makes, in order, and
//! their bodies. No cluster runs here; the Kubernetes API is the only mock.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use foodlab_lab::FoodLab;
use foodlab_operator::controller::{Context, FINALIZER, reconcile};
use foodlab_operator::rbac;
use http::{Request, Response};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const LABS: &str = "/apis/foodlab.dev/v1alpha1/namespaces/default/foodlabs/backlog-drain";
const SCALE: &str = "/apis/apps/v1/namespaces/default/deployments/inventory/scale";
const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const JOB: &str = "/apis/batch/v1/namespaces/default/jobs/backlog-drain-workload";

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn lab(status: Value) -> FoodLab {
    let mut lab: FoodLab = serde_json::from_value(json!({
        "apiVersion": "foodlab.dev/v1alpha1",
        "kind": "FoodLab",
        "metadata": {
            "name": "backlog-drain", "namespace": "default", "uid": "0b7e4c1e-1111-2222-3333-444455556666",
            "generation": 1, "finalizers": [FINALIZER]
        },
        "spec": {
            "transport": "rabbitmq",
            "workload": {"orders": 10, "ratePerSecond": 2},
            "chaos": [{"action": "ScaleToZero", "target": "inventory", "after": "5s", "duration": "60s"}],
            "expect": {"allOrdersReserved": true}
        }
    }))
    .unwrap();
    lab.status = serde_json::from_value(status).unwrap();
    lab
}

fn running() -> Value {
    json!({"phase": "Running", "startedAt": t(0)})
}

fn running_with(record: Value) -> Value {
    json!({"phase": "Running", "startedAt": t(0), "workloadJob": "backlog-drain-workload", "chaos": [record]})
}

fn scale_record(restored: Option<i64>) -> Value {
    let mut record = json!({
        "step": 0, "action": "ScaleToZero", "target": "inventory", "originalReplicas": 2, "disrupted": true,
        "startedAt": t(5), "restoreAt": t(65)
    });
    if let Some(at) = restored {
        record["restoredAt"] = json!(t(at));
    }
    record
}

fn context(client: Client, now: fn() -> Timestamp) -> Arc<Context> {
    let mut ctx = Context::new(client, None, "foodlab:dev".into(), "IfNotPresent".into());
    ctx.now = now;
    Arc::new(ctx)
}

/// Runs `reconcile` while `server` answers the requests; fails if the
/// reconcile makes a request the scenario does not expect.
async fn reconcile_with(
    lab: FoodLab,
    now: fn() -> Timestamp,
    server: impl AsyncFnOnce(&mut Handle),
) -> Result<Action, foodlab_operator::controller::Error> {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let reconciler = tokio::spawn(reconcile(Arc::new(lab), context(client, now)));
    tokio::time::timeout(Duration::from_secs(5), server(&mut handle))
        .await
        .expect("the scenario's requests did not all come");
    let result = tokio::time::timeout(Duration::from_secs(5), reconciler)
        .await
        .expect("reconcile did not finish")
        .unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await;
    assert!(
        extra.is_err() || extra.unwrap().is_none(),
        "an unexpected extra request was made"
    );
    result
}

/// A scenario whose reconcile succeeds.
async fn run(
    lab: FoodLab,
    now: fn() -> Timestamp,
    server: impl AsyncFnOnce(&mut Handle),
) -> Action {
    reconcile_with(lab, now, server).await.unwrap()
}

/// A scenario whose reconcile fails after its requests.
async fn run_failing(lab: FoodLab, now: fn() -> Timestamp, server: impl AsyncFnOnce(&mut Handle)) {
    let result = reconcile_with(lab, now, server).await;
    assert!(
        result.is_err(),
        "the reconcile should have failed: {result:?}"
    );
}

/// Takes the next request, checks its method and path, answers `reply`; returns the body.
async fn expect(handle: &mut Handle, method: &str, path: &str, status: u16, reply: Value) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method().as_str(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path);
    let (group, resource, verb) =
        rbac::needed(method, path, request.uri().query().unwrap_or("")).expect("an API request");
    assert!(
        rbac::permits(&group, &resource, &verb),
        "{method} {path} needs {verb} on {group}/{resource}, which rbac::RULES does not grant"
    );
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    body
}

fn scale(replicas: i32) -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
           "metadata": {"name": "inventory", "namespace": "default"},
           "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
}

fn job(status: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "backlog-drain-workload", "namespace": "default"},
           "spec": {"template": {"spec": {"containers": []}}}, "status": status})
}

fn not_found() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

fn echo(lab: &FoodLab) -> Value {
    serde_json::to_value(lab).unwrap()
}

#[tokio::test]
async fn the_finalizer_is_added_on_the_first_reconcile() {
    let mut fresh = lab(Value::Null);
    fresh.metadata.finalizers = None;
    let reply = echo(&lab(Value::Null));
    let action = run(
        fresh,
        || t(0),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", LABS, 200, reply).await;
            assert_eq!(
                patch[1],
                json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
            );
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn scale_to_zero_records_the_original_replicas_before_scaling_to_zero() {
    let current = lab(running());
    let reply = echo(&current);
    let action = run(
        current,
        || t(10),
        async move |h: &mut Handle| {
            expect(h, "GET", SCALE, 200, scale(2)).await;
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply.clone()).await;
            let record = &status["status"]["chaos"][0];
            assert_eq!(record["originalReplicas"], 2);
            assert_eq!(record["startedAt"], json!(t(10)));
            assert_eq!(record["restoreAt"], json!(t(70)));
            assert!(record.get("restoredAt").is_none());
            assert_eq!(record["disrupted"], false);
            let patch = expect(h, "PATCH", SCALE, 200, scale(0)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 0}}));
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply.clone()).await;
            assert_eq!(status["status"]["chaos"][0]["disrupted"], true);
            // Then the workload Job is created and named in status.
            expect(h, "GET", JOB, 404, not_found()).await;
            let created = expect(h, "POST", JOBS, 201, job(json!({}))).await;
            assert_eq!(created["metadata"]["ownerReferences"][0]["kind"], "FoodLab");
            assert_eq!(
                created["spec"]["template"]["spec"]["containers"][0]["command"],
                json!(["foodlab-operator", "lab-job"])
            );
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply).await;
            assert_eq!(status["status"]["workloadJob"], "backlog-drain-workload");
        },
    )
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn before_restore_at_nothing_changes() {
    let current = lab(running_with(scale_record(None)));
    let action = run(
        current,
        || t(60),
        async move |h: &mut Handle| {
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
    // Requeued for the restore time, five seconds away.
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn at_restore_at_the_scale_is_restored_and_recorded() {
    let current = lab(running_with(scale_record(None)));
    let reply = echo(&current);
    run(
        current,
        || t(65),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", SCALE, 200, scale(2)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 2}}));
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply).await;
            assert_eq!(status["status"]["chaos"][0]["restoredAt"], json!(t(65)));
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_freshly_started_operator_restores_a_half_done_record_and_finishes_the_lab() {
    // The operator was down across restoreAt: its first reconcile, long after.
    let current = lab(running_with(scale_record(None)));
    let reply = echo(&current);
    let report = json!({
        "results": {"accepted": 10, "reserved": 10, "failed": 0, "statusCodes": {"202": 10},
                    "latencyMs": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0},
                    "throughputPerSecond": 2.0, "workloadSeconds": 5.0,
                    "checks": [{"name": "allOrdersReserved", "passed": true, "detail": "10 of 10 accepted orders reserved"}]},
        "verdict": "Pass"
    });
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "backlog-drain-workload-x1"},
        "status": {"containerStatuses": [{"name": "workload", "image": "foodlab:dev", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 0, "message": report.to_string()}}}]}
    }]});
    let action = run(
        current,
        || t(4000),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", SCALE, 200, scale(2)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 2}}));
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply.clone()).await;
            assert_eq!(status["status"]["chaos"][0]["restoredAt"], json!(t(4000)));
            expect(h, "GET", JOB, 200, job(json!({"succeeded": 1}))).await;
            expect(h, "GET", "/api/v1/namespaces/default/pods", 200, pods).await;
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply).await;
            assert_eq!(status["status"]["phase"], "Succeeded");
            assert_eq!(status["status"]["verdict"], "Pass");
            assert_eq!(status["status"]["results"]["reserved"], 10);
            assert_eq!(status["status"]["conditions"][0]["reason"], "Passed");
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn deleting_a_lab_restores_first_then_removes_the_finalizer() {
    let mut current = lab(running_with(scale_record(None)));
    current.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(30)));
    let mut released = current.clone();
    released.metadata.finalizers = None;
    let reply = echo(&released);
    run(
        current,
        || t(30),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", SCALE, 200, scale(2)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 2}}));
            let removal = expect(h, "PATCH", LABS, 200, reply).await;
            assert_eq!(removal[1]["op"], "remove");
            assert_eq!(removal[1]["path"], "/metadata/finalizers/0");
        },
    )
    .await;
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_with_a_reason_and_no_retry() {
    let mut current = lab(Value::Null);
    current.spec.workload.orders = 0;
    current.spec.chaos[0].duration = None;
    let reply = echo(&current);
    let action = run(
        current.clone(),
        || t(0),
        async move |h: &mut Handle| {
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply).await;
            assert_eq!(status["status"]["phase"], "Failed");
            let condition = &status["status"]["conditions"][0];
            assert_eq!(condition["type"], "Ready");
            assert_eq!(condition["status"], "False");
            assert_eq!(condition["reason"], "InvalidSpec");
            let message = condition["message"].as_str().unwrap();
            assert!(
                message.contains("workload.orders must be at least 1"),
                "{message}"
            );
            assert!(
                message.contains("chaos[0]: ScaleToZero needs a duration"),
                "{message}"
            );
            assert_eq!(condition["observedGeneration"], 1);
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_spec_turned_invalid_mid_run_restores_before_failing() {
    let mut current = lab(running_with(scale_record(None)));
    current.spec.workload.orders = 0;
    let reply = echo(&current);
    let action = run(
        current,
        || t(30),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", SCALE, 200, scale(2)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 2}}));
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply).await;
            assert_eq!(status["status"]["chaos"][0]["restoredAt"], json!(t(30)));
            assert_eq!(status["status"]["conditions"][0]["reason"], "InvalidSpec");
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_workload_job_that_vanished_fails_the_lab_instead_of_running_twice() {
    let current = lab(running_with(scale_record(Some(65))));
    let reply = echo(&current);
    let action = run(
        current,
        || t(5000),
        async move |h: &mut Handle| {
            expect(h, "GET", JOB, 404, not_found()).await;
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply).await;
            assert_eq!(status["status"]["phase"], "Failed");
            assert_eq!(status["status"]["conditions"][0]["reason"], "WorkloadLost");
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_stale_copy_cannot_overwrite_newer_status() {
    // The status write carries the resourceVersion the reconcile started from,
    // so the API server refuses it if the object changed in between.
    let mut current = lab(running());
    current.metadata.resource_version = Some("41".into());
    run_failing(
        current,
        || t(10),
        async move |h: &mut Handle| {
            expect(h, "GET", SCALE, 200, scale(1)).await;
            let status = expect(
                h,
                "PATCH",
                &format!("{LABS}/status"),
                409,
                json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Conflict",
                    "code": 409, "message": "the object has been modified"
                }),
            )
            .await;
            assert_eq!(status["metadata"]["resourceVersion"], "41");
        },
    )
    .await;
}

#[tokio::test]
async fn a_recorded_disruption_that_failed_is_tried_again_with_the_recorded_replicas() {
    let mut record = scale_record(None);
    record["disrupted"] = json!(false);
    let current = lab(running_with(record));
    let reply = echo(&current);
    run(
        current,
        || t(20),
        async move |h: &mut Handle| {
            // No new record and no new reading of the replicas: the first one stands.
            let patch = expect(h, "PATCH", SCALE, 200, scale(0)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 0}}));
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply).await;
            let records = status["status"]["chaos"].as_array().unwrap();
            assert_eq!(records.len(), 1);
            assert_eq!(
                (&records[0]["disrupted"], &records[0]["originalReplicas"]),
                (&json!(true), &json!(2))
            );
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
}

#[tokio::test]
async fn pod_kill_records_then_deletes_the_targets_pods() {
    let mut current = lab(
        json!({"phase": "Running", "startedAt": t(0), "workloadJob": "backlog-drain-workload"}),
    );
    current.spec.chaos = serde_json::from_value(
        json!([{"action": "PodKill", "target": "inventory", "after": "5s"}]),
    )
    .unwrap();
    let reply = echo(&current);
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        {"metadata": {"name": "inventory-7d9f-abcde"}}
    ]});
    let pod =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "inventory-7d9f-abcde"}});
    run(
        current,
        || t(6),
        async move |h: &mut Handle| {
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply.clone()).await;
            let record = &status["status"]["chaos"][0];
            assert_eq!(
                (&record["action"], &record["disrupted"]),
                (&json!("PodKill"), &json!(false))
            );
            assert!(record.get("originalReplicas").is_none());
            let (list, send) = h.next_request().await.unwrap();
            assert_eq!(list.uri().path(), "/api/v1/namespaces/default/pods");
            assert!(
                list.uri()
                    .query()
                    .unwrap()
                    .contains("labelSelector=app.kubernetes.io%2Fname%3Dinventory"),
                "{}",
                list.uri()
            );
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&pods).unwrap()))
                    .unwrap(),
            );
            expect(
                h,
                "DELETE",
                "/api/v1/namespaces/default/pods/inventory-7d9f-abcde",
                200,
                pod,
            )
            .await;
            let status = expect(h, "PATCH", &format!("{LABS}/status"), 200, reply).await;
            assert_eq!(status["status"]["chaos"][0]["disrupted"], true);
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
}
