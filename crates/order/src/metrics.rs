//! The order service's own metrics: orders by the status they ended in.

use foodlab_domain::OrderStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone)]
pub struct OrderMetrics {
    orders: Family<StatusLabel, Counter>,
}

impl OrderMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let orders = Family::<StatusLabel, Counter>::default();
        registry.register(
            "orders",
            "Orders by the status they reached",
            orders.clone(),
        );
        Self { orders }
    }

    pub fn reached(&self, status: OrderStatus) {
        self.orders
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .inc();
    }
}
