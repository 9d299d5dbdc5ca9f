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
        // Every status from the start, at 0: a query of one (failed, say) has a series
        // before the first order reaches it.
        for status in OrderStatus::ALL {
            let _ = orders.get_or_create(&StatusLabel {
                status: status.as_str(),
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_exposed_at_zero_before_any_order() {
        let mut registry = Registry::default();
        let metrics = OrderMetrics::register(&mut registry);
        metrics.reached(OrderStatus::Reserved);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for status in OrderStatus::ALL {
            let value = if status == OrderStatus::Reserved {
                1
            } else {
                0
            };
            let line = format!("orders_total{{status=\"{}\"}} {value}", status.as_str());
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }
}
