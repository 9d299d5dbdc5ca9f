//! A service's life on the broker: a session (topology, publisher,
//! consumer) on every fresh connection, reconnecting with backoff.

use std::future::Future;
use std::time::Duration;

use foodlab_domain::Backoff;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tracing::Instrument;

use super::headers::continue_trace;
use super::{AmqpArgs, AmqpError, Publisher, Topology};

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
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
                    backoff.reset();
                }
                let retry_in = backoff.peek();
                tracing::warn!(service = name, %error, ?retry_in, "RabbitMQ session lost; reconnecting");
            }
            Err(error) => {
                let retry_in = backoff.peek();
                tracing::warn!(service = name, %error, ?retry_in, "cannot reach RabbitMQ; retrying");
            }
        }
        tokio::time::sleep(backoff.pause()).await;
    }
}
