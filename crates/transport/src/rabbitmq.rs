//! RabbitMQ: topology, a confirming publisher, dead-lettering with a reason,
//! and a session loop that reconnects with backoff.

use std::future::Future;
use std::time::Duration;

use foodlab_domain::{Arrival, Envelope, EventType, TRACEPARENT, TraceContext};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tracing::Instrument;

/// Header carrying why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-foodlab-reason";
/// Header counting how often a message was retried after a failure.
pub const RETRIES_HEADER: &str = "x-foodlab-retries";

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("AMQP: {0}")]
    Lapin(#[from] lapin::Error),
    #[error("the broker refused message {0} (nack)")]
    Nacked(String),
    #[error("the consumer of {0} was cancelled or its connection closed")]
    ConsumerEnded(String),
    #[error("{0}")]
    Handler(String),
}

/// Names of the exchanges and queues (every one configurable).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Topology {
    /// Topic exchange the workflow's events are published to.
    #[arg(long, env = "FOODLAB_AMQP_EXCHANGE", default_value = Topology::EXCHANGE)]
    pub exchange: String,
    /// Exchange that dead letters go to.
    #[arg(
        long,
        env = "FOODLAB_AMQP_DEAD_LETTER_EXCHANGE",
        default_value = Topology::DEAD_LETTER_EXCHANGE
    )]
    pub dead_letter_exchange: String,
    /// Queue of OrderPlaced, consumed by inventory.
    #[arg(
        long,
        env = "FOODLAB_AMQP_INVENTORY_QUEUE",
        default_value = Topology::INVENTORY_QUEUE
    )]
    pub inventory_queue: String,
    /// Queue of InventoryReserved, consumed by notification.
    #[arg(
        long,
        env = "FOODLAB_AMQP_NOTIFICATION_QUEUE",
        default_value = Topology::NOTIFICATION_QUEUE
    )]
    pub notification_queue: String,
    /// Queue of InventoryReserved/Failed, consumed by order.
    #[arg(
        long,
        env = "FOODLAB_AMQP_ORDER_STATUS_QUEUE",
        default_value = Topology::ORDER_STATUS_QUEUE
    )]
    pub order_status_queue: String,
    /// Queue of dead letters.
    #[arg(
        long,
        env = "FOODLAB_AMQP_DEAD_LETTER_QUEUE",
        default_value = Topology::DEAD_LETTER_QUEUE
    )]
    pub dead_letter_queue: String,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            exchange: Topology::EXCHANGE.into(),
            dead_letter_exchange: Topology::DEAD_LETTER_EXCHANGE.into(),
            inventory_queue: Topology::INVENTORY_QUEUE.into(),
            notification_queue: Topology::NOTIFICATION_QUEUE.into(),
            order_status_queue: Topology::ORDER_STATUS_QUEUE.into(),
            dead_letter_queue: Topology::DEAD_LETTER_QUEUE.into(),
        }
    }
}

impl Topology {
    // The names a part uses unless told otherwise (the seeds' names).
    pub const EXCHANGE: &str = "orders_exchange";
    pub const DEAD_LETTER_EXCHANGE: &str = "orders_dlx";
    pub const INVENTORY_QUEUE: &str = "inventory_queue";
    pub const NOTIFICATION_QUEUE: &str = "notification_queue";
    pub const ORDER_STATUS_QUEUE: &str = "order_status_queue";
    pub const DEAD_LETTER_QUEUE: &str = "dlq_queue";

    /// Declares everything; safe to repeat (same arguments each time).
    pub async fn declare(&self, channel: &Channel) -> Result<(), AmqpError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        self.queue(channel, &self.dead_letter_queue, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                self.dead_letter_queue.as_str().into(),
                self.dead_letter_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut dead_lettered = FieldTable::default();
        dead_lettered.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange.as_str().into()),
        );
        let bindings = [
            (&self.inventory_queue, &[EventType::OrderPlaced][..]),
            (
                &self.notification_queue,
                &[EventType::InventoryReserved][..],
            ),
            (
                &self.order_status_queue,
                &[EventType::InventoryReserved, EventType::InventoryFailed][..],
            ),
        ];
        for (queue, events) in bindings {
            self.queue(channel, queue, dead_lettered.clone()).await?;
            for event in events {
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        self.exchange.as_str().into(),
                        event.routing_key().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn queue(
        &self,
        channel: &Channel,
        name: &str,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        channel
            .queue_declare(name.into(), QueueDeclareOptions::durable(), arguments)
            .await?;
        Ok(())
    }
}

/// The start of every service's session: declare the topology, open a
/// confirming publisher.
pub async fn open_session(
    connection: &Connection,
    topology: &Topology,
) -> Result<Publisher, AmqpError> {
    topology
        .declare(&connection.create_channel().await?)
        .await?;
    Publisher::new(connection, topology.clone()).await
}

/// What a service does with each delivery of the queue it consumes.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Handles one delivery, acking or rejecting it; an error ends the
    /// session (the delivery is then redelivered on the next one).
    fn handle(
        &self,
        publisher: &Publisher,
        delivery: Delivery,
    ) -> impl Future<Output = Result<(), AmqpError>> + Send;
}

/// Consumes `queue` with `handler` for the life of the process: every
/// session declares the topology, opens a publisher and consumes, and a lost
/// connection is followed by a new session.
pub fn spawn_consumer<H: Handler>(
    args: &AmqpArgs,
    service: &'static str,
    queue: &str,
    on_connected: impl Fn(bool) + Send + 'static,
    handler: H,
) {
    let (topology, prefetch, queue) = (args.topology.clone(), args.prefetch, queue.to_owned());
    spawn_forever(
        args.amqp_url.clone(),
        service,
        on_connected,
        move |connection| {
            let (handler, topology, queue) = (handler.clone(), topology.clone(), queue.clone());
            async move {
                let publisher = open_session(&connection, &topology).await?;
                consume(&connection, &queue, prefetch, |delivery| {
                    handler.handle(&publisher, delivery)
                })
                .await
            }
        },
    );
}

/// Runs a service's RabbitMQ side in the background for the life of the
/// process: `session` on every fresh connection, readiness following it.
pub fn spawn_forever<S, Fut>(
    url: String,
    service: &'static str,
    on_connected: impl Fn(bool) + Send + 'static,
    session: S,
) where
    S: FnMut(Connection) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), AmqpError>> + Send,
{
    on_connected(false);
    tokio::spawn(async move { run_forever(&url, service, on_connected, session).await });
}

pub async fn connect(url: &str, name: &str) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, properties).await?)
}

/// Publishes persistent messages and waits for the broker's confirm.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    topology: Topology,
}

impl Publisher {
    pub async fn new(connection: &Connection, topology: Topology) -> Result<Self, AmqpError> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel, topology })
    }

    fn properties(envelope: &Envelope) -> BasicProperties {
        let properties = BasicProperties::default()
            .with_message_id(envelope.message_id.to_string().into())
            .with_correlation_id(envelope.correlation_id.as_str().into())
            .with_content_type("application/json".into())
            .with_type(format!("{:?}", envelope.event_type()).into())
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
        self.publish_all(std::slice::from_ref(envelope))
            .await
            .map(drop)
    }

    /// Publishes events back to back, then waits for every confirm; how long
    /// each one took from its send to its confirm (read in order, so a
    /// confirm is seen once the ones before it are).
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<Vec<Duration>, AmqpError> {
        let mut pending = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            pending.push(self.send(envelope).await?);
        }
        let mut took = Vec::with_capacity(pending.len());
        for confirm in pending {
            let sent = confirm.sent;
            confirm.confirmed().await?;
            took.push(sent.elapsed());
        }
        Ok(took)
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
            .await?;
        Ok(PendingConfirm {
            message_id: envelope.message_id.to_string(),
            confirm,
            sent: std::time::Instant::now(),
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
            .await?
            .await?;
        match confirm {
            Confirmation::Nack(_) => Err(AmqpError::Nacked(message_id)),
            _ => Ok(()),
        }
    }
}

/// A published message the broker has not confirmed yet.
pub struct PendingConfirm {
    message_id: String,
    confirm: lapin::PublisherConfirm,
    sent: std::time::Instant,
}

impl PendingConfirm {
    pub async fn confirmed(self) -> Result<(), AmqpError> {
        match self.confirm.await? {
            Confirmation::Nack(_) => Err(AmqpError::Nacked(self.message_id)),
            _ => Ok(()),
        }
    }
}

/// Acks `delivery` once `pending` is confirmed, in the background; if the
/// broker refuses the message, the delivery is requeued to be handled again.
/// `acked` hears how long the confirm took, once the delivery is acked.
pub fn ack_when_confirmed(
    pending: PendingConfirm,
    delivery: Delivery,
    acked: impl FnOnce(Duration) + Send + 'static,
) {
    tokio::spawn(async move {
        let sent = pending.sent;
        let outcome = match pending.confirmed().await {
            Ok(()) => {
                let confirmed = sent.elapsed();
                let outcome = delivery.ack(BasicAckOptions::default()).await;
                if outcome.is_ok() {
                    acked(confirmed);
                }
                outcome
            }
            Err(error) => {
                tracing::warn!(%error, "result not confirmed; requeueing the delivery");
                delivery
                    .nack(lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
            }
        };
        if let Err(error) = outcome {
            // The channel is gone; the broker redelivers the message.
            tracing::warn!(%error, "could not settle a delivery");
        }
    });
}

fn with_header(properties: BasicProperties, key: &str, value: AMQPValue) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(key.into(), value);
    properties.with_headers(headers)
}

/// How often a delivery has been retried so far (0 for a first delivery).
pub fn retries_of(delivery: &Delivery) -> u32 {
    let value = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(RETRIES_HEADER).cloned());
    match value {
        Some(AMQPValue::LongUInt(n)) => n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u32::from(n),
        _ => 0,
    }
}

/// The trace context a delivery carries, if any.
pub fn trace_of(properties: &BasicProperties) -> Option<TraceContext> {
    match properties.headers().as_ref()?.inner().get(TRACEPARENT)? {
        AMQPValue::LongString(s) => TraceContext::parse(&String::from_utf8_lossy(s.as_bytes())),
        _ => None,
    }
}

/// This hop's context for a delivery (the sender's trace, or a new one),
/// written into the delivery's headers: what it publishes, retries or
/// dead-letters carries it on.
fn continue_trace(mut delivery: Delivery) -> (Delivery, TraceContext) {
    let trace =
        trace_of(&delivery.properties).map_or_else(TraceContext::start, |sent| sent.child());
    delivery.properties = with_header(
        delivery.properties,
        TRACEPARENT,
        AMQPValue::LongString(trace.to_string().into()),
    );
    (delivery, trace)
}

/// When the delivery's sender handed it to RabbitMQ, if it said.
pub fn sent_at(delivery: &Delivery) -> Option<std::time::SystemTime> {
    match delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(crate::sent_at::SENT_AT_HEADER)?
    {
        AMQPValue::LongString(s) => crate::sent_at::parse(s.as_bytes()),
        _ => None,
    }
}

/// The dead-letter reason a message carries, if any.
pub fn reason_of(properties: &BasicProperties) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(REASON_HEADER)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// Consumes `queue` with manual acks, one delivery at a time; `handle` acks.
/// Returns an error when the consumer ends (connection lost, cancelled).
pub async fn consume<F, Fut>(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
    mut handle: F,
) -> Result<(), AmqpError>
where
    F: FnMut(Delivery) -> Fut,
    Fut: Future<Output = Result<(), AmqpError>>,
{
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            format!("{queue}-{}", uuid::Uuid::new_v4()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let (delivery, trace) = continue_trace(delivery?);
        handle(delivery)
            .instrument(crate::trace::span(&trace))
            .await?;
    }
    Err(AmqpError::ConsumerEnded(queue.to_owned()))
}

pub async fn ack(delivery: &Delivery) -> Result<(), AmqpError> {
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// Runs `session` on a fresh connection, again and again: when the broker
/// goes away the session fails, and a new connection is tried with backoff
/// (0.1 s doubling to 5 s; back to 0.1 s only after a session that lasted,
/// so a session that fails at once does not spin). `on_connected` hears
/// every change.
pub async fn run_forever<S, Fut>(
    url: &str,
    name: &str,
    on_connected: impl Fn(bool),
    mut session: S,
) -> !
where
    S: FnMut(Connection) -> Fut,
    Fut: Future<Output = Result<(), AmqpError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(url, name).await {
            Ok(connection) => {
                tracing::info!(service = name, "connected to RabbitMQ");
                on_connected(true);
                let began = tokio::time::Instant::now();
                let error = match session(connection).await {
                    Ok(()) => "session ended".to_owned(),
                    Err(e) => e.to_string(),
                };
                on_connected(false);
                if began.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(100);
                }
                tracing::warn!(service = name, %error, ?backoff, "RabbitMQ session lost; reconnecting");
            }
            Err(error) => {
                tracing::warn!(service = name, %error, ?backoff, "cannot reach RabbitMQ; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Settings of a service's RabbitMQ connection.
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "FOODLAB_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Unacknowledged deliveries a consumer may hold.
    #[arg(long, env = "FOODLAB_AMQP_PREFETCH", default_value_t = 100)]
    pub prefetch: u16,
    #[command(flatten)]
    pub topology: Topology,
}

/// How often a failing delivery is retried before it is dead-lettered.
pub const MAX_RETRIES: u32 = 3;

/// What injected faults did to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    /// No failure injected: handle the delivery.
    Proceed,
    /// Failed and put back for another try.
    Retried,
    /// Failed too often: dead-lettered.
    DeadLettered,
}

impl FaultOutcome {
    /// How the message metrics count it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Proceed => "processed",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// A delivery after the checks every consumer makes first.
#[derive(Debug)]
pub enum Admission {
    /// The expected event and no injected failure: handle it.
    Handle(Envelope),
    /// Already settled: dead-lettered as poison, or retried or dead-lettered
    /// by an injected failure. `outcome` is its metrics label; `dead_letter_of`
    /// is a valid event that was given up on (its order still needs an end).
    Settled {
        outcome: &'static str,
        dead_letter_of: Option<Envelope>,
    },
}

/// What a delivery's channel says about it: the event its routing key
/// carries (a retried delivery comes back with the queue's name, and the
/// queue carries the `expected` event), and when the broker stamped it.
pub fn arrival(delivery: &Delivery, expected: EventType, queue: &str) -> Arrival {
    let key = delivery.routing_key.as_str();
    let carries = EventType::for_routing_key(key).or((key == queue).then_some(expected));
    let stamped = delivery
        .properties
        .timestamp()
        .and_then(|s| jiff::Timestamp::from_second(i64::try_from(s).ok()?).ok());
    Arrival {
        carries,
        at: Some(stamped.unwrap_or_else(jiff::Timestamp::now)),
    }
}

/// Reads a delivery (any shape the tolerant reader knows), dead-letters it
/// if it is poison or not the `expected` event, and applies the consumer's
/// injected faults.
pub async fn admit(
    delivery: &Delivery,
    expected: EventType,
    faults: &foodlab_domain::Faults,
    publisher: &Publisher,
    queue: &str,
) -> Result<Admission, AmqpError> {
    let arrived = arrival(delivery, expected, queue);
    let poison = match Envelope::read(&delivery.data, arrived) {
        Ok(mut envelope) if envelope.event_type() == expected => {
            envelope.trace = trace_of(&delivery.properties);
            let faulted = apply_faults(faults, rand::random(), publisher, delivery, queue).await?;
            if faulted == FaultOutcome::Proceed {
                return Ok(Admission::Handle(envelope));
            }
            tracing::warn!(
                message_id = %envelope.message_id,
                order_id = %envelope.order_id,
                outcome = faulted.label(),
                "injected failure"
            );
            let dead_letter_of = (faulted == FaultOutcome::DeadLettered).then_some(envelope);
            return Ok(Admission::Settled {
                outcome: faulted.label(),
                dead_letter_of,
            });
        }
        Ok(other) => format!("expected {expected:?}, got {:?}", other.event_type()),
        Err(poison) => poison.0,
    };
    publisher.reject_poison(delivery, &poison).await?;
    Ok(Admission::Settled {
        outcome: "dead_lettered",
        dead_letter_of: None,
    })
}

/// Applies a consumer's injected faults to a delivery: waits the delay, and
/// on an injected failure retries (up to `MAX_RETRIES`) or dead-letters it,
/// acking the original either way.
pub async fn apply_faults(
    faults: &foodlab_domain::Faults,
    roll: f64,
    publisher: &Publisher,
    delivery: &Delivery,
    queue: &str,
) -> Result<FaultOutcome, AmqpError> {
    if faults.delay_ms > 0 {
        tokio::time::sleep(faults.delay()).await;
    }
    if faults.decide(roll) == foodlab_domain::FaultDecision::Proceed {
        return Ok(FaultOutcome::Proceed);
    }
    let retries = retries_of(delivery);
    let outcome = if retries < MAX_RETRIES {
        publisher.retry(delivery, queue, retries + 1).await?;
        FaultOutcome::Retried
    } else {
        let reason = format!("injected failure, gave up after {MAX_RETRIES} retries");
        publisher.dead_letter(delivery, &reason).await?;
        FaultOutcome::DeadLettered
    };
    ack(delivery).await?;
    Ok(outcome)
}
