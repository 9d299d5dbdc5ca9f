//! The `analytics-group` reader of both topics.
//!
//! Analytics' figures are a projection of the log, kept in its store and
//! shared by every member of the group: each member reads the partitions
//! the group gives it, writes them in batches (each offset once, each event
//! once by its id), and stores a batch's offsets once it is written, so its
//! commits are what consumer lag is measured from. A replay (the group's
//! first start, or `POST /admin/reset-offsets` on any member) opens an
//! epoch in the store; each member rewinds the partitions it holds to the
//! earliest offsets before it counts from them again, and a member given a
//! partition later, in a rebalance, rewinds it then.
//!
//! The reader is a member of its group like any consumer (Kafka's
//! `kafka-consumer-groups` lists it, and refuses to reset the group's
//! offsets while it reads).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use foodlab_domain::{Arrival, EventType};
use foodlab_service_kit::{FaultState, Hop, HopMetrics, MessageMetrics, Readiness};
use foodlab_store::AnalyticsStore;
use foodlab_store::analytics::{LogEnd, Partition, Read, Recorded};
use foodlab_transport::BrokerErrors;
use foodlab_transport::kafka::{self, KafkaArgs, KafkaConsumer, KafkaFailure, QUERY_TIMEOUT};
use foodlab_transport::trace;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::totals::classify;

/// How often the reader checks whether the group has assigned it partitions.
const ASSIGNMENT_POLL: Duration = Duration::from_millis(100);

/// How often a member looks for a replay another member began, or for a
/// partition it was given that is not rewound yet.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Messages written in one transaction at most: what has arrived already,
/// without waiting for more.
const BATCH: usize = 500;

/// Asks the reader to start a replay; answered once its own partitions are
/// rewound (the other members follow within `CHECK_EVERY`).
pub type ResetRequest = oneshot::Sender<Result<Rewound, String>>;

/// A replay begun: the log up to `events` is read again.
#[derive(Debug, Clone, Copy)]
pub struct Rewound {
    pub events: u64,
    /// Partitions this member rewound at once (and committed, so lag shows it).
    pub partitions: usize,
}

/// Milliseconds analytics waits before each event (`POST /admin/throttle`).
#[derive(Clone, Default)]
pub struct Throttle(Arc<AtomicU64>);

impl Throttle {
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::Relaxed);
    }

    pub fn ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Reader {
    pub args: KafkaArgs,
    pub store: AnalyticsStore,
    pub throttle: Throttle,
    /// An injected delay (`/admin/delay`, a lab's Delay step) slows each event too.
    pub faults: FaultState,
    pub metrics: MessageMetrics,
    /// What the reader sees of the broker failing.
    pub errors: BrokerErrors,
    pub hops: HopMetrics,
}

fn database(error: foodlab_store::StoreError) -> KafkaFailure {
    KafkaFailure::Handler(format!("analytics store: {error}"))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Reader {
    pub fn spawn(self, readiness: Readiness) -> mpsc::Sender<ResetRequest> {
        let (resets, requests) = mpsc::channel::<ResetRequest>(8);
        let requests = Arc::new(tokio::sync::Mutex::new(requests));
        let reader = Arc::new(self);
        let reported = readiness.clone();
        // Ready once the session has joined its group and rewound what it
        // must: a lab that starts placing orders then has every one counted.
        kafka::spawn_forever(
            "analytics",
            move |up| reported.set("kafka", up),
            move || {
                let reader = Arc::clone(&reader);
                let readiness = readiness.clone();
                let requests = Arc::clone(&requests);
                async move {
                    let mut requests = requests.lock().await;
                    reader.session(&readiness, &mut requests).await
                }
            },
        );
        resets
    }

    /// One membership of the group, until the broker or the store fails
    /// (the next session reads on from the committed offsets: a batch read
    /// again changes nothing).
    async fn session(
        &self,
        readiness: &Readiness,
        requests: &mut mpsc::Receiver<ResetRequest>,
    ) -> Result<(), KafkaFailure> {
        self.args.ensure_topics().await?;
        let consumer = self
            .args
            .consumer(&self.args.analytics_group, "analytics", &self.errors)?;
        // Metadata and watermark queries on a connection of their own: on
        // the reader's, they would wait behind its fetch in flight.
        let observer = self.args.observer(&self.args.analytics_group)?;
        consumer.subscribe(&[&self.args.order_topic, &self.args.inventory_topic])?;
        let early = await_assignment(&consumer).await?;
        let log = self.log_ends(&observer)?;
        self.store.join(&log, now_ms()).await.map_err(database)?;
        let mut session = Session {
            reader: self,
            consumer: &consumer,
            observer: &observer,
            replaying: BTreeMap::new(),
        };
        session.rewind_behind().await?;
        session.count(early).await?;
        readiness.set("kafka", true);
        tracing::info!(group = %self.args.analytics_group, "reading the log");
        let mut check = tokio::time::interval(CHECK_EVERY);
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(answer) = request else { return Ok(()) };
                    let replay = session.replay().await;
                    let _ = answer.send(replay.as_ref().map(|r| *r).map_err(ToString::to_string));
                    replay?;
                }
                _ = check.tick() => {
                    session.rewind_behind().await?;
                }
                message = kafka::next_message(&consumer, "analytics") => {
                    let batch = self.batch_from(&consumer, message).await;
                    session.count(batch).await?;
                }
            }
        }
    }

    /// The first message and what has arrived behind it; one message at a
    /// time while analytics is slowed, each after its wait.
    async fn batch_from<'c>(
        &self,
        consumer: &'c KafkaConsumer,
        first: BorrowedMessage<'c>,
    ) -> Vec<BorrowedMessage<'c>> {
        let delay = Duration::from_millis(self.throttle.ms()) + self.faults.get().delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
            return vec![first];
        }
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match tokio::time::timeout(Duration::ZERO, kafka::next_message(consumer, "analytics"))
                .await
            {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        batch
    }

    /// Where every partition of both topics begins and ends now.
    fn log_ends(&self, observer: &BaseConsumer) -> Result<Vec<LogEnd>, KafkaFailure> {
        // Broker round trips that block: off the async worker while they run.
        let topics = [
            self.args.order_topic.as_str(),
            self.args.inventory_topic.as_str(),
        ];
        let ranges = tokio::task::block_in_place(|| kafka::log_ranges(observer, &topics))?;
        Ok(ranges
            .into_iter()
            .map(|range| LogEnd {
                partition: Partition {
                    topic: range.topic,
                    partition: range.partition,
                },
                low: range.low,
                high: range.high,
            })
            .collect())
    }
}

/// A member's reading, for as long as its consumer lives.
struct Session<'a> {
    reader: &'a Reader,
    consumer: &'a KafkaConsumer,
    observer: &'a BaseConsumer,
    /// Partitions rewound by this member, with the offset their log ended
    /// at then: reads below it are the log read again (logged at debug).
    replaying: BTreeMap<Partition, i64>,
}

impl Session<'_> {
    /// Begins a replay of the whole group and rewinds this member's partitions.
    async fn replay(&mut self) -> Result<Rewound, KafkaFailure> {
        let log = self.reader.log_ends(self.observer)?;
        let events = log
            .iter()
            .map(|end| (end.high - end.low).max(0) as u64)
            .sum();
        let started = Instant::now();
        self.reader
            .store
            .begin_replay(&log, now_ms())
            .await
            .map_err(database)?;
        let partitions = self.rewind_behind().await?;
        tracing::info!(
            events,
            partitions,
            took_ms = started.elapsed().as_millis() as u64,
            "replay begun: the group reads the log again from the earliest offsets"
        );
        Ok(Rewound { events, partitions })
    }

    /// Rewinds the partitions this member holds that the store says are not
    /// rewound into the current epoch: seeks them to their earliest offsets
    /// and commits those (lag shows the whole log again). How many it rewound.
    async fn rewind_behind(&mut self) -> Result<usize, KafkaFailure> {
        let assigned: Vec<Partition> = self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .map(|element| Partition {
                topic: element.topic().to_owned(),
                partition: element.partition(),
            })
            .collect();
        if assigned.is_empty() {
            return Ok(0);
        }
        loop {
            let (epoch, behind) = self
                .reader
                .store
                .behind(&assigned)
                .await
                .map_err(database)?;
            if behind.is_empty() {
                return Ok(0);
            }
            if epoch.0 == 0 {
                return Err(KafkaFailure::Handler(
                    "the group has no reading in the store yet".into(),
                ));
            }
            let ends = tokio::task::block_in_place(|| {
                let mut start = TopicPartitionList::new();
                let mut ends = Vec::new();
                for p in &behind {
                    let (low, high) =
                        self.observer
                            .fetch_watermarks(&p.topic, p.partition, QUERY_TIMEOUT)?;
                    start.add_partition_offset(&p.topic, p.partition, Offset::Offset(low))?;
                    ends.push((p.clone(), high));
                }
                // The seek discards what was fetched for the old positions; the
                // rewound offsets replace the stored ones (or the next background
                // commit would move the group forward again) and are committed
                // at once, so a partition moved to another member in a
                // rebalance is read by it from the start too.
                for element in self
                    .consumer
                    .seek_partitions(start.clone(), QUERY_TIMEOUT)?
                    .elements()
                {
                    element.error()?;
                }
                self.consumer.store_offsets(&start)?;
                self.consumer.commit(&start, CommitMode::Sync)?;
                Ok::<_, KafkaFailure>(ends)
            })?;
            if self
                .reader
                .store
                .positioned(epoch, &behind)
                .await
                .map_err(database)?
            {
                tracing::info!(
                    epoch = epoch.0,
                    partitions = behind.len(),
                    "rewound to the earliest offsets"
                );
                self.replaying.extend(ends);
                return Ok(behind.len());
            }
            // Another replay began meanwhile: rewind into that one.
        }
    }

    /// Writes a batch, then stores the offsets of what it took; rewinds the
    /// partitions of any read refused as from before a replay.
    async fn count(&mut self, batch: Vec<BorrowedMessage<'_>>) -> Result<(), KafkaFailure> {
        if batch.is_empty() {
            return Ok(());
        }
        let args = &self.reader.args;
        let mut reasons = Vec::with_capacity(batch.len());
        let reads: Vec<Read> = batch
            .iter()
            .map(|message| {
                self.reader
                    .hops
                    .since_stamp(Hop::BrokerTransit, kafka::sent_at(message));
                let arrival = Arrival {
                    carries: (message.topic() == args.order_topic)
                        .then_some(EventType::OrderPlaced),
                    at: message
                        .timestamp()
                        .to_millis()
                        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()),
                };
                let event = classify(message.payload().unwrap_or_default(), arrival);
                reasons.push(event.as_ref().err().cloned());
                Read {
                    partition: Partition {
                        topic: message.topic().to_owned(),
                        partition: message.partition(),
                    },
                    offset: message.offset(),
                    event: event.ok(),
                }
            })
            .collect();
        let outcomes = self
            .reader
            .store
            .record(&reads, now_ms())
            .await
            .map_err(database)?;
        let mut stale = BTreeSet::new();
        for ((message, read), (outcome, reason)) in batch
            .iter()
            .zip(&reads)
            .zip(outcomes.into_iter().zip(reasons))
        {
            let _traced = trace::span(&kafka::trace_of(message)).entered();
            let (topic, partition, offset) =
                (message.topic(), message.partition(), message.offset());
            let again = self
                .replaying
                .get(&read.partition)
                .is_some_and(|end| offset < *end);
            match outcome {
                Recorded::Stale => {
                    stale.insert(read.partition.clone());
                    continue;
                }
                Recorded::Counted => {
                    self.reader.metrics.count(topic, "processed");
                    log_read(topic, partition, offset, "counted", again);
                }
                Recorded::Duplicate | Recorded::ReadBefore => {
                    self.reader.metrics.count(topic, "duplicate");
                    let outcome = if outcome == Recorded::Duplicate {
                        "duplicate"
                    } else {
                        "read before"
                    };
                    log_read(topic, partition, offset, outcome, again);
                }
                Recorded::Malformed => {
                    self.reader.metrics.count(topic, "malformed");
                    let reason = reason.unwrap_or_default();
                    tracing::warn!(%topic, partition, offset, %reason, "malformed event skipped");
                }
            }
            // A partition revoked meanwhile is read again by its next owner.
            if let Err(error) = kafka::store_processed(self.consumer, topic, partition, offset) {
                tracing::warn!(topic, partition, offset, %error, "offset not stored");
            }
        }
        if !stale.is_empty() {
            self.rewind_behind().await?;
        }
        Ok(())
    }
}

/// One line per event read, in its trace; at debug while a replay reads the
/// log again, so a replay of millions of events is not slowed by its logging.
fn log_read(topic: &str, partition: i32, offset: i64, outcome: &str, again: bool) {
    if again {
        tracing::debug!(%topic, partition, offset, outcome, "event read again");
    } else {
        tracing::info!(%topic, partition, offset, outcome, "event read");
    }
}

/// Waits until the group has given the reader its partitions (the rebalance
/// runs while the consumer is polled), and returns what was read meanwhile.
async fn await_assignment(
    consumer: &KafkaConsumer,
) -> Result<Vec<BorrowedMessage<'_>>, KafkaFailure> {
    let started = Instant::now();
    let mut early = Vec::new();
    while consumer.assignment()?.count() == 0 {
        if let Ok(message) =
            tokio::time::timeout(ASSIGNMENT_POLL, kafka::next_message(consumer, "analytics")).await
        {
            early.push(message);
        }
    }
    tracing::info!(
        partitions = consumer.assignment()?.count(),
        took_ms = started.elapsed().as_millis() as u64,
        "joined the group"
    );
    Ok(early)
}
