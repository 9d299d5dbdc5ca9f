//! `foodlab up` brings a part up, and its services never outlive it, even
//! when it is killed outright.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            children.extend(text.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
        }
    }
    children
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .split_whitespace()
            .nth(2)
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

/// A running `foodlab up` on free ports, stopped (SIGTERM, then SIGKILL)
/// when dropped, so a failing test leaves nothing behind.
struct Up {
    child: Child,
    /// Everything it printed so far.
    printed: String,
    lines: mpsc::Receiver<String>,
}

impl Up {
    /// Starts `foodlab up <part> --free-ports --data-dir <root> <args>` and
    /// returns once it has printed its URLs.
    fn start(root: &Path, part: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_foodlab"))
            .args(["up", part, "--free-ports", "--data-dir"])
            .arg(root)
            .args(args)
            // The project's broker, if a part needs one and it is not running.
            .env(
                "FOODLAB_KAFKA_SCRIPT",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kafka.sh"),
            )
            .env(
                "FOODLAB_RABBITMQ_SCRIPT",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/rabbitmq.sh"),
            )
            .env_remove("FOODLAB_STOCK")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let mut up = Self {
            child,
            printed: String::new(),
            lines,
        };
        up.wait_for("Ctrl-C stops", Duration::from_secs(60));
        up
    }

    /// Reads what it prints until a line contains `text`; returns that line.
    fn wait_for(&mut self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.printed.push_str(&line);
                    self.printed.push('\n');
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "foodlab up did not print `{text}` (ended or too slow):\n{}",
                    self.printed
                ),
            }
        }
    }

    /// The URL and pid it printed for a service.
    fn service(&self, name: &str) -> (String, u32) {
        let line = self
            .printed
            .lines()
            .find(|line| line.starts_with(&format!("  {name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", self.printed));
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [_, url, "pid", pid] => (url.to_owned(), pid.parse().unwrap()),
            _ => panic!("unexpected line for {name}: {line}"),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(self.pid(), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `foodlab up sync-rest` on free ports; returns it once it has
/// printed its URLs, with the process ids of its three services.
fn start_up(data: &tempfile::TempDir) -> (Up, Vec<u32>) {
    start_part(data, "sync-rest", ["order", "inventory", "notification"])
}

fn start_part(data: &tempfile::TempDir, part: &str, services: [&str; 3]) -> (Up, Vec<u32>) {
    let up = Up::start(data.path(), part, &[], &[]);
    let pids: Vec<u32> = services.iter().map(|s| up.service(s).1).collect();
    let mut children = children_of(up.child.id());
    children.sort_unstable();
    let mut sorted = pids.clone();
    sorted.sort_unstable();
    assert_eq!(children, sorted, "{}", up.printed);
    (up, pids)
}

#[test]
fn services_die_with_a_killed_foodlab_up() {
    let data = tempfile::tempdir().unwrap();
    let (mut up, services) = start_up(&data);
    kill(up.pid(), Signal::SIGKILL).unwrap();
    up.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while services.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = services.iter().filter(|pid| alive(**pid)).collect();
    assert!(
        left.is_empty(),
        "still running after foodlab up was killed: {left:?}"
    );
}

#[test]
fn sigterm_stops_foodlab_up_and_its_services() {
    let data = tempfile::tempdir().unwrap();
    let (up, services) = start_up(&data);
    let status = up.stop();
    assert!(status.success(), "{status}");
    let left: Vec<_> = services.iter().filter(|pid| alive(**pid)).collect();
    assert!(left.is_empty(), "still running after SIGTERM: {left:?}");
}

#[test]
fn foodlab_up_streaming_kafka_starts_its_services_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let (up, services) = start_part(
        &data,
        "streaming-kafka",
        ["order", "inventory", "analytics"],
    );
    let status = up.stop();
    assert!(status.success(), "{status}");
    let left: Vec<_> = services.iter().filter(|pid| alive(**pid)).collect();
    assert!(left.is_empty(), "still running after SIGTERM: {left:?}");
}

async fn get(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn order(url: &str, item: &str, quantity: u32) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/order"))
        .json(&serde_json::json!({"item": item, "quantity": quantity}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn stock(up: &Up) -> (u64, u64) {
    let stock = get(&format!("{}/stock", up.service("inventory").0)).await;
    (
        stock["burger"].as_u64().unwrap(),
        stock["pizza"].as_u64().unwrap(),
    )
}

async fn orders(up: &Up) -> usize {
    let orders = get(&format!("{}/orders", up.service("order").0)).await;
    orders.as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foodlab_up_twice_with_different_stock_has_the_stock_it_was_given() {
    let root = tempfile::tempdir().unwrap();

    let up = Up::start(root.path(), "sync-rest", &["--stock", "burger=7"], &[]);
    assert!(
        up.printed.contains("sync-rest is up, with fresh data in"),
        "{}",
        up.printed
    );
    assert!(up.printed.contains("Stock set: burger=7"), "{}", up.printed);
    assert_eq!(stock(&up).await, (7, 100));
    assert_eq!(order(&up.service("order").0, "burger", 2).await, 201);
    assert_eq!(stock(&up).await, (5, 100));
    assert!(up.stop().success());

    // The case: another part, the stock from the environment.
    let up = Up::start(
        root.path(),
        "async-rabbitmq",
        &[],
        &[("FOODLAB_STOCK", "burger=100000")],
    );
    assert!(
        up.printed
            .contains("async-rabbitmq is up, with fresh data in"),
        "{}",
        up.printed
    );
    assert_eq!(stock(&up).await, (100_000, 100));
    assert!(up.stop().success());

    // Kept data: the order is still there, and the stock given is set.
    let up = Up::start(
        root.path(),
        "sync-rest",
        &["--keep-data", "--stock", "burger=1000"],
        &[],
    );
    assert!(
        up.printed
            .contains("sync-rest is up, with the data kept in"),
        "{}",
        up.printed
    );
    assert_eq!(orders(&up).await, 1);
    assert_eq!(stock(&up).await, (1000, 100));
    assert!(up.stop().success());

    // Kept data and no stock given: the levels are the last run's.
    let up = Up::start(root.path(), "sync-rest", &["--keep-data"], &[]);
    assert_eq!(stock(&up).await, (1000, 100));
    assert!(up.stop().success());

    // By default a part starts fresh.
    let up = Up::start(root.path(), "sync-rest", &[], &[]);
    assert!(
        up.printed.contains("the last run's was cleared"),
        "{}",
        up.printed
    );
    assert_eq!(orders(&up).await, 0);
    assert_eq!(stock(&up).await, (100, 100));
    assert!(up.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_sigkilled_under_foodlab_up_is_restarted_and_every_order_reserved() {
    let root = tempfile::tempdir().unwrap();
    let mut up = Up::start(
        root.path(),
        "async-rabbitmq",
        &["--stock", "burger=1000"],
        &[],
    );
    let (order_url, _) = up.service("order");
    let (_, inventory) = up.service("inventory");
    for n in 0..200 {
        if n == 100 {
            kill(Pid::from_raw(inventory as i32), Signal::SIGKILL).unwrap();
        }
        assert_eq!(order(&order_url, "burger", 1).await, 202, "order {n}");
    }
    let death = up.wait_for("inventory (pid", Duration::from_secs(10));
    assert_eq!(
        death,
        format!("inventory (pid {inventory}) was killed by SIGKILL; restarting in 0.5 s")
    );
    let restart = up.wait_for("inventory restarted", Duration::from_secs(30));
    assert!(!alive(inventory), "{restart}");

    let settled = async {
        loop {
            let orders = get(&format!("{order_url}/orders")).await;
            let orders = orders.as_array().unwrap();
            if orders.len() == 200 && orders.iter().all(|o| o["status"] == "reserved") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(60), settled)
            .await
            .is_ok(),
        "not every order reserved:\n{}",
        up.printed
    );
    let inventory_url = up.service("inventory").0;
    let stats = get(&format!("{inventory_url}/stats")).await;
    assert_eq!(
        (&stats["reserved_orders"], &stats["units_reserved"]),
        (&serde_json::json!(200), &serde_json::json!(200)),
        "{stats}"
    );
    assert_eq!(stock(&up).await, (800, 100));
    assert!(up.stop().success());
}
