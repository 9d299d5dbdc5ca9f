//! The parts of FoodLab (one per transport) and the services they are made
//! of: what a service is started as, what a lab names as a target.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// sync-rest: blocking HTTP calls along the chain.
    Rest,
    /// async-rabbitmq: events over RabbitMQ.
    Rabbitmq,
    /// streaming-kafka: an event log in Kafka.
    Kafka,
}

impl Transport {
    pub const ALL: [Self; 3] = [Self::Rest, Self::Rabbitmq, Self::Kafka];

    /// The transport of a part named as `part()` names it.
    pub fn of_part(part: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.part() == part)
    }

    /// The services of the part, dependencies first.
    pub fn services(self) -> &'static [Service] {
        match self {
            Self::Rest | Self::Rabbitmq => {
                &[Service::Inventory, Service::Notification, Service::Order]
            }
            Self::Kafka => &[Service::Inventory, Service::Analytics, Service::Order],
        }
    }

    /// The broker the part's services talk through (none for sync-rest).
    pub fn broker(self) -> Option<Broker> {
        match self {
            Self::Rest => None,
            Self::Rabbitmq => Some(Broker::Rabbitmq),
            Self::Kafka => Some(Broker::Kafka),
        }
    }

    /// The part (chart, `foodlab up` name) that implements this transport.
    pub fn part(self) -> &'static str {
        match self {
            Self::Rest => "sync-rest",
            Self::Rabbitmq => "async-rabbitmq",
            Self::Kafka => "streaming-kafka",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rest => "rest",
            Self::Rabbitmq => "rabbitmq",
            Self::Kafka => "kafka",
        })
    }
}

/// A FoodLab service, as a fault or chaos target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Order,
    Inventory,
    Notification,
    Analytics,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Self::Order,
        Self::Inventory,
        Self::Notification,
        Self::Analytics,
    ];

    /// Binary, Deployment and Service name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Inventory => "inventory",
            Self::Notification => "notification",
            Self::Analytics => "analytics",
        }
    }

    /// The service `name()` names.
    pub fn of_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Order => 8000,
            Self::Inventory => 8001,
            Self::Notification | Self::Analytics => 8002,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A part's broker, as a chaos target: its nodes are what a PodKill kills
/// (pods of its StatefulSet on a cluster, node processes locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Broker {
    Kafka,
    Rabbitmq,
}

impl Broker {
    /// StatefulSet name, and the prefix of its nodes' names (`kafka-0`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::Rabbitmq => "rabbitmq",
        }
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
