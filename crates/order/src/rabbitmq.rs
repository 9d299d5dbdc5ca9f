//! The order service over RabbitMQ: the outbox relay publishes OrderPlaced
//! events stored with their orders, and the status consumer records what
//! inventory decided.

use std::sync::Arc;

use foodlab_domain::Envelope;
use foodlab_service_kit::{Hop, HopMetrics, MessageMetrics, Readiness};
use foodlab_store::OrderStore;
use foodlab_transport::BrokerErrors;
use foodlab_transport::rabbitmq::{self, AmqpArgs, AmqpError, Publisher};
use lapin::message::Delivery;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::outbox;

/// Events published per round trip of confirms.
const RELAY_BATCH: usize = 256;

#[derive(Clone)]
pub struct Messaging {
    pub args: AmqpArgs,
    pub store: OrderStore,
    pub metrics: MessageMetrics,
    /// What the relay and the status consumer see of the broker failing.
    pub errors: BrokerErrors,
    pub hops: HopMetrics,
    /// Nudged whenever an order is stored, so the relay publishes at once.
    pub outbox_nudge: Arc<Notify>,
}

impl Messaging {
    pub fn spawn(self, readiness: Readiness) {
        let url = self.args.amqp_url.clone();
        // Orders are accepted into the outbox without a broker: the connection
        // is reported, but the service stays ready.
        let report = move |up| readiness.note("rabbitmq", up);
        let errors = self.errors.clone();
        rabbitmq::spawn_forever(url, "order", &errors, report, move |connection| {
            let messaging = self.clone();
            async move { messaging.session(connection).await }
        });
    }

    async fn session(&self, connection: lapin::Connection) -> Result<(), AmqpError> {
        let topology = &self.args.topology;
        let publisher = rabbitmq::open_session(&connection, topology, &self.errors).await?;
        let statuses = rabbitmq::consume_batches(
            &connection,
            &topology.order_status_queue,
            self.args.prefetch,
            |deliveries| self.settle(&publisher, deliveries),
        );
        tokio::select! {
            result = self.relay(&publisher) => result,
            result = statuses => result,
        }
    }

    /// Publishes the outbox with confirms. A lost connection leaves the
    /// unconfirmed events for the next session.
    async fn relay(&self, publisher: &Publisher) -> Result<(), AmqpError> {
        let store_error = |e: foodlab_store::StoreError| AmqpError::Handler(e.to_string());
        outbox::relay(
            &self.store,
            &self.outbox_nudge,
            &self.hops,
            RELAY_BATCH,
            store_error,
            |events| async move {
                let pending = publisher.send_each(&events).await?;
                Ok(rabbitmq::confirm_all(pending))
            },
        )
        .await
    }

    /// Records the results that arrived together in one store transaction
    /// and acks them with one ack; a crash before the ack redelivers them,
    /// and an order already settled does not change again.
    async fn settle(
        &self,
        publisher: &Publisher,
        deliveries: Vec<Delivery>,
    ) -> Result<(), AmqpError> {
        let received = std::time::Instant::now();
        let queue = self.args.topology.order_status_queue.as_str();
        let mut results = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            self.hops
                .since_stamp(Hop::BrokerTransit, rabbitmq::sent_at(&delivery));
            let span = rabbitmq::span_of(&delivery);
            let poison = match Envelope::parse(&delivery.data) {
                Ok(envelope) => match envelope.event.settles_order_as() {
                    Some(decision) => {
                        results.push((delivery, envelope, decision, span));
                        continue;
                    }
                    None => "expected an inventory result, got OrderPlaced".to_owned(),
                },
                Err(poison) => poison.0,
            };
            self.metrics.count(queue, "dead_lettered");
            publisher
                .reject_poison(&delivery, &poison)
                .instrument(span)
                .await?;
        }
        let settled = results
            .iter()
            .map(|(_, envelope, decision, span)| (envelope, decision.clone(), span.clone()));
        outbox::settle_all(&self.store, &self.metrics, &self.hops, queue, settled)
            .await
            .map_err(|e| AmqpError::Handler(e.to_string()))?;
        if let Some((last, ..)) = results.last() {
            rabbitmq::ack_through(last).await?;
            for _ in &results {
                self.hops.since(Hop::DeliveryToAck, received);
            }
        }
        Ok(())
    }
}
