//! The `analytics-group` reader of both topics.
//!
//! Analytics' figures are a projection of the log: at start-up, and on every
//! reset, the group is rewound to the earliest offsets, the state cleared,
//! and the log read again. The reader is a member of its group like any
//! consumer (Kafka's `kafka-consumer-groups` lists it, and refuses to reset
//! the group's offsets while it reads); as the group's one member it is
//! given every partition. It stores each offset once the event is counted,
//! and its commits are what consumer lag is measured from.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foodlab_domain::{Arrival, EventType};
use foodlab_service_kit::{FaultState, Hop, HopMetrics, MessageMetrics, Readiness};
use foodlab_transport::kafka::{self, KafkaArgs, KafkaFailure, QUERY_TIMEOUT};
use foodlab_transport::trace;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::totals::{Recorded, Totals};

/// How often the reader checks whether the group has assigned it partitions.
const ASSIGNMENT_POLL: Duration = Duration::from_millis(100);

/// State shared with the HTTP handlers.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<State>>);

#[derive(Default)]
pub struct State {
    pub totals: Totals,
    pub replays: u64,
    pub replay: Option<ReplayProgress>,
}

/// Progress of the latest rewind: the log up to `events` had to be read again.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayProgress {
    /// Events in the log when the rewind happened.
    pub events: u64,
    /// The group's committed offsets were moved back too (lag shows the rewind).
    pub offsets_committed: bool,
    #[serde(skip)]
    started: Instant,
    #[serde(skip)]
    remaining: BTreeMap<(String, i32), i64>,
    /// Seconds until every one of those events was read again.
    pub seconds: Option<f64>,
    pub events_per_second: Option<f64>,
}

impl Shared {
    pub fn with<T>(&self, read: impl FnOnce(&mut State) -> T) -> T {
        read(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Asks the reader to rewind; answered once the rewind is in place.
pub type ResetRequest = oneshot::Sender<Result<ReplayProgress, String>>;

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
    pub shared: Shared,
    pub throttle: Throttle,
    /// An injected delay (`/admin/delay`, a lab's Delay step) slows each event too.
    pub faults: FaultState,
    pub metrics: MessageMetrics,
    pub hops: HopMetrics,
}

impl Reader {
    pub fn spawn(self, readiness: Readiness) -> mpsc::Sender<ResetRequest> {
        let (resets, requests) = mpsc::channel::<ResetRequest>(8);
        let requests = Arc::new(tokio::sync::Mutex::new(requests));
        let reader = Arc::new(self);
        let reported = readiness.clone();
        // Ready once the session has joined its group and rewound: a lab
        // that starts placing orders then has every one of them counted.
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

    async fn session(
        &self,
        readiness: &Readiness,
        requests: &mut mpsc::Receiver<ResetRequest>,
    ) -> Result<(), KafkaFailure> {
        self.args.ensure_topics().await?;
        let consumer = self
            .args
            .consumer(&self.args.analytics_group, "analytics")?;
        // Metadata and watermark queries on a connection of their own: on
        // the reader's, they would wait behind its fetch in flight.
        let observer = self.args.observer(&self.args.analytics_group)?;
        consumer.subscribe(&[&self.args.order_topic, &self.args.inventory_topic])?;
        await_assignment(&consumer).await?;
        self.rewind(&consumer, &observer).await?;
        readiness.set("kafka", true);
        tracing::info!(group = %self.args.analytics_group, "reading the log from the start");
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(answer) = request else { return Ok(()) };
                    // In the middle of a rebalance the reader holds no partitions:
                    // a rewind then would clear the figures and read nothing again.
                    if consumer.assignment()?.count() == 0 {
                        let _ = answer.send(Err("analytics holds no partitions yet (its group is rebalancing); try again".to_owned()));
                        continue;
                    }
                    let rewound = self.rewind(&consumer, &observer).await;
                    let progress = self.shared.with(|s| s.replay.clone());
                    let reply = match (&rewound, progress) {
                        (Ok(()), Some(progress)) => Ok(progress),
                        (Ok(()), None) => Err("the rewind left no progress record".to_owned()),
                        (Err(error), _) => Err(error.to_string()),
                    };
                    let _ = answer.send(reply);
                    rewound?;
                }
                message = kafka::next_message(&consumer, "analytics") => {
                    self.hops.since_stamp(Hop::BrokerTransit, kafka::sent_at(&message));
                    let delay = Duration::from_millis(self.throttle.ms()) + self.faults.get().delay();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let _traced = trace::span(&kafka::trace_of(&message)).entered();
                    self.count(message.topic(), message.partition(), message.offset(), message.timestamp().to_millis(), message.payload().unwrap_or_default());
                    // A partition revoked meanwhile is read again by its next owner.
                    if let Err(error) = kafka::store_processed(&consumer, message.topic(), message.partition(), message.offset()) {
                        tracing::warn!(topic = message.topic(), partition = message.partition(), %error, "offset not stored");
                    }
                }
            }
        }
    }

    fn count(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        stamped_ms: Option<i64>,
        body: &[u8],
    ) {
        let arrival = Arrival {
            carries: (topic == self.args.order_topic).then_some(EventType::OrderPlaced),
            at: stamped_ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()),
        };
        let (recorded, replaying) = self.shared.with(|state| {
            let recorded = state.totals.record_arrived(body, arrival);
            let replaying = state.replay.as_ref().is_some_and(|r| r.seconds.is_none());
            if let Some(replay) = state.replay.as_mut() {
                replay.advance(topic, partition, offset);
            }
            (recorded, replaying)
        });
        match recorded {
            Recorded::Counted => {
                self.metrics.count(topic, "processed");
                log_counted(topic, partition, offset, "counted", replaying);
            }
            Recorded::Duplicate => {
                self.metrics.count(topic, "duplicate");
                log_counted(topic, partition, offset, "duplicate", replaying);
            }
            Recorded::Malformed(reason) => {
                self.metrics.count(topic, "malformed");
                tracing::warn!(%topic, partition, offset, %reason, "malformed event skipped");
            }
        }
    }

    /// Moves the group back to the earliest offsets (committed, so lag shows
    /// the whole log again), clears the figures and reads from there.
    async fn rewind(
        &self,
        consumer: &StreamConsumer,
        observer: &BaseConsumer,
    ) -> Result<(), KafkaFailure> {
        let started = Instant::now();
        // Broker round trips that block: off the async worker while they run.
        let (remaining, events, committed) = tokio::task::block_in_place(|| {
            let mut start = TopicPartitionList::new();
            let mut remaining = BTreeMap::new();
            let mut events = 0;
            for element in consumer.assignment()?.elements() {
                let (low, high) = observer.fetch_watermarks(
                    element.topic(),
                    element.partition(),
                    QUERY_TIMEOUT,
                )?;
                start.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    Offset::Offset(low),
                )?;
                if high > low {
                    remaining.insert((element.topic().to_owned(), element.partition()), high);
                    events += (high - low) as u64;
                }
            }
            // The seek discards what was fetched for the old positions; the
            // rewound offsets replace the stored ones (or the next background
            // commit would move the group forward again) and are committed
            // at once, so they are what the group holds.
            for element in consumer
                .seek_partitions(start.clone(), QUERY_TIMEOUT)?
                .elements()
            {
                element.error()?;
            }
            consumer.store_offsets(&start)?;
            let committed = match consumer.commit(&start, CommitMode::Sync) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, "could not commit the rewound offsets; the group's lag does not show the rewind");
                    false
                }
            };
            Ok::<_, KafkaFailure>((remaining, events, committed))
        })?;
        self.shared.with(|state| {
            state.totals = Totals::default();
            state.replays += 1;
            let mut progress = ReplayProgress {
                events,
                offsets_committed: committed,
                started,
                remaining,
                seconds: None,
                events_per_second: None,
            };
            progress.finish_if_done();
            state.replay = Some(progress);
        });
        tracing::info!(
            events,
            took_ms = started.elapsed().as_millis() as u64,
            "rewound to the earliest offsets"
        );
        Ok(())
    }
}

/// One line per event read, in its trace; at debug while a replay reads the
/// log again, so a replay of millions of events is not slowed by its logging.
fn log_counted(topic: &str, partition: i32, offset: i64, outcome: &str, replaying: bool) {
    if replaying {
        tracing::debug!(%topic, partition, offset, outcome, "event read again");
    } else {
        tracing::info!(%topic, partition, offset, outcome, "event read");
    }
}

/// Waits until the group has given the reader its partitions (the rebalance
/// runs while the consumer is polled). A message read meanwhile is dropped:
/// the rewind that follows reads it again.
async fn await_assignment(consumer: &StreamConsumer) -> Result<(), KafkaFailure> {
    let started = Instant::now();
    while consumer.assignment()?.count() == 0 {
        let _ = tokio::time::timeout(ASSIGNMENT_POLL, consumer.recv()).await;
    }
    tracing::info!(
        partitions = consumer.assignment()?.count(),
        took_ms = started.elapsed().as_millis() as u64,
        "joined the group"
    );
    Ok(())
}

impl ReplayProgress {
    fn advance(&mut self, topic: &str, partition: i32, offset: i64) {
        if self.seconds.is_some() {
            return;
        }
        let key = (topic.to_owned(), partition);
        if self
            .remaining
            .get(&key)
            .is_some_and(|end| offset + 1 >= *end)
        {
            self.remaining.remove(&key);
        }
        self.finish_if_done();
    }

    fn finish_if_done(&mut self) {
        if self.remaining.is_empty() && self.seconds.is_none() {
            let seconds = self.started.elapsed().as_secs_f64();
            self.seconds = Some((seconds * 1000.0).round() / 1000.0);
            self.events_per_second =
                (seconds > 0.0).then(|| (self.events as f64 / seconds).round());
        }
    }
}
