//! Placing the lab's orders: open loop at a rate, or closed loop at a concurrency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::measure::{Sample, Tally};
use crate::spec::Workload;

/// How long one `POST /order` may take before the workload counts it as unanswered.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Places every order of the workload, handing each answer to `on_sample`
/// as it comes; returns what the answers add up to and the time taken.
/// Request bodies are made as they are sent and answers are not kept, so
/// memory does not grow with the orders.
pub async fn run(
    workload: &Workload,
    order_url: &str,
    on_sample: Arc<dyn Fn(&Sample) + Send + Sync>,
) -> (Tally, Duration) {
    let http = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default();
    let url = format!("{}/order", order_url.trim_end_matches('/'));
    let bodies = (0..workload.orders as usize).map(|i| {
        json!({
            "item": workload.items[i % workload.items.len()],
            "quantity": workload.quantity,
        })
    });
    let started = Instant::now();
    let place = |body: Value| {
        let http = http.clone();
        let url = url.clone();
        let on_sample = Arc::clone(&on_sample);
        async move {
            let sample = place_one(&http, &url, &body).await;
            on_sample(&sample);
            sample
        }
    };
    let mut tally = Tally::default();
    match workload.rate_per_second {
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = tokio::task::JoinSet::new();
            for (i, body) in bodies.enumerate() {
                tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
                tasks.spawn(place(body));
                while let Some(done) = tasks.try_join_next() {
                    if let Ok(sample) = done {
                        tally.record(&sample);
                    }
                }
            }
            while let Some(done) = tasks.join_next().await {
                if let Ok(sample) = done {
                    tally.record(&sample);
                }
            }
        }
        None => {
            let concurrency = workload.concurrency.unwrap_or(1).max(1) as usize;
            futures::stream::iter(bodies)
                .map(place)
                .buffer_unordered(concurrency)
                .for_each(|sample| {
                    tally.record(&sample);
                    std::future::ready(())
                })
                .await;
        }
    }
    (tally, started.elapsed())
}

async fn place_one(http: &reqwest::Client, url: &str, body: &Value) -> Sample {
    let started = Instant::now();
    let response = http.post(url).json(body).send().await;
    let (status, answer) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            (
                Some(status),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
        Err(_) => (None, Value::Null),
    };
    let latency = started.elapsed();
    let success = status.is_some_and(|s| (200..300).contains(&s));
    // A 2xx body is the order (its `status` is the order's); an error body is
    // a problem whose `status` is the HTTP code and `order_status` the order's.
    let order_status = if success {
        answer.get("status")
    } else {
        answer.get("order_status")
    }
    .and_then(Value::as_str)
    .map(str::to_owned);
    Sample {
        status,
        latency,
        order_status,
    }
}
