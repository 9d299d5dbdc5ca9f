//! The reconciler against a mocked API server (tower-test), one scenario
//! per test: each asserts the requests the operator makes, in order, and
//! their bodies, and checks every one against the RBAC rules. The services'
//! admin APIs are a small HTTP stub that records what it is asked.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foodlab_lab::{FoodLab, Service};
use foodlab_operator::admin_tokens::AdminTokens;
use foodlab_operator::controller::{
    Context, FINALIZER, POLL, RESTORE_RETRY, backoff_until_restore, error_policy, reconcile,
};
use foodlab_operator::rbac;
use http::{Request, Response};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const UID: &str = "0b7e4c1e-1111-2222-3333-444455556666";
const LABS: &str = "/apis/foodlab.dev/v1alpha1/namespaces/default/foodlabs";
const LAB: &str = "/apis/foodlab.dev/v1alpha1/namespaces/default/foodlabs/backlog-drain";
const STATUS: &str = "/apis/foodlab.dev/v1alpha1/namespaces/default/foodlabs/backlog-drain/status";
const SCALES: &str = "/apis/apps/v1/namespaces/default/deployments";
const SCALE: &str = "/apis/apps/v1/namespaces/default/deployments/inventory/scale";
const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const SERVICE_ACCOUNTS: &str = "/api/v1/namespaces/default/serviceaccounts";
const ROLES: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles";
const ROLE_BINDINGS: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings";
const JOB: &str = "/apis/batch/v1/namespaces/default/jobs/backlog-drain-workload-0b7e4c1e";
const CMS: &str = "/api/v1/namespaces/default/configmaps";
const CM: &str = "/api/v1/namespaces/default/configmaps/backlog-drain-run-0b7e4c1e";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases/foodlab-part";
const BROKER: &str = "/apis/apps/v1/namespaces/default/statefulsets/rabbitmq";

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn lab(status: Value) -> FoodLab {
    let mut lab: FoodLab = serde_json::from_value(json!({
        "apiVersion": "foodlab.dev/v1alpha1",
        "kind": "FoodLab",
        "metadata": {
            "name": "backlog-drain", "namespace": "default", "uid": UID,
            "generation": 1, "finalizers": [FINALIZER]
        },
        "spec": {
            "transport": "rabbitmq",
            "workload": {"orders": 10, "ratePerSecond": 2},
            "settings": {"stock": "burger=100000", "dependencyTimeout": "3s"},
            "faults": {"notification": {"delaySeconds": 0.5}},
            "chaos": [{"action": "ScaleToZero", "target": "inventory", "after": "5s", "duration": "60s"}],
            "expect": {"allOrdersReserved": true, "within": "300s"}
        }
    }))
    .unwrap();
    lab.status = serde_json::from_value(status).unwrap();
    lab
}

/// Claimed at t(-20), the workload's first order at t(0).
fn running() -> Value {
    json!({"phase": "Running", "startedAt": t(-20), "workloadStartedAt": t(0),
           "workloadJob": "backlog-drain-workload-0b7e4c1e"})
}

fn running_with(record: Value) -> Value {
    let mut status = running();
    status["chaos"] = json!([record]);
    status
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

/// The labs' namespace's admin token, which the stub services ask for; the
/// operator holds another namespace's too.
const TOKEN: &str = "token-of-default";

/// What the services' admin APIs were asked: `service PUT path body`; a call
/// without `TOKEN` is recorded as `refused: ...`.
#[derive(Clone, Default)]
struct Admin(Arc<Mutex<Vec<String>>>);

impl Admin {
    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

async fn admin_stub() -> (Admin, BTreeMap<Service, String>) {
    use axum::extract::{Path, State};
    let admin = Admin::default();
    let router = axum::Router::new()
        .route(
            "/{service}/admin/{what}",
            axum::routing::put(
                |State(admin): State<Admin>,
                 Path((service, what)): Path<(String, String)>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    let token = headers.get("authorization").and_then(|v| v.to_str().ok());
                    let call = format!("{service} PUT /admin/{what} {body}");
                    let call = if token == Some(&format!("Bearer {TOKEN}")) {
                        call
                    } else {
                        format!("refused ({token:?}): {call}")
                    };
                    admin.0.lock().unwrap().push(call);
                    body
                },
            ),
        )
        .with_state(admin.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let endpoints = Service::ALL
        .into_iter()
        .map(|s| (s, format!("{base}/{}", s.name())))
        .collect();
    (admin, endpoints)
}

const CLEAR: &str = r#"{"delay_ms":0,"fail_rate":0.0,"fail_status":500}"#;
const NOTIFICATION_DELAY: &str = r#"{"delay_ms":500,"fail_rate":0.0,"fail_status":500}"#;

/// The lab's faults on every service of the part, as each running reconcile applies them.
fn kept_faults() -> Vec<String> {
    vec![
        format!("order PUT /admin/faults {CLEAR}"),
        format!("inventory PUT /admin/faults {CLEAR}"),
        format!("notification PUT /admin/faults {NOTIFICATION_DELAY}"),
    ]
}

fn cleared_faults() -> Vec<String> {
    ["inventory", "notification", "order"]
        .iter()
        .map(|s| format!("{s} PUT /admin/faults {CLEAR}"))
        .collect()
}

fn context(
    client: Client,
    now: fn() -> Timestamp,
    endpoints: BTreeMap<Service, String>,
) -> Arc<Context> {
    let faults = AdminTokens::new(
        &json!({"default": TOKEN, "elsewhere": "token-of-elsewhere"}).to_string(),
        "token-of-the-operators-namespace",
    )
    .unwrap();
    let mut ctx = Context::new(
        client,
        None,
        "foodlab:dev".into(),
        "IfNotPresent".into(),
        faults,
    );
    ctx.now = now;
    ctx.endpoints = Some(endpoints);
    Arc::new(ctx)
}

/// Runs `reconcile` while `server` answers the requests; fails if the
/// reconcile makes a request the scenario does not expect. Returns the
/// result and what the services' admin APIs were asked.
async fn reconcile_with(
    lab: FoodLab,
    now: fn() -> Timestamp,
    server: impl AsyncFnOnce(&mut Handle),
) -> (
    Result<Action, foodlab_operator::controller::Error>,
    Vec<String>,
) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (admin, endpoints) = admin_stub().await;
    let reconciler = tokio::spawn(reconcile(Arc::new(lab), context(client, now, endpoints)));
    tokio::time::timeout(Duration::from_secs(10), server(&mut handle))
        .await
        .expect("the scenario's requests did not all come");
    let result = tokio::time::timeout(Duration::from_secs(10), reconciler)
        .await
        .expect("reconcile did not finish")
        .unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await;
    assert!(
        extra.is_err() || extra.unwrap().is_none(),
        "an unexpected extra request was made"
    );
    (result, admin.calls())
}

/// A scenario whose reconcile succeeds.
async fn run(
    lab: FoodLab,
    now: fn() -> Timestamp,
    server: impl AsyncFnOnce(&mut Handle),
) -> (Action, Vec<String>) {
    let (result, calls) = reconcile_with(lab, now, server).await;
    (result.unwrap(), calls)
}

/// Takes the next request, checks its method and path, answers `reply`; returns the body.
async fn expect(handle: &mut Handle, method: &str, path: &str, status: u16, reply: Value) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(
        (request.method().as_str(), request.uri().path()),
        (method, path),
        "{}",
        request.uri()
    );
    let needed =
        rbac::needed(method, path, request.uri().query().unwrap_or("")).expect("an API request");
    assert!(
        rbac::permits(&needed),
        "{method} {path} needs {needed:?}, which rbac::RULES does not grant"
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

fn scale(name: &str, replicas: i32) -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
}

fn owner(uid: &str) -> Value {
    json!([{"apiVersion": "foodlab.dev/v1alpha1", "kind": "FoodLab", "name": "backlog-drain",
            "uid": uid, "controller": true}])
}

fn job(status: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "backlog-drain-workload-0b7e4c1e", "namespace": "default", "ownerReferences": owner(UID)},
           "spec": {"template": {"spec": {"containers": []}}}, "status": status})
}

fn config_map(data: Value) -> Value {
    config_map_of(UID, data)
}

fn config_map_of(uid: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "backlog-drain-run-0b7e4c1e", "namespace": "default", "ownerReferences": owner(uid)},
           "data": data})
}

fn started_channel() -> Value {
    config_map(json!({"workloadStartedAt": t(0).to_string()}))
}

/// `channel` holding the chaos records `lab`'s status has (the operator
/// wrote them there before): nothing to bring up to date.
fn told(mut channel: Value, lab: &FoodLab) -> Value {
    let records = &lab.status.as_ref().unwrap().chaos;
    channel["data"]["chaos"] = json!(foodlab_run_channel::channel::chaos_json(records));
    channel
}

/// `lab` being deleted at t(30), and the API's answer to its finalizer's removal.
fn deleted(mut lab: FoodLab) -> (FoodLab, Value) {
    lab.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(30)));
    let mut released = lab.clone();
    released.metadata.finalizers = None;
    (lab, echo(&released))
}

fn lease(holder: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "foodlab-part", "namespace": "default", "resourceVersion": "7", "uid": "lease-uid"},
           "spec": {"holderIdentity": holder}})
}

fn me() -> String {
    format!("backlog-drain/{UID}")
}

fn not_found() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

fn already_exists() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "already exists"})
}

fn echo(lab: &FoodLab) -> Value {
    serde_json::to_value(lab).unwrap()
}

fn report(checks: usize) -> Value {
    let checks: Vec<Value> = (0..checks)
        .map(|i| json!({"name": format!("check{i}"), "passed": true, "detail": format!("check {i} held, as the lab said it would, with room to spare")}))
        .collect();
    json!({
        "results": {"accepted": 10, "reserved": 10, "failed": 0, "statusCodes": {"202": 10},
                    "latencyMs": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0},
                    "throughputPerSecond": 2.0, "workloadSeconds": 5.0, "drainSeconds": 1.5,
                    "checks": checks},
        "verdict": "Pass"
    })
}

/// The release of a lab that holds its part: the Lease read, then deleted.
async fn expect_part_given_back(h: &mut Handle) {
    expect(h, "GET", LEASE, 200, lease(&me())).await;
    let delete = expect(h, "DELETE", LEASE, 200, lease(&me())).await;
    assert_eq!(delete["preconditions"]["resourceVersion"], "7");
}

#[tokio::test]
async fn the_finalizer_is_added_on_the_first_reconcile() {
    let mut fresh = lab(Value::Null);
    fresh.metadata.finalizers = None;
    let reply = echo(&lab(Value::Null));
    let (action, calls) = run(
        fresh,
        || t(0),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", LAB, 200, reply).await;
            assert_eq!(
                patch[1],
                json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
            );
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
    assert!(calls.is_empty());
}

#[tokio::test]
async fn a_lab_whose_part_is_not_installed_fails_at_once_saying_so() {
    let current = lab(Value::Null);
    let reply = echo(&current);
    let (action, calls) = run(current, || t(0), async move |h: &mut Handle| {
        expect(h, "GET", &format!("{SCALES}/inventory/scale"), 404, not_found()).await;
        expect(h, "GET", &format!("{SCALES}/notification/scale"), 404, not_found()).await;
        expect(h, "GET", &format!("{SCALES}/order/scale"), 200, scale("order", 1)).await;
        let status = expect(h, "PATCH", STATUS, 200, reply).await;
        assert_eq!(status["status"]["phase"], "Failed");
        let condition = &status["status"]["conditions"][0];
        assert_eq!(condition["reason"], "PartNotInstalled");
        assert_eq!(
            condition["message"],
            "the async-rabbitmq part is not installed in namespace default: no Deployment \
             inventory, notification (install it with `helm upgrade --install async-rabbitmq charts/async-rabbitmq`)"
        );
    })
    .await;
    assert_eq!(action, Action::await_change());
    assert!(calls.is_empty(), "nothing touched: {calls:?}");
}

async fn expect_part_installed(h: &mut Handle) {
    expect_services_installed(h).await;
    expect(h, "GET", BROKER, 200, broker(1)).await;
}

async fn expect_services_installed(h: &mut Handle) {
    for service in ["inventory", "notification", "order"] {
        expect(
            h,
            "GET",
            &format!("{SCALES}/{service}/scale"),
            200,
            scale(service, 1),
        )
        .await;
    }
}

/// The async-rabbitmq part's broker, installed with `rabbitmq.nodes=nodes`.
fn broker(nodes: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "rabbitmq", "namespace": "default"},
           "spec": {"replicas": nodes, "serviceName": "rabbitmq-headless",
                    "selector": {"matchLabels": {"app.kubernetes.io/name": "rabbitmq"}},
                    "template": {}}})
}

#[tokio::test]
async fn a_lab_whose_broker_nodes_differ_from_the_installed_broker_fails_at_once_saying_so() {
    let mut current = lab(Value::Null);
    current.spec = serde_json::from_value({
        let mut spec = serde_json::to_value(&current.spec).unwrap();
        spec["broker"] = json!({"nodes": 3});
        spec
    })
    .unwrap();
    let reply = echo(&current);
    let (action, calls) = run(
        current,
        || t(0),
        async move |h: &mut Handle| {
            expect_services_installed(h).await;
            expect(h, "GET", BROKER, 200, broker(1)).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Failed");
            let condition = &status["status"]["conditions"][0];
            assert_eq!(condition["reason"], "BrokerNodesDiffer");
            assert_eq!(
                condition["message"],
                "spec.broker.nodes: 3, but StatefulSet rabbitmq runs 1 node \
             (install async-rabbitmq with --set rabbitmq.nodes=3)"
            );
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
    assert!(calls.is_empty(), "nothing touched: {calls:?}");
}

#[tokio::test]
async fn a_lab_claims_a_free_part_with_a_lease_then_runs() {
    let current = lab(Value::Null);
    let reply = echo(&current);
    let (action, _) = run(
        current,
        || t(0),
        async move |h: &mut Handle| {
            expect_part_installed(h).await;
            expect(h, "GET", LEASE, 404, not_found()).await;
            let created = expect(h, "POST", LEASES, 201, lease(&me())).await;
            assert_eq!(created["spec"]["holderIdentity"], me());
            assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], UID);
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Running");
            assert_eq!(status["status"]["startedAt"], json!(t(0)));
            assert!(status["status"].get("workloadStartedAt").is_none());
        },
    )
    .await;
    assert_eq!(action, Action::requeue(Duration::ZERO));
}

#[tokio::test]
async fn a_second_lab_for_a_busy_part_waits_queued_with_the_reason() {
    let current = lab(Value::Null);
    let reply = echo(&current);
    let holder = lab(running());
    let mut holder = echo(&holder);
    holder["metadata"]["name"] = json!("sync-failure");
    holder["metadata"]["uid"] = json!("aaaa");
    let (action, calls) = run(current, || t(0), async move |h: &mut Handle| {
        expect_part_installed(h).await;
        expect(h, "GET", LEASE, 200, lease("sync-failure/aaaa")).await;
        expect(h, "GET", &format!("{LABS}/sync-failure"), 200, holder).await;
        let status = expect(h, "PATCH", STATUS, 200, reply).await;
        assert_eq!(status["status"]["phase"], "Queued");
        let condition = &status["status"]["conditions"][0];
        assert_eq!(condition["reason"], "Queued");
        assert_eq!(
            condition["message"],
            "waiting for lab sync-failure/aaaa to finish: one lab at a time runs on the part in namespace default"
        );
        assert!(status["status"].get("startedAt").is_none());
    })
    .await;
    assert_eq!(action, Action::requeue(POLL));
    assert!(calls.is_empty(), "a queued lab touches nothing: {calls:?}");
}

#[tokio::test]
async fn a_queued_lab_takes_over_the_part_when_its_holder_has_finished() {
    let mut current = lab(json!({"phase": "Queued"}));
    current.status.as_mut().unwrap().phase = Some(foodlab_lab::spec::Phase::Queued);
    let reply = echo(&current);
    let mut holder = echo(&lab(json!({"phase": "Succeeded"})));
    holder["metadata"]["name"] = json!("sync-failure");
    holder["metadata"]["uid"] = json!("aaaa");
    run(
        current,
        || t(0),
        async move |h: &mut Handle| {
            expect_part_installed(h).await;
            expect(h, "GET", LEASE, 200, lease("sync-failure/aaaa")).await;
            expect(h, "GET", &format!("{LABS}/sync-failure"), 200, holder).await;
            let replaced = expect(h, "PUT", LEASE, 200, lease(&me())).await;
            assert_eq!(replaced["spec"]["holderIdentity"], me());
            assert_eq!(replaced["metadata"]["resourceVersion"], "7");
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Running");
        },
    )
    .await;
}

#[tokio::test]
async fn the_job_is_created_after_its_run_config_map_and_carries_the_settings_and_a_deadline() {
    let mut status = running();
    status["workloadJob"] = Value::Null;
    status["workloadStartedAt"] = Value::Null;
    let current = lab(status);
    let reply = echo(&current);
    let (action, calls) = run(
        current,
        || t(-19),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 404, not_found()).await;
            expect(h, "GET", JOB, 404, not_found()).await;
            let created = expect(h, "POST", CMS, 201, config_map(json!({}))).await;
            assert_eq!(created["metadata"]["name"], "backlog-drain-run-0b7e4c1e");
            assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], UID);
            let account = expect(h, "POST", SERVICE_ACCOUNTS, 201, json!({})).await;
            assert_eq!(account["metadata"]["name"], "backlog-drain-workload-0b7e4c1e");
            assert_eq!(account["metadata"]["ownerReferences"][0]["uid"], UID);
            let role = expect(h, "POST", ROLES, 201, json!({})).await;
            assert_eq!(role["metadata"]["name"], "backlog-drain-workload-0b7e4c1e");
            assert_eq!(role["metadata"]["ownerReferences"][0]["uid"], UID);
            assert_eq!(
                role["rules"],
                json!([
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "resourceNames": ["backlog-drain-run-0b7e4c1e"],
                        "verbs": ["get", "patch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list"],
                    },
                ])
            );
            // Made before, by a reconcile whose Job create failed: taken as it is.
            let binding = expect(h, "POST", ROLE_BINDINGS, 409, already_exists()).await;
            assert_eq!(binding["roleRef"]["name"], "backlog-drain-workload-0b7e4c1e");
            assert_eq!(
                binding["subjects"],
                json!([{"kind": "ServiceAccount", "name": "backlog-drain-workload-0b7e4c1e", "namespace": "default"}])
            );
            let job = expect(h, "POST", JOBS, 201, job(json!({}))).await;
            assert_eq!(job["metadata"]["name"], "backlog-drain-workload-0b7e4c1e");
            assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], UID);
            // within 300 s + the engine's 180 s + 120 s to start the pod.
            assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
            let pod = &job["spec"]["template"]["spec"];
            assert_eq!(pod["serviceAccountName"], "backlog-drain-workload-0b7e4c1e");
            let env = &pod["containers"][0]["env"];
            let spec: Value = serde_json::from_str(env[0]["value"].as_str().unwrap()).unwrap();
            assert_eq!(
                spec["settings"],
                json!({"stock": "burger=100000", "dependencyTimeout": "3s"})
            );
            assert_eq!(spec["chaos"][0]["action"], "ScaleToZero");
            assert_eq!(
                env[2],
                json!({"name": "FOODLAB_RUN_CONFIGMAP", "value": "backlog-drain-run-0b7e4c1e"})
            );
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(
                status["status"]["workloadJob"],
                "backlog-drain-workload-0b7e4c1e"
            );
        },
    )
    .await;
    assert_eq!(action, Action::requeue(POLL));
    assert_eq!(calls, kept_faults());
}

#[tokio::test]
async fn chaos_waits_for_the_workloads_first_order_and_counts_after_from_it() {
    let mut status = running();
    status["workloadStartedAt"] = Value::Null;
    let current = lab(status);
    let reply = echo(&current);
    // 30 s after the claim, but 3 s after the first order: ScaleToZero (after 5s) is not due.
    let (action, _) = run(
        current.clone(),
        || t(3),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, started_channel()).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["workloadStartedAt"], json!(t(0)));
            assert!(status["status"].get("chaos").is_none());
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    // Before the Job has placed its first order, no chaos at all, however long ago the claim was.
    let (action, _) = run(
        current,
        || t(3),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, config_map(json!({}))).await;
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
    assert_eq!(action, Action::requeue(POLL));
}

#[tokio::test]
async fn scale_to_zero_records_the_original_replicas_before_scaling_to_zero() {
    let current = lab(running());
    let reply = echo(&current);
    let (action, calls) = run(
        current,
        || t(10),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, started_channel()).await;
            expect(h, "GET", SCALE, 200, scale("inventory", 2)).await;
            let status = expect(h, "PATCH", STATUS, 200, reply.clone()).await;
            let record = &status["status"]["chaos"][0];
            assert_eq!(record["originalReplicas"], 2);
            assert_eq!(record["startedAt"], json!(t(10)));
            assert_eq!(record["restoreAt"], json!(t(70)));
            assert!(record.get("restoredAt").is_none());
            assert_eq!(record["disrupted"], false);
            let patch = expect(h, "PATCH", SCALE, 200, scale("inventory", 0)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 0}}));
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["chaos"][0]["disrupted"], true);
            let channel = expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            let records: Value =
                serde_json::from_str(channel["data"]["chaos"].as_str().unwrap()).unwrap();
            assert_eq!(records[0]["disrupted"], true);
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    // Inventory is being disrupted: its faults are left alone.
    assert_eq!(calls, [kept_faults()[0].clone(), kept_faults()[2].clone()]);
}

#[tokio::test]
async fn before_restore_at_nothing_changes() {
    let current = lab(running_with(scale_record(None)));
    let channel = told(started_channel(), &current);
    let (action, _) = run(
        current,
        || t(60),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, channel).await;
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
    // Requeued for the restore time, five seconds away.
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn at_restore_at_the_scale_is_restored_recorded_and_passed_to_the_job() {
    let current = lab(running_with(scale_record(None)));
    let reply = echo(&current);
    run(
        current,
        || t(65),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, started_channel()).await;
            let patch = expect(h, "PATCH", SCALE, 200, scale("inventory", 2)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 2}}));
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["chaos"][0]["restoredAt"], json!(t(65)));
            let channel = expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            let records: Value =
                serde_json::from_str(channel["data"]["chaos"].as_str().unwrap()).unwrap();
            assert_eq!(records[0]["restoredAt"], json!(t(65)));
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_freshly_started_operator_restores_finishes_clears_the_faults_and_gives_the_part_back() {
    // The operator was down across restoreAt: its first reconcile, long after.
    let current = lab(running_with(scale_record(None)));
    let reply = echo(&current);
    let (action, calls) = run(
        current,
        || t(4000),
        async move |h: &mut Handle| {
            let mut data = json!({"workloadStartedAt": t(0).to_string()});
            data["report"] = json!(report(1).to_string());
            expect(h, "GET", CM, 200, config_map(data)).await;
            expect(h, "PATCH", SCALE, 200, scale("inventory", 2)).await;
            let status = expect(h, "PATCH", STATUS, 200, reply.clone()).await;
            assert_eq!(status["status"]["chaos"][0]["restoredAt"], json!(t(4000)));
            expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            expect(h, "GET", JOB, 200, job(json!({"succeeded": 1}))).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Succeeded");
            assert_eq!(status["status"]["verdict"], "Pass");
            assert_eq!(status["status"]["results"]["reserved"], 10);
            assert_eq!(status["status"]["results"]["drainSeconds"], 1.5);
            assert_eq!(status["status"]["conditions"][0]["reason"], "Passed");
            expect_part_given_back(h).await;
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
    // Faults kept while running, then every fault of the part cleared at the end.
    let mut expected = kept_faults();
    expected.extend(cleared_faults());
    assert_eq!(calls, expected);
}

#[tokio::test]
async fn a_large_report_with_many_checks_and_a_long_chaos_list_comes_back_in_full() {
    let mut current = lab(running());
    let steps: Vec<Value> = (0..40)
        .map(|i| {
            json!({"action": "Delay", "target": "inventory", "after": format!("{}s", i * 10),
                        "duration": "5s", "delaySeconds": 0.1})
        })
        .collect();
    current.spec.chaos = serde_json::from_value(json!(steps)).unwrap();
    let records: Vec<Value> = (0..40)
        .map(|i| json!({"step": i, "action": "Delay", "target": "inventory", "disrupted": true,
                        "startedAt": t(i * 10), "restoreAt": t(i * 10 + 5), "restoredAt": t(i * 10 + 5)}))
        .collect();
    current.status.as_mut().unwrap().chaos = serde_json::from_value(json!(records)).unwrap();
    let reply = echo(&current);
    let channel = told(
        config_map(
            json!({"workloadStartedAt": t(0).to_string(), "report": report(300).to_string()}),
        ),
        &current,
    );
    let big = report(300);
    let size = big.to_string().len();
    assert!(
        size > 4 * 4096,
        "the report is {size} bytes, well past a termination message"
    );
    run(
        current,
        || t(1000),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, channel).await;
            expect(h, "GET", JOB, 200, job(json!({"succeeded": 1}))).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["verdict"], "Pass");
            assert_eq!(
                status["status"]["results"]["checks"]
                    .as_array()
                    .unwrap()
                    .len(),
                300
            );
            assert_eq!(status["status"]["chaos"].as_array().unwrap().len(), 40);
            expect_part_given_back(h).await;
        },
    )
    .await;
}

#[tokio::test]
async fn the_job_and_its_report_are_matched_by_the_labs_uid() {
    // An old lab of the same name left its ConfigMap (and a passing report):
    // this lab does not read it, and fails without a report of its own.
    let current = lab(running_with(scale_record(Some(65))));
    let reply = echo(&current);
    let old = told(
        config_map_of(
            "old-uid",
            json!({"workloadStartedAt": t(0).to_string(), "report": report(1).to_string()}),
        ),
        &current,
    );
    run(current, || t(1000), async move |h: &mut Handle| {
        expect(h, "GET", CM, 200, old).await;
        expect(h, "GET", JOB, 200, job(json!({"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}
        ]}))).await;
        let status = expect(h, "PATCH", STATUS, 200, reply).await;
        assert_eq!(status["status"]["phase"], "Failed");
        let condition = &status["status"]["conditions"][0];
        assert_eq!(condition["reason"], "WorkloadFailed");
        assert!(
            condition["message"].as_str().unwrap().contains("DeadlineExceeded"),
            "{condition}"
        );
        expect_part_given_back(h).await;
    })
    .await;
}

#[tokio::test]
async fn a_job_that_failed_gives_its_own_reason_in_the_condition() {
    let current = lab(running_with(scale_record(Some(65))));
    let reply = echo(&current);
    let told_of = current.clone();
    run(current, || t(1000), async move |h: &mut Handle| {
        let data = json!({"workloadStartedAt": t(0).to_string(),
            "error": "preparing the part failed: cannot set the stock of inventory: connection refused"});
        expect(h, "GET", CM, 200, told(config_map(data), &told_of)).await;
        expect(h, "GET", JOB, 200, job(json!({"failed": 1}))).await;
        let status = expect(h, "PATCH", STATUS, 200, reply).await;
        let condition = &status["status"]["conditions"][0];
        assert_eq!(condition["reason"], "WorkloadFailed");
        assert_eq!(
            condition["message"],
            "Job backlog-drain-workload-0b7e4c1e ended without a report: preparing the part failed: \
             cannot set the stock of inventory: connection refused (see kubectl logs job/backlog-drain-workload-0b7e4c1e)"
        );
        expect_part_given_back(h).await;
    })
    .await;
}

#[tokio::test]
async fn a_scale_to_zero_whose_deployment_is_missing_fails_the_lab_with_the_reason() {
    // First reconcile: the step is due, its Deployment cannot be read; the record says why.
    let current = lab(running());
    let reply = echo(&current);
    run(
        current,
        || t(5),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, started_channel()).await;
            expect(h, "GET", SCALE, 404, not_found()).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            let record = &status["status"]["chaos"][0];
            assert_eq!(record["disrupted"], false);
            assert_eq!(
                record["error"],
                "inventory is not part of this platform's deployment"
            );
            expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
    // At its restore time it was never applied: the lab fails with the reason and releases.
    let mut record = scale_record(None);
    record["disrupted"] = json!(false);
    record["originalReplicas"] = Value::Null;
    record["error"] = json!("inventory is not part of this platform's deployment");
    let current = lab(running_with(record));
    let reply = echo(&current);
    let (action, calls) = run(current, || t(65), async move |h: &mut Handle| {
        expect(h, "GET", CM, 200, started_channel()).await;
        let status = expect(h, "PATCH", STATUS, 200, reply.clone()).await;
        assert_eq!(status["status"]["chaos"][0]["restoredAt"], json!(t(65)));
        expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
        expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        let status = expect(h, "PATCH", STATUS, 200, reply).await;
        assert_eq!(status["status"]["phase"], "Failed");
        let condition = &status["status"]["conditions"][0];
        assert_eq!(condition["reason"], "ChaosFailed");
        assert_eq!(
            condition["message"],
            "chaos[0] ScaleToZero inventory could not be applied: inventory is not part of this platform's deployment"
        );
        expect_part_given_back(h).await;
    })
    .await;
    assert_eq!(action, Action::await_change());
    assert!(calls.ends_with(&cleared_faults()), "{calls:?}");
}

fn refused() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is down"})
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {status}"))
}

#[tokio::test]
async fn a_restore_that_keeps_failing_fails_the_lab_but_keeps_the_part_and_retries_until_it_is_undone()
 {
    let current = lab(running_with(scale_record(None)));
    let reply = echo(&current);
    // 60 s past restoreAt: one more try, then the release tries once more.
    run(
        current,
        || t(125),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, started_channel()).await;
            expect(h, "PATCH", SCALE, 500, refused()).await;
            let status = expect(h, "PATCH", STATUS, 200, reply.clone()).await;
            assert!(
                status["status"]["chaos"][0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("etcd is down")
            );
            expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
            expect(h, "PATCH", SCALE, 500, refused()).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["conditions"][0]["type"], "Released");
            assert_eq!(status["status"]["conditions"][0]["reason"], "Retrying");
        },
    )
    .await;
    // After RESTORE_DEADLINE the lab is reported failed with everything that
    // happened, and keeps its part: the restore is tried again every 5 s.
    let mut status = running_with(scale_record(None));
    status["chaos"][0]["error"] = json!("etcd is down");
    status["conditions"] = json!([{"type": "Released", "status": "False", "reason": "Retrying",
        "message": "chaos[0]: etcd is down", "lastTransitionTime": t(125)}]);
    let current = lab(status);
    let reply = echo(&current);
    let channel = told(started_channel(), &current);
    let (action, _) = run(
        current,
        || t(190),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, channel).await;
            expect(h, "PATCH", SCALE, 500, refused()).await;
            expect(h, "PATCH", STATUS, 200, reply.clone()).await;
            // The record's error now says what the API answered: the Job is told.
            expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
            expect(h, "PATCH", SCALE, 500, refused()).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Failed");
            let ready = condition(&status, "Ready");
            assert_eq!(ready["reason"], "ChaosFailed");
            let message = ready["message"].as_str().unwrap();
            assert!(
                message.starts_with(
                    "chaos[0] ScaleToZero inventory could not be restored by its deadline: "
                ),
                "{message}"
            );
            assert!(message.contains("; not released: chaos[0]: "), "{message}");
            let restored = condition(&status, "Restored");
            assert_eq!(
                (&restored["status"], &restored["reason"]),
                (&json!("False"), &json!("Retrying"))
            );
            assert!(
                status["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["type"] != "Released")
            );
            // No release: the part stays this lab's.
        },
    )
    .await;
    assert_eq!(action, Action::requeue(RESTORE_RETRY));

    // Ended, and still refused minutes later: tried again, the part kept.
    let mut status = running_with(scale_record(None));
    status["phase"] = json!("Failed");
    status["chaos"][0]["error"] = json!("etcd is down");
    status["conditions"] = json!([{"type": "Restored", "status": "False", "reason": "Retrying",
        "message": "chaos[0]: etcd is down", "lastTransitionTime": t(190)}]);
    let ended = lab(status);
    let reply = echo(&ended);
    let (action, calls) = run(
        ended.clone(),
        || t(400),
        async move |h: &mut Handle| {
            expect(h, "PATCH", SCALE, 500, refused()).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            let restored = condition(&status, "Restored");
            assert_eq!(restored["status"], "False");
            assert_eq!(restored["lastTransitionTime"], json!(t(190)));
        },
    )
    .await;
    assert_eq!(action, Action::requeue(RESTORE_RETRY));
    assert!(calls.is_empty(), "{calls:?}");
    // The refusal lifted: restored to the recorded replicas, then the part given back.
    let reply = echo(&ended);
    let (action, _) = run(
        ended,
        || t(405),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", SCALE, 200, scale("inventory", 2)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 2}}));
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["chaos"][0]["restoredAt"], json!(t(405)));
            assert_eq!(condition(&status, "Restored")["status"], "True");
            assert_eq!(status["status"]["phase"], "Failed");
            expect_part_given_back(h).await;
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_queued_lab_waits_while_a_finished_holder_still_has_a_disruption_in_place() {
    let current = lab(Value::Null);
    let reply = echo(&current);
    let mut ended = running_with(scale_record(None));
    ended["phase"] = json!("Failed");
    let mut holder = echo(&lab(ended));
    holder["metadata"]["name"] = json!("sync-failure");
    holder["metadata"]["uid"] = json!("aaaa");
    let (action, calls) = run(
        current,
        || t(0),
        async move |h: &mut Handle| {
            expect_part_installed(h).await;
            expect(h, "GET", LEASE, 200, lease("sync-failure/aaaa")).await;
            expect(h, "GET", &format!("{LABS}/sync-failure"), 200, holder).await;
            // No takeover: it would read the disrupted replicas as the original ones.
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Queued");
        },
    )
    .await;
    assert_eq!(action, Action::requeue(POLL));
    assert!(calls.is_empty(), "{calls:?}");
}

#[tokio::test]
async fn the_run_config_map_is_brought_up_to_date_when_its_last_write_failed() {
    // The restore was recorded in status, the ConfigMap's write failed after.
    let current = lab(running_with(scale_record(Some(65))));
    run(
        current,
        || t(70),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, started_channel()).await;
            let channel = expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            let records: Value =
                serde_json::from_str(channel["data"]["chaos"].as_str().unwrap()).unwrap();
            assert_eq!(records[0]["restoredAt"], json!(t(65)));
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
}

#[test]
fn a_due_restore_is_not_held_up_by_the_error_backoff() {
    let current = lab(running_with(scale_record(None)));
    // Restore due at t(65): at t(62) a 5-minute backoff becomes 3 s; once due, 1 s.
    assert_eq!(
        backoff_until_restore(&current, Duration::from_secs(300), t(62)),
        Duration::from_secs(3)
    );
    assert_eq!(
        backoff_until_restore(&current, Duration::from_secs(300), t(70)),
        Duration::from_secs(1)
    );
    let restored = lab(running_with(scale_record(Some(65))));
    assert_eq!(
        backoff_until_restore(&restored, Duration::from_secs(300), t(70)),
        Duration::from_secs(300)
    );
}

#[tokio::test]
async fn error_policy_requeues_a_lab_with_a_due_restore_within_one_reconcile() {
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"), || t(64), BTreeMap::new());
    let current = Arc::new(lab(running_with(scale_record(None))));
    let error = foodlab_operator::controller::Error::NoNamespace;
    for _ in 0..10 {
        error_policy(Arc::clone(&current), &error, Arc::clone(&ctx));
    }
    assert_eq!(
        error_policy(current, &error, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn deleting_a_lab_that_holds_its_part_restores_clears_and_releases_then_removes_the_finalizer()
 {
    let (current, reply) = deleted(lab(running_with(scale_record(None))));
    let (_, calls) = run(
        current,
        || t(30),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", SCALE, 200, scale("inventory", 2)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 2}}));
            expect(h, "GET", LEASE, 200, lease(&me())).await;
            expect_part_given_back(h).await;
            let removal = expect(h, "PATCH", LAB, 200, reply).await;
            assert_eq!(removal[1]["op"], "remove");
            assert_eq!(removal[1]["path"], "/metadata/finalizers/0");
        },
    )
    .await;
    assert_eq!(calls, cleared_faults());
}

#[tokio::test]
async fn a_lab_deleted_in_the_foreground_restores_though_its_lease_went_first() {
    // `kubectl delete --cascade=foreground`: the garbage collector removed
    // the Lease (owned by the lab) while the finalizer holds the lab.
    let (current, reply) = deleted(lab(running_with(scale_record(None))));
    let (_, calls) = run(
        current,
        || t(30),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", SCALE, 200, scale("inventory", 2)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 2}}));
            expect(h, "GET", LEASE, 404, not_found()).await;
            expect(h, "GET", LEASE, 404, not_found()).await;
            expect(h, "PATCH", LAB, 200, reply).await;
        },
    )
    .await;
    // It was running, and no other lab holds the part: its faults are cleared too.
    assert_eq!(calls, cleared_faults());
}

#[tokio::test]
async fn a_deleted_lab_whose_restore_is_refused_keeps_its_finalizer_and_retries_within_seconds() {
    let (current, _) = deleted(lab(running_with(scale_record(None))));
    let (result, calls) = reconcile_with(
        current.clone(),
        || t(30),
        async move |h: &mut Handle| {
            expect(h, "PATCH", SCALE, 500, refused()).await;
        },
    )
    .await;
    assert!(result.is_err());
    assert!(calls.is_empty(), "{calls:?}");
    // Due at t(65), but a lab going away restores now: retried within RESTORE_RETRY.
    assert_eq!(
        backoff_until_restore(&current, Duration::from_secs(300), t(30)),
        RESTORE_RETRY
    );
}

#[tokio::test]
async fn deleting_an_old_lab_leaves_the_running_labs_faults_and_chaos_alone() {
    let (old, reply) = deleted(lab(
        json!({"phase": "Failed", "startedAt": t(-500), "chaos": [scale_record(Some(65))]}),
    ));
    let (_, calls) = run(
        old,
        || t(30),
        async move |h: &mut Handle| {
            expect(h, "GET", LEASE, 200, lease("sync-baseline/bbbb")).await;
            expect(h, "PATCH", LAB, 200, reply).await;
        },
    )
    .await;
    assert!(
        calls.is_empty(),
        "the running lab's services were touched: {calls:?}"
    );
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_with_a_reason_and_no_retry() {
    let mut current = lab(Value::Null);
    current.spec.workload.orders = 0;
    current.spec.chaos[0].duration = None;
    let reply = echo(&current);
    let (action, _) = run(
        current.clone(),
        || t(0),
        async move |h: &mut Handle| {
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
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
async fn a_spec_turned_invalid_mid_run_restores_and_releases_before_failing() {
    let mut current = lab(running_with(scale_record(None)));
    current.spec.workload.orders = 0;
    let reply = echo(&current);
    let (action, calls) = run(
        current,
        || t(30),
        async move |h: &mut Handle| {
            let patch = expect(h, "PATCH", SCALE, 200, scale("inventory", 2)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 2}}));
            expect_part_given_back(h).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["chaos"][0]["restoredAt"], json!(t(30)));
            assert_eq!(status["status"]["conditions"][0]["reason"], "InvalidSpec");
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
    assert_eq!(calls, cleared_faults());
}

#[tokio::test]
async fn a_finished_job_of_an_old_lab_of_the_same_name_is_not_taken_for_this_labs() {
    // The old lab's Job passed; this lab's Job is gone: lost, not passed.
    let current = lab(running_with(scale_record(Some(65))));
    let reply = echo(&current);
    let channel = told(started_channel(), &current);
    run(
        current,
        || t(5000),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, channel).await;
            let mut old = job(json!({"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True"}
            ]}));
            old["metadata"]["ownerReferences"] = owner("old-uid");
            expect(h, "GET", JOB, 200, old).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Failed");
            assert_eq!(status["status"]["conditions"][0]["reason"], "WorkloadLost");
            expect_part_given_back(h).await;
        },
    )
    .await;
}

#[tokio::test]
async fn a_workload_job_that_vanished_fails_the_lab_instead_of_running_twice() {
    let current = lab(running_with(scale_record(Some(65))));
    let reply = echo(&current);
    let channel = told(started_channel(), &current);
    let (action, calls) = run(
        current,
        || t(5000),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, channel).await;
            expect(h, "GET", JOB, 404, not_found()).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Failed");
            assert_eq!(status["status"]["conditions"][0]["reason"], "WorkloadLost");
            expect_part_given_back(h).await;
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
    assert!(calls.ends_with(&cleared_faults()), "{calls:?}");
}

#[tokio::test]
async fn a_stale_copy_cannot_overwrite_newer_status() {
    // The status write carries the resourceVersion the reconcile started from,
    // so the API server refuses it if the object changed in between.
    let mut current = lab(running());
    current.metadata.resource_version = Some("41".into());
    let (result, _) = reconcile_with(
        current,
        || t(10),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, started_channel()).await;
            expect(h, "GET", SCALE, 200, scale("inventory", 1)).await;
            let status = expect(
                h,
                "PATCH",
                STATUS,
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
    assert!(
        result.is_err(),
        "the reconcile should have failed: {result:?}"
    );
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
            expect(h, "GET", CM, 200, started_channel()).await;
            // No new record and no new reading of the replicas: the first one stands.
            expect(h, "PATCH", STATUS, 200, reply.clone()).await;
            let patch = expect(h, "PATCH", SCALE, 200, scale("inventory", 0)).await;
            assert_eq!(patch, json!({"spec": {"replicas": 0}}));
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            let records = status["status"]["chaos"].as_array().unwrap();
            assert_eq!(records.len(), 1);
            assert_eq!(
                (&records[0]["disrupted"], &records[0]["originalReplicas"]),
                (&json!(true), &json!(2))
            );
            expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
}

#[tokio::test]
async fn pod_kill_records_then_deletes_the_pods_its_mode_picks_with_its_grace_period() {
    let mut current = lab(running());
    current.spec.chaos = serde_json::from_value(json!([{
        "action": "PodKill", "target": "inventory", "after": "5s",
        "mode": "fixed", "value": "2", "gracePeriod": 5
    }]))
    .unwrap();
    let reply = echo(&current);
    // The Deployment's own pods, by the selector its scale reports; one is
    // already terminating and is not picked.
    let mut inventory = scale("inventory", 3);
    inventory["status"]["selector"] =
        json!("app.kubernetes.io/instance=sync-rest,app.kubernetes.io/name=inventory");
    let pod = |name: &str, terminating: bool| {
        let mut pod = json!({"metadata": {"name": name}, "status": {"phase": "Running"}});
        if terminating {
            pod["metadata"]["deletionTimestamp"] = json!("2027-01-15T08:00:00Z");
        }
        pod
    };
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        pod("inventory-7d9f-aaaaa", false),
        pod("inventory-7d9f-bbbbb", true),
        pod("inventory-7d9f-ccccc", false)
    ]});
    run(
        current,
        || t(6),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, started_channel()).await;
            let status = expect(h, "PATCH", STATUS, 200, reply.clone()).await;
            let record = &status["status"]["chaos"][0];
            assert_eq!(
                (&record["action"], &record["disrupted"]),
                (&json!("PodKill"), &json!(false))
            );
            assert!(record.get("originalReplicas").is_none());
            expect(h, "GET", SCALE, 200, inventory).await;
            let (list, send) = h.next_request().await.unwrap();
            assert_eq!(list.uri().path(), "/api/v1/namespaces/default/pods");
            assert!(
                list.uri().query().unwrap().contains(
                    "labelSelector=app.kubernetes.io%2Finstance%3Dsync-rest%2C\
                     app.kubernetes.io%2Fname%3Dinventory"
                ),
                "{}",
                list.uri()
            );
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&pods).unwrap()))
                    .unwrap(),
            );
            for name in ["inventory-7d9f-aaaaa", "inventory-7d9f-ccccc"] {
                let options = expect(
                    h,
                    "DELETE",
                    &format!("/api/v1/namespaces/default/pods/{name}"),
                    200,
                    pod(name, true),
                )
                .await;
                assert_eq!(options["gracePeriodSeconds"], 5, "{options}");
            }
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            let record = &status["status"]["chaos"][0];
            assert_eq!(record["disrupted"], true);
            assert_eq!(
                record["pods"],
                json!(["inventory-7d9f-aaaaa", "inventory-7d9f-ccccc"])
            );
            expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
        },
    )
    .await;
}

/// Claimed, no Job yet, `spec.replicas` asking for `replicas` of inventory.
fn scaled_lab(replicas: Value, status: Value) -> FoodLab {
    let mut current = lab(status);
    current.spec.chaos = Vec::new();
    current.spec.replicas = serde_json::from_value(replicas).unwrap();
    current
}

fn before_the_job() -> Value {
    let mut status = running();
    status["workloadJob"] = Value::Null;
    status["workloadStartedAt"] = Value::Null;
    status
}

#[tokio::test]
async fn spec_replicas_are_recorded_then_applied_before_the_job_is_created() {
    let current = scaled_lab(json!({"inventory": 1}), before_the_job());
    let reply = echo(&current);
    let (action, calls) = run(
        current,
        || t(-19),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 404, not_found()).await;
            expect(h, "GET", JOB, 404, not_found()).await;
            expect(h, "GET", SCALE, 200, scale("inventory", 2)).await;
            let status = expect(h, "PATCH", STATUS, 200, reply.clone()).await;
            let record = &status["status"]["replicas"][0];
            assert_eq!(
                (
                    &record["service"],
                    &record["replicas"],
                    &record["originalReplicas"]
                ),
                (&json!("inventory"), &json!(1), &json!(2))
            );
            assert_eq!(record["scaled"], false, "recorded before the scale");
            let patch = expect(h, "PATCH", SCALE, 200, scale("inventory", 1)).await;
            assert_eq!(patch["spec"]["replicas"], 1);
            let status = expect(h, "PATCH", STATUS, 200, reply.clone()).await;
            assert_eq!(status["status"]["replicas"][0]["scaled"], true);
            expect(h, "POST", CMS, 201, config_map(json!({}))).await;
            expect(h, "POST", SERVICE_ACCOUNTS, 201, json!({})).await;
            expect(h, "POST", ROLES, 201, json!({})).await;
            expect(h, "POST", ROLE_BINDINGS, 201, json!({})).await;
            expect(h, "POST", JOBS, 201, job(json!({}))).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(
                status["status"]["workloadJob"],
                "backlog-drain-workload-0b7e4c1e"
            );
        },
    )
    .await;
    assert_eq!(action, Action::requeue(POLL));
    // The faults again once the pods are there (a new one gets them before the Job).
    let mut twice = kept_faults();
    twice.extend(kept_faults());
    assert_eq!(calls, twice);
}

#[tokio::test]
async fn more_than_one_replica_on_sqlite_fails_the_lab_saying_why_and_scales_nothing() {
    let current = scaled_lab(json!({"inventory": 3}), before_the_job());
    let reply = echo(&current);
    let mut inventory = scale("inventory", 1);
    inventory["status"]["selector"] = json!("app.kubernetes.io/name=inventory");
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        {"metadata": {"name": "inventory-1", "labels": {"foodlab.dev/database": "sqlite"}}}
    ]});
    let (action, _) = run(
        current,
        || t(-19),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 404, not_found()).await;
            expect(h, "GET", JOB, 404, not_found()).await;
            expect(h, "GET", SCALE, 200, inventory).await;
            expect(h, "GET", "/api/v1/namespaces/default/pods", 200, pods).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Failed");
            assert!(status["status"].get("replicas").is_none(), "{status}");
            let ready = condition(&status, "Ready");
            assert_eq!(ready["reason"], "ReplicasNotApplied");
            let message = ready["message"].as_str().unwrap();
            assert!(
                message.contains("spec.replicas.inventory")
                    && message.contains("sqlite")
                    && message.contains("database.backend=postgres"),
                "{message}"
            );
            expect_part_given_back(h).await;
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
}

/// Running, with inventory scaled from 2 to 3 for the lab.
fn running_at_three_inventories() -> Value {
    let mut status = running();
    status["replicas"] = json!([{
        "service": "inventory", "replicas": 3, "originalReplicas": 2, "scaled": true,
        "scaledAt": t(-19)
    }]);
    status
}

#[tokio::test]
async fn every_ending_puts_the_replicas_back_before_the_part_is_given_back() {
    let status = running_at_three_inventories();
    let current = scaled_lab(json!({"inventory": 3}), status);
    let reply = echo(&current);
    let (action, _) = run(
        current,
        || t(100),
        async move |h: &mut Handle| {
            let mut data = json!({"workloadStartedAt": t(0).to_string()});
            data["report"] = json!(report(1).to_string());
            expect(h, "GET", CM, 200, config_map(data)).await;
            expect(h, "GET", JOB, 200, job(json!({"succeeded": 1}))).await;
            let patch = expect(h, "PATCH", SCALE, 200, scale("inventory", 2)).await;
            assert_eq!(patch["spec"]["replicas"], 2);
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Succeeded");
            assert_eq!(status["status"]["replicas"][0]["restoredAt"], json!(t(100)));
            expect_part_given_back(h).await;
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_refused_restore_of_the_replicas_keeps_the_part_and_is_retried() {
    let mut status = running_at_three_inventories();
    status["phase"] = json!("Succeeded");
    let current = scaled_lab(json!({"inventory": 3}), status);
    let reply = echo(&current);
    let (action, _) = run(
        current,
        || t(100),
        async move |h: &mut Handle| {
            expect(h, "PATCH", SCALE, 403, refused()).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            let restored = condition(&status, "Restored");
            assert_eq!(restored["status"], "False");
            assert!(
                restored["message"]
                    .as_str()
                    .unwrap()
                    .contains("spec.replicas.inventory"),
                "{restored}"
            );
            assert!(status["status"]["replicas"][0].get("restoredAt").is_none());
        },
    )
    .await;
    assert_eq!(action, Action::requeue(RESTORE_RETRY));
}

#[tokio::test]
async fn a_restore_made_only_after_its_deadline_still_fails_the_lab_saying_how_late() {
    // restoreAt t(65), the deadline 60 s later; the API let the restore through at t(200).
    let mut record = scale_record(Some(200));
    record["error"] = json!("admission webhook refused the scale");
    let current = lab(running_with(record));
    let reply = echo(&current);
    let (action, _) = run(
        current,
        || t(201),
        async move |h: &mut Handle| {
            expect(h, "GET", CM, 200, started_channel()).await;
            expect(h, "PATCH", CM, 200, config_map(json!({}))).await;
            expect(h, "GET", JOB, 200, job(json!({"active": 1}))).await;
            let status = expect(h, "PATCH", STATUS, 200, reply).await;
            assert_eq!(status["status"]["phase"], "Failed");
            let ready = condition(&status, "Ready");
            assert_eq!(ready["reason"], "ChaosFailed");
            assert_eq!(
                ready["message"],
                "chaos[0] ScaleToZero inventory could not be restored by its deadline: \
                 restored 75 s after it (until then: admission webhook refused the scale)"
            );
            expect_part_given_back(h).await;
        },
    )
    .await;
    assert_eq!(action, Action::await_change());
}
