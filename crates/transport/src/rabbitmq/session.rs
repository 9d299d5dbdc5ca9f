//! A service's life on the broker: a session (topology, publisher,
//! consumer) on every fresh connection, reconnecting with backoff.

use std::future::Future;
use std::time::Duration;

use foodlab_domain::{Backoff, TraceContext};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use super::headers::{continue_trace, trace_of};
use super::{AmqpArgs, AmqpError, Publisher, Topology};
use crate::errors::{BrokerErrors, Role};

/// The start of every service's session: declare the topology, open a
/// confirming publisher that counts its errors in `errors`.
pub async fn open_session(
    connection: &Connection,
    topology: &Topology,
    errors: &BrokerErrors,
) -> Result<Publisher, AmqpError> {
    topology
        .declare(&connection.create_channel().await?)
        .await?;
    Publisher::counting_in(connection, topology.clone(), errors).await
}

/// What a service does with the deliveries of the queue it consumes.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Handles deliveries that arrived together (as many as were waiting, up
    /// to the prefetch; one when only one was), in order, settling each; an
    /// error ends the session (what is unsettled is then redelivered).
    fn handle(
        &self,
        publisher: &Publisher,
        deliveries: Vec<Delivery>,
    ) -> impl Future<Output = Result<(), AmqpError>> + Send;
}

/// The log span of a delivery's handling (its trace, continued on arrival).
pub fn span_of(delivery: &Delivery) -> tracing::Span {
    let trace = trace_of(&delivery.properties).unwrap_or_else(TraceContext::start);
    crate::trace::span(&trace)
}

/// Consumes `queue` with `handler` for the life of the process: every
/// session declares the topology, opens a publisher and consumes, and a lost
/// connection is followed by a new session. Broker errors go to `errors`.
pub fn spawn_consumer<H: Handler>(
    args: &AmqpArgs,
    service: &'static str,
    queue: &str,
    errors: &BrokerErrors,
    on_connected: impl Fn(bool) + Send + 'static,
    handler: H,
) {
    let (topology, prefetch, queue) = (args.topology.clone(), args.prefetch, queue.to_owned());
    let counted = errors.clone();
    spawn_forever(
        args.amqp_url.clone(),
        service,
        errors,
        on_connected,
        move |connection| {
            let (handler, topology, queue) = (handler.clone(), topology.clone(), queue.clone());
            let errors = counted.clone();
            async move {
                let publisher = open_session(&connection, &topology, &errors).await?;
                consume_batches(&connection, &queue, prefetch, |deliveries| {
                    handler.handle(&publisher, deliveries)
                })
                .await
            }
        },
    );
}

/// Runs a service's RabbitMQ side in the background for the life of the
/// process: `session` on every fresh connection, readiness following it,
/// lost sessions and failed connects counted in `errors` (`run_forever`).
pub fn spawn_forever<S, Fut>(
    url: String,
    service: &'static str,
    errors: &BrokerErrors,
    on_connected: impl Fn(bool) + Send + 'static,
    session: S,
) where
    S: FnMut(Connection) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), AmqpError>> + Send,
{
    on_connected(false);
    let errors = errors.clone();
    tokio::spawn(async move { run_forever(&url, service, &errors, on_connected, session).await });
}

/// How long one node may take to accept a connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The URLs of `urls`: one broker's, or the nodes of a cluster separated by commas.
pub fn url_list(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// Where a URL points, without its credentials (for errors and logs).
pub fn url_host(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let after_credentials = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, rest)| rest);
    after_credentials
        .split('/')
        .next()
        .unwrap_or(after_credentials)
}

/// Connects to the first node of `urls` (comma-separated) that answers.
pub async fn connect(urls: &str, name: &str) -> Result<Connection, AmqpError> {
    connect_from(urls, 0, name)
        .await
        .map(|(connection, _)| connection)
}

/// Tries the nodes of `urls` in turn, the `first` one first; the connection
/// and the index of the node that took it. Lapin connects to one host, so a
/// cluster's nodes are tried here.
pub async fn connect_from(
    urls: &str,
    first: usize,
    name: &str,
) -> Result<(Connection, usize), AmqpError> {
    let list = url_list(urls);
    if list.is_empty() {
        return Err(AmqpError::Unreachable("no AMQP URL given".into()));
    }
    let mut failures = Vec::with_capacity(list.len());
    for turn in 0..list.len() {
        let index = (first + turn) % list.len();
        let url = list[index];
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let failure =
            match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await
            {
                Ok(Ok(connection)) => return Ok((connection, index)),
                // One node: its own error, as before there were several.
                Ok(Err(error)) if list.len() == 1 => return Err(error.into()),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer in {CONNECT_TIMEOUT:?}"),
            };
        tracing::debug!(service = name, node = url_host(url), %failure, "cannot reach a RabbitMQ node");
        failures.push(format!("{}: {failure}", url_host(url)));
    }
    Err(AmqpError::Unreachable(failures.join("; ")))
}

/// A consumer of `queue` with manual acks and at most `prefetch` deliveries
/// unacknowledged.
async fn open_consumer(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
) -> Result<lapin::Consumer, AmqpError> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            format!("{queue}-{}", uuid::Uuid::new_v4()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}

/// Consumes `queue` with manual acks, the deliveries already waiting taken
/// together (up to `prefetch`; one when only one is there, so nothing waits
/// for a batch to fill); `handle` settles them. Returns an error when the
/// consumer ends (connection lost, cancelled).
pub async fn consume_batches<F, Fut>(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
    mut handle: F,
) -> Result<(), AmqpError>
where
    F: FnMut(Vec<Delivery>) -> Fut,
    Fut: Future<Output = Result<(), AmqpError>>,
{
    let consumer = open_consumer(connection, queue, prefetch).await?;
    // A prefetch of 0 is no limit: batches of at most 256 then.
    let most = if prefetch == 0 {
        256
    } else {
        usize::from(prefetch)
    };
    let mut batches = consumer.ready_chunks(most);
    while let Some(batch) = batches.next().await {
        let mut deliveries = Vec::with_capacity(batch.len());
        for delivery in batch {
            deliveries.push(continue_trace(delivery?).0);
        }
        handle(deliveries).await?;
    }
    Err(AmqpError::ConsumerEnded(queue.to_owned()))
}

pub async fn ack(delivery: &Delivery) -> Result<(), AmqpError> {
    super::publisher::settled(delivery.ack(BasicAckOptions::default()).await)
}

/// Acks `delivery` and every delivery before it on its channel not yet
/// settled (`multiple`): for a batch whose deliveries are all done with.
pub async fn ack_through(delivery: &Delivery) -> Result<(), AmqpError> {
    super::publisher::settled(delivery.ack(BasicAckOptions { multiple: true }).await)
}

/// Runs `session` on a fresh connection, again and again: when the broker
/// goes away the session fails, and a new connection is tried with backoff
/// (0.1 s doubling to 5 s; back to 0.1 s only after a session that lasted,
/// so a session that fails at once does not spin). With several nodes
/// (`urls` comma-separated) the one after the node that was lost is tried
/// first, then the others in turn. `on_connected` hears every change.
///
/// Every session consumes, so `errors` counts as the consumer's: each
/// session lost with its connection or channel (`connection_lost`), and each
/// round of nodes that did not answer (`connect_failed`). A session ended by
/// its handler (`AmqpError::Handler`, a store error) is logged, not counted:
/// the broker did nothing wrong.
pub async fn run_forever<S, Fut>(
    urls: &str,
    name: &str,
    errors: &BrokerErrors,
    on_connected: impl Fn(bool),
    mut session: S,
) -> !
where
    S: FnMut(Connection) -> Fut,
    Fut: Future<Output = Result<(), AmqpError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut first = 0;
    loop {
        match connect_from(urls, first, name).await {
            Ok((connection, node)) => {
                first = node + 1;
                let node = url_list(urls).get(node).map_or("", |url| url_host(url));
                tracing::info!(service = name, node, "connected to RabbitMQ");
                on_connected(true);
                let began = tokio::time::Instant::now();
                let ended = session(connection).await;
                if !matches!(ended, Err(AmqpError::Handler(_))) {
                    errors.count(Role::Consumer, "connection_lost");
                }
                let error = match ended {
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
                errors.count(Role::Consumer, "connect_failed");
                let retry_in = backoff.peek();
                tracing::warn!(service = name, %error, ?retry_in, "cannot reach RabbitMQ; retrying");
            }
        }
        tokio::time::sleep(backoff.pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_urls_is_split_on_commas() {
        assert_eq!(
            url_list("amqp://a:b@127.0.0.1:5691/%2f, amqp://a:b@127.0.0.1:5692/%2f,"),
            [
                "amqp://a:b@127.0.0.1:5691/%2f",
                "amqp://a:b@127.0.0.1:5692/%2f"
            ]
        );
        assert_eq!(url_list("amqp://127.0.0.1"), ["amqp://127.0.0.1"]);
        assert!(url_list(" , ").is_empty());
    }

    #[test]
    fn a_node_is_named_without_its_credentials() {
        assert_eq!(
            url_host("amqp://guest:guest@127.0.0.1:5691/%2f"),
            "127.0.0.1:5691"
        );
        assert_eq!(url_host("amqp://127.0.0.1:5672"), "127.0.0.1:5672");
    }

    #[tokio::test]
    async fn nodes_are_tried_in_turn_from_the_one_asked_first() {
        // Two ports that refuse connections.
        let closed = |_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let (a, b) = (closed(0), closed(1));
        let urls = format!("amqp://u:p@127.0.0.1:{a}/%2f,amqp://u:p@127.0.0.1:{b}/%2f");
        let error = connect_from(&urls, 1, "test")
            .await
            .unwrap_err()
            .to_string();
        let (first, second) = (format!("127.0.0.1:{b}:"), format!("127.0.0.1:{a}:"));
        assert!(error.contains(&first) && error.contains(&second), "{error}");
        assert!(error.find(&first) < error.find(&second), "{error}");
        assert!(!error.contains("u:p"), "{error}");
        assert!(matches!(
            connect("", "test").await,
            Err(AmqpError::Unreachable(_))
        ));
    }

    #[tokio::test]
    async fn a_broker_that_does_not_answer_counts_as_connect_failed() {
        // A port that refuses connections.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("amqp://u:p@127.0.0.1:{port}/%2f");
        let errors = BrokerErrors::default();
        let connected = std::cell::Cell::new(false);
        let ran = tokio::time::timeout(
            Duration::from_millis(300),
            run_forever(
                &url,
                "test",
                &errors,
                |up| connected.set(up),
                |_connection| async { Ok(()) },
            ),
        )
        .await;
        assert!(ran.is_err());
        assert!(errors.total(Role::Consumer, "connect_failed") >= 1);
        assert_eq!(errors.total(Role::Consumer, "connection_lost"), 0);
        assert!(!connected.get());
    }
}
