//! The lab pipeline over a fake platform: no processes, the services are
//! small in-process HTTP stubs that record what the engine asks of them.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use foodlab_lab::chaos::{ChaosError, Stage};
use foodlab_lab::disruption::DisruptionError;
use foodlab_lab::engine::drain_seconds;
use foodlab_lab::platform::rabbitmq::RabbitAdmin;
use foodlab_lab::probe::observe::Backlog;
use foodlab_lab::results::ChaosRecord;
use foodlab_lab::spec::{ChaosAction, FoodLabSpec};
use foodlab_lab::{
    LabError, LabStep, Observer, Platform, PlatformError, Quiet, Service, run_lab, run_lab_with,
};
use serde_json::{Value, json};

/// What happened, in order, with when.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(Instant, String)>>>);

impl Log {
    fn push(&self, event: String) {
        self.0.lock().unwrap().push((Instant::now(), event));
    }
    fn events(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }
    fn first(&self, event: &str) -> Instant {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .find(|(_, e)| e == event)
            .unwrap_or_else(|| panic!("no `{event}` in {events:?}"))
            .0
    }
    /// The last faults PUT to a service.
    fn last_faults(&self, service: &str) -> Value {
        let prefix = format!("{service} PUT /admin/faults ");
        let events = self.events();
        let last = events
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no faults set on {service}: {events:?}"));
        serde_json::from_str(last).unwrap()
    }
}

#[derive(Clone)]
struct Stub {
    service: &'static str,
    log: Log,
    /// How long inventory's `/stats` takes (the baseline reads it).
    stats_delay: Duration,
}

fn stub_router(stub: Stub) -> Router {
    async fn order(State(s): State<Stub>) -> (axum::http::StatusCode, axum::Json<Value>) {
        s.log.push(format!("{} POST /order", s.service));
        let id = format!("{:032x}", rand_id());
        (
            axum::http::StatusCode::CREATED,
            axum::Json(json!({"order_id": id, "status": "notified"})),
        )
    }
    async fn admin(
        State(s): State<Stub>,
        uri: axum::http::Uri,
        body: axum::Json<Value>,
    ) -> axum::Json<Value> {
        s.log
            .push(format!("{} PUT {} {}", s.service, uri.path(), body.0));
        body
    }
    async fn stats(State(s): State<Stub>) -> axum::Json<Value> {
        tokio::time::sleep(s.stats_delay).await;
        axum::Json(
            json!({"reserved_orders": 0, "out_of_stock_orders": 0, "unknown_item_orders": 0}),
        )
    }
    async fn stock() -> axum::Json<Value> {
        axum::Json(json!({"burger": 100}))
    }
    Router::new()
        .route("/order", post(order))
        .route("/admin/faults", put(admin))
        .route("/admin/stock", put(admin))
        .route("/admin/settings", put(admin))
        .route("/stats", get(stats))
        .route("/stock", get(stock))
        .with_state(stub)
}

fn rand_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The sync-rest part as stubs; scaling is recorded, and scaling to zero
/// fails for the services in `unscalable`. A scale to zero of a service in
/// `answers_lost` is applied and answered with an error (as when the API
/// server's answer is lost), that many times.
struct FakePlatform {
    endpoints: BTreeMap<Service, String>,
    replicas: Mutex<BTreeMap<Service, u32>>,
    unscalable: Vec<Service>,
    answers_lost: Mutex<BTreeMap<Service, u32>>,
    log: Log,
}

impl FakePlatform {
    async fn start(stats_delay: Duration, unscalable: Vec<Service>) -> Self {
        let log = Log::default();
        let mut endpoints = BTreeMap::new();
        for service in [Service::Order, Service::Inventory, Service::Notification] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            endpoints.insert(
                service,
                format!("http://{}", listener.local_addr().unwrap()),
            );
            let router = stub_router(Stub {
                service: service.name(),
                log: log.clone(),
                stats_delay,
            });
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        Self {
            replicas: Mutex::new(endpoints.keys().map(|s| (*s, 1)).collect()),
            endpoints,
            unscalable,
            answers_lost: Mutex::default(),
            log,
        }
    }
}

impl Platform for FakePlatform {
    fn endpoint(&self, service: Service) -> Result<String, PlatformError> {
        self.endpoints
            .get(&service)
            .cloned()
            .ok_or(PlatformError::NotDeployed(service))
    }

    async fn scale(&self, service: Service, replicas: u32) -> Result<(), PlatformError> {
        if replicas == 0 && self.unscalable.contains(&service) {
            return Err(PlatformError::Api {
                service,
                reason: "the API server refused".into(),
            });
        }
        self.log.push(format!("scale {service} {replicas}"));
        self.replicas.lock().unwrap().insert(service, replicas);
        if let Some(lost) = self.answers_lost.lock().unwrap().get_mut(&service)
            && replicas == 0
            && *lost > 0
        {
            *lost -= 1;
            return Err(PlatformError::Api {
                service,
                reason: "the answer was lost".into(),
            });
        }
        Ok(())
    }

    fn rabbitmq(&self) -> Option<&RabbitAdmin> {
        None
    }

    async fn replicas(&self, service: Service) -> Result<u32, PlatformError> {
        Ok(self
            .replicas
            .lock()
            .unwrap()
            .get(&service)
            .copied()
            .unwrap_or(0))
    }
}

fn lab(extra: Value) -> FoodLabSpec {
    let mut spec = json!({
        "transport": "rest",
        "workload": {"orders": 10, "ratePerSecond": 20},
        "faults": {"inventory": {"failRate": 0.5, "failStatus": 503}},
        "settings": {"stock": "burger=1000", "dependencyTimeout": "2s"},
        "expect": {"responseStatus": 201}
    });
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    serde_json::from_value(spec).unwrap()
}

const CLEAR: &str = r#"{"delay_ms":0,"fail_rate":0.0,"fail_status":500}"#;

fn assert_released(platform: &FakePlatform) {
    let clear: Value = serde_json::from_str(CLEAR).unwrap();
    for service in ["order", "inventory", "notification"] {
        assert_eq!(platform.log.last_faults(service), clear, "{service}");
    }
    assert!(
        platform.replicas.lock().unwrap().values().all(|r| *r == 1),
        "every service is back: {:?}",
        platform.replicas.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_faults_are_applied_before_the_first_order_and_cleared_after() {
    let platform = FakePlatform::start(Duration::ZERO, vec![]).await;
    let report = run_lab(&platform, &lab(json!({})), Arc::new(Quiet))
        .await
        .unwrap();
    assert_eq!(report.results.status_codes["201"], 10);
    let events = platform.log.events();
    let first_order = events
        .iter()
        .position(|e| e == "order POST /order")
        .unwrap();
    let setup: Vec<&String> = events[..first_order].iter().collect();
    assert_eq!(
        setup,
        [
            r#"inventory PUT /admin/stock {"burger":1000,"pizza":100,"salad":100}"#,
            r#"order PUT /admin/settings {"dependencyTimeout":"2s"}"#,
            &format!("order PUT /admin/faults {CLEAR}"),
            r#"inventory PUT /admin/faults {"delay_ms":0,"fail_rate":0.5,"fail_status":503}"#,
            &format!("notification PUT /admin/faults {CLEAR}"),
        ]
    );
    assert_released(&platform);
    assert!(report.unreleased.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_after_is_counted_from_the_first_order_not_from_the_baseline() {
    // The baseline takes 800 ms; the scale to zero is due 300 ms after the first order.
    let platform = FakePlatform::start(Duration::from_millis(800), vec![]).await;
    let spec = lab(json!({"chaos": [
        {"action": "ScaleToZero", "target": "inventory", "after": "300ms", "duration": "200ms"}
    ]}));
    let started = Instant::now();
    let report = run_lab(&platform, &spec, Arc::new(Quiet)).await.unwrap();
    let first_order = platform.log.first("order POST /order");
    let scaled_to_zero = platform.log.first("scale inventory 0");
    let restored = platform.log.first("scale inventory 1");
    assert!(first_order >= started + Duration::from_millis(800));
    // Counted from the lab's start, it would have come before the first order.
    // (The stub sees the first order a moment after the engine sends it.)
    assert!(
        scaled_to_zero >= first_order + Duration::from_millis(250),
        "the disruption came {:?} after the first order",
        scaled_to_zero.saturating_duration_since(first_order)
    );
    assert!(restored >= scaled_to_zero + Duration::from_millis(200));
    let record = &report.chaos[0];
    assert_eq!(
        (
            record.action,
            record.original_replicas,
            record.restored_at.is_some()
        ),
        (ChaosAction::ScaleToZero, Some(1), true)
    );
    assert_released(&platform);
}

#[test]
fn drain_is_measured_from_the_last_restore() {
    let now = Instant::now();
    let ago = |ms: u64| now - Duration::from_millis(ms);
    let backlog = Backlog {
        samples: vec![
            (ago(4000), 0),
            (ago(3000), 40),
            (ago(2500), 30),
            (ago(1500), 9),
            (ago(1000), 0),
        ],
    };
    let restored = |ms: i64| ChaosRecord {
        step: 0,
        action: ChaosAction::ScaleToZero,
        target: Service::Inventory.into(),
        disrupted: true,
        original_replicas: Some(1),
        pods: Vec::new(),
        started_at: jiff::Timestamp::now() - jiff::SignedDuration::from_millis(ms + 5000),
        restore_at: None,
        restored_at: Some(jiff::Timestamp::now() - jiff::SignedDuration::from_millis(ms)),
        error: None,
    };
    let settled_ago =
        |ms: i64| Some(jiff::Timestamp::now() - jiff::SignedDuration::from_millis(ms));
    // Restored 2 s ago, the orders settled 1.2 s ago, empty 1 s ago: 1 s of
    // drain, whatever the workload's end.
    let chaos = [restored(3000), restored(2000)];
    let drain = drain_seconds(Some(&backlog), settled_ago(1200), &chaos, ago(3500)).unwrap();
    assert!((drain - 1.0).abs() < 0.05, "{drain}");
    // Without chaos: from the end of the workload.
    let drain = drain_seconds(Some(&backlog), settled_ago(1200), &[], ago(3500)).unwrap();
    assert!((drain - 2.5).abs() < 0.05, "{drain}");
    // The broker's figures lag: the queue reads empty right after the
    // workload, while the orders settle over 3 s. The drain is the orders'.
    let stale = Backlog {
        samples: vec![(ago(3400), 0), (ago(2000), 0), (ago(400), 5)],
    };
    let drain = drain_seconds(Some(&stale), settled_ago(500), &[], ago(3500)).unwrap();
    assert!((drain - 3.0).abs() < 0.05, "{drain}");
    // Nothing sampled after the orders settled: their settling ends it.
    let drain = drain_seconds(None, settled_ago(500), &[], ago(3500)).unwrap();
    assert!((drain - 3.0).abs() < 0.05, "{drain}");
    assert_eq!(drain_seconds(None, None, &[], ago(3500)), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_verdict_releases_the_part() {
    let platform = FakePlatform::start(Duration::ZERO, vec![]).await;
    let spec = lab(json!({"expect": {"responseStatus": 504}}));
    let report = run_lab(&platform, &spec, Arc::new(Quiet)).await.unwrap();
    assert_eq!(report.verdict, foodlab_lab::Verdict::Fail);
    assert_released(&platform);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_cannot_be_applied_fails_the_lab_with_its_reason_and_releases() {
    let platform = FakePlatform::start(Duration::ZERO, vec![Service::Notification]).await;
    let spec = lab(json!({"chaos": [
        {"action": "ScaleToZero", "target": "notification", "after": "0s", "duration": "600ms"},
        {"action": "Delay", "target": "inventory", "after": "0s", "duration": "300ms", "delaySeconds": 1}
    ]}));
    let error = run_lab(&platform, &spec, Arc::new(Quiet))
        .await
        .unwrap_err();
    let LabError::Chaos(ChaosError::Step {
        action,
        target,
        stage,
        source: DisruptionError::Platform(PlatformError::Api { service, reason }),
    }) = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(
        (*action, *target, *stage, *service),
        (
            ChaosAction::ScaleToZero,
            foodlab_lab::spec::ChaosTarget::Notification,
            Stage::Applied,
            Service::Notification
        )
    );
    assert_eq!(reason, "the API server refused");
    assert_eq!(
        error.to_string(),
        "chaos ScaleToZero on notification: could not be applied: notification: the API server refused"
    );
    // The other step ran and was undone; every fault is cleared.
    let events = platform.log.events();
    assert!(
        events.contains(
            &r#"inventory PUT /admin/faults {"delay_ms":1000,"fail_rate":0.5,"fail_status":503}"#
                .to_owned()
        ),
        "{events:?}"
    );
    assert_released(&platform);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_applied_but_answered_with_an_error_is_retried_and_restored_to_the_original() {
    let platform = FakePlatform::start(Duration::ZERO, vec![]).await;
    platform
        .answers_lost
        .lock()
        .unwrap()
        .insert(Service::Inventory, 1);
    let spec = lab(json!({"chaos": [
        {"action": "ScaleToZero", "target": "inventory", "after": "0s", "duration": "1s"}
    ]}));
    let report = run_lab(&platform, &spec, Arc::new(Quiet)).await.unwrap();
    let record = &report.chaos[0];
    // The retry found inventory at 0 already; the original is the recorded 1.
    assert_eq!(record.original_replicas, Some(1), "{record:?}");
    assert!(record.restored_at.is_some(), "{record:?}");
    let events = platform.log.events();
    let scaled: Vec<&String> = events.iter().filter(|e| e.starts_with("scale")).collect();
    assert_eq!(
        scaled,
        [
            "scale inventory 0",
            "scale inventory 0",
            "scale inventory 1"
        ]
    );
    assert_released(&platform);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_lab_undoes_its_disruption_and_clears_its_faults() {
    let platform = FakePlatform::start(Duration::ZERO, vec![]).await;
    let spec = lab(json!({"chaos": [
        {"action": "ScaleToZero", "target": "inventory", "after": "0s", "duration": "600s"}
    ]}));
    let disruptor = foodlab_lab::chaos::Direct::new(&platform).unwrap();
    let interrupt = async {
        while platform.replicas(Service::Inventory).await.unwrap() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let error = run_lab_with(&platform, &disruptor, &spec, Arc::new(Quiet), interrupt)
        .await
        .unwrap_err();
    assert!(matches!(error, LabError::Interrupted), "{error}");
    let events = platform.log.events();
    let scaled: Vec<&String> = events.iter().filter(|e| e.starts_with("scale")).collect();
    assert_eq!(scaled, ["scale inventory 0", "scale inventory 1"]);
    assert_released(&platform);
}

/// Once the first lab holds the part: its settings reached inventory.
async fn first_lab_prepared(platform: &FakePlatform) {
    while !platform
        .log
        .events()
        .iter()
        .any(|e| e.contains("PUT /admin/stock"))
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_lab_on_the_same_part_waits_for_the_first() {
    let platform = FakePlatform::start(Duration::ZERO, vec![]).await;
    let slow = lab(json!({"chaos": [
        {"action": "Delay", "target": "inventory", "after": "0s", "duration": "500ms", "delaySeconds": 1}
    ]}));
    let quick = lab(json!({"faults": {}, "workload": {"orders": 1}}));
    let (first, second) = tokio::join!(run_lab(&platform, &slow, Arc::new(Quiet)), async {
        first_lab_prepared(&platform).await;
        run_lab(&platform, &quick, Arc::new(Quiet)).await
    });
    assert_eq!(first.unwrap().results.status_codes["201"], 10);
    assert_eq!(second.unwrap().results.status_codes["201"], 1);
    // The second lab's settings come after the first lab's release (its last fault clearing).
    let events = platform.log.events();
    let stock_puts: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.contains("PUT /admin/stock"))
        .map(|(i, _)| i)
        .collect();
    let window_end = events
        .iter()
        .rposition(|e| {
            e == r#"inventory PUT /admin/faults {"delay_ms":0,"fail_rate":0.5,"fail_status":503}"#
        })
        .unwrap();
    assert_eq!(stock_puts.len(), 2);
    assert!(stock_puts[1] > window_end, "{events:?}");
}

/// What an observer heard, in order: the steps, and the first answer.
#[derive(Default)]
struct Heard(std::sync::Mutex<Vec<String>>);

impl Observer for Heard {
    fn step_started(&self, step: LabStep) {
        self.0.lock().unwrap().push(step.name().to_owned());
    }
    fn order_answered(&self, _sample: &foodlab_lab::measure::Sample) {
        let mut heard = self.0.lock().unwrap();
        if !heard.iter().any(|h| h == "answer") {
            heard.push("answer".to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_hears_each_step_as_it_starts() {
    let platform = FakePlatform::start(Duration::ZERO, vec![]).await;
    let heard = Arc::new(Heard::default());
    run_lab(&platform, &lab(json!({})), heard.clone())
        .await
        .unwrap();
    assert_eq!(
        *heard.0.lock().unwrap(),
        [
            "prepare", "baseline", "workload", "answer", "settle", "measure"
        ]
    );
}

/// Told once the lab it observes says it is queued behind another.
#[derive(Default)]
struct Queued(tokio::sync::Notify);

impl Observer for Queued {
    fn note(&self, message: &str) {
        if message.starts_with("queued:") {
            // Stored if the lab is not waiting for it yet.
            self.0.notify_one();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_interrupted_while_queued_leaves_the_running_lab_alone() {
    let platform = FakePlatform::start(Duration::ZERO, vec![]).await;
    let slow = lab(json!({"chaos": [
        {"action": "Delay", "target": "inventory", "after": "0s", "duration": "500ms", "delaySeconds": 1}
    ]}));
    let quick = lab(json!({"faults": {}, "workload": {"orders": 1}}));
    let disruptor = foodlab_lab::chaos::Direct::new(&platform).unwrap();
    let queued = Arc::new(Queued::default());
    let (first, second) = tokio::join!(run_lab(&platform, &slow, Arc::new(Quiet)), async {
        first_lab_prepared(&platform).await;
        run_lab_with(
            &platform,
            &disruptor,
            &quick,
            Arc::clone(&queued) as Arc<dyn Observer>,
            queued.0.notified(),
        )
        .await
    });
    assert!(matches!(second, Err(LabError::Interrupted)), "{second:?}");
    assert_eq!(first.unwrap().results.status_codes["201"], 10);
    let events = platform.log.events();
    let stock_puts = events
        .iter()
        .filter(|e| e.contains("PUT /admin/stock"))
        .count();
    assert_eq!(
        stock_puts, 1,
        "only the running lab prepared the part: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_out_of_time_fails_with_the_step_it_was_at_and_releases() {
    let platform = FakePlatform::start(Duration::ZERO, vec![]).await;
    // Its chaos outlasts `within` by far: the workload step is still waiting for it.
    let spec = lab(json!({
        "expect": {"responseStatus": 201, "within": "2s"},
        "chaos": [
            {"action": "ScaleToZero", "target": "notification", "after": "0s", "duration": "600s"},
            {"action": "Delay", "target": "inventory", "after": "0s", "duration": "600s", "delaySeconds": 1}
        ]
    }));
    let disruptor = foodlab_lab::chaos::Direct::new(&platform).unwrap();
    let error = foodlab_lab::engine::run_lab_with_slack(
        &platform,
        &disruptor,
        &spec,
        Arc::new(Quiet),
        std::future::pending(),
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            LabError::Timeout {
                within,
                slack: Duration::ZERO,
                step: "workload"
            } if within == Duration::from_secs(2)
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "the lab did not end within 2s (expect.within 2s plus 0ns): stopped at the workload step"
    );
    let events = platform.log.events();
    let scaled: Vec<&String> = events.iter().filter(|e| e.starts_with("scale")).collect();
    assert_eq!(scaled, ["scale notification 0", "scale notification 1"]);
    assert!(
        events.contains(
            &r#"inventory PUT /admin/faults {"delay_ms":1000,"fail_rate":0.5,"fail_status":503}"#
                .to_owned()
        ),
        "{events:?}"
    );
    assert_released(&platform);
}
