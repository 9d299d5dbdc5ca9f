//! Inventory over Kafka: the `inventory-group` consumer of order events.
//!
//! Each OrderPlaced is decided in one SQLite transaction that also records
//! its message id, so a redelivery (after a restart or a rebalance) replays
//! the decision instead of reserving twice. The result event is produced
//! keyed by order id, and the message's offset is stored for commit only
//! once the broker has the result: a crash anywhere before that redelivers
//! the message, never loses it. A replayed decision is produced again with
//! the same message id (derived from the order), which consumers ignore.

use std::sync::Arc;

use foodlab_domain::{Arrival, Envelope, Event, EventType, FaultDecision, TraceContext};
use foodlab_service_kit::{FaultState, Hop, HopMetrics, MessageMetrics, Readiness, now_ms};
use foodlab_store::{StockStore, StoreError};
use foodlab_transport::BrokerErrors;
use foodlab_transport::kafka::{
    self, Delivered, KafkaArgs, KafkaConsumer, KafkaFailure, KafkaProducer,
};
use foodlab_transport::trace;
use rdkafka::Message;
use rdkafka::consumer::Consumer as _;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::decision::{self, CrashPoint, result_event};

/// Results produced but not yet acknowledged by the broker, at most.
const IN_FLIGHT: usize = 10_000;

#[derive(Clone)]
pub struct Consumer {
    pub args: KafkaArgs,
    pub store: StockStore,
    pub faults: FaultState,
    pub metrics: MessageMetrics,
    /// What the consumer and its publisher see of the broker failing.
    pub errors: BrokerErrors,
    pub hops: HopMetrics,
    /// Aborts between a decision's commit and its result (chaos testing).
    pub crash_point: Arc<CrashPoint>,
}

/// A message whose result is on its way; its offset is stored once delivered.
struct Produced {
    /// `None` for a skipped message: nothing to wait for.
    delivered: Option<Delivered>,
    received: std::time::Instant,
    topic: String,
    partition: i32,
    offset: i64,
}

impl Consumer {
    pub fn spawn(self, readiness: Readiness) {
        let reported = readiness.clone();
        kafka::spawn_forever(
            "inventory",
            move |up| reported.set("kafka", up),
            move || {
                let consumer = self.clone();
                let readiness = readiness.clone();
                async move { consumer.session(&readiness).await }
            },
        );
    }

    async fn session(&self, readiness: &Readiness) -> Result<(), KafkaFailure> {
        self.args.ensure_topics().await?;
        let producer = self.args.producer("inventory", &self.errors)?;
        let consumer = Arc::new(self.args.consumer(
            &self.args.inventory_group,
            "inventory",
            &self.errors,
        )?);
        consumer.subscribe(&[&self.args.order_topic])?;
        readiness.set("kafka", true);
        tracing::info!(
            group = %self.args.inventory_group,
            topic = %self.args.order_topic,
            "consuming order events"
        );
        let (produced, pending) = mpsc::channel(IN_FLIGHT);
        let mut committer = tokio::spawn(store_offsets_when_delivered(
            Arc::clone(&consumer),
            pending,
            self.hops.clone(),
        ));
        let consumed = self.consume(&consumer, &producer, &produced);
        let ended = tokio::select! {
            result = consumed => result,
            result = &mut committer => result.map_err(|e| KafkaFailure::Handler(e.to_string()))?,
        };
        committer.abort();
        ended
    }

    async fn consume(
        &self,
        consumer: &KafkaConsumer,
        producer: &KafkaProducer,
        produced: &mpsc::Sender<Produced>,
    ) -> Result<(), KafkaFailure> {
        let topic = self.args.order_topic.as_str();
        loop {
            let message = kafka::next_message(consumer, "inventory").await;
            let received = std::time::Instant::now();
            self.hops
                .since_stamp(Hop::BrokerTransit, kafka::sent_at(&message));
            let (partition, offset) = (message.partition(), message.offset());
            let trace = kafka::trace_of(&message);
            let delivered = self
                .decide(producer, message.payload().unwrap_or_default(), trace)
                .instrument(trace::span(&trace))
                .await?;
            produced
                .send(Produced {
                    delivered,
                    received,
                    topic: topic.to_owned(),
                    partition,
                    offset,
                })
                .await
                .map_err(|_| KafkaFailure::Handler("the offset committer stopped".into()))?;
        }
    }

    /// Decides one order event and queues its result; `None` for a message
    /// that is skipped (malformed, or not an OrderPlaced).
    async fn decide(
        &self,
        producer: &KafkaProducer,
        body: &[u8],
        trace: TraceContext,
    ) -> Result<Option<Delivered>, KafkaFailure> {
        let topic = self.args.order_topic.as_str();
        let arrival = Arrival::on(EventType::OrderPlaced, jiff::Timestamp::now());
        let envelope = match Envelope::read(body, arrival) {
            Ok(envelope) if envelope.event_type() == EventType::OrderPlaced => {
                envelope.in_trace(trace)
            }
            Ok(other) => {
                self.skip(&format!(
                    "expected OrderPlaced, got {:?}",
                    other.event_type()
                ));
                return Ok(None);
            }
            Err(poison) => {
                self.skip(&poison.0);
                return Ok(None);
            }
        };
        let Event::OrderPlaced { customer_id, items } = &envelope.event else {
            return Ok(None);
        };
        let faults = self.faults.get();
        if faults.delay_ms > 0 {
            tokio::time::sleep(faults.delay()).await;
        }
        let message_id = envelope.message_id.to_string();
        let now = now_ms();
        let decided = if faults.decide(rand::random()) == FaultDecision::Proceed {
            let reserved =
                self.store
                    .reserve_message(&message_id, envelope.order_id, items.clone(), now);
            self.hops.time(Hop::StoreCommit, reserved).await
        } else {
            let reason = "injected failure: inventory refused the order".to_owned();
            let rejected = self.store.reject_message(
                &message_id,
                envelope.order_id,
                items.clone(),
                reason,
                now,
            );
            self.hops.time(Hop::StoreCommit, rejected).await
        };
        let decided = match decided {
            Err(StoreError::MessageIdReused { earlier_order }) => {
                self.skip(&format!(
                    "message id {} was already used for order {earlier_order}",
                    envelope.message_id
                ));
                return Ok(None);
            }
            other => other.map_err(|e| KafkaFailure::Handler(e.to_string()))?,
        };
        self.crash_point.committed(envelope.order_id);
        let outcome = result_event(&decided.reservation, customer_id.clone());
        let result = Envelope::result_of(&envelope, jiff::Timestamp::now(), outcome);
        let delivered = kafka::send(producer, &self.args.inventory_topic, &result).await?;
        decision::record(&self.metrics, topic, &envelope, &decided);
        Ok(Some(delivered))
    }

    fn skip(&self, reason: &str) {
        self.metrics.count(&self.args.order_topic, "malformed");
        tracing::warn!(topic = %self.args.order_topic, %reason, "malformed order event skipped");
    }
}

/// Stores each message's offset once its result is delivered, in the order
/// the messages came; a failed delivery ends the session, so the message
/// and everything after it is read again.
async fn store_offsets_when_delivered(
    consumer: Arc<KafkaConsumer>,
    mut pending: mpsc::Receiver<Produced>,
    hops: HopMetrics,
) -> Result<(), KafkaFailure> {
    while let Some(produced) = pending.recv().await {
        if let Some(delivered) = produced.delivered {
            let sent = delivered.sent;
            delivered.confirmed().await?;
            hops.since(Hop::PublishConfirm, sent);
        }
        // After a rebalance the partition may belong to another member: its
        // new owner reads the message again, and the decision is replayed.
        if let Err(error) = kafka::store_processed(
            &consumer,
            &produced.topic,
            produced.partition,
            produced.offset,
        ) {
            tracing::warn!(
                topic = %produced.topic,
                partition = produced.partition,
                offset = produced.offset,
                %error,
                "offset not stored"
            );
        }
        hops.since(Hop::DeliveryToAck, produced.received);
    }
    Ok(())
}
