//! What the lab tests share: examples, platforms with the project's broker,
//! small HTTP helpers.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use foodlab_lab::platform::kafka::KafkaBroker;
use foodlab_lab::platform::rabbitmq::RabbitBroker;
use foodlab_lab::probe::metrics;
use std::sync::Arc;

use foodlab_lab::{
    FoodLab, LabReport, LocalOptions, LocalPlatform, Platform, Quiet, Service, run_lab,
};
use foodlab_transport::kafka::{self, KafkaArgs};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use serde_json::Value;
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn example(name: &str) -> FoodLab {
    let path = repo().join(format!("manifests/examples/{name}.yaml"));
    serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Options for a lab, with the project's broker scripts.
pub fn options(lab: &FoodLab) -> LocalOptions {
    with_project_brokers(LocalOptions::for_lab(&lab.spec))
}

fn with_project_brokers(mut options: LocalOptions) -> LocalOptions {
    options.broker = RabbitBroker::Local {
        script: Some(repo().join("scripts/rabbitmq.sh")),
    };
    options.kafka = KafkaBroker::Local {
        script: Some(repo().join("scripts/kafka.sh")),
    };
    options
}

pub async fn start(lab: &FoodLab) -> LocalPlatform {
    LocalPlatform::start(options(lab)).await.unwrap()
}

/// Starts the lab's part and runs the lab on it; the platform stays up so
/// the test can look at the services afterwards.
pub async fn run(lab: &FoodLab) -> (LocalPlatform, LabReport) {
    let platform = start(lab).await;
    let report = run_lab(&platform, &lab.spec, Arc::new(Quiet))
        .await
        .unwrap();
    (platform, report)
}

pub async fn get(platform: &LocalPlatform, service: Service, path: &str) -> Value {
    get_url(&format!("{}{path}", platform.endpoint(service).unwrap())).await
}

/// `GET url` as JSON (one process of several, by its own URL).
pub async fn get_url(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

pub async fn post(
    platform: &LocalPlatform,
    service: Service,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let url = format!("{}{path}", platform.endpoint(service).unwrap());
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Makes inventory fail every delivery it takes (`POST /admin/fail`), or stop.
pub async fn inventory_fails(platform: &LocalPlatform, enabled: bool) {
    let (status, body) = post(
        platform,
        Service::Inventory,
        "/admin/fail",
        serde_json::json!({"enabled": enabled}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// How many orders the order service holds in each status.
pub async fn order_statuses(platform: &LocalPlatform) -> BTreeMap<String, usize> {
    let orders = get(platform, Service::Order, "/orders").await;
    let mut counts = BTreeMap::new();
    for order in orders.as_array().unwrap() {
        *counts
            .entry(order["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

/// The expected result of `order_statuses`.
pub fn statuses(counts: &[(&str, usize)]) -> BTreeMap<String, usize> {
    counts.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
}

/// Exactly `expected` orders, none of them still `placed`.
pub async fn all_orders_settled(platform: &LocalPlatform, expected: usize) -> bool {
    let counts = order_statuses(platform).await;
    counts.values().sum::<usize>() == expected && !counts.contains_key("placed")
}

/// A service's `foodlab_messages_total{queue, outcome}` counter (0 if absent).
pub async fn messages_counted(
    platform: &LocalPlatform,
    service: Service,
    queue: &str,
    outcome: &str,
) -> u64 {
    messages_counted_at(&platform.endpoint(service).unwrap(), queue, outcome).await
}

/// The same counter of the one process at `endpoint`.
pub async fn messages_counted_at(endpoint: &str, queue: &str, outcome: &str) -> u64 {
    let scrape = metrics::scrape(&reqwest::Client::new(), endpoint)
        .await
        .unwrap();
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "foodlab_messages_total"
                && s.labels.get("queue") == Some(queue)
                && s.labels.get("outcome") == Some(outcome)
        })
        .and_then(metrics::counter)
        .unwrap_or(0)
}

/// Polls `probe` every 100 ms until it returns true or `seconds` pass.
pub async fn eventually<F, Fut>(seconds: u64, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// Kills a process at once, as a crash or the OOM killer would.
pub fn sigkill(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
}

pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited; only its exit status is left.
        Ok(stat) => stat
            .split_whitespace()
            .nth(2)
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Waits up to `seconds` for the supervisor to report that `service` died
/// and then that it is running again; returns the death's report.
pub async fn died_and_restarted(
    events: &mut tokio::sync::broadcast::Receiver<foodlab_lab::platform::local::ServiceEvent>,
    service: Service,
    seconds: u64,
) -> foodlab_lab::platform::local::ServiceEvent {
    use foodlab_lab::platform::local::ServiceEvent;
    let wait = async {
        let mut death = None;
        loop {
            let event = events.recv().await.unwrap();
            if event.service() != service {
                continue;
            }
            match event {
                ServiceEvent::Died { .. } => death = Some(event),
                ServiceEvent::Restarted { .. } if death.is_some() => return death.unwrap(),
                _ => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(seconds), wait)
        .await
        .unwrap_or_else(|_| panic!("{service} was not reported dead and restarted in {seconds} s"))
}

/// Options for a part started without a lab (a long-running part, as on a
/// cluster), with the project's broker scripts.
pub fn part_options(transport: foodlab_lab::Transport) -> LocalOptions {
    with_project_brokers(LocalOptions::new(transport))
}

/// The names of the examples whose file name starts with `prefix` and
/// that run on a broker of `nodes` nodes (1: the parts' default), sorted.
pub fn examples_on(prefix: &str, nodes: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("manifests/examples"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".yaml")?;
            stem.starts_with(prefix).then(|| stem.to_owned())
        })
        .filter(|name| example(name).spec.broker_nodes() == nodes)
        .collect();
    names.sort();
    names
}

/// `examples_on(prefix, 1)`: those for a part as it is installed by default.
pub fn examples(prefix: &str) -> Vec<String> {
    examples_on(prefix, 1)
}

/// Every service at one base URL (a stub serving all their paths).
pub struct OneEndpoint(pub String);

impl Platform for OneEndpoint {
    fn endpoint(&self, _service: Service) -> Result<String, foodlab_lab::PlatformError> {
        Ok(self.0.clone())
    }
    async fn scale(
        &self,
        _service: Service,
        _replicas: u32,
    ) -> Result<(), foodlab_lab::PlatformError> {
        Ok(())
    }
    fn rabbitmq(&self) -> Option<&foodlab_lab::platform::rabbitmq::RabbitAdmin> {
        None
    }
    async fn replicas(&self, _service: Service) -> Result<u32, foodlab_lab::PlatformError> {
        Ok(1)
    }
}

/// Every result on `topic`, read from the start by a group of its own, each
/// offset once (a fetch repeated after a leader change delivers some again).
pub async fn read_topic(args: &KafkaArgs, topic: &str) -> Vec<Value> {
    let group = format!("reader-{}", uuid::Uuid::new_v4().simple());
    let consumer = args
        .consumer(&group, "test-reader", &Default::default())
        .unwrap();
    let start = kafka::earliest_of(&consumer, &[topic]).unwrap();
    let mut ends = BTreeMap::new();
    for element in start.elements() {
        let (_, high) = consumer
            .fetch_watermarks(topic, element.partition(), kafka::QUERY_TIMEOUT)
            .unwrap();
        ends.insert(element.partition(), high);
    }
    consumer.assign(&start).unwrap();
    let mut messages = BTreeMap::new();
    let mut read_to: BTreeMap<i32, i64> = BTreeMap::new();
    while ends
        .iter()
        .any(|(partition, end)| read_to.get(partition).copied().unwrap_or(0) < *end)
    {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("the topic should be readable to its end")
            .unwrap();
        let next = read_to.entry(message.partition()).or_default();
        *next = (*next).max(message.offset() + 1);
        let body: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        messages.insert((message.partition(), message.offset()), body);
    }
    messages.into_values().collect()
}

/// Three nodes of a broker, run by the project's script with `ENV=3`
/// (`KAFKA_NODES=3 scripts/kafka.sh`, `RABBITMQ_NODES=3 scripts/rabbitmq.sh`):
/// started by the test unless they were running, and stopped when this is
/// dropped (a panic included) only if the test started them.
pub struct ThreeNodes {
    script: &'static str,
    env: &'static str,
    started_here: bool,
    /// Held while the test runs, so that two runs of it (two `cargo test`s
    /// of this checkout) take turns with the one cluster instead of killing
    /// each other's nodes. A port, not a file lock: the kernel frees it when
    /// the process dies, however it dies.
    _turn: std::net::TcpListener,
}

impl ThreeNodes {
    /// Waits for the turn at `turn_port`, then starts the nodes that are not
    /// running (a node an earlier run killed included).
    pub async fn up(script: &'static str, env: &'static str, turn_port: u16) -> Self {
        let turn = take_turn(turn_port).await;
        let (running, took) = tokio::task::spawn_blocking(move || {
            let running = run_script(script, env, &["status"]).is_ok();
            let started = std::time::Instant::now();
            run_script(script, env, &["start"]).unwrap();
            (running, started.elapsed())
        })
        .await
        .unwrap();
        if running {
            eprintln!("three-node {script}: already running; reused");
        } else {
            eprintln!("three-node {script}: started in {took:.1?}");
        }
        Self {
            script,
            env,
            started_here: !running,
            _turn: turn,
        }
    }

    /// The script's stdout for `args`; panics with its stderr if it fails.
    pub fn call(&self, args: &[&str]) -> String {
        run_script(self.script, self.env, args).unwrap()
    }

    /// `call`, off the runtime's threads (a node's start takes seconds).
    pub async fn run(&self, args: &[&str]) -> String {
        let (script, env) = (self.script, self.env);
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_script(script, env, &args)
        })
        .await
        .unwrap()
        .unwrap()
    }
}

impl Drop for ThreeNodes {
    fn drop(&mut self) {
        if self.started_here
            && let Err(error) = run_script(self.script, self.env, &["stop"])
        {
            eprintln!("{error}");
        }
    }
}

/// `ENV=3 scripts/SCRIPT ARGS`: its stdout, or why it failed.
fn run_script(script: &str, env: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(repo().join("scripts").join(script))
        .args(args)
        .env(env, "3")
        .output()
        .map_err(|error| format!("scripts/{script} cannot run: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{env}=3 scripts/{script} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

async fn take_turn(port: u16) -> std::net::TcpListener {
    let deadline = std::time::Instant::now() + Duration::from_secs(1800);
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return listener,
            Err(error) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for 127.0.0.1:{port} (another run of this test): {error}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(error) => panic!("127.0.0.1:{port} stayed taken for 30 min: {error}"),
        }
    }
}
