//! The order service over Kafka: the outbox relay produces OrderPlaced
//! events (keyed by order id, idempotent producer, acks=all) and the
//! `order-group` consumer of inventory events records what inventory decided.

use std::sync::Arc;
use std::time::Duration;

use foodlab_domain::{Envelope, Event, OrderStatus};
use foodlab_service_kit::{MessageMetrics, Readiness, now_ms};
use foodlab_store::OrderStore;
use foodlab_transport::kafka::{self, KafkaArgs, KafkaFailure};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use tokio::sync::Notify;

/// Events produced per round of deliveries.
const RELAY_BATCH: usize = 2_000;
/// The relay looks at the outbox at least this often, even without a nudge.
const RELAY_IDLE_POLL: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct Streaming {
    pub args: KafkaArgs,
    pub store: OrderStore,
    pub metrics: MessageMetrics,
    /// Nudged whenever an order is stored, so the relay produces at once.
    pub outbox_nudge: Arc<Notify>,
}

impl Streaming {
    pub fn spawn(self, readiness: Readiness) {
        tokio::spawn(async move {
            // Orders are accepted into the outbox without a broker: the
            // connection is reported, but the service stays ready.
            let report = |up| readiness.note("kafka", up);
            kafka::run_forever("order", &report, || {
                let streaming = self.clone();
                let readiness = readiness.clone();
                async move { streaming.session(&readiness).await }
            })
            .await;
        });
    }

    async fn session(&self, readiness: &Readiness) -> Result<(), KafkaFailure> {
        self.args.ensure_topics().await?;
        let producer = self.args.producer("order")?;
        let consumer = self.args.consumer(&self.args.order_group, "order")?;
        consumer.subscribe(&[&self.args.inventory_topic])?;
        readiness.note("kafka", true);
        tokio::select! {
            result = self.relay(&producer) => result,
            result = self.settle_all(&consumer) => result,
        }
    }

    /// Produces the outbox in order; an event leaves the outbox only once
    /// the broker has it.
    async fn relay(&self, producer: &FutureProducer) -> Result<(), KafkaFailure> {
        let store_error = |e: foodlab_store::StoreError| KafkaFailure::Handler(e.to_string());
        loop {
            let pending = self
                .store
                .pending_events(RELAY_BATCH)
                .await
                .map_err(store_error)?;
            let Some((last_seq, _)) = pending.last() else {
                tokio::select! {
                    () = self.outbox_nudge.notified() => {}
                    () = tokio::time::sleep(RELAY_IDLE_POLL) => {}
                }
                continue;
            };
            let last_seq = *last_seq;
            let events: Vec<Envelope> = pending.into_iter().map(|(_, event)| event).collect();
            kafka::send_all(producer, &self.args.order_topic, &events).await?;
            self.store
                .mark_published(last_seq)
                .await
                .map_err(store_error)?;
            tracing::debug!(count = events.len(), "outbox events produced");
        }
    }

    async fn settle_all(&self, consumer: &StreamConsumer) -> Result<(), KafkaFailure> {
        let topic = self.args.inventory_topic.as_str();
        loop {
            let message = consumer.recv().await?;
            self.settle(message.payload().unwrap_or_default()).await?;
            kafka::store_processed(consumer, topic, message.partition(), message.offset())?;
        }
    }

    async fn settle(&self, body: &[u8]) -> Result<(), KafkaFailure> {
        let topic = self.args.inventory_topic.as_str();
        let envelope = match Envelope::parse(body) {
            Ok(envelope) => envelope,
            Err(poison) => {
                self.metrics.count(topic, "malformed");
                tracing::warn!(%topic, reason = %poison.0, "malformed inventory event skipped");
                return Ok(());
            }
        };
        let (status, reason) = match &envelope.event {
            Event::InventoryReserved { .. } => (OrderStatus::Reserved, None),
            Event::InventoryFailed { reason } => (OrderStatus::Failed, Some(reason.clone())),
            Event::OrderPlaced { .. } => {
                self.metrics.count(topic, "malformed");
                tracing::warn!(%topic, message_id = %envelope.message_id, "OrderPlaced on the inventory topic skipped");
                return Ok(());
            }
        };
        let applied = self
            .store
            .settle(envelope.order_id, status, reason, now_ms())
            .await
            .map_err(|e| KafkaFailure::Handler(e.to_string()))?;
        self.metrics
            .count(topic, if applied { "processed" } else { "duplicate" });
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
