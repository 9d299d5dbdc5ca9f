//! The notification service: tells the customer their order is confirmed,
//! once per order. REST mode: `POST /send`, `GET /notifications`.

pub mod http;
pub mod rabbitmq;

use std::net::SocketAddr;

use anyhow::Context;
use foodlab_domain::Transport;
use foodlab_service_kit::{MessageMetrics, ServiceArgs};
use foodlab_store::NotificationStore;
use foodlab_transport::BrokerErrors;
use foodlab_transport::rabbitmq::AmqpArgs;

pub const SERVICE: &str = "notification";
pub const DEFAULT_PORT: u16 = 8002;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "notification",
    about = "FoodLab notification service: confirms reserved orders to customers"
)]
pub struct Args {
    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub amqp: AmqpArgs,
}

pub async fn app(args: &Args) -> anyhow::Result<axum::Router> {
    let faults = args
        .service
        .faults
        .to_faults()
        .context("invalid start-up faults")?;
    let database = args.service.database(SERVICE)?;
    let store = NotificationStore::open(&database)
        .await
        .context("cannot open the notification database")?;
    let admin_token = args.service.admin_token()?;
    let mut kit = foodlab_service_kit::Kit::new(SERVICE, faults).with_admin_token(admin_token);
    if args.service.transport == Transport::Rabbitmq {
        rabbitmq::Consumer {
            args: args.amqp.clone(),
            store: store.clone(),
            faults: kit.faults(),
            metrics: MessageMetrics::register(kit.registry()),
            errors: BrokerErrors::register(kit.registry()),
            hops: kit.hops(),
        }
        .spawn(kit.readiness());
    }
    Ok(kit.router(http::routes(store)))
}

pub fn listen_addr(args: &Args) -> SocketAddr {
    args.service.listen_or(DEFAULT_PORT)
}
