//! The projection on SQLite: one process, one connection, so each call is
//! a transaction of its own with nothing beside it.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    COUNTED, DUPLICATE, Delta, Epoch, LogEnd, MALFORMED, Partition, Read, Recorded, Replay, SCHEMA,
    Tallies, event_type_name, span,
};
use crate::StoreError;
use crate::error::count;
use crate::migration::Migration;
use crate::sqlite::{Cached, Db};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "analytics projection",
    sql: SCHEMA,
}];

/// A group's first reading of the log: epoch 1, finished at once if the log is empty.
const FIRST_READING: &str =
    "INSERT INTO analytics_groups (grp, epoch, replays, events, started_ms, finished_ms)
     VALUES (?1, 1, 1, ?2, ?3, CASE WHEN ?2 = 0 THEN ?3 END)";

/// Otherwise a replay: the next epoch.
const OR_NEXT_EPOCH: &str = "ON CONFLICT (grp) DO UPDATE SET
         epoch = epoch + 1,
         replays = replays + 1,
         events = excluded.events,
         started_ms = excluded.started_ms,
         finished_ms = excluded.finished_ms
     RETURNING epoch";

pub(super) fn open(path: &Path) -> Result<Db, StoreError> {
    Db::open(path, "analytics", MIGRATIONS)
}

fn write_log_ends(conn: &Connection, group: &str, log: &[LogEnd]) -> Result<(), StoreError> {
    conn.run("DELETE FROM analytics_log_ends WHERE grp = ?1", [group])?;
    for end in log.iter().filter(|end| end.high > end.low) {
        conn.run(
            "INSERT INTO analytics_log_ends (grp, topic, part, high) VALUES (?1, ?2, ?3, ?4)",
            params![
                group,
                end.partition.topic,
                end.partition.partition,
                end.high
            ],
        )?;
    }
    Ok(())
}

fn epoch_of(conn: &Connection, group: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .row(
            "SELECT epoch FROM analytics_groups WHERE grp = ?1",
            [group],
            |row| row.get(0),
        )
        .optional()?)
}

pub(super) fn join(
    conn: &mut Connection,
    group: &str,
    log: &[LogEnd],
    now_ms: i64,
) -> Result<Epoch, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let events = LogEnd::events(log);
    let started = tx.run(
        &format!("{FIRST_READING} ON CONFLICT (grp) DO NOTHING"),
        params![group, events, now_ms],
    )? == 1;
    if started {
        write_log_ends(&tx, group, log)?;
    }
    let epoch = epoch_of(&tx, group)?.unwrap_or(1);
    tx.commit()?;
    Ok(Epoch(epoch))
}

pub(super) fn begin_replay(
    conn: &mut Connection,
    group: &str,
    log: &[LogEnd],
    now_ms: i64,
) -> Result<Epoch, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let events = LogEnd::events(log);
    let epoch: i64 = tx.row(
        &format!("{FIRST_READING} {OR_NEXT_EPOCH}"),
        params![group, events, now_ms],
        |row| row.get(0),
    )?;
    tx.run("DELETE FROM analytics_reads WHERE grp = ?1", [group])?;
    tx.run("DELETE FROM analytics_tallies WHERE grp = ?1", [group])?;
    tx.run("DELETE FROM analytics_minutes WHERE grp = ?1", [group])?;
    write_log_ends(&tx, group, log)?;
    tx.commit()?;
    Ok(Epoch(epoch))
}

/// The partitions rewound into the group's current epoch.
fn positioned_now(
    conn: &Connection,
    group: &str,
    epoch: i64,
) -> Result<HashSet<Partition>, StoreError> {
    let mut select = conn.prepare_cached(
        "SELECT topic, part FROM analytics_positions WHERE grp = ?1 AND epoch = ?2",
    )?;
    let rows = select.query_map(params![group, epoch], |row| {
        Ok(Partition {
            topic: row.get(0)?,
            partition: row.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn behind(
    conn: &mut Connection,
    group: &str,
    assigned: &[Partition],
) -> Result<(Epoch, Vec<Partition>), StoreError> {
    let epoch = epoch_of(conn, group)?.unwrap_or(0);
    let positioned = positioned_now(conn, group, epoch)?;
    let behind = assigned
        .iter()
        .filter(|p| !positioned.contains(p))
        .cloned()
        .collect();
    Ok((Epoch(epoch), behind))
}

pub(super) fn positioned(
    conn: &mut Connection,
    group: &str,
    epoch: Epoch,
    partitions: &[Partition],
) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if epoch_of(&tx, group)? != Some(epoch.0) {
        return Ok(false);
    }
    for p in partitions {
        tx.run(
            "INSERT INTO analytics_positions (grp, topic, part, epoch) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (grp, topic, part) DO UPDATE SET epoch = excluded.epoch",
            params![group, p.topic, p.partition, epoch.0],
        )?;
    }
    tx.commit()?;
    Ok(true)
}

pub(super) fn record(
    conn: &mut Connection,
    group: &str,
    reads: &[Read],
    now_ms: i64,
) -> Result<Vec<Recorded>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(epoch) = epoch_of(&tx, group)? else {
        return Ok(vec![Recorded::Stale; reads.len()]);
    };
    let positioned = positioned_now(&tx, group, epoch)?;
    let mut outcomes = Vec::with_capacity(reads.len());
    for read in reads {
        if !positioned.contains(&read.partition) {
            outcomes.push(Recorded::Stale);
            continue;
        }
        let write = |outcome: i16| -> rusqlite::Result<bool> {
            Ok(tx.run(
                "INSERT INTO analytics_reads
                     (grp, topic, part, off, outcome, message_id, event_type, occurred_at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                params![
                    group,
                    read.partition.topic,
                    read.partition.partition,
                    read.offset,
                    outcome,
                    read.event.map(|e| e.message_id.to_string()),
                    event_type_name(read.event.as_ref()),
                    read.event.map(|e| e.occurred_at_us),
                ],
            )? == 1)
        };
        let recorded = if read.event.is_none() {
            if write(MALFORMED)? {
                Recorded::Malformed
            } else {
                Recorded::ReadBefore
            }
        } else if write(COUNTED)? {
            Recorded::Counted
        } else if write(DUPLICATE)? {
            // The offset was free: the message id was what conflicted.
            Recorded::Duplicate
        } else {
            Recorded::ReadBefore
        };
        outcomes.push(recorded);
    }
    add(&tx, group, &Delta::of(reads, &outcomes))?;
    if outcomes.contains(&Recorded::Counted) {
        tx.run(
            "UPDATE analytics_groups SET finished_ms = ?3
             WHERE grp = ?1 AND epoch = ?2 AND finished_ms IS NULL
               AND NOT EXISTS (
                   SELECT 1 FROM analytics_log_ends e
                   WHERE e.grp = ?1 AND NOT EXISTS (
                       SELECT 1 FROM analytics_reads r
                       WHERE r.grp = e.grp AND r.topic = e.topic AND r.part = e.part
                         AND r.off >= e.high - 1))",
            params![group, epoch, now_ms],
        )?;
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Adds a batch's delta to the group's tallies, in the batch's transaction.
fn add(conn: &Connection, group: &str, delta: &Delta) -> Result<(), StoreError> {
    if delta.is_empty() {
        return Ok(());
    }
    let (first, last) = delta.events_span_us.unzip();
    let (first_order, last_order) = delta.orders_span_us.unzip();
    // SQLite's two-argument min() and max() are NULL if either is.
    conn.run(
        "INSERT INTO analytics_tallies (grp, orders, reserved, failures, malformed, duplicates,
             first_us, last_us, first_order_us, last_order_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (grp) DO UPDATE SET
             orders = orders + excluded.orders,
             reserved = reserved + excluded.reserved,
             failures = failures + excluded.failures,
             malformed = malformed + excluded.malformed,
             duplicates = duplicates + excluded.duplicates,
             first_us = min(coalesce(first_us, excluded.first_us), coalesce(excluded.first_us, first_us)),
             last_us = max(coalesce(last_us, excluded.last_us), coalesce(excluded.last_us, last_us)),
             first_order_us = min(coalesce(first_order_us, excluded.first_order_us),
                                  coalesce(excluded.first_order_us, first_order_us)),
             last_order_us = max(coalesce(last_order_us, excluded.last_order_us),
                                 coalesce(excluded.last_order_us, last_order_us))",
        params![
            group,
            delta.orders,
            delta.reserved,
            delta.failures,
            delta.malformed,
            delta.duplicates,
            first,
            last,
            first_order,
            last_order
        ],
    )?;
    for (minute, orders) in &delta.minutes {
        conn.run(
            "INSERT INTO analytics_minutes (grp, minute, orders) VALUES (?1, ?2, ?3)
             ON CONFLICT (grp, minute) DO UPDATE SET orders = orders + excluded.orders",
            params![group, minute, orders],
        )?;
    }
    Ok(())
}

pub(super) fn tallies(conn: &mut Connection, group: &str) -> Result<Tallies, StoreError> {
    let mut tallies = Tallies::default();
    let row = conn
        .row(
            "SELECT orders, reserved, failures, malformed, duplicates,
                    first_us, last_us, first_order_us, last_order_us
             FROM analytics_tallies WHERE grp = ?1",
            [group],
            |row| {
                Ok((
                    [
                        row.get::<_, i64>(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ],
                    [
                        row.get::<_, Option<i64>>(5)?,
                        row.get(6)?,
                        row.get(7)?,
                        row.get(8)?,
                    ],
                ))
            },
        )
        .optional()?;
    if let Some((counts, spans)) = row {
        tallies.orders = count(counts[0]);
        tallies.reserved = count(counts[1]);
        tallies.failures = count(counts[2]);
        tallies.malformed = count(counts[3]);
        tallies.duplicates = count(counts[4]);
        tallies.events_span_us = span(spans[0], spans[1]);
        tallies.orders_span_us = span(spans[2], spans[3]);
    }
    {
        let mut select =
            conn.prepare_cached("SELECT minute, orders FROM analytics_minutes WHERE grp = ?1")?;
        let mut rows = select.query([group])?;
        while let Some(row) = rows.next()? {
            tallies
                .orders_by_minute
                .insert(row.get(0)?, count(row.get(1)?));
        }
    }
    let group_row = conn
        .row(
            "SELECT epoch, replays, events, started_ms, finished_ms FROM analytics_groups
             WHERE grp = ?1",
            [group],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                ))
            },
        )
        .optional()?;
    if let Some((epoch, replays, events, started_ms, finished_ms)) = group_row {
        tallies.replays = count(replays);
        tallies.replay = Some(Replay {
            epoch: Epoch(epoch),
            events: count(events),
            started_ms,
            finished_ms,
        });
    }
    Ok(tallies)
}
