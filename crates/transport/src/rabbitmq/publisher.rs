//! Persistent messages published with the broker's confirm, and a
//! delivery acked once what it caused is confirmed.

use std::time::Duration;

use foodlab_domain::{Envelope, TRACEPARENT};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::headers::with_header;
use super::{AmqpError, REASON_HEADER, RETRIES_HEADER, Topology, ack};
use crate::errors::{BrokerErrors, Role};

/// Publishes persistent messages and waits for the broker's confirm.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    topology: Topology,
    /// Failed publishes and confirms, refused messages (`counting_in`).
    errors: BrokerErrors,
}

impl Publisher {
    /// A confirming publisher whose errors count nowhere (the lab's own
    /// clients, tests); a service's comes from `counting_in`.
    pub async fn new(connection: &Connection, topology: Topology) -> Result<Self, AmqpError> {
        Self::counting_in(connection, topology, &BrokerErrors::default()).await
    }

    /// A confirming publisher counting its errors in `errors`.
    pub async fn counting_in(
        connection: &Connection,
        topology: Topology,
        errors: &BrokerErrors,
    ) -> Result<Self, AmqpError> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            topology,
            errors: errors.clone(),
        })
    }

    /// Counts a publish or confirm that failed, and hands its error on.
    fn failed(&self, error: lapin::Error) -> AmqpError {
        self.errors.count(Role::Producer, "publish_failed");
        error.into()
    }

    fn properties(envelope: &Envelope) -> BasicProperties {
        let properties = BasicProperties::default()
            .with_message_id(envelope.message_id.to_string().into())
            .with_correlation_id(envelope.correlation_id.as_str().into())
            .with_content_type("application/json".into())
            .with_type(envelope.event_type().name().into())
            .with_delivery_mode(2);
        let properties = with_header(
            properties,
            crate::sent_at::SENT_AT_HEADER,
            AMQPValue::LongString(crate::sent_at::now().into()),
        );
        match envelope.trace {
            Some(trace) => with_header(
                properties,
                TRACEPARENT,
                AMQPValue::LongString(trace.to_string().into()),
            ),
            None => properties,
        }
    }

    /// Publishes one event and waits until the broker has it.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), AmqpError> {
        self.send(envelope).await?.confirmed().await
    }

    /// Sends events back to back without waiting for the broker; their
    /// confirms, in the order sent, for `confirm_all`.
    pub async fn send_each(
        &self,
        envelopes: &[Envelope],
    ) -> Result<Vec<PendingConfirm>, AmqpError> {
        let mut pending = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            pending.push(self.send(envelope).await?);
        }
        Ok(pending)
    }

    /// Sends an event without waiting for the broker: the returned confirm is
    /// awaited later, so a consumer can go on with the next delivery.
    pub async fn send(&self, envelope: &Envelope) -> Result<PendingConfirm, AmqpError> {
        let confirm = self
            .channel
            .basic_publish(
                self.topology.exchange.as_str().into(),
                envelope.event_type().routing_key().into(),
                BasicPublishOptions::default(),
                &envelope.to_json(),
                Self::properties(envelope),
            )
            .await
            .map_err(|error| self.failed(error))?;
        Ok(PendingConfirm {
            message_id: envelope.message_id.to_string(),
            confirm,
            sent: std::time::Instant::now(),
            errors: self.errors.clone(),
        })
    }

    /// Publishes raw bytes to the workflow exchange (labs use this to send
    /// duplicates and poison exactly as a broken producer would).
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        self.confirm(&self.topology.exchange, routing_key, body, properties)
            .await
    }

    /// Sends a delivery to the dead-letter exchange with the reason in a header.
    pub async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), AmqpError> {
        let properties = with_header(
            delivery.properties.clone(),
            REASON_HEADER,
            AMQPValue::LongString(reason.into()),
        );
        self.confirm(
            &self.topology.dead_letter_exchange,
            delivery.routing_key.as_str(),
            &delivery.data,
            properties,
        )
        .await
    }

    /// Dead-letters poison with its reason and acks it: logged, never retried.
    pub async fn reject_poison(&self, delivery: &Delivery, reason: &str) -> Result<(), AmqpError> {
        self.dead_letter(delivery, reason).await?;
        ack(delivery).await?;
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::warn!(%message_id, queue = %delivery.routing_key, %reason, "poison message dead-lettered");
        Ok(())
    }

    /// Puts a delivery back at the end of `queue` (through the default
    /// exchange, so no other queue bound to its routing key gets a copy),
    /// with its retry count raised.
    pub async fn retry(
        &self,
        delivery: &Delivery,
        queue: &str,
        retries: u32,
    ) -> Result<(), AmqpError> {
        let properties = with_header(
            delivery.properties.clone(),
            RETRIES_HEADER,
            AMQPValue::LongUInt(retries),
        );
        let properties = with_header(
            properties,
            crate::sent_at::SENT_AT_HEADER,
            AMQPValue::LongString(crate::sent_at::now().into()),
        );
        self.confirm("", queue, &delivery.data, properties).await
    }

    async fn confirm(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        let message_id = properties
            .message_id()
            .as_ref()
            .map(ShortString::to_string)
            .unwrap_or_default();
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .map_err(|error| self.failed(error))?
            .await
            .map_err(|error| self.failed(error))?;
        match confirm {
            Confirmation::Nack(_) => {
                self.errors.count(Role::Producer, "nacked");
                Err(AmqpError::Nacked(message_id))
            }
            _ => Ok(()),
        }
    }
}

/// A published message the broker has not confirmed yet.
pub struct PendingConfirm {
    message_id: String,
    confirm: lapin::PublisherConfirm,
    sent: std::time::Instant,
    errors: BrokerErrors,
}

impl PendingConfirm {
    pub async fn confirmed(self) -> Result<(), AmqpError> {
        let confirmation = self.confirm.await.map_err(|error| {
            self.errors.count(Role::Producer, "publish_failed");
            AmqpError::from(error)
        })?;
        match confirmation {
            Confirmation::Nack(_) => {
                self.errors.count(Role::Producer, "nacked");
                Err(AmqpError::Nacked(self.message_id))
            }
            _ => Ok(()),
        }
    }
}

/// Waits for every confirm of `pending`; how long each took from its send
/// (read in order, so a confirm is seen once the ones before it are).
pub async fn confirm_all(pending: Vec<PendingConfirm>) -> Result<Vec<Duration>, AmqpError> {
    let mut took = Vec::with_capacity(pending.len());
    for confirm in pending {
        let sent = confirm.sent;
        confirm.confirmed().await?;
        took.push(sent.elapsed());
    }
    Ok(took)
}

/// Acks batches of deliveries once the results they caused are confirmed,
/// each with one ack of its last delivery (`multiple`), and in the order the
/// batches came: a batch's ack waits for the batch before it, so it never
/// covers a delivery whose result is still unconfirmed. The consumer goes
/// on with the next batch meanwhile.
#[derive(Clone, Default)]
pub struct AckChain {
    last: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl AckChain {
    /// Acks `batch` (deliveries in the order they came, each with the
    /// confirm of its result) once every confirm is in; if the broker
    /// refuses one, the others are acked one by one and the refused
    /// delivery is requeued to be handled again. `acked` hears how long each
    /// acked delivery's confirm took.
    pub fn ack_when_confirmed(
        &self,
        batch: Vec<(PendingConfirm, Delivery)>,
        acked: impl Fn(Duration) + Send + 'static,
    ) {
        if batch.is_empty() {
            return;
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = last.take();
        *last = Some(tokio::spawn(async move {
            if let Some(before) = before {
                // A batch before that failed to settle is redelivered; this
                // one's acks are its own.
                let _ = before.await;
            }
            settle_batch(batch, acked).await;
        }));
    }
}

async fn settle_batch(batch: Vec<(PendingConfirm, Delivery)>, acked: impl Fn(Duration)) {
    let errors = batch[0].0.errors.clone();
    let mut confirmed = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    for (pending, delivery) in batch {
        let sent = pending.sent;
        let message_id = pending.message_id.clone();
        match pending.confirmed().await {
            Ok(()) => confirmed.push((sent.elapsed(), delivery)),
            Err(error) => {
                tracing::warn!(%message_id, %error, "result not confirmed; requeueing the delivery");
                refused.push(delivery);
            }
        }
    }
    let outcome = async {
        for delivery in &refused {
            let requeue = lapin::options::BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            settled(delivery.nack(requeue).await)?;
        }
        match confirmed.last() {
            Some((_, last)) if refused.is_empty() => {
                settled(last.ack(BasicAckOptions { multiple: true }).await)?;
            }
            _ => {
                for (_, delivery) in &confirmed {
                    settled(delivery.ack(BasicAckOptions::default()).await)?;
                }
            }
        }
        Ok::<_, AmqpError>(())
    }
    .await;
    match outcome {
        Ok(()) => confirmed.iter().for_each(|(took, _)| acked(*took)),
        Err(error) => {
            // The channel is gone; the broker redelivers the messages.
            errors.count(Role::Consumer, "settle_failed");
            tracing::warn!(%error, "could not settle a batch of deliveries");
        }
    }
}

/// An ack or nack that went out; lapin answers `false` for one it did not
/// send (its channel closed, or the delivery settled already).
pub(super) fn settled(sent: Result<bool, lapin::Error>) -> Result<(), AmqpError> {
    match sent {
        Ok(true) => Ok(()),
        Ok(false) => Err(AmqpError::NotSettled),
        Err(error) => Err(error.into()),
    }
}
