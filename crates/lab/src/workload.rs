//! Placing the lab's orders: open loop at a rate, or closed loop at a concurrency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::measure::Sample;
use crate::spec::Workload;

/// How long one `POST /order` may take before the workload counts it as unanswered.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Places every order of the workload and returns the samples and the time taken.
pub async fn run(
    workload: &Workload,
    order_url: &str,
    on_sample: Arc<dyn Fn(&Sample) + Send + Sync>,
) -> (Vec<Sample>, Duration) {
    let http = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default();
    let url = format!("{}/order", order_url.trim_end_matches('/'));
    let bodies: Vec<Value> = (0..workload.orders as usize)
        .map(|i| {
            json!({
                "item": workload.items[i % workload.items.len()],
                "quantity": workload.quantity,
            })
        })
        .collect();
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
    let samples = match workload.rate_per_second {
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = tokio::task::JoinSet::new();
            for (i, body) in bodies.into_iter().enumerate() {
                tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
                tasks.spawn(place(body));
            }
            let mut samples = Vec::with_capacity(tasks.len());
            while let Some(done) = tasks.join_next().await {
                if let Ok(sample) = done {
                    samples.push(sample);
                }
            }
            samples
        }
        None => {
            let concurrency = workload.concurrency.unwrap_or(1).max(1) as usize;
            futures::stream::iter(bodies)
                .map(place)
                .buffer_unordered(concurrency)
                .collect()
                .await
        }
    };
    (samples, started.elapsed())
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
        order_id: answer
            .get("order_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}
