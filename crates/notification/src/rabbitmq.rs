//! Notification over RabbitMQ: one notification per InventoryReserved.

use foodlab_domain::{Event, EventType};
use foodlab_service_kit::{FaultState, Hop, HopMetrics, MessageMetrics, Readiness, now_ms};
use foodlab_store::NotificationStore;
use foodlab_transport::BrokerErrors;
use foodlab_transport::rabbitmq::{self, Admission, AmqpArgs, AmqpError, Publisher};
use lapin::message::Delivery;

#[derive(Clone)]
pub struct Consumer {
    pub args: AmqpArgs,
    pub store: NotificationStore,
    pub faults: FaultState,
    pub metrics: MessageMetrics,
    /// What the consumer and its publisher see of the broker failing.
    pub errors: BrokerErrors,
    pub hops: HopMetrics,
}

impl Consumer {
    pub fn spawn(self, readiness: Readiness) {
        let queue = self.args.topology.notification_queue.clone();
        let report = move |up| readiness.set("rabbitmq", up);
        let (args, errors) = (self.args.clone(), self.errors.clone());
        rabbitmq::spawn_consumer(&args, "notification", &queue, &errors, report, self);
    }
}

impl rabbitmq::Handler for Consumer {
    async fn handle(&self, publisher: &Publisher, delivery: Delivery) -> Result<(), AmqpError> {
        let received = std::time::Instant::now();
        self.hops
            .since_stamp(Hop::BrokerTransit, rabbitmq::sent_at(&delivery));
        let queue = self.args.topology.notification_queue.as_str();
        let faults = self.faults.get();
        let admission = rabbitmq::admit(
            &delivery,
            EventType::InventoryReserved,
            &faults,
            publisher,
            queue,
        )
        .await?;
        let envelope = match admission {
            Admission::Handle(envelope) => envelope,
            Admission::Settled { outcome, .. } => {
                self.metrics.count(queue, outcome);
                return Ok(());
            }
        };
        let Event::InventoryReserved { customer_id, items } = &envelope.event else {
            return Ok(());
        };
        let what = items
            .iter()
            .map(|line| format!("{} x {}", line.quantity, line.item))
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!("Your order {} is confirmed: {what}", envelope.order_id);
        let recorded = self
            .store
            .record(envelope.order_id, customer_id.clone(), message, now_ms());
        let (_, fresh) = self
            .hops
            .time(Hop::StoreCommit, recorded)
            .await
            .map_err(|e| AmqpError::Handler(e.to_string()))?;
        rabbitmq::ack(&delivery).await?;
        self.hops.since(Hop::DeliveryToAck, received);
        self.metrics
            .count(queue, if fresh { "processed" } else { "duplicate" });
        tracing::info!(
            message_id = %envelope.message_id,
            order_id = %envelope.order_id,
            correlation_id = %envelope.correlation_id,
            duplicate = !fresh,
            "notification sent"
        );
        Ok(())
    }
}
