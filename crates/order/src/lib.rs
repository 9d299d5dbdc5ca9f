//! The order service: takes orders from customers and drives them through
//! reservation and notification.
//!
//! REST mode (`sync-rest`): `POST /order` calls inventory and then
//! notification, each call blocking the caller, and answers 201 with the
//! order's final status.
//! RabbitMQ mode (`async-rabbitmq`): `POST /order` stores the order and its
//! OrderPlaced event together and answers 202; a relay publishes the event
//! and a consumer records inventory's decision.
//! Kafka mode (`streaming-kafka`): the same outbox, produced to `order-events`
//! keyed by order id; the `order-group` consumer of `inventory-events`
//! records inventory's decision.
//! Both: `GET /orders`, `GET /orders/{id}`; `GET`/`PUT /admin/settings`
//! (the dependency timeout) at run time.

pub mod http;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod rabbitmq;
pub mod rest_chain;
pub mod settings;

use std::sync::Arc;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use foodlab_domain::Transport;
use foodlab_service_kit::{MessageMetrics, ServiceArgs};
use foodlab_store::OrderStore;
use foodlab_transport::BrokerErrors;
use foodlab_transport::HttpClient;
use foodlab_transport::kafka::KafkaArgs;
use foodlab_transport::rabbitmq::AmqpArgs;

pub const SERVICE: &str = "order";
pub const DEFAULT_PORT: u16 = 8000;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "order",
    about = "FoodLab order service: takes orders and drives them to a final status"
)]
pub struct Args {
    #[command(flatten)]
    pub service: ServiceArgs,

    /// Base URL of the inventory service; several, separated by commas, are taken in turn.
    #[arg(
        long,
        env = "FOODLAB_INVENTORY_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8001"
    )]
    pub inventory_url: Vec<String>,

    /// Base URL of the notification service; several, separated by commas, are taken in turn.
    #[arg(
        long,
        env = "FOODLAB_NOTIFICATION_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8002"
    )]
    pub notification_url: Vec<String>,

    /// How long to wait for inventory or notification before giving up (e.g. `5s`, `800ms`).
    #[arg(long, env = "FOODLAB_DEPENDENCY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub dependency_timeout: Duration,

    #[command(flatten)]
    pub amqp: AmqpArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// How an accepted order travels on.
#[derive(Clone)]
pub enum Workflow {
    /// Blocking calls to inventory and notification.
    Rest(rest_chain::RestChain),
    /// An event in the outbox; the nudge wakes the relay.
    Outbox(Arc<tokio::sync::Notify>),
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub store: OrderStore,
    pub workflow: Workflow,
    pub metrics: metrics::OrderMetrics,
    pub hops: foodlab_service_kit::HopMetrics,
}

pub async fn app(args: &Args) -> anyhow::Result<axum::Router> {
    let faults = args
        .service
        .faults
        .to_faults()
        .context("invalid start-up faults")?;
    let database = args.service.database(SERVICE)?;
    let store = OrderStore::open(&database)
        .await
        .context("cannot open the order database")?;
    let admin_token = args.service.admin_token()?;
    let mut kit = foodlab_service_kit::Kit::new(SERVICE, faults).with_admin_token(admin_token);
    let metrics = metrics::OrderMetrics::register(kit.registry());
    let settings = settings::Settings::new(args.dependency_timeout);
    let workflow = match args.service.transport {
        Transport::Rest => {
            let client =
                HttpClient::new(args.dependency_timeout).context("cannot build the HTTP client")?;
            Workflow::Rest(rest_chain::RestChain::new(
                client,
                settings.clone(),
                &args.inventory_url,
                &args.notification_url,
            )?)
        }
        Transport::Rabbitmq => {
            let outbox_nudge = Arc::new(tokio::sync::Notify::new());
            rabbitmq::Messaging {
                args: args.amqp.clone(),
                store: store.clone(),
                metrics: MessageMetrics::register(kit.registry()),
                errors: BrokerErrors::register(kit.registry()),
                hops: kit.hops(),
                outbox_nudge: Arc::clone(&outbox_nudge),
            }
            .spawn(kit.readiness());
            Workflow::Outbox(outbox_nudge)
        }
        Transport::Kafka => {
            let outbox_nudge = Arc::new(tokio::sync::Notify::new());
            kafka::Streaming {
                args: args.kafka.clone(),
                store: store.clone(),
                metrics: MessageMetrics::register(kit.registry()),
                errors: BrokerErrors::register(kit.registry()),
                hops: kit.hops(),
                outbox_nudge: Arc::clone(&outbox_nudge),
            }
            .spawn(kit.readiness());
            Workflow::Outbox(outbox_nudge)
        }
    };
    let state = AppState {
        store,
        workflow,
        metrics,
        hops: kit.hops(),
    };
    Ok(kit.router_with_counters(http::routes(state), settings::routes(settings)))
}

pub fn listen_addr(args: &Args) -> SocketAddr {
    args.service.listen_or(DEFAULT_PORT)
}
