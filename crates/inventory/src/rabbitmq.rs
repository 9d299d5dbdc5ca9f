//! Inventory over RabbitMQ: consume OrderPlaced, reserve, publish the result,
//! then ack. The deliveries waiting together are decided in one transaction
//! and acked with one ack (poison and retried injected failures one by one,
//! as they are admitted). Poison is dead-lettered with its reason and never
//! retried; an order failed too often is dead-lettered and decided as failed.

use std::sync::Arc;

use foodlab_domain::Faults;
use foodlab_domain::{Envelope, Event, EventType};
use foodlab_service_kit::{FaultState, Hop, HopMetrics, MessageMetrics, Readiness, now_ms};
use foodlab_store::{OrderMessage, StockStore, StoreError};
use foodlab_transport::BrokerErrors;
use foodlab_transport::rabbitmq::{self, AckChain, Admission, AmqpArgs, AmqpError, Publisher};
use lapin::message::Delivery;
use tracing::Instrument;

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
    /// Acks each batch once its results are confirmed, batches in order.
    pub acks: AckChain,
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
    /// The deliveries that arrived together are decided in one store
    /// transaction and, once their results are confirmed, acked with one ack
    /// (those settled as they are admitted, one by one). A crash before that
    /// ack redelivers what was not settled, and each order's decision is then
    /// replayed, not retaken.
    async fn handle(
        &self,
        publisher: &Publisher,
        deliveries: Vec<Delivery>,
    ) -> Result<(), AmqpError> {
        let received = std::time::Instant::now();
        let faults = self.faults.get();
        let mut admitted = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let span = rabbitmq::span_of(&delivery);
            if let Some(order) = self
                .admit(publisher, delivery, &faults)
                .instrument(span.clone())
                .await?
            {
                admitted.push((order, span));
            }
        }
        if admitted.is_empty() {
            return Ok(());
        }
        let orders = admitted
            .iter()
            .map(|(order, _)| order.message.clone())
            .collect();
        let decided = self
            .hops
            .time(Hop::StoreCommit, self.store.decide_messages(orders))
            .await
            .map_err(|e| AmqpError::Handler(e.to_string()))?;
        let queue = self.args.topology.inventory_queue.as_str();
        let mut results = Vec::with_capacity(admitted.len());
        for ((order, span), decided) in admitted.into_iter().zip(decided) {
            match decided {
                Ok(result) => {
                    self.crash_point.committed(order.envelope.order_id);
                    results.push((order, span, result));
                }
                Err(StoreError::MessageIdReused { earlier_order }) => {
                    let reason = format!(
                        "message id {} was already used for order {earlier_order}",
                        order.envelope.message_id
                    );
                    self.metrics.count(queue, "dead_lettered");
                    publisher
                        .reject_poison(&order.delivery, &reason)
                        .instrument(span)
                        .await?;
                }
                Err(other) => return Err(AmqpError::Handler(other.to_string())),
            }
        }
        // A replayed decision is published again: the first attempt may have
        // died between commit and publish. Its id is the same, so it is harmless.
        let mut sent = Vec::with_capacity(results.len());
        for (order, span, result) in results {
            let outcome = result_event(&result.reservation, order.customer_id);
            let event = Envelope::result_of(&order.envelope, jiff::Timestamp::now(), outcome);
            let pending = publisher.send(&event).instrument(span.clone()).await?;
            sent.push((pending, order.delivery));
            span.in_scope(|| {
                if order.given_up {
                    decision::log(&order.envelope, &result);
                } else {
                    decision::record(&self.metrics, queue, &order.envelope, &result);
                }
            });
        }
        let hops = self.hops.clone();
        self.acks.ack_when_confirmed(sent, move |confirmed| {
            hops.observe(Hop::PublishConfirm, confirmed);
            hops.since(Hop::DeliveryToAck, received);
        });
        Ok(())
    }
}

/// An order event admitted for a decision.
struct Admitted {
    /// Dead-lettered after its retries: decided as failed, counted as dead-lettered.
    given_up: bool,
    delivery: Delivery,
    envelope: Envelope,
    customer_id: Option<String>,
    message: OrderMessage,
}

impl Consumer {
    /// The checks of every delivery (shape, event, injected faults); the
    /// order to decide, or `None` when the delivery was settled here.
    async fn admit(
        &self,
        publisher: &Publisher,
        delivery: Delivery,
        faults: &Faults,
    ) -> Result<Option<Admitted>, AmqpError> {
        self.hops
            .since_stamp(Hop::BrokerTransit, rabbitmq::sent_at(&delivery));
        let queue = self.args.topology.inventory_queue.as_str();
        let admission =
            rabbitmq::admit(&delivery, EventType::OrderPlaced, faults, publisher, queue).await?;
        let (envelope, rejection) = match admission {
            Admission::Handle(envelope) => (envelope, None),
            // Its end, failed, is decided and published like any other before
            // the delivery is acked: a redelivery replays it.
            Admission::GivenUp(envelope) => {
                self.metrics.count(queue, "dead_lettered");
                let reason = format!(
                    "inventory failed {} times (injected failure); the message was dead-lettered",
                    rabbitmq::MAX_RETRIES + 1
                );
                (envelope, Some(reason))
            }
            Admission::Settled { outcome } => {
                self.metrics.count(queue, outcome);
                return Ok(None);
            }
        };
        // Admitted as an OrderPlaced, so it carries one.
        let Event::OrderPlaced { customer_id, items } = &envelope.event else {
            return Ok(None);
        };
        let message = OrderMessage {
            message_id: envelope.message_id.to_string(),
            order_id: envelope.order_id,
            lines: items.clone(),
            rejection,
            now_ms: now_ms(),
        };
        Ok(Some(Admitted {
            given_up: message.rejection.is_some(),
            customer_id: customer_id.clone(),
            delivery,
            envelope,
            message,
        }))
    }
}
