//! The analytics service (streaming-kafka part): reads `order-events` and
//! `inventory-events` as the `analytics-group` and computes totals, the
//! failure rate and orders per minute from the log, in a store every
//! replica of the group shares (so any number of them can read). Its
//! figures can be recomputed at any time by rewinding the group
//! (`POST /admin/reset-offsets`); a throttle (`POST /admin/throttle`) slows
//! it down to show consumer lag.

pub mod consumer;
pub mod http;
pub mod lag;
pub mod totals;

use std::net::SocketAddr;

use anyhow::Context;
use foodlab_domain::Transport;
use foodlab_service_kit::{MessageMetrics, ServiceArgs};
use foodlab_store::AnalyticsStore;
use foodlab_transport::BrokerErrors;
use foodlab_transport::kafka::KafkaArgs;

pub const SERVICE: &str = "analytics";
pub const DEFAULT_PORT: u16 = 8002;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "analytics",
    about = "FoodLab analytics service: figures over the event log, consumer lag, replay"
)]
pub struct Args {
    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,
}

pub async fn app(args: &Args) -> anyhow::Result<axum::Router> {
    if args.service.transport != Transport::Kafka {
        anyhow::bail!(
            "analytics reads the Kafka event log; start it with --transport kafka (FOODLAB_TRANSPORT=kafka)"
        );
    }
    let faults = args
        .service
        .faults
        .to_faults()
        .context("invalid start-up faults")?;
    let admin_token = args.service.admin_token()?;
    let mut kit = foodlab_service_kit::Kit::new(SERVICE, faults).with_admin_token(admin_token);
    let lag =
        lag::LagWatch::new(&args.kafka, kit.registry()).context("cannot read consumer lag")?;
    lag.spawn_refresh();
    let database = args.service.database(SERVICE)?;
    let store = AnalyticsStore::open(&database, &args.kafka.analytics_group)
        .await
        .context("cannot open the analytics database")?;
    let throttle = consumer::Throttle::default();
    let resets = consumer::Reader {
        args: args.kafka.clone(),
        store: store.clone(),
        throttle: throttle.clone(),
        faults: kit.faults(),
        metrics: MessageMetrics::register(kit.registry()),
        errors: BrokerErrors::register(kit.registry()),
        hops: kit.hops(),
    }
    .spawn(kit.readiness());
    let state = http::AppState {
        store,
        throttle,
        lag,
        resets,
    };
    // Its figures, lag and controls are what labs read and drive: an injected
    // delay slows the events analytics reads, not these answers.
    Ok(kit.router_with_counters(axum::Router::new(), http::routes(state)))
}

pub fn listen_addr(args: &Args) -> SocketAddr {
    args.service.listen_or(DEFAULT_PORT)
}
