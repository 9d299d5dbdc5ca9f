//! The analytics service's projection of the event log, shared by every
//! member of its consumer group, whichever partitions each reads.
//!
//! Each offset read is written once (a partition read again after a
//! rebalance or a restart changes nothing), and each event counts once by
//! its message id: another offset carrying a counted id is a duplicate. So
//! the group's figures are exact however its partitions are spread.
//!
//! A replay (the group's first start, or `POST /admin/reset-offsets`) opens
//! an *epoch*: the reads are cleared and every partition must be rewound to
//! its earliest offset before what is read from it counts again. A member
//! says which partitions it has rewound (`positioned`); reads from one it
//! has not are refused as `Stale`, in the same transaction that would have
//! written them, so nothing read before a replay is counted after it.

mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use foodlab_domain::EventType;
use uuid::Uuid;

use crate::{Database, StoreError};

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

/// Where a partition's log ends when a replay starts: it is read again
/// once the offset before `high` has been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEnd {
    pub partition: Partition,
    pub low: i64,
    pub high: i64,
}

impl LogEnd {
    /// The events a log holds between its ends.
    pub fn events(log: &[Self]) -> i64 {
        log.iter().map(|end| (end.high - end.low).max(0)).sum()
    }
}

/// A replay's number; each replay of a group has the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Epoch(pub i64);

/// One message read, as the tolerant reader classified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub partition: Partition,
    pub offset: i64,
    pub event: Option<ReadEvent>,
}

/// What a readable message says (`None` in `Read::event`: not an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadEvent {
    pub message_id: Uuid,
    pub event_type: EventType,
    /// When the event happened, in microseconds since the epoch.
    pub occurred_at_us: i64,
}

/// How one read was taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Counted,
    /// Its message id was counted from another offset (a producer retry).
    Duplicate,
    /// Not an event: kept as skipped.
    Malformed,
    /// This offset was read before (a redelivery): nothing changed.
    ReadBefore,
    /// Its partition has not been rewound since the replay began: not
    /// taken; the reader rewinds it.
    Stale,
}

/// The group's counts, from which analytics makes its figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies {
    pub orders: u64,
    pub reserved: u64,
    pub failures: u64,
    pub malformed: u64,
    pub duplicates: u64,
    /// Orders by minute of event time (minutes since the epoch).
    pub orders_by_minute: BTreeMap<i64, u64>,
    /// First and last event time of the counted events, in microseconds.
    pub events_span_us: Option<(i64, i64)>,
    /// The same over the orders only.
    pub orders_span_us: Option<(i64, i64)>,
    /// Replays so far, the group's first reading of the log included.
    pub replays: u64,
    pub replay: Option<Replay>,
}

/// The latest replay: the log up to `events` had to be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub epoch: Epoch,
    pub events: u64,
    pub started_ms: i64,
    /// When the last of those events had been read again.
    pub finished_ms: Option<i64>,
}

#[derive(Clone)]
enum Backend {
    Sqlite(crate::sqlite::Db),
    Postgres(deadpool_postgres::Pool),
}

#[derive(Clone)]
pub struct AnalyticsStore {
    backend: Backend,
    group: String,
}

impl AnalyticsStore {
    /// The projection of consumer group `group`.
    pub async fn open(database: &Database, group: &str) -> Result<Self, StoreError> {
        let backend = match database {
            Database::Sqlite(path) => Backend::Sqlite(sqlite::open(path)?),
            Database::Postgres(url) => Backend::Postgres(postgres::open(url).await?),
        };
        Ok(Self {
            backend,
            group: group.to_owned(),
        })
    }

    /// The group's epoch; its first member starts the first replay, over
    /// the log as `log` says it ends now.
    pub async fn join(&self, log: &[LogEnd], now_ms: i64) -> Result<Epoch, StoreError> {
        let group = self.group.clone();
        match &self.backend {
            Backend::Sqlite(db) => {
                let log = log.to_vec();
                db.call(move |conn| sqlite::join(conn, &group, &log, now_ms))
                    .await
            }
            Backend::Postgres(pool) => postgres::join(pool, &group, log, now_ms).await,
        }
    }

    /// Starts reading the log again: the reads are cleared and a new epoch
    /// begins, which every member's partitions must be rewound into.
    pub async fn begin_replay(&self, log: &[LogEnd], now_ms: i64) -> Result<Epoch, StoreError> {
        let group = self.group.clone();
        match &self.backend {
            Backend::Sqlite(db) => {
                let log = log.to_vec();
                db.call(move |conn| sqlite::begin_replay(conn, &group, &log, now_ms))
                    .await
            }
            Backend::Postgres(pool) => postgres::begin_replay(pool, &group, log, now_ms).await,
        }
    }

    /// The current epoch (0 before the group's first member joined), and
    /// the partitions of `assigned` not rewound into it.
    pub async fn behind(
        &self,
        assigned: &[Partition],
    ) -> Result<(Epoch, Vec<Partition>), StoreError> {
        let group = self.group.clone();
        match &self.backend {
            Backend::Sqlite(db) => {
                let assigned = assigned.to_vec();
                db.call(move |conn| sqlite::behind(conn, &group, &assigned))
                    .await
            }
            Backend::Postgres(pool) => postgres::behind(pool, &group, assigned).await,
        }
    }

    /// Says `partitions` were rewound to their earliest offsets during
    /// `epoch`; `false` (nothing written) if another replay began since.
    pub async fn positioned(
        &self,
        epoch: Epoch,
        partitions: &[Partition],
    ) -> Result<bool, StoreError> {
        let group = self.group.clone();
        match &self.backend {
            Backend::Sqlite(db) => {
                let partitions = partitions.to_vec();
                db.call(move |conn| sqlite::positioned(conn, &group, epoch, &partitions))
                    .await
            }
            Backend::Postgres(pool) => postgres::positioned(pool, &group, epoch, partitions).await,
        }
    }

    /// Takes a batch of reads into account, in one transaction; one outcome
    /// per read, in order.
    pub async fn record(&self, reads: &[Read], now_ms: i64) -> Result<Vec<Recorded>, StoreError> {
        let group = self.group.clone();
        match &self.backend {
            Backend::Sqlite(db) => {
                let reads = reads.to_vec();
                db.call(move |conn| sqlite::record(conn, &group, &reads, now_ms))
                    .await
            }
            Backend::Postgres(pool) => postgres::record(pool, &group, reads, now_ms).await,
        }
    }

    pub async fn tallies(&self) -> Result<Tallies, StoreError> {
        let group = self.group.clone();
        match &self.backend {
            Backend::Sqlite(db) => db.call(move |conn| sqlite::tallies(conn, &group)).await,
            Backend::Postgres(pool) => postgres::tallies(pool, &group).await,
        }
    }
}

/// The projection's tables, the same on both backends (SQLite takes
/// PostgreSQL's type names). A group's row holds its epoch and its latest
/// replay; the log ends are where that replay is read up to; a position
/// says which epoch a partition was last rewound into; a read is one
/// offset, counted, a duplicate of a counted message id, or malformed.
/// The tallies and the orders by minute are kept up to date in each
/// batch's transaction, so reading the figures costs a few rows however
/// long the log is.
const SCHEMA: &str = "
CREATE TABLE analytics_groups (
    grp         TEXT PRIMARY KEY,
    epoch       BIGINT NOT NULL,
    replays     BIGINT NOT NULL,
    events      BIGINT NOT NULL,
    started_ms  BIGINT NOT NULL,
    finished_ms BIGINT
);
CREATE TABLE analytics_log_ends (
    grp   TEXT NOT NULL,
    topic TEXT NOT NULL,
    part  INTEGER NOT NULL,
    high  BIGINT NOT NULL,
    PRIMARY KEY (grp, topic, part)
);
CREATE TABLE analytics_positions (
    grp   TEXT NOT NULL,
    topic TEXT NOT NULL,
    part  INTEGER NOT NULL,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (grp, topic, part)
);
CREATE TABLE analytics_reads (
    grp            TEXT NOT NULL,
    topic          TEXT NOT NULL,
    part           INTEGER NOT NULL,
    off            BIGINT NOT NULL,
    outcome        SMALLINT NOT NULL,
    message_id     TEXT,
    event_type     TEXT,
    occurred_at_us BIGINT,
    PRIMARY KEY (grp, topic, part, off)
);
CREATE UNIQUE INDEX analytics_counted ON analytics_reads (grp, message_id) WHERE outcome = 0;
CREATE TABLE analytics_tallies (
    grp            TEXT PRIMARY KEY,
    orders         BIGINT NOT NULL,
    reserved       BIGINT NOT NULL,
    failures       BIGINT NOT NULL,
    malformed      BIGINT NOT NULL,
    duplicates     BIGINT NOT NULL,
    first_us       BIGINT,
    last_us        BIGINT,
    first_order_us BIGINT,
    last_order_us  BIGINT
);
CREATE TABLE analytics_minutes (
    grp    TEXT NOT NULL,
    minute BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    PRIMARY KEY (grp, minute)
);
";

/// Outcomes stored in the reads' `outcome` column.
const COUNTED: i16 = 0;
const DUPLICATE: i16 = 1;
const MALFORMED: i16 = 2;

fn event_type_name(event: Option<&ReadEvent>) -> Option<&'static str> {
    event.map(|e| e.event_type.name())
}

/// What one batch adds to the group's tallies.
#[derive(Debug, Default)]
struct Delta {
    orders: i64,
    reserved: i64,
    failures: i64,
    malformed: i64,
    duplicates: i64,
    minutes: BTreeMap<i64, i64>,
    events_span_us: Option<(i64, i64)>,
    orders_span_us: Option<(i64, i64)>,
}

fn widen(span: &mut Option<(i64, i64)>, at: i64) {
    *span = Some(span.map_or((at, at), |(first, last)| (first.min(at), last.max(at))));
}

impl Delta {
    fn of(reads: &[Read], outcomes: &[Recorded]) -> Self {
        let mut delta = Self::default();
        for (read, outcome) in reads.iter().zip(outcomes) {
            match (outcome, read.event) {
                (Recorded::Duplicate, _) => delta.duplicates += 1,
                (Recorded::Malformed, _) => delta.malformed += 1,
                (Recorded::Counted, Some(event)) => {
                    let at = event.occurred_at_us;
                    widen(&mut delta.events_span_us, at);
                    match event.event_type {
                        EventType::OrderPlaced => {
                            delta.orders += 1;
                            *delta.minutes.entry(at.div_euclid(MINUTE_US)).or_default() += 1;
                            widen(&mut delta.orders_span_us, at);
                        }
                        EventType::InventoryReserved => delta.reserved += 1,
                        EventType::InventoryFailed => delta.failures += 1,
                    }
                }
                _ => {}
            }
        }
        delta
    }

    fn is_empty(&self) -> bool {
        self.orders + self.reserved + self.failures + self.malformed + self.duplicates == 0
    }
}

const MINUTE_US: i64 = 60_000_000;

fn span(first: Option<i64>, last: Option<i64>) -> Option<(i64, i64)> {
    first.zip(last)
}

#[cfg(test)]
mod tests;
