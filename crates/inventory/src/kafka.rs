//! Inventory over Kafka: the `inventory-group` consumer of order events.
//!
//! Each OrderPlaced is decided in a SQLite transaction that also records
//! its message id (the events already waiting are decided together, in one), so a redelivery (after a restart or a rebalance) replays
//! the decision instead of reserving twice. The result event is produced
//! keyed by order id, and the message's offset is stored for commit only
//! once the broker has the result: a crash anywhere before that redelivers
//! the message, never loses it. A replayed decision is produced again with
//! the same message id (derived from the order), which consumers ignore.

use std::sync::Arc;

use foodlab_domain::{Arrival, Envelope, Event, EventType, FaultDecision, TraceContext};
use foodlab_service_kit::{FaultState, Hop, HopMetrics, MessageMetrics, Readiness, now_ms};
use foodlab_store::{OrderMessage, StockStore, StoreError};
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

/// Order events decided in one store transaction, at most (those already
/// waiting when the first arrives).
const BATCH: usize = 256;

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

/// An order event to decide.
struct Admitted {
    envelope: Envelope,
    customer_id: Option<String>,
    message: OrderMessage,
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
            let messages = kafka::next_messages(consumer, "inventory", BATCH).await;
            let received = std::time::Instant::now();
            let mut read = Vec::with_capacity(messages.len());
            for message in &messages {
                self.hops
                    .since_stamp(Hop::BrokerTransit, kafka::sent_at(message));
                let trace = kafka::trace_of(message);
                let span = trace::span(&trace);
                let order =
                    span.in_scope(|| self.read(message.payload().unwrap_or_default(), trace));
                read.push((order, span, message.partition(), message.offset()));
            }
            let orders: Vec<&Admitted> = read
                .iter()
                .filter_map(|(order, ..)| order.as_ref())
                .collect();
            let mut delivered = self.decide(producer, &orders).await?.into_iter();
            for (order, _, partition, offset) in read {
                let delivered = match order {
                    Some(_) => delivered.next().flatten(),
                    None => None,
                };
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
    }

    /// An order event, with the consumer's injected faults applied; `None`
    /// for a message that is skipped (malformed, or not an OrderPlaced).
    fn read(&self, body: &[u8], trace: TraceContext) -> Option<Admitted> {
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
                return None;
            }
            Err(poison) => {
                self.skip(&poison.0);
                return None;
            }
        };
        let Event::OrderPlaced { customer_id, items } = &envelope.event else {
            return None;
        };
        let rejection = (self.faults.get().decide(rand::random()) != FaultDecision::Proceed)
            .then(|| "injected failure: inventory refused the order".to_owned());
        let message = OrderMessage {
            message_id: envelope.message_id.to_string(),
            order_id: envelope.order_id,
            lines: items.clone(),
            rejection,
            now_ms: now_ms(),
        };
        Some(Admitted {
            customer_id: customer_id.clone(),
            envelope,
            message,
        })
    }

    /// Decides `orders` in one store transaction and queues their results;
    /// for each, what the broker will acknowledge (`None` for an order
    /// skipped: its message id was used before for another order).
    async fn decide(
        &self,
        producer: &KafkaProducer,
        orders: &[&Admitted],
    ) -> Result<Vec<Option<Delivered>>, KafkaFailure> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let faults = self.faults.get();
        if faults.delay_ms > 0 {
            // The delay is each order's: a batch takes as long as its orders one by one.
            let orders = u32::try_from(orders.len()).unwrap_or(u32::MAX);
            tokio::time::sleep(faults.delay().saturating_mul(orders)).await;
        }
        let messages = orders.iter().map(|order| order.message.clone()).collect();
        let decided = self
            .hops
            .time(Hop::StoreCommit, self.store.decide_messages(messages))
            .await
            .map_err(|e| KafkaFailure::Handler(e.to_string()))?;
        let mut results = Vec::with_capacity(orders.len());
        for (order, decided) in orders.iter().zip(decided) {
            match decided {
                Ok(decided) => {
                    self.crash_point.committed(order.envelope.order_id);
                    results.push(Some(decided));
                }
                Err(StoreError::MessageIdReused { earlier_order }) => {
                    let span =
                        trace::span(&order.envelope.trace.unwrap_or_else(TraceContext::start));
                    span.in_scope(|| {
                        self.skip(&format!(
                            "message id {} was already used for order {earlier_order}",
                            order.envelope.message_id
                        ));
                    });
                    results.push(None);
                }
                Err(other) => return Err(KafkaFailure::Handler(other.to_string())),
            }
        }
        // Every decision of the batch is committed before any result leaves.
        let topic = self.args.order_topic.as_str();
        let mut delivered = Vec::with_capacity(orders.len());
        for (order, decided) in orders.iter().zip(results) {
            let Some(decided) = decided else {
                delivered.push(None);
                continue;
            };
            let span = trace::span(&order.envelope.trace.unwrap_or_else(TraceContext::start));
            let outcome = result_event(&decided.reservation, order.customer_id.clone());
            let result = Envelope::result_of(&order.envelope, jiff::Timestamp::now(), outcome);
            let sent = kafka::send(producer, &self.args.inventory_topic, &result)
                .instrument(span.clone())
                .await?;
            span.in_scope(|| decision::record(&self.metrics, topic, &order.envelope, &decided));
            delivered.push(Some(sent));
        }
        Ok(delivered)
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
