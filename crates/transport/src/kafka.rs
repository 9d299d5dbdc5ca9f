//! Kafka: the topics of the streaming part, an idempotent producer of event
//! envelopes (keyed by order id), consumers that commit only what was
//! processed, and consumer lag (committed offset vs high watermark).
//!
//! Any Kafka-protocol broker works; the services only need bootstrap servers.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use foodlab_domain::{Backoff, Envelope, TRACEPARENT, TraceContext};
use futures::FutureExt;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use crate::errors::{BrokerErrors, Role};

/// Where the project's broker listens (`scripts/kafka.sh`: Apache Kafka).
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// A replication factor of -1 asks the brokers for theirs (Kafka 2.4 and later).
const BROKERS_DEFAULT: i32 = -1;

/// How long a metadata, watermark or offset query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KafkaFailure {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka delivery was cancelled (producer gone)")]
    Cancelled,
    #[error("{0}")]
    Handler(String),
}

/// A producer whose errors are counted (`KafkaArgs::producer`).
pub struct KafkaProducer {
    producer: FutureProducer<Counting>,
    errors: BrokerErrors,
}

impl std::ops::Deref for KafkaProducer {
    type Target = FutureProducer<Counting>;

    fn deref(&self) -> &Self::Target {
        &self.producer
    }
}

/// A consumer whose errors are counted (`KafkaArgs::consumer`).
pub type KafkaConsumer = StreamConsumer<Counting>;

/// The client context of the services' producers and consumers: the errors
/// librdkafka reports of the client (a broker's connection lost, every
/// broker down) are counted once each, and logged as by default.
///
/// rdkafka 0.39 hands each error event to `error` and then to whoever polled:
/// a consumer's `recv` returns it, so a consumer's errors are counted there
/// (`next_message`), not here. A producer has no `recv`, and its poll hands
/// each error event to `error` twice in a row (`Client::poll_event`, then
/// `BaseProducer::handle_error_event`): the first of each pair is counted
/// and logged, the second dropped.
#[derive(Debug)]
pub struct Counting {
    errors: BrokerErrors,
    role: Role,
    /// A producer's next call of `error` is the second of its pair.
    second: AtomicBool,
}

impl Counting {
    fn new(errors: &BrokerErrors, role: Role) -> Self {
        Self {
            errors: errors.clone(),
            role,
            second: AtomicBool::new(false),
        }
    }

    /// Counts an error of this client, of the kind `error` is, or `otherwise`.
    fn count(&self, error: &KafkaError, otherwise: &'static str) {
        self.errors
            .count(self.role, kind_of(error).unwrap_or(otherwise));
    }
}

impl ClientContext for Counting {
    fn error(&self, error: KafkaError, reason: &str) {
        if self.role == Role::Producer {
            if self.second.fetch_xor(true, Ordering::Relaxed) {
                return;
            }
            self.count(&error, "client_error");
        }
        DefaultClientContext.error(error, reason);
    }
}

impl ConsumerContext for Counting {}

/// The kind of a broker error librdkafka reports, where it says which. A
/// partition's leader lost is not among them: librdkafka refreshes its
/// metadata and retries the fetch or produce (an idempotent producer without
/// limit), so the error never reaches the client; a record that waits too
/// long fails as `message_timed_out`.
fn kind_of(error: &KafkaError) -> Option<&'static str> {
    match error.rdkafka_error_code()? {
        RDKafkaErrorCode::BrokerTransportFailure => Some("transport_failure"),
        RDKafkaErrorCode::AllBrokersDown => Some("all_brokers_down"),
        RDKafkaErrorCode::MessageTimedOut => Some("message_timed_out"),
        _ => None,
    }
}

/// Where the broker is and what the topics are called.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap servers, comma-separated (any Kafka-protocol broker).
    #[arg(
        long = "kafka-brokers",
        env = "FOODLAB_KAFKA_BROKERS",
        default_value = DEFAULT_BROKERS
    )]
    pub brokers: String,

    /// Topic of OrderPlaced events (keyed by order id).
    #[arg(long, env = "FOODLAB_ORDER_TOPIC", default_value = "order-events")]
    pub order_topic: String,

    /// Topic of inventory results (InventoryReserved, InventoryFailed).
    #[arg(
        long,
        env = "FOODLAB_INVENTORY_TOPIC",
        default_value = "inventory-events"
    )]
    pub inventory_topic: String,

    /// Consumer group of the inventory service.
    #[arg(
        long,
        env = "FOODLAB_INVENTORY_GROUP",
        default_value = "inventory-group"
    )]
    pub inventory_group: String,

    /// Consumer group of the analytics service.
    #[arg(
        long,
        env = "FOODLAB_ANALYTICS_GROUP",
        default_value = "analytics-group"
    )]
    pub analytics_group: String,

    /// Consumer group of the order service (it records inventory's decisions).
    #[arg(long, env = "FOODLAB_ORDER_GROUP", default_value = "order-group")]
    pub order_group: String,

    /// Partitions of each topic when a service has to create it.
    #[arg(long, env = "FOODLAB_TOPIC_PARTITIONS", default_value_t = 3)]
    pub topic_partitions: i32,

    /// Consumer session timeout; a dead member's partitions move after this long.
    #[arg(long, env = "FOODLAB_KAFKA_SESSION_TIMEOUT", default_value = "6s", value_parser = humantime::parse_duration)]
    pub session_timeout: Duration,
}

impl Default for KafkaArgs {
    fn default() -> Self {
        Self {
            brokers: DEFAULT_BROKERS.into(),
            order_topic: "order-events".into(),
            inventory_topic: "inventory-events".into(),
            inventory_group: "inventory-group".into(),
            analytics_group: "analytics-group".into(),
            order_group: "order-group".into(),
            topic_partitions: 3,
            session_timeout: Duration::from_secs(6),
        }
    }
}

impl KafkaArgs {
    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            // Errors are logged through tracing by the callers, not by librdkafka.
            .set("log_level", "3");
        config
    }

    /// Creates the part's topics unless they exist (a broker may not create
    /// topics on first use, and producing to a missing topic waits forever),
    /// replicated as the brokers' `default.replication.factor` says: once on
    /// a single node, three times on a three-node cluster.
    pub async fn ensure_topics(&self) -> Result<(), KafkaFailure> {
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let topics = [&self.order_topic, &self.inventory_topic].map(|name| {
            NewTopic::new(
                name,
                self.topic_partitions,
                TopicReplication::Fixed(BROKERS_DEFAULT),
            )
        });
        let options = AdminOptions::new().operation_timeout(Some(QUERY_TIMEOUT));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(topic) => {
                    tracing::info!(%topic, partitions = self.topic_partitions, "topic created")
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaFailure::Handler(format!(
                        "cannot create topic `{topic}`: {code}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Deletes the part's topics and consumer groups: a run that had names of
    /// its own leaves nothing behind. A group that still has a member (one
    /// killed before its session timed out) is left to the broker, which drops
    /// it once it is empty and its topics are gone.
    pub async fn delete_topics_and_groups(&self) -> Result<(), KafkaFailure> {
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let options = AdminOptions::new().operation_timeout(Some(QUERY_TIMEOUT));
        let topics = [self.order_topic.as_str(), self.inventory_topic.as_str()];
        for result in admin.delete_topics(&topics, &options).await? {
            match result {
                Ok(topic) => tracing::info!(%topic, "topic deleted"),
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => {
                    return Err(KafkaFailure::Handler(format!(
                        "cannot delete topic `{topic}`: {code}"
                    )));
                }
            }
        }
        let groups = [
            self.inventory_group.as_str(),
            self.analytics_group.as_str(),
            self.order_group.as_str(),
        ];
        for result in admin.delete_groups(&groups, &options).await? {
            match result {
                Ok(group) => tracing::info!(%group, "consumer group deleted"),
                Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
                Err((group, code)) => {
                    tracing::info!(%group, %code, "consumer group left to the broker")
                }
            }
        }
        Ok(())
    }

    /// An idempotent producer waiting for every in-sync replica (acks=all),
    /// counting its errors in `errors`.
    pub fn producer(
        &self,
        client_id: &str,
        errors: &BrokerErrors,
    ) -> Result<KafkaProducer, KafkaFailure> {
        let context = Counting::new(errors, Role::Producer);
        let producer = self
            .client()
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Fewer, larger produce requests: each one is a durable write on the broker.
            .set("linger.ms", "10")
            .set("message.timeout.ms", "60000")
            .create_with_context(context)?;
        Ok(KafkaProducer {
            producer,
            errors: errors.clone(),
        })
    }

    /// A consumer in `group` that reads from the earliest offset when the
    /// group has none, and whose offsets move only when the caller stores them
    /// (committed in the background, every 200 ms and on close); its errors
    /// are counted in `errors`.
    pub fn consumer(
        &self,
        group: &str,
        client_id: &str,
        errors: &BrokerErrors,
    ) -> Result<KafkaConsumer, KafkaFailure> {
        let context = Counting::new(errors, Role::Consumer);
        Ok(self
            .client()
            .set("group.id", group)
            .set("client.id", client_id)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "200")
            .set("enable.auto.offset.store", "false")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "500")
            .set("enable.partition.eof", "false")
            // An idle consumer's fetch waits at most this long at the broker,
            // so a rewind (which waits for the fetch in flight) starts soon.
            .set("fetch.wait.max.ms", "100")
            .create_with_context(context)?)
    }

    /// A client for reading a group's committed offsets and the watermarks;
    /// it never joins the group.
    pub fn observer(&self, group: &str) -> Result<BaseConsumer, KafkaFailure> {
        Ok(self
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?)
    }
}

/// Headers every event carries besides its JSON body.
fn headers_of(envelope: &Envelope) -> OwnedHeaders {
    let message_id = envelope.message_id.to_string();
    let event_type = envelope.event_type().name();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "message_id",
            value: Some(&message_id),
        })
        .insert(Header {
            key: "type",
            value: Some(event_type),
        })
        .insert(Header {
            key: "correlation_id",
            value: Some(&envelope.correlation_id),
        })
        .insert(Header {
            key: crate::sent_at::SENT_AT_HEADER,
            value: Some(&crate::sent_at::now()),
        });
    match envelope.trace {
        Some(trace) => headers.insert(Header {
            key: TRACEPARENT,
            value: Some(&trace.to_string()),
        }),
        None => headers,
    }
}

/// This hop's trace context for a record: the producer's trace (its
/// `traceparent` header), or a new one for a record without it.
pub fn trace_of<M: Message>(message: &M) -> TraceContext {
    let sent = message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|header| header.key == TRACEPARENT)
            .and_then(|header| std::str::from_utf8(header.value?).ok())
    });
    TraceContext::continue_from(sent)
}

/// When the record's producer handed it to Kafka, if it said.
pub fn sent_at<M: Message>(message: &M) -> Option<std::time::SystemTime> {
    message
        .headers()?
        .iter()
        .find(|header| header.key == crate::sent_at::SENT_AT_HEADER)
        .and_then(|header| crate::sent_at::parse(header.value?))
}

/// Queues an event on `topic`, keyed by its order id (so one order's events
/// keep their order within a partition). `Delivered::confirmed` resolves
/// once the broker has it.
pub async fn send(
    producer: &KafkaProducer,
    topic: &str,
    envelope: &Envelope,
) -> Result<Delivered, KafkaFailure> {
    let key = envelope.order_id.to_string();
    let body = envelope.to_json();
    send_raw(producer, topic, &key, &body, headers_of(envelope)).await
}

/// Queues any bytes (tests and labs use this for malformed events).
pub async fn send_raw(
    producer: &KafkaProducer,
    topic: &str,
    key: &str,
    body: &[u8],
    headers: OwnedHeaders,
) -> Result<Delivered, KafkaFailure> {
    let mut record = FutureRecord::to(topic)
        .key(key)
        .payload(body)
        .headers(headers);
    let errors = &producer.errors;
    // A full local queue clears as deliveries complete: wait and retry
    // (counted once per record that had to wait).
    let mut waited = false;
    let future = loop {
        match producer.send_result(record) {
            Ok(future) => break future,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if !waited {
                    errors.count(Role::Producer, "queue_full");
                    waited = true;
                }
                record = r;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((error, _)) => {
                let kind = kind_of(&error).unwrap_or("produce_failed");
                errors.count(Role::Producer, kind);
                return Err(error.into());
            }
        }
    };
    Ok(Delivered {
        future,
        sent: std::time::Instant::now(),
        errors: errors.clone(),
    })
}

/// An event handed to the producer, not yet acknowledged by the broker.
pub struct Delivered {
    future: DeliveryFuture,
    /// When it was handed to the producer.
    pub sent: std::time::Instant,
    errors: BrokerErrors,
}

impl Delivered {
    pub async fn confirmed(self) -> Result<(), KafkaFailure> {
        match self.future.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => {
                let kind = kind_of(&error).unwrap_or("delivery_failed");
                self.errors.count(Role::Producer, kind);
                Err(error.into())
            }
            Err(_) => {
                self.errors.count(Role::Producer, "delivery_cancelled");
                Err(KafkaFailure::Cancelled)
            }
        }
    }
}

/// Queues events back to back without waiting for the broker; their
/// deliveries, in the order queued, for `confirm_all`.
pub async fn send_each(
    producer: &KafkaProducer,
    topic: &str,
    envelopes: &[Envelope],
) -> Result<Vec<Delivered>, KafkaFailure> {
    let mut pending = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        pending.push(send(producer, topic, envelope).await?);
    }
    Ok(pending)
}

/// Waits until the broker has every one of `pending`; how long each took
/// from its send (read in order).
pub async fn confirm_all(pending: Vec<Delivered>) -> Result<Vec<Duration>, KafkaFailure> {
    let mut took = Vec::with_capacity(pending.len());
    for delivered in pending {
        let sent = delivered.sent;
        delivered.confirmed().await?;
        took.push(sent.elapsed());
    }
    Ok(took)
}

/// Waits for the next message. Errors librdkafka reports through the
/// message queue (a lost broker connection, every broker down) are counted
/// (here only: see `Counting`), logged and waited out: the client recovers
/// from them by itself, and the consumer's position is unchanged.
pub async fn next_message<'a>(consumer: &'a KafkaConsumer, what: &str) -> BorrowedMessage<'a> {
    loop {
        match consumer.recv().await {
            Ok(message) => return message,
            Err(error) => {
                consumer.context().count(&error, "consumer_error");
                tracing::warn!(what, %error, "kafka consumer error; waiting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The next message and those already waiting behind it, up to `max`
/// (one when only one is there: nothing waits for a batch to fill). An
/// error among those waiting ends the batch and is counted and logged as
/// `next_message` does.
pub async fn next_messages<'a>(
    consumer: &'a KafkaConsumer,
    what: &str,
    max: usize,
) -> Vec<BorrowedMessage<'a>> {
    let mut messages = vec![next_message(consumer, what).await];
    while messages.len() < max {
        match consumer.recv().now_or_never() {
            Some(Ok(message)) => messages.push(message),
            Some(Err(error)) => {
                consumer.context().count(&error, "consumer_error");
                tracing::warn!(what, %error, "kafka consumer error");
                break;
            }
            None => break,
        }
    }
    messages
}

/// Marks the message at `offset` processed: the next commit moves the
/// group past it (librdkafka stores `offset + 1`, the next one to read).
pub fn store_processed<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), KafkaFailure> {
    Ok(consumer.store_offset(topic, partition, offset)?)
}

/// One topic-partition's position of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (the next message it will read); the low
    /// watermark when the group has committed nothing yet.
    pub committed: i64,
    /// The offset the next produced message will get.
    pub high_watermark: i64,
    pub lag: i64,
}

/// Lag of `group` on every partition of `topics`, from the committed offsets
/// and the watermarks (brokers without DescribeGroups support this too).
pub fn consumer_lag(
    observer: &BaseConsumer,
    topics: &[&str],
) -> Result<Vec<PartitionLag>, KafkaFailure> {
    let ranges = log_ranges(observer, topics)?;
    let mut wanted = TopicPartitionList::new();
    for range in &ranges {
        wanted.add_partition(&range.topic, range.partition);
    }
    let committed = observer.committed_offsets(wanted, QUERY_TIMEOUT)?;
    let mut lags: Vec<PartitionLag> = ranges
        .into_iter()
        .map(|range| {
            let committed = match committed
                .find_partition(&range.topic, range.partition)
                .map(|element| element.offset())
            {
                Some(Offset::Offset(offset)) => offset,
                _ => range.low,
            };
            PartitionLag {
                lag: (range.high - committed).max(0),
                topic: range.topic,
                partition: range.partition,
                committed,
                high_watermark: range.high,
            }
        })
        .collect();
    lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(lags)
}

/// Where one partition's log begins (`low`, the earliest offset kept) and
/// ends (`high`, the next offset to be written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRange {
    pub topic: String,
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// The range of every partition of `topics`, as the brokers say now.
pub fn log_ranges(observer: &BaseConsumer, topics: &[&str]) -> Result<Vec<LogRange>, KafkaFailure> {
    let mut ranges = Vec::new();
    for topic in topics {
        for partition in partitions_of(observer, topic)? {
            let (low, high) = observer.fetch_watermarks(topic, partition, QUERY_TIMEOUT)?;
            ranges.push(LogRange {
                topic: (*topic).to_owned(),
                partition,
                low,
                high,
            });
        }
    }
    Ok(ranges)
}

/// The partition numbers of a topic; an error if the broker does not know it.
fn partitions_of<C: ConsumerContext>(
    client: &impl Consumer<C>,
    topic: &str,
) -> Result<Vec<i32>, KafkaFailure> {
    let metadata = client.fetch_metadata(Some(topic), QUERY_TIMEOUT)?;
    let topic_meta = metadata
        .topics()
        .first()
        .ok_or_else(|| KafkaFailure::Handler(format!("topic `{topic}` is unknown")))?;
    if let Some(error) = topic_meta.error() {
        return Err(KafkaFailure::Handler(format!(
            "topic `{topic}`: {}",
            RDKafkaErrorCode::from(error)
        )));
    }
    Ok(topic_meta.partitions().iter().map(|p| p.id()).collect())
}

/// Every partition of `topics`, each at its earliest offset.
pub fn earliest_of<C: ConsumerContext>(
    client: &impl Consumer<C>,
    topics: &[&str],
) -> Result<TopicPartitionList, KafkaFailure> {
    let mut list = TopicPartitionList::new();
    for topic in topics {
        for partition in partitions_of(client, topic)? {
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    Ok(list)
}

/// Runs `session` again and again with a growing pause after each failure,
/// reporting whether the last session got going.
/// Starts `run_forever` on a task of its own, reporting the broker down
/// first (as `rabbitmq::spawn_forever` does): a service whose readiness
/// waits on its session is not ready before that session is up.
pub fn spawn_forever<S, Fut>(
    what: &'static str,
    report: impl Fn(bool) + Send + Sync + 'static,
    session: S,
) where
    S: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), KafkaFailure>> + Send,
{
    report(false);
    tokio::spawn(async move { run_forever(what, &report, session).await });
}

pub async fn run_forever<S, Fut>(what: &'static str, report: impl Fn(bool), mut session: S)
where
    S: FnMut() -> Fut,
    Fut: Future<Output = Result<(), KafkaFailure>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let started = std::time::Instant::now();
        let ended = session().await;
        if started.elapsed() > Duration::from_secs(10) {
            backoff.reset();
        }
        match ended {
            Ok(()) => tracing::info!(what, "kafka session ended"),
            Err(error) => tracing::warn!(what, %error, "kafka session failed; retrying"),
        }
        report(false);
        tokio::time::sleep(backoff.pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use rdkafka::producer::FutureProducer;

    use super::*;

    #[test]
    fn broker_errors_are_told_apart_by_their_code() {
        let kind = |code| kind_of(&KafkaError::Global(code));
        assert_eq!(
            kind(RDKafkaErrorCode::BrokerTransportFailure),
            Some("transport_failure")
        );
        assert_eq!(
            kind(RDKafkaErrorCode::AllBrokersDown),
            Some("all_brokers_down")
        );
        assert_eq!(
            kind_of(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            )),
            Some("message_timed_out")
        );
        assert_eq!(kind(RDKafkaErrorCode::NotLeaderForPartition), None);
        assert_eq!(kind(RDKafkaErrorCode::UnknownTopicOrPartition), None);
        assert_eq!(kind_of(&KafkaError::Canceled), None);
        assert_eq!(kind_of(&KafkaError::PartitionEOF(0)), None);
    }

    /// Gives `error` what librdkafka would, as often as `calls`.
    fn report(context: &Counting, calls: usize) {
        for _ in 0..calls {
            context.error(
                KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
                "1/1 brokers are down",
            );
        }
    }

    #[test]
    fn a_producer_counts_each_pair_of_calls_once_and_a_consumer_none() {
        let errors = BrokerErrors::default();
        report(&Counting::new(&errors, Role::Producer), 4);
        report(&Counting::new(&errors, Role::Consumer), 3);
        assert_eq!(errors.total(Role::Producer, "all_brokers_down"), 2);
        assert_eq!(errors.total(Role::Consumer, "all_brokers_down"), 0);
    }

    /// One call of `error`: the error's code and the reason given.
    type Call = (Option<RDKafkaErrorCode>, String);

    /// What librdkafka hands a client's `error`, in order.
    #[derive(Clone, Default)]
    struct Recording(Arc<Mutex<Vec<Call>>>);

    impl Recording {
        fn calls(&self) -> Vec<Call> {
            self.0.lock().unwrap().clone()
        }
    }

    impl ClientContext for Recording {
        fn error(&self, error: KafkaError, reason: &str) {
            self.0
                .lock()
                .unwrap()
                .push((error.rdkafka_error_code(), reason.to_owned()));
        }
    }

    impl ConsumerContext for Recording {}

    /// Settings of a broker that refuses connections.
    fn nobody_listening() -> KafkaArgs {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        KafkaArgs {
            brokers: format!("127.0.0.1:{port}"),
            ..KafkaArgs::default()
        }
    }

    // `Counting` counts the first of each pair: this fails if an rdkafka
    // upgrade hands a producer's error events to `error` once.
    #[test]
    fn a_producer_hears_each_error_event_twice_in_a_row() {
        let recording = Recording::default();
        let producer: FutureProducer<Recording> = nobody_listening()
            .client()
            .set("enable.idempotence", "true")
            .create_with_context(recording.clone())
            .unwrap();
        let began = Instant::now();
        while recording.calls().len() < 2 && began.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its polling thread stops with it, so no pair is left half-heard.
        drop(producer);
        let calls = recording.calls();
        assert!(!calls.is_empty() && calls.len() % 2 == 0, "{calls:?}");
        for pair in calls.chunks(2) {
            assert_eq!(pair[0], pair[1], "{calls:?}");
        }
    }

    // `next_message` counts what `recv` returns: this fails if an rdkafka
    // upgrade stops handing a consumer's error events to `recv`.
    #[tokio::test]
    async fn a_consumer_hears_each_error_event_once_and_recv_returns_it() {
        let args = nobody_listening();
        let recording = Recording::default();
        let consumer: StreamConsumer<Recording> = args
            .client()
            .set("group.id", "test")
            .create_with_context(recording.clone())
            .unwrap();
        consumer.subscribe(&["test"]).unwrap();
        let mut returned = Vec::new();
        let began = Instant::now();
        while returned.len() < 2 && began.elapsed() < Duration::from_secs(10) {
            if let Ok(Err(error)) =
                tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
            {
                returned.push(error.rdkafka_error_code());
            }
        }
        let heard: Vec<_> = recording
            .calls()
            .into_iter()
            .map(|(code, _)| code)
            .collect();
        assert!(!returned.is_empty(), "{heard:?}");
        assert_eq!(heard, returned);
    }

    #[tokio::test]
    async fn a_consumer_counts_the_errors_recv_returns() {
        let errors = BrokerErrors::default();
        let consumer = nobody_listening()
            .consumer("test", "test", &errors)
            .unwrap();
        consumer.subscribe(&["test"]).unwrap();
        let waited =
            tokio::time::timeout(Duration::from_secs(2), next_message(&consumer, "test")).await;
        assert!(waited.is_err());
        let counted = ["transport_failure", "all_brokers_down", "consumer_error"]
            .map(|kind| errors.total(Role::Consumer, kind));
        assert!(counted.iter().sum::<u64>() >= 1, "{counted:?}");
    }
}
