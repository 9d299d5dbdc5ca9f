//! One order followed by one id: the trace id of the `traceparent` a client
//! sends is in the JSON log lines of all three services of each part (HTTP
//! headers, AMQP headers, Kafka headers carry it), every line naming the
//! order carries it, and the order service's answer names the trace.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use foodlab_lab::{LocalPlatform, Platform, Service, Transport};
use serde_json::{Value, json};
use support::{eventually, part_options};

/// A part whose services log JSON lines to `<data dir>/logs/<service>.log`.
async fn start(transport: Transport) -> LocalPlatform {
    let mut options = part_options(transport);
    options
        .env
        .push(("FOODLAB_LOG_FORMAT".into(), "json".into()));
    LocalPlatform::start(options).await.unwrap()
}

fn log_lines(platform: &LocalPlatform, service: Service) -> Vec<Value> {
    let path = platform
        .data_dir()
        .join("logs")
        .join(format!("{}.log", service.name()));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The trace id of the spans a log line was written in, if any.
fn trace_id_of(line: &Value) -> Option<&str> {
    line["spans"]
        .as_array()?
        .iter()
        .find_map(|span| span["trace_id"].as_str())
}

/// What a service logged in the trace: its messages, and whether every line
/// that names the order is one of them.
fn traced(platform: &LocalPlatform, service: Service, trace_id: &str, order_id: &str) -> Traced {
    let lines = log_lines(platform, service);
    let messages = lines
        .iter()
        .filter(|line| trace_id_of(line) == Some(trace_id))
        .filter_map(|line| line["message"].as_str().map(str::to_owned))
        .collect();
    let untraced_order_lines = lines
        .iter()
        .filter(|line| line.to_string().contains(order_id))
        .filter(|line| trace_id_of(line) != Some(trace_id))
        .count();
    Traced {
        messages,
        untraced_order_lines,
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Traced {
    messages: BTreeSet<String>,
    untraced_order_lines: usize,
}

/// Places one order with `traceparent`, waits until every service logged
/// `expected` in its trace, and checks the answer and the logs.
async fn follow_one_order(
    transport: Transport,
    trace_id: &str,
    accepted: u16,
    expected: &[(Service, &[&str])],
) {
    let platform = start(transport).await;
    let url = format!("{}/order", platform.endpoint(Service::Order).unwrap());
    let response = reqwest::Client::new()
        .post(url)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"item": "burger", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), accepted);
    let answered = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_owned();
    let order: Value = response.json().await.unwrap();
    let order_id = order["order_id"].as_str().unwrap().to_owned();

    let want = |messages: &[&str]| Traced {
        messages: messages.iter().map(|m| (*m).to_owned()).collect(),
        untraced_order_lines: 0,
    };
    let all_logged = eventually(30, || async {
        expected.iter().all(|(service, messages)| {
            traced(&platform, *service, trace_id, &order_id).messages == want(messages).messages
        })
    })
    .await;
    let seen: Vec<(Service, Traced)> = transport
        .services()
        .iter()
        .map(|service| (*service, traced(&platform, *service, trace_id, &order_id)))
        .collect();
    platform.shutdown().await;

    assert!(
        all_logged,
        "not every service logged the order in its trace: {seen:?}"
    );
    let wanted: Vec<(Service, Traced)> = expected
        .iter()
        .map(|(service, messages)| (*service, want(messages)))
        .collect();
    assert_eq!(seen, wanted);
    // The order service's own hop: the client's trace, a span of its own.
    assert!(
        answered.starts_with(&format!("00-{trace_id}-")),
        "{answered}"
    );
    assert!(!answered.contains("00f067aa0ba902b7"), "{answered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rest_one_orders_trace_id_is_in_all_three_services_logs() {
    follow_one_order(
        Transport::Rest,
        "4bf92f3577b34da6a3ce929d0e0e4736",
        201,
        &[
            (Service::Inventory, &["reservation decided"]),
            (Service::Notification, &["notification sent"]),
            (Service::Order, &["order placed"]),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_rabbitmq_one_orders_trace_id_is_in_all_three_services_logs() {
    follow_one_order(
        Transport::Rabbitmq,
        "5c0a3f4688c45eb7b4df03ae1f1f5847",
        202,
        &[
            (Service::Inventory, &["order decided"]),
            (Service::Notification, &["notification sent"]),
            (Service::Order, &["order accepted", "order settled"]),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_kafka_one_orders_trace_id_is_in_all_three_services_logs() {
    follow_one_order(
        Transport::Kafka,
        "6d1b4057990d56c8c5e014bf20206958",
        202,
        &[
            (Service::Inventory, &["order decided"]),
            (Service::Analytics, &["event read"]),
            (Service::Order, &["order accepted", "order settled"]),
        ],
    )
    .await;
}
