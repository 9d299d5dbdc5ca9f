//! What a lab names: the transports (each a part), the services and the
//! broker of a part, as the domain has them, and the chaos actions and
//! targets. The spec and the results both speak of them.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use foodlab_domain::part::{Broker, Service, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ChaosAction {
    /// Scale the target to zero replicas for `duration`, then back.
    ScaleToZero,
    /// Kill the target's pods once, those `mode` picks (local: its processes,
    /// which are started again as a Deployment replaces a pod).
    PodKill,
    /// Add `delaySeconds` to the target's requests for `duration`.
    Delay,
    /// Fail `failRate` of the target's requests for `duration`.
    Fail,
}

/// What a chaos step disrupts: one of the part's services, or its broker
/// (PodKill only: a broker's nodes are killed, not scaled or faulted).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ChaosTarget {
    Order,
    Inventory,
    Notification,
    Analytics,
    Kafka,
    Rabbitmq,
}

/// A chaos target, by what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Service(Service),
    Broker(Broker),
}

impl ChaosTarget {
    pub fn which(self) -> Target {
        match self {
            Self::Order => Target::Service(Service::Order),
            Self::Inventory => Target::Service(Service::Inventory),
            Self::Notification => Target::Service(Service::Notification),
            Self::Analytics => Target::Service(Service::Analytics),
            Self::Kafka => Target::Broker(Broker::Kafka),
            Self::Rabbitmq => Target::Broker(Broker::Rabbitmq),
        }
    }

    pub fn service(self) -> Option<Service> {
        match self.which() {
            Target::Service(service) => Some(service),
            Target::Broker(_) => None,
        }
    }

    pub fn broker(self) -> Option<Broker> {
        match self.which() {
            Target::Broker(broker) => Some(broker),
            Target::Service(_) => None,
        }
    }
}

impl From<Service> for ChaosTarget {
    fn from(service: Service) -> Self {
        match service {
            Service::Order => Self::Order,
            Service::Inventory => Self::Inventory,
            Service::Notification => Self::Notification,
            Service::Analytics => Self::Analytics,
        }
    }
}

impl From<Broker> for ChaosTarget {
    fn from(broker: Broker) -> Self {
        match broker {
            Broker::Kafka => Self::Kafka,
            Broker::Rabbitmq => Self::Rabbitmq,
        }
    }
}

impl PartialEq<Service> for ChaosTarget {
    fn eq(&self, service: &Service) -> bool {
        self.service() == Some(*service)
    }
}

impl fmt::Display for ChaosTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.which() {
            Target::Service(service) => service.fmt(f),
            Target::Broker(broker) => broker.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_shown_as_it_is_written() {
        let services = Service::ALL.map(ChaosTarget::from);
        let brokers = [Broker::Kafka, Broker::Rabbitmq].map(ChaosTarget::from);
        for target in services.into_iter().chain(brokers) {
            let written = serde_json::to_value(target).unwrap();
            assert_eq!(written, target.to_string(), "{target:?}");
            assert_eq!(
                serde_json::from_value::<ChaosTarget>(written).unwrap(),
                target
            );
            assert_eq!(target.service().is_some(), target.broker().is_none());
        }
    }
}
