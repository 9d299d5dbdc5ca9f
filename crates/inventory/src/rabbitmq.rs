//! Inventory over RabbitMQ: consume OrderPlaced, reserve, publish the result,
//! then ack. Poison is dead-lettered with its reason and never retried.

use std::sync::Arc;

use foodlab_domain::{Envelope, Event, EventType};
use foodlab_service_kit::{FaultState, Hop, HopMetrics, MessageMetrics, Readiness, now_ms};
use foodlab_store::StockStore;
use foodlab_transport::BrokerErrors;
use foodlab_transport::rabbitmq::{self, Admission, AmqpArgs, AmqpError, Publisher};
use lapin::message::Delivery;

use crate::decision::{self, CrashPoint, result_event};

#[derive(Clone)]
pub struct Consumer {
    pub args: AmqpArgs,
    pub store: StockStore,
    pub faults: FaultState,
    pub metrics: MessageMetrics,
    /// What the consumer and its publisher see of the broker failing.
    pub errors: BrokerErrors,
    pub hops: HopMetrics,
    /// Aborts between a decision's commit and its result (chaos testing).
    pub crash_point: Arc<CrashPoint>,
}

impl Consumer {
    pub fn spawn(self, readiness: Readiness) {
        let queue = self.args.topology.inventory_queue.clone();
        let report = move |up| readiness.set("rabbitmq", up);
        let (args, errors) = (self.args.clone(), self.errors.clone());
        rabbitmq::spawn_consumer(&args, "inventory", &queue, &errors, report, self);
    }
}

impl rabbitmq::Handler for Consumer {
    async fn handle(&self, publisher: &Publisher, delivery: Delivery) -> Result<(), AmqpError> {
        let received = std::time::Instant::now();
        self.hops
            .since_stamp(Hop::BrokerTransit, rabbitmq::sent_at(&delivery));
        let queue = self.args.topology.inventory_queue.as_str();
        let faults = self.faults.get();
        let admission =
            rabbitmq::admit(&delivery, EventType::OrderPlaced, &faults, publisher, queue).await?;
        let envelope = match admission {
            Admission::Handle(envelope) => envelope,
            Admission::Settled {
                outcome,
                dead_letter_of,
            } => {
                self.metrics.count(queue, outcome);
                if let Some(envelope) = dead_letter_of {
                    // The order itself must still end somewhere: failed, with the reason.
                    let reason = format!(
                        "inventory failed {} times (injected failure); the message was dead-lettered",
                        rabbitmq::MAX_RETRIES + 1
                    );
                    let failed = Event::InventoryFailed { reason };
                    let result = Envelope::result_of(&envelope, jiff::Timestamp::now(), failed);
                    publisher.publish(&result).await?;
                }
                return Ok(());
            }
        };
        let Event::OrderPlaced { customer_id, items } = &envelope.event else {
            return Ok(());
        };
        let message_id = envelope.message_id.to_string();
        let reserved =
            self.store
                .reserve_message(&message_id, envelope.order_id, items.clone(), now_ms());
        let result = self.hops.time(Hop::StoreCommit, reserved).await;
        let result = match result {
            Err(foodlab_store::StoreError::MessageIdReused { earlier_order }) => {
                let reason = format!(
                    "message id {} was already used for order {earlier_order}",
                    envelope.message_id
                );
                self.metrics.count(queue, "dead_lettered");
                return publisher.reject_poison(&delivery, &reason).await;
            }
            other => other.map_err(|e| AmqpError::Handler(e.to_string()))?,
        };
        self.crash_point.committed(envelope.order_id);
        let outcome = result_event(&result.reservation, customer_id.clone());
        // A replayed decision is published again: the first attempt may have
        // died between commit and publish. Its id is the same, so it is harmless.
        // The delivery is acked once the broker confirms the result, in the
        // background, so the next delivery does not wait for the confirm.
        let result_event = Envelope::result_of(&envelope, jiff::Timestamp::now(), outcome);
        let pending = publisher.send(&result_event).await?;
        let hops = self.hops.clone();
        rabbitmq::ack_when_confirmed(pending, delivery, move |confirmed| {
            hops.observe(Hop::PublishConfirm, confirmed);
            hops.since(Hop::DeliveryToAck, received);
        });
        decision::record(&self.metrics, queue, &envelope, &result);
        Ok(())
    }
}
