//! Notification over RabbitMQ: one notification per InventoryReserved; the
//! deliveries waiting together are recorded in one transaction, acked with one ack.

use foodlab_domain::{Envelope, Event, EventType};
use foodlab_service_kit::{FaultState, Hop, HopMetrics, MessageMetrics, Readiness, now_ms};
use foodlab_store::NotificationStore;
use foodlab_transport::BrokerErrors;
use foodlab_transport::rabbitmq::{self, Admission, AmqpArgs, AmqpError, Publisher};
use lapin::message::Delivery;
use tracing::Instrument;

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
    /// The deliveries that arrived together are recorded in one store
    /// transaction and acked with one ack; a crash before the ack redelivers
    /// them, and an order already notified is not notified again.
    async fn handle(
        &self,
        publisher: &Publisher,
        deliveries: Vec<Delivery>,
    ) -> Result<(), AmqpError> {
        let received = std::time::Instant::now();
        let queue = self.args.topology.notification_queue.as_str();
        let faults = self.faults.get();
        let mut admitted = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            self.hops
                .since_stamp(Hop::BrokerTransit, rabbitmq::sent_at(&delivery));
            let span = rabbitmq::span_of(&delivery);
            let admission = rabbitmq::admit(
                &delivery,
                EventType::InventoryReserved,
                &faults,
                publisher,
                queue,
            )
            .instrument(span.clone())
            .await?;
            match admission {
                Admission::Handle(envelope) => admitted.push((delivery, envelope, span)),
                // Nothing to record: a notification given up on ends here.
                Admission::GivenUp(_) => {
                    rabbitmq::ack(&delivery).await?;
                    self.metrics.count(queue, "dead_lettered");
                }
                Admission::Settled { outcome } => self.metrics.count(queue, outcome),
            }
        }
        if admitted.is_empty() {
            return Ok(());
        }
        let notifications = admitted
            .iter()
            .map(|(_, envelope, _)| {
                let (customer_id, message) = notification_of(envelope);
                (envelope.order_id, customer_id, message)
            })
            .collect();
        let recorded = self.store.record_all(notifications, now_ms());
        let fresh = self
            .hops
            .time(Hop::StoreCommit, recorded)
            .await
            .map_err(|e| AmqpError::Handler(e.to_string()))?;
        let Some((last, _, _)) = admitted.last() else {
            return Ok(());
        };
        rabbitmq::ack_through(last).await?;
        for ((_, envelope, span), fresh) in admitted.iter().zip(fresh) {
            self.hops.since(Hop::DeliveryToAck, received);
            self.metrics
                .count(queue, if fresh { "processed" } else { "duplicate" });
            span.in_scope(|| {
                tracing::info!(
                    message_id = %envelope.message_id,
                    order_id = %envelope.order_id,
                    correlation_id = %envelope.correlation_id,
                    duplicate = !fresh,
                    "notification sent"
                );
            });
        }
        Ok(())
    }
}

/// The customer and the text of an order's notification.
fn notification_of(envelope: &Envelope) -> (Option<String>, String) {
    let Event::InventoryReserved { customer_id, items } = &envelope.event else {
        return (
            None,
            format!("Your order {} is confirmed", envelope.order_id),
        );
    };
    let what = items
        .iter()
        .map(|line| format!("{} x {}", line.quantity, line.item))
        .collect::<Vec<_>>()
        .join(", ");
    let message = format!("Your order {} is confirmed: {what}", envelope.order_id);
    (customer_id.clone(), message)
}
