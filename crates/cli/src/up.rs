//! `foodlab up`: one part on this machine, each part with a data dir of its
//! own, fresh unless asked to keep it; services that die are reported and
//! restarted by the local platform's supervisor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use foodlab_domain::{Catalogue, ItemName};
use foodlab_lab::faults::FaultClient;
use foodlab_lab::platform::local::process_name;
use foodlab_lab::spec::Replicas;
use foodlab_lab::{LocalOptions, LocalPlatform, Logs, Platform, Ports, Service, Transport};
use tokio::sync::broadcast::error::RecvError;

/// Marks a directory as made by `foodlab up`, so a fresh start may clear it.
const MARKER: &str = ".foodlab-up";

pub struct UpOptions {
    pub transport: Transport,
    /// The parent of every part's data dir.
    pub data_root: PathBuf,
    pub keep_data: bool,
    /// A stock spec such as `burger=100000,pizza=5`.
    pub stock: Option<String>,
    pub free_ports: bool,
    pub replicas: Replicas,
    pub database_url: Option<String>,
}

pub async fn run(up: UpOptions) -> anyhow::Result<ExitCode> {
    let levels = match &up.stock {
        Some(spec) => Some(stock_levels(spec)?),
        None => None,
    };
    let database = match &up.database_url {
        Some(url) => Some(foodlab_store::Database::from_url(url)?),
        None => None,
    };
    let data_dir = up.data_root.join(up.transport.part());
    let data = prepare_data_dir(&data_dir, up.keep_data)?;

    let mut options = LocalOptions::new(up.transport);
    options.ports = if up.free_ports {
        Ports::Free
    } else {
        Ports::Defaults
    };
    options.logs = Logs::Inherit;
    options.data_dir = Some(data_dir.clone());
    options.replicas = up.replicas.clone();
    options.database_url = up.database_url.clone();
    if let Some(spec) = &up.stock {
        // A fresh database is seeded with it; kept data gets it below.
        options.env.push(("FOODLAB_STOCK".to_owned(), spec.clone()));
    }
    // The services read FOODLAB_* from the environment they inherit (the
    // platform sets the transport, and for Kafka the bootstrap servers,
    // topics and groups: FOODLAB_KAFKA_BROKERS picks another broker).
    let platform = LocalPlatform::start(options).await?;
    let mut events = platform.events();
    let stop = crate::interrupt::interrupted();
    let outcome = async {
        if let Some(levels) = &levels {
            // Through inventory's admin API, so it holds on kept data too.
            // (The services inherit FOODLAB_ADMIN_TOKEN from this shell, if it sets one.)
            FaultClient::new()?.set_stock(&platform, levels).await?;
        }
        announce(
            &platform,
            up.transport,
            &data_dir,
            data,
            levels.as_ref(),
            database.as_ref(),
        )
        .await
    }
    .await;
    if let Err(error) = outcome {
        platform.shutdown().await;
        return Err(error);
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            event = events.recv() => match event {
                Ok(event) => println!("{event}"),
                Err(RecvError::Lagged(missed)) => println!("({missed} service events not shown)"),
                Err(RecvError::Closed) => break,
            },
        }
    }
    platform.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// What `foodlab up` found in the part's data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataDir {
    /// Started empty (what was there, if anything, is gone).
    Fresh { cleared: bool },
    /// Kept from an earlier run (or nothing there yet).
    Kept { existed: bool },
}

fn prepare_data_dir(dir: &Path, keep: bool) -> anyhow::Result<DataDir> {
    let existed = dir.exists();
    let state = if keep {
        DataDir::Kept { existed }
    } else {
        if existed {
            clear(dir)?;
        }
        DataDir::Fresh { cleared: existed }
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "data of `foodlab up`; a fresh start clears it\n",
    )
    .with_context(|| format!("cannot write into {}", dir.display()))?;
    Ok(state)
}

/// Removes a data dir `foodlab up` made (it has the marker) or an empty one;
/// refuses anything else, so a mistyped `--data-dir` costs nothing.
fn clear(dir: &Path) -> anyhow::Result<()> {
    let empty = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .next()
        .is_none();
    if !empty && !dir.join(MARKER).is_file() {
        anyhow::bail!(
            "{} holds files `foodlab up` did not make (no {MARKER} in it); \
             remove it, pick another --data-dir, or use --keep-data",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))
}

/// The items a stock spec names, with their levels (the defaults of the
/// items it does not name are left alone).
fn stock_levels(spec: &str) -> anyhow::Result<BTreeMap<ItemName, u64>> {
    let catalogue = Catalogue::with_overrides(spec).context("invalid stock")?;
    let named: Vec<ItemName> = spec
        .split(',')
        .filter_map(|entry| ItemName::parse(entry.split_once('=')?.0))
        .collect();
    Ok(catalogue
        .initial_stock()
        .iter()
        .filter(|(item, _)| named.contains(item))
        .map(|(item, level)| (item.clone(), *level))
        .collect())
}

async fn announce(
    platform: &LocalPlatform,
    transport: Transport,
    data_dir: &Path,
    data: DataDir,
    stock: Option<&BTreeMap<ItemName, u64>>,
    database: Option<&foodlab_store::Database>,
) -> anyhow::Result<()> {
    let shown = data_dir.display();
    let data = match data {
        DataDir::Fresh { cleared: true } => {
            format!("fresh data in {shown} (the last run's was cleared; --keep-data keeps it)")
        }
        DataDir::Fresh { cleared: false } => format!("fresh data in {shown}"),
        DataDir::Kept { existed: true } => format!("the data kept in {shown}"),
        DataDir::Kept { existed: false } => {
            format!("fresh data in {shown} (--keep-data: there was none to keep)")
        }
    };
    match database {
        None => println!("{} is up, with {data}:", transport.part()),
        Some(database) => println!(
            "{} is up, its state in PostgreSQL at {database} (kept there from run to run; logs in {shown}):",
            transport.part(),
        ),
    }
    for service in platform.services() {
        let pids = platform.replica_pids(service).await;
        for (replica, endpoint) in platform.endpoints(service).await?.iter().enumerate() {
            let pid = pids
                .get(replica)
                .and_then(|pid| *pid)
                .map(|pid| format!("  pid {pid}"))
                .unwrap_or_default();
            let name = process_name(service, replica);
            println!("  {name:<13} {endpoint}{pid}");
        }
    }
    if let Some(levels) = stock {
        let levels: Vec<String> = levels
            .iter()
            .map(|(item, level)| format!("{item}={level}"))
            .collect();
        println!("Stock set: {}", levels.join(", "));
    }
    let order = platform.endpoint(Service::Order)?;
    println!(
        "Try: curl -s -XPOST {order}/order -H 'content-type: application/json' -d '{{\"item\":\"burger\",\"quantity\":2}}'"
    );
    if transport == Transport::Kafka {
        let analytics = platform.endpoint(Service::Analytics)?;
        println!(
            "Then: curl -s -XPOST {order}/orders/bulk -H 'content-type: application/json' -d '{{\"count\":10000,\"item\":\"burger\",\"quantity\":1}}'"
        );
        println!("      curl -s {analytics}/metrics; curl -s {analytics}/lag");
    }
    println!("A service that dies is reported here and restarted.");
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
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_stock_spec_names_only_its_items() {
        let levels = stock_levels("Burger=100000, taco=7").unwrap();
        let shown: Vec<(String, u64)> = levels
            .into_iter()
            .map(|(item, level)| (item.to_string(), level))
            .collect();
        assert_eq!(
            shown,
            [("burger".to_owned(), 100_000), ("taco".to_owned(), 7)]
        );
        assert!(stock_levels("burger=-1").is_err());
    }

    #[test]
    fn a_fresh_start_clears_only_what_foodlab_up_made() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sync-rest");
        assert_eq!(
            prepare_data_dir(&dir, false).unwrap(),
            DataDir::Fresh { cleared: false }
        );
        std::fs::write(dir.join("inventory.db"), "x").unwrap();
        assert_eq!(
            prepare_data_dir(&dir, true).unwrap(),
            DataDir::Kept { existed: true }
        );
        assert!(dir.join("inventory.db").is_file());
        assert_eq!(
            prepare_data_dir(&dir, false).unwrap(),
            DataDir::Fresh { cleared: true }
        );
        assert!(!dir.join("inventory.db").exists());

        let foreign = root.path().join("home");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
        assert!(prepare_data_dir(&foreign, false).is_err());
        assert!(foreign.join("notes.txt").is_file());
    }
}
