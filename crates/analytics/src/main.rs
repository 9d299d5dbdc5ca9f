use clap::Parser;
use foodlab_analytics::{Args, app, listen_addr};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    foodlab_service_kit::telemetry::init(args.service.log_format);
    let router = app(&args).await?;
    let listener = tokio::net::TcpListener::bind(listen_addr(&args)).await?;
    tracing::info!(service = "analytics", addr = %listener.local_addr()?, "listening");
    foodlab_service_kit::serve(router, listener).await?;
    Ok(())
}
