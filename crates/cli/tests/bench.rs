//! `foodlab bench --json`: one line of JSON on stdout, each phase with the
//! orders it placed, its figures and each service's CPU per order.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_small_sync_rest_bench_prints_its_phases_as_one_json_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .args(["bench", "sync-rest", "--json"])
        .args(["--latency-orders", "30", "--throughput-orders", "60"])
        .args(["--concurrency", "4"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let bench: serde_json::Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(bench["part"], "sync-rest");
    assert_eq!(bench["database"], "sqlite");
    let phases = bench["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["latency", "throughput"]);
    for (phase, orders) in phases.iter().zip([30.0, 60.0]) {
        assert_eq!(phase["figures"]["orders"], orders, "{phase}");
        assert_eq!(phase["figures"]["non_201"], 0.0, "{phase}");
        assert_eq!(phase["unit"], "order");
        let cpu = phase["cpu_ms_per_unit"].as_object().unwrap();
        let services: Vec<&str> = cpu.keys().map(String::as_str).collect();
        assert_eq!(services, ["inventory", "notification", "order"], "{phase}");
    }
}

#[test]
fn the_floor_times_each_part_alone_and_sums_each_path() {
    let output = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .args(["floor", "--json", "--rounds", "20"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let floor: serde_json::Value =
        serde_json::from_str(String::from_utf8(output.stdout).unwrap().trim_end()).unwrap();
    let parts = floor["parts"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["http", "sqlite_commit", "rabbitmq_confirm", "kafka_produce"]
    );
    for part in parts {
        assert_eq!(part["rounds"], 20, "{part}");
        let (p50, p99) = (
            part["p50_ms"].as_f64().unwrap(),
            part["p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{part}");
    }
    let p50 = |i: usize| parts[i]["p50_ms"].as_f64().unwrap();
    let paths = floor["paths"].as_array().unwrap();
    let floor_of = |name: &str| {
        let path = paths.iter().find(|p| p["name"] == name).unwrap();
        path["floor_ms"].as_f64().unwrap()
    };
    let close = |a: f64, b: f64| (a - b).abs() < 0.002;
    assert!(close(floor_of("sync_chain"), 3.0 * p50(0) + 4.0 * p50(1)));
    assert!(close(
        floor_of("async_end_to_end"),
        3.0 * p50(1) + 2.0 * p50(2)
    ));
    assert_eq!(
        paths[0]["measured_by"],
        serde_json::json!(["sync-rest", "latency", "p50_ms"])
    );
}
