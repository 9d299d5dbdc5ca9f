//! The Kafka broker of the streaming-kafka part, and the names (topics,
//! groups) a lab run gives its services on it.

use std::path::PathBuf;

use foodlab_transport::kafka::{DEFAULT_BROKERS, KafkaArgs};

use crate::platform::PlatformError;
use crate::platform::broker_script::BrokerScript;

pub(crate) const KAFKA_SCRIPT: BrokerScript = BrokerScript {
    broker: "Kafka",
    env: "FOODLAB_KAFKA_SCRIPT",
    default_path: "scripts/kafka.sh",
    make_target: "kafka-up",
    nodes_env: "KAFKA_NODES",
};

/// Where the Kafka-protocol broker of the streaming part is.
#[derive(Debug, Clone)]
pub enum KafkaBroker {
    /// The project's Apache Kafka on 127.0.0.1 (one node on 9092, three on
    /// 9192–9194), started with its script (`scripts/kafka.sh`, or this
    /// path) if nothing listens there.
    Local { script: Option<PathBuf> },
    /// A broker that is already running (any Kafka-protocol broker).
    At { brokers: String },
}

impl Default for KafkaBroker {
    fn default() -> Self {
        Self::Local { script: None }
    }
}

impl KafkaBroker {
    /// The broker named by `FOODLAB_KAFKA_BROKERS` (e.g. an Apache Kafka),
    /// else the project's.
    pub fn from_env() -> Self {
        match std::env::var("FOODLAB_KAFKA_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => Self::At { brokers },
            _ => Self::default(),
        }
    }

    /// Makes sure the broker (of `nodes` nodes, for the project's own)
    /// listens; its bootstrap servers.
    pub async fn ready(&self, nodes: u32) -> Result<String, PlatformError> {
        match self {
            Self::At { brokers } => Ok(brokers.clone()),
            Self::Local { script } => {
                let bootstrap = match nodes {
                    1 => DEFAULT_BROKERS.to_owned(),
                    _ => {
                        let path = KAFKA_SCRIPT.path(script.clone());
                        KAFKA_SCRIPT.run(&path, nodes, &["bootstrap"]).await?
                    }
                };
                if every_one_listens(&bootstrap).await {
                    return Ok(bootstrap);
                }
                KAFKA_SCRIPT
                    .start(
                        script.clone(),
                        nodes,
                        &format!("no Kafka broker listens on {bootstrap}"),
                    )
                    .await?;
                Ok(bootstrap)
            }
        }
    }
}

async fn every_one_listens(bootstrap: &str) -> bool {
    for server in bootstrap.split(',') {
        if tokio::net::TcpStream::connect(server.trim()).await.is_err() {
            return false;
        }
    }
    true
}

/// The streaming part's bootstrap servers, topics and consumer groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaNames {
    pub brokers: String,
    pub order_topic: String,
    pub inventory_topic: String,
    pub inventory_group: String,
    pub analytics_group: String,
    pub order_group: String,
}

impl KafkaNames {
    /// The services' default names, each followed by `suffix` (empty for the defaults).
    pub fn new(brokers: String, suffix: &str) -> Self {
        let defaults = KafkaArgs::default();
        Self {
            brokers,
            order_topic: format!("{}{suffix}", defaults.order_topic),
            inventory_topic: format!("{}{suffix}", defaults.inventory_topic),
            inventory_group: format!("{}{suffix}", defaults.inventory_group),
            analytics_group: format!("{}{suffix}", defaults.analytics_group),
            order_group: format!("{}{suffix}", defaults.order_group),
        }
    }

    /// The services' settings for these names.
    pub fn args(&self) -> KafkaArgs {
        KafkaArgs {
            brokers: self.brokers.clone(),
            order_topic: self.order_topic.clone(),
            inventory_topic: self.inventory_topic.clone(),
            inventory_group: self.inventory_group.clone(),
            analytics_group: self.analytics_group.clone(),
            order_group: self.order_group.clone(),
            ..KafkaArgs::default()
        }
    }

    /// Deletes these topics and groups from the broker (a run's own names, at its end).
    pub async fn delete(&self) -> Result<(), foodlab_transport::kafka::KafkaFailure> {
        self.args().delete_topics_and_groups().await
    }

    /// The services' environment for these names.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("FOODLAB_KAFKA_BROKERS", &self.brokers),
            ("FOODLAB_ORDER_TOPIC", &self.order_topic),
            ("FOODLAB_INVENTORY_TOPIC", &self.inventory_topic),
            ("FOODLAB_INVENTORY_GROUP", &self.inventory_group),
            ("FOODLAB_ANALYTICS_GROUP", &self.analytics_group),
            ("FOODLAB_ORDER_GROUP", &self.order_group),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }
}
