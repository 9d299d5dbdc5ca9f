//! The order service: takes orders from customers and drives them through
//! reservation and notification.
//!
//! REST mode (`sync-rest`): `POST /order` calls inventory and then
//! notification, each call blocking the caller, and answers with the order's
//! final status. `GET /orders`, `GET /orders/{id}`.

pub mod http;
pub mod metrics;
pub mod rest_chain;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use foodlab_service_kit::ServiceArgs;
use foodlab_store::OrderStore;
use foodlab_transport::HttpClient;

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

    /// Base URL of the inventory service.
    #[arg(
        long,
        env = "FOODLAB_INVENTORY_URL",
        default_value = "http://127.0.0.1:8001"
    )]
    pub inventory_url: String,

    /// Base URL of the notification service.
    #[arg(
        long,
        env = "FOODLAB_NOTIFICATION_URL",
        default_value = "http://127.0.0.1:8002"
    )]
    pub notification_url: String,

    /// How long to wait for inventory or notification before giving up (e.g. `5s`, `800ms`).
    #[arg(long, env = "FOODLAB_DEPENDENCY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub dependency_timeout: Duration,
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub store: OrderStore,
    pub chain: rest_chain::RestChain,
    pub metrics: metrics::OrderMetrics,
}

pub fn app(args: &Args) -> anyhow::Result<axum::Router> {
    let faults = args
        .service
        .faults
        .to_faults()
        .context("invalid start-up faults")?;
    let store = OrderStore::open(&args.service.database(SERVICE))
        .context("cannot open the order database")?;
    let client =
        HttpClient::new(args.dependency_timeout).context("cannot build the HTTP client")?;
    let chain = rest_chain::RestChain::new(client, &args.inventory_url, &args.notification_url);
    let mut kit = foodlab_service_kit::Kit::new(SERVICE, faults);
    let metrics = metrics::OrderMetrics::register(kit.registry());
    let state = AppState {
        store,
        chain,
        metrics,
    };
    Ok(kit.router(http::routes(state)))
}

pub fn listen_addr(args: &Args) -> SocketAddr {
    args.service.listen_or(DEFAULT_PORT)
}
