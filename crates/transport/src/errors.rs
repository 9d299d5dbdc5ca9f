//! What the services see of their broker going wrong: failed publishes and
//! deliveries, lost connections, failed connects, consumer errors, counted
//! as `foodlab_broker_errors_total{role, kind}` where each is handled.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The side of the broker an error was seen on.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    role: &'static str,
    kind: &'static str,
}

/// Broker errors by role and kind. A default one counts without being
/// exposed (the lab's own clients, tests); a service registers its own.
#[derive(Clone, Debug, Default)]
pub struct BrokerErrors {
    errors: Family<ErrorLabels, Counter>,
}

impl BrokerErrors {
    pub fn register(registry: &mut Registry) -> Self {
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "broker_errors",
            "Errors seen of the broker, by role (producer, consumer) and kind",
            errors.clone(),
        );
        Self { errors }
    }

    /// Counts one error; `kind` is a short word (`publish_failed`, ...).
    pub fn count(&self, role: Role, kind: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                role: role.name(),
                kind,
            })
            .inc();
    }

    /// Errors counted of `role` and `kind` since the service started (tests
    /// only: reading creates the series, so a scrape would show it at zero).
    #[cfg(test)]
    pub(crate) fn total(&self, role: Role, kind: &'static str) -> u64 {
        self.errors
            .get_or_create(&ErrorLabels {
                role: role.name(),
                kind,
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn errors_are_counted_by_role_and_kind_and_exposed() {
        let mut registry = Registry::with_prefix("foodlab");
        let errors = BrokerErrors::register(&mut registry);
        let shared = errors.clone();
        errors.count(Role::Producer, "publish_failed");
        shared.count(Role::Producer, "publish_failed");
        errors.count(Role::Consumer, "connection_lost");
        assert_eq!(errors.total(Role::Producer, "publish_failed"), 2);
        assert_eq!(shared.total(Role::Consumer, "connection_lost"), 1);
        assert_eq!(errors.total(Role::Consumer, "publish_failed"), 0);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "foodlab_broker_errors_total{role=\"producer\",kind=\"publish_failed\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "foodlab_broker_errors_total{role=\"consumer\",kind=\"connection_lost\"} 1"
            ),
            "{text}"
        );
    }
}
