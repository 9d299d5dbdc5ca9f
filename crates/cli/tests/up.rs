//! `foodlab up` brings a part up, and its services never outlive it, even
//! when it is killed outright.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
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

/// Starts `foodlab up sync-rest` on free ports; returns it once it has
/// printed its URLs, with the process ids of its three services.
fn start_up(data: &tempfile::TempDir) -> (Child, Vec<u32>) {
    start_part(data, "sync-rest", ["order", "inventory", "notification"])
}

fn start_part(data: &tempfile::TempDir, part: &str, services: [&str; 3]) -> (Child, Vec<u32>) {
    let mut up = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .args(["up", part, "--free-ports", "--data-dir"])
        // The project's broker, if a part needs one and it is not running.
        .env(
            "FOODLAB_KAFKA_SCRIPT",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kafka.sh"),
        )
        .env(
            "FOODLAB_RABBITMQ_SCRIPT",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/rabbitmq.sh"),
        )
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(up.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("Ctrl-C stops") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "foodlab up ended early:\n{printed}"
        );
        printed.push_str(&line);
    }
    for service in services {
        assert!(printed.contains(&format!("  {service}")), "{printed}");
    }
    let services = children_of(up.id());
    assert_eq!(services.len(), 3, "{printed}");
    (up, services)
}

#[test]
fn services_die_with_a_killed_foodlab_up() {
    let data = tempfile::tempdir().unwrap();
    let (mut up, services) = start_up(&data);
    kill(Pid::from_raw(up.id() as i32), Signal::SIGKILL).unwrap();
    up.wait().unwrap();
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
    let (mut up, services) = start_up(&data);
    kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM).unwrap();
    let status = up.wait().unwrap();
    assert!(status.success(), "{status}");
    let left: Vec<_> = services.iter().filter(|pid| alive(**pid)).collect();
    assert!(left.is_empty(), "still running after SIGTERM: {left:?}");
}

#[test]
fn foodlab_up_streaming_kafka_starts_its_services_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let (mut up, services) = start_part(
        &data,
        "streaming-kafka",
        ["order", "inventory", "analytics"],
    );
    kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM).unwrap();
    let status = up.wait().unwrap();
    assert!(status.success(), "{status}");
    let left: Vec<_> = services.iter().filter(|pid| alive(**pid)).collect();
    assert!(left.is_empty(), "still running after SIGTERM: {left:?}");
}
