//! The notification service: tells the customer their order is confirmed,
//! once per order. REST mode: `POST /send`, `GET /notifications`.

pub mod http;

use std::net::SocketAddr;

use anyhow::Context;
use foodlab_service_kit::ServiceArgs;
use foodlab_store::NotificationStore;

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
}

pub fn app(args: &Args) -> anyhow::Result<axum::Router> {
    let faults = args
        .service
        .faults
        .to_faults()
        .context("invalid start-up faults")?;
    let store = NotificationStore::open(&args.service.database(SERVICE))
        .context("cannot open the notification database")?;
    let kit = foodlab_service_kit::Kit::new(SERVICE, faults);
    Ok(kit.router(http::routes(store)))
}

pub fn listen_addr(args: &Args) -> SocketAddr {
    args.service.listen_or(DEFAULT_PORT)
}
