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
    // The services read FOODLAB_* from the environment they inherit (the
    // platform sets the transport, and for Kafka the bootstrap servers,
    // topics and groups: FOODLAB_KAFKA_BROKERS picks another broker).
    let platform = LocalPlatform::start(options).await?;
    let stop = super::interrupted();
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
    if transport == Transport::Kafka {
        println!(
            "Then: curl -s -XPOST localhost:8000/orders/bulk -H 'content-type: application/json' -d '{{\"count\":10000,\"item\":\"burger\",\"quantity\":1}}'"
        );
        println!("      curl -s localhost:8002/metrics; curl -s localhost:8002/lag");
    }
    println!(
        "{}",
        match transport {
            Transport::Rest => "Ctrl-C stops everything.",
            Transport::Rabbitmq =>
                "Ctrl-C stops the services; RabbitMQ keeps running (`make rabbitmq-down`).",
            Transport::Kafka =>
                "Ctrl-C stops the services; the broker keeps running (`make kafka-down`).",
        }
    );
    stop.await;
    platform.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
