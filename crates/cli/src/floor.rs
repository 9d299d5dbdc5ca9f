//! `foodlab floor`: the parts of an order's way that no design removes, each
//! measured alone on this machine (one loopback HTTP round trip through the
//! services' client and server, one SQLite commit of a reservation, one
//! persistent RabbitMQ publish and its confirm, one Kafka produce with
//! `acks=all`), and the floor of each path as the sum of the parts it takes.
//! `make bench` sets the measured paths beside them.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use foodlab_domain::{Catalogue, Envelope, Event, ItemName, OrderId, OrderLine};
use foodlab_store::{Database, StockStore};
use foodlab_transport::kafka::{self, KafkaArgs};
use foodlab_transport::rabbitmq;
use foodlab_transport::{BrokerErrors, HttpClient};
use serde::Serialize;

use crate::machine::Machine;

/// One part of an order's way, timed alone.
#[derive(Debug, Serialize)]
pub struct Part {
    pub name: &'static str,
    pub what: &'static str,
    pub rounds: u32,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// This process's CPU per round (client and, for HTTP, server).
    pub cpu_ms: f64,
}

/// A path's floor: the parts it cannot do without, one after the other.
#[derive(Debug, Serialize)]
pub struct Path {
    pub name: &'static str,
    pub what: &'static str,
    /// The bench's figure it is the floor of: `part`, `phase`, `figure`.
    pub measured_by: [&'static str; 3],
    pub floor_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct FloorReport {
    pub started_at: String,
    pub machine: Machine,
    pub parts: Vec<Part>,
    pub paths: Vec<Path>,
}

/// Times each part `rounds` times (after a tenth as many untimed).
pub async fn run(
    amqp_url: &str,
    kafka_brokers: &str,
    rounds: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
    let machine = Machine::describe();
    eprintln!("machine: {}", machine.line());
    let parts = vec![
        http_round_trip(rounds).await.context("HTTP round trip")?,
        sqlite_commit(rounds).await.context("SQLite commit")?,
        rabbitmq_confirm(amqp_url, rounds)
            .await
            .context("RabbitMQ publish and confirm")?,
        kafka_produce(kafka_brokers, rounds)
            .await
            .context("Kafka produce, acks=all")?,
    ];
    let p50 = |name: &str| {
        parts
            .iter()
            .find(|part| part.name == name)
            .map_or(0.0, |part| part.p50_ms)
    };
    let (http, commit, confirm) = (p50("http"), p50("sqlite_commit"), p50("rabbitmq_confirm"));
    let paths = vec![
        Path {
            name: "sync_chain",
            what: "sync-rest, one order at a time: three HTTP round trips (client → order → inventory, → notification) and four commits (order placed, reserved, notified, order settled)",
            measured_by: ["sync-rest", "latency", "p50_ms"],
            floor_ms: round3(3.0 * http + 4.0 * commit),
        },
        Path {
            name: "async_end_to_end",
            what: "async-rabbitmq, placed → reserved: the order's commit, its event's publish and confirm, inventory's commit, the result's publish and confirm, the order settled",
            measured_by: ["async-rabbitmq", "end_to_end", "p50_ms"],
            floor_ms: round3(3.0 * commit + 2.0 * confirm),
        },
    ];
    for part in &parts {
        eprintln!(
            "  {:<17} p50 {:>7.3} ms  p99 {:>7.3} ms  CPU {:.3} ms  ({})",
            part.name, part.p50_ms, part.p99_ms, part.cpu_ms, part.what
        );
    }
    for path in &paths {
        eprintln!(
            "  floor of {:<17} {:>7.3} ms  ({})",
            path.name, path.floor_ms, path.what
        );
    }
    if json {
        let report = FloorReport {
            started_at: jiff::Timestamp::now().to_string(),
            machine,
            parts,
            paths,
        };
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Times `round` `rounds` times after a warm-up; its percentiles and this
/// process's CPU per round.
async fn time<F, Fut>(
    rounds: u32,
    name: &'static str,
    what: &'static str,
    mut round: F,
) -> anyhow::Result<Part>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for n in 0..rounds / 10 {
        round(n).await?;
    }
    let cpu_before = cpu_seconds()?;
    let mut took = Vec::with_capacity(rounds as usize);
    for n in 0..rounds {
        let started = Instant::now();
        round(n).await?;
        took.push(started.elapsed());
    }
    let cpu = cpu_seconds()? - cpu_before;
    took.sort_unstable();
    let at = |fraction: f64| {
        let index = ((took.len() as f64 - 1.0) * fraction).round() as usize;
        round3(took[index].as_secs_f64() * 1000.0)
    };
    Ok(Part {
        name,
        what,
        rounds,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        cpu_ms: round3(cpu * 1000.0 / f64::from(rounds)),
    })
}

fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = procfs::process::Process::myself()?.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn order_event() -> Envelope {
    Envelope::new(
        OrderId::new(),
        "floor".into(),
        jiff::Timestamp::now(),
        Event::OrderPlaced {
            customer_id: None,
            items: vec![burger()],
        },
    )
}

fn burger() -> OrderLine {
    OrderLine {
        item: ItemName::parse("burger").unwrap_or_else(|| unreachable!("a valid name")),
        quantity: 1,
    }
}

/// What the sync chain sends inventory.
#[derive(Serialize)]
struct ReserveBody {
    order_id: OrderId,
    items: Vec<OrderLine>,
}

async fn http_round_trip(rounds: u32) -> anyhow::Result<Part> {
    let app = axum::Router::new().route(
        "/reserve",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let order: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            axum::Json(serde_json::json!({ "order_id": order["order_id"], "replayed": false }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/reserve", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = HttpClient::new(Duration::from_secs(5))?;
    let body = ReserveBody {
        order_id: OrderId::new(),
        items: vec![burger()],
    };
    let part = time(
        rounds,
        "http",
        "a POST with a small JSON body and its answer, through the services' HTTP client and server, on loopback",
        |_| async {
            client
                .post_json::<_, serde::de::IgnoredAny>(&url, &body)
                .await?;
            Ok(())
        },
    )
    .await;
    server.abort();
    part
}

async fn sqlite_commit(rounds: u32) -> anyhow::Result<Part> {
    let dir = tempfile::tempdir()?;
    let catalogue = Catalogue::with_overrides("burger=1000000000")?;
    let store =
        StockStore::open(&Database::Sqlite(dir.path().join("floor.db")), &catalogue).await?;
    time(
        rounds,
        "sqlite_commit",
        "one reservation decided and committed (WAL, synchronous=NORMAL), as inventory does",
        |_| async {
            store.reserve(OrderId::new(), vec![burger()], 0).await?;
            Ok(())
        },
    )
    .await
}

async fn rabbitmq_confirm(url: &str, rounds: u32) -> anyhow::Result<Part> {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    let connection = rabbitmq::connect(url, "foodlab-floor").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = format!("foodlab-floor-{}", uuid::Uuid::new_v4());
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, Default::default())
        .await?;
    let body = order_event().to_json();
    let part = time(
        rounds,
        "rabbitmq_confirm",
        "one persistent message to a durable queue, and the broker's confirm",
        |_| async {
            let confirmation = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            anyhow::ensure!(!confirmation.is_nack(), "the broker refused the message");
            Ok(())
        },
    )
    .await;
    // Removed whether or not the timing went through.
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    part
}

async fn kafka_produce(brokers: &str, rounds: u32) -> anyhow::Result<Part> {
    let run = uuid::Uuid::new_v4();
    let args = KafkaArgs {
        order_topic: format!("foodlab-floor-{run}"),
        inventory_topic: format!("foodlab-floor-{run}-unused"),
        // Names of its own: the clean-up below deletes the groups named here,
        // and the parts' groups are not the floor's to delete.
        inventory_group: format!("foodlab-floor-{run}-inventory"),
        analytics_group: format!("foodlab-floor-{run}-analytics"),
        order_group: format!("foodlab-floor-{run}-order"),
        brokers: brokers.to_owned(),
        ..KafkaArgs::default()
    };
    args.ensure_topics().await?;
    let producer = args.producer("foodlab-floor", &BrokerErrors::default())?;
    let event = order_event();
    let part = time(
        rounds,
        "kafka_produce",
        "one event produced with acks=all by the services' idempotent producer (its linger.ms of 10 included), until the broker has it",
        |_| async {
            kafka::send(&producer, &args.order_topic, &event)
                .await?
                .confirmed()
                .await?;
            Ok(())
        },
    )
    .await;
    args.delete_topics_and_groups().await?;
    part
}
