//! The order service over RabbitMQ: the outbox relay publishes OrderPlaced
//! events stored with their orders, and the status consumer records what
//! inventory decided.

use std::sync::Arc;
use std::time::Duration;

use foodlab_domain::{Envelope, Event, OrderStatus};
use foodlab_service_kit::{MessageMetrics, Readiness, now_ms};
use foodlab_store::OrderStore;
use foodlab_transport::amqp::{self, AmqpArgs, AmqpError, Publisher};
use lapin::message::Delivery;
use tokio::sync::Notify;

/// Events published per round trip of confirms.
const RELAY_BATCH: usize = 256;
/// The relay looks at the outbox at least this often, even without a nudge.
const RELAY_IDLE_POLL: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct Messaging {
    pub args: AmqpArgs,
    pub store: OrderStore,
    pub metrics: MessageMetrics,
    /// Nudged whenever an order is stored, so the relay publishes at once.
    pub outbox_nudge: Arc<Notify>,
}

impl Messaging {
    pub fn spawn(self, readiness: Readiness) {
        let url = self.args.amqp_url.clone();
        // Orders are accepted into the outbox without a broker: the connection
        // is reported, but the service stays ready.
        let report = move |up| readiness.note("rabbitmq", up);
        amqp::spawn_forever(url, "order", report, move |connection| {
            let messaging = self.clone();
            async move { messaging.session(connection).await }
        });
    }

    async fn session(&self, connection: lapin::Connection) -> Result<(), AmqpError> {
        let topology = &self.args.topology;
        let publisher = amqp::open_session(&connection, topology).await?;
        let statuses = amqp::consume(
            &connection,
            &topology.order_status_queue,
            self.args.prefetch,
            |delivery| self.settle(&publisher, delivery),
        );
        tokio::select! {
            result = self.relay(&publisher) => result,
            result = statuses => result,
        }
    }

    /// Publishes the outbox in order; an event leaves the outbox only once
    /// the broker confirmed it. A lost connection leaves it for the next session.
    async fn relay(&self, publisher: &Publisher) -> Result<(), AmqpError> {
        loop {
            let pending = self
                .store
                .pending_events(RELAY_BATCH)
                .await
                .map_err(|e| AmqpError::Handler(e.to_string()))?;
            let Some((last_seq, _)) = pending.last() else {
                tokio::select! {
                    () = self.outbox_nudge.notified() => {}
                    () = tokio::time::sleep(RELAY_IDLE_POLL) => {}
                }
                continue;
            };
            let last_seq = *last_seq;
            let events: Vec<Envelope> = pending.into_iter().map(|(_, event)| event).collect();
            publisher.publish_all(&events).await?;
            self.store
                .mark_published(last_seq)
                .await
                .map_err(|e| AmqpError::Handler(e.to_string()))?;
            tracing::debug!(count = events.len(), "outbox events published");
        }
    }

    async fn settle(&self, publisher: &Publisher, delivery: Delivery) -> Result<(), AmqpError> {
        let queue = self.args.topology.order_status_queue.as_str();
        let envelope = match Envelope::parse(&delivery.data) {
            Ok(envelope) => envelope,
            Err(poison) => {
                self.metrics.count(queue, "dead_lettered");
                return publisher.reject_poison(&delivery, &poison.0).await;
            }
        };
        let (status, reason) = match &envelope.event {
            Event::InventoryReserved { .. } => (OrderStatus::Reserved, None),
            Event::InventoryFailed { reason } => (OrderStatus::Failed, Some(reason.clone())),
            Event::OrderPlaced { .. } => {
                self.metrics.count(queue, "dead_lettered");
                let reason = "expected an inventory result, got OrderPlaced";
                return publisher.reject_poison(&delivery, reason).await;
            }
        };
        let applied = self
            .store
            .settle(envelope.order_id, status, reason, now_ms())
            .await
            .map_err(|e| AmqpError::Handler(e.to_string()))?;
        amqp::ack(&delivery).await?;
        self.metrics
            .count(queue, if applied { "processed" } else { "duplicate" });
        tracing::info!(
            message_id = %envelope.message_id,
            order_id = %envelope.order_id,
            correlation_id = %envelope.correlation_id,
            %status,
            duplicate = !applied,
            "order settled"
        );
        Ok(())
    }
}
