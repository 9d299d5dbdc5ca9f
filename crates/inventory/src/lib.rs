//! The inventory service: owns the stock, reserves it for orders.
//!
//! REST mode: `POST /reserve` decides an order (all lines or nothing,
//! idempotent on `order_id`), `GET /stock`, `GET /stats`,
//! `GET /reservations/{order_id}`; `PUT /admin/stock` sets stock levels.
//! RabbitMQ mode: consumes OrderPlaced from `inventory_queue` (`rabbitmq`).
//! Kafka mode: the `inventory-group` consumer of `order-events` (`kafka`).

pub mod decision;
pub mod http;
pub mod kafka;
pub mod rabbitmq;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use foodlab_domain::Catalogue;
use foodlab_domain::Transport;
use foodlab_service_kit::{MessageMetrics, ServiceArgs};
use foodlab_store::StockStore;
use foodlab_transport::BrokerErrors;
use foodlab_transport::kafka::KafkaArgs;
use foodlab_transport::rabbitmq::AmqpArgs;

pub const SERVICE: &str = "inventory";
pub const DEFAULT_PORT: u16 = 8001;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "inventory",
    about = "FoodLab inventory service: owns the stock and reserves it for orders"
)]
pub struct Args {
    #[command(flatten)]
    pub service: ServiceArgs,

    /// Initial stock on top of the default 100 each of burger, pizza and salad,
    /// e.g. `burger=1000000,pizza=5`. Applies to items not yet in the database.
    #[arg(long, env = "FOODLAB_STOCK", default_value = "")]
    pub stock: String,

    #[command(flatten)]
    pub amqp: AmqpArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Abort after this many decisions (new or replayed) are committed, before
    /// their result leaves and the message is acked or its offset stored
    /// (for crash-recovery labs).
    #[arg(long, env = "FOODLAB_FAULT_CRASH_AFTER_COMMITS", hide = true)]
    pub crash_after_commits: Option<u64>,
}

/// Builds the whole service (store, routes, faults) from its arguments.
pub async fn app(args: &Args) -> anyhow::Result<axum::Router> {
    let catalogue = Catalogue::with_overrides(&args.stock).context("invalid FOODLAB_STOCK")?;
    let faults = args
        .service
        .faults
        .to_faults()
        .context("invalid start-up faults")?;
    let database = args.service.database(SERVICE)?;
    let store = StockStore::open(&database, &catalogue)
        .await
        .context("cannot open the inventory database")?;
    let admin_token = args.service.admin_token()?;
    let mut kit = foodlab_service_kit::Kit::new(SERVICE, faults).with_admin_token(admin_token);
    let metrics = MessageMetrics::register(kit.registry());
    let errors = BrokerErrors::register(kit.registry());
    match args.service.transport {
        Transport::Rest => {}
        Transport::Rabbitmq => rabbitmq::Consumer {
            args: args.amqp.clone(),
            store: store.clone(),
            faults: kit.faults(),
            metrics: metrics.clone(),
            errors: errors.clone(),
            hops: kit.hops(),
            crash_point: Arc::new(decision::CrashPoint::after(args.crash_after_commits)),
            acks: Default::default(),
        }
        .spawn(kit.readiness()),
        Transport::Kafka => kafka::Consumer {
            args: args.kafka.clone(),
            store: store.clone(),
            faults: kit.faults(),
            metrics: metrics.clone(),
            errors,
            hops: kit.hops(),
            crash_point: Arc::new(decision::CrashPoint::after(args.crash_after_commits)),
        }
        .spawn(kit.readiness()),
    }
    let unfaulted = http::counters(store.clone(), metrics).merge(http::admin(store.clone()));
    Ok(kit.router_with_counters(http::routes(store), unfaulted))
}

pub fn listen_addr(args: &Args) -> SocketAddr {
    args.service.listen_or(DEFAULT_PORT)
}
