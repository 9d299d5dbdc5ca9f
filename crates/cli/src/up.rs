use std::path::PathBuf;
use std::process::ExitCode;

use foodlab_lab::{LocalOptions, LocalPlatform, Logs, Platform, Ports, Transport};

pub async fn run(
    transport: Transport,
    data_dir: PathBuf,
    free_ports: bool,
) -> anyhow::Result<ExitCode> {
    let mut options = LocalOptions::new(transport);
    options.ports = if free_ports {
        Ports::Free
    } else {
        Ports::Defaults
    };
    options.logs = Logs::Inherit;
    options.data_dir = Some(data_dir.clone());
    // The services read FOODLAB_* from the environment they inherit.
    let platform = LocalPlatform::start(options).await?;
    println!(
        "{} is up (data in {}):",
        transport.part(),
        data_dir.display()
    );
    for service in platform.services() {
        println!("  {:<13} {}", service.name(), platform.endpoint(service)?);
    }
    println!(
        "Try: curl -s -XPOST localhost:8000/order -H 'content-type: application/json' -d '{{\"item\":\"burger\",\"quantity\":2}}'"
    );
    println!("Ctrl-C stops everything.");
    super::interrupted().await;
    platform.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
