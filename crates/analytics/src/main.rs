use clap::Parser;
use foodlab_analytics::{Args, app, listen_addr};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    foodlab_service_kit::telemetry::init(args.service.log_format);
    foodlab_service_kit::run("analytics", listen_addr(&args), app(&args)).await
}
