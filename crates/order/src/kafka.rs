//! The order service over Kafka: the outbox relay produces OrderPlaced
//! events (keyed by order id, idempotent producer, acks=all) and the
//! `order-group` consumer of inventory events records what inventory decided.

use std::sync::Arc;

use foodlab_domain::Envelope;
use foodlab_service_kit::{Hop, HopMetrics, MessageMetrics, Readiness};
use foodlab_store::OrderStore;
use foodlab_transport::BrokerErrors;
use foodlab_transport::kafka::{self, KafkaArgs, KafkaConsumer, KafkaFailure, KafkaProducer};
use foodlab_transport::trace;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::outbox;

/// Events produced per round of deliveries.
const RELAY_BATCH: usize = 2_000;

#[derive(Clone)]
pub struct Streaming {
    pub args: KafkaArgs,
    pub store: OrderStore,
    pub metrics: MessageMetrics,
    /// What the relay's producer and the consumer see of the broker failing.
    pub errors: BrokerErrors,
    pub hops: HopMetrics,
    /// Nudged whenever an order is stored, so the relay produces at once.
    pub outbox_nudge: Arc<Notify>,
}

impl Streaming {
    pub fn spawn(self, readiness: Readiness) {
        // Orders are accepted into the outbox without a broker: the
        // connection is reported, but the service stays ready.
        let noted = readiness.clone();
        kafka::spawn_forever(
            "order",
            move |up| noted.note("kafka", up),
            move || {
                let streaming = self.clone();
                let readiness = readiness.clone();
                async move { streaming.session(&readiness).await }
            },
        );
    }

    async fn session(&self, readiness: &Readiness) -> Result<(), KafkaFailure> {
        self.args.ensure_topics().await?;
        let producer = self.args.producer("order", &self.errors)?;
        let consumer = self
            .args
            .consumer(&self.args.order_group, "order", &self.errors)?;
        consumer.subscribe(&[&self.args.inventory_topic])?;
        readiness.note("kafka", true);
        tokio::select! {
            result = self.relay(&producer) => result,
            result = self.settle_all(&consumer) => result,
        }
    }

    /// Produces the outbox; an event leaves it once the broker has it.
    async fn relay(&self, producer: &KafkaProducer) -> Result<(), KafkaFailure> {
        let store_error = |e: foodlab_store::StoreError| KafkaFailure::Handler(e.to_string());
        let topic = self.args.order_topic.as_str();
        outbox::relay(
            &self.store,
            &self.outbox_nudge,
            &self.hops,
            RELAY_BATCH,
            store_error,
            |events| async move {
                let pending = kafka::send_each(producer, topic, &events).await?;
                Ok(kafka::confirm_all(pending))
            },
        )
        .await
    }

    async fn settle_all(&self, consumer: &KafkaConsumer) -> Result<(), KafkaFailure> {
        let topic = self.args.inventory_topic.as_str();
        loop {
            let message = kafka::next_message(consumer, "order").await;
            let received = std::time::Instant::now();
            self.hops
                .since_stamp(Hop::BrokerTransit, kafka::sent_at(&message));
            let trace = kafka::trace_of(&message);
            self.settle(message.payload().unwrap_or_default())
                .instrument(trace::span(&trace))
                .await?;
            // After a rebalance the partition may be another member's: it
            // reads the result again, and settling is idempotent.
            if let Err(error) =
                kafka::store_processed(consumer, topic, message.partition(), message.offset())
            {
                tracing::warn!(%topic, partition = message.partition(), %error, "offset not stored");
            }
            self.hops.since(Hop::DeliveryToAck, received);
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
        let Some(decision) = envelope.event.settles_order_as() else {
            self.metrics.count(topic, "malformed");
            tracing::warn!(%topic, message_id = %envelope.message_id, "OrderPlaced on the inventory topic skipped");
            return Ok(());
        };
        outbox::settle(
            &self.store,
            &self.metrics,
            &self.hops,
            topic,
            &envelope,
            decision,
        )
        .await
        .map_err(|e| KafkaFailure::Handler(e.to_string()))
    }
}
