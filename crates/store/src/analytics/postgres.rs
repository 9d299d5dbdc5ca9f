//! The projection on PostgreSQL, shared by the group's members. A replay
//! updates the group's row; a batch of reads holds that row `FOR SHARE`
//! while it writes, so a batch is either before a replay (and cleared by
//! it) or after it (and checked against the new epoch), never across.

use std::collections::HashSet;

use deadpool_postgres::{GenericClient, Pool};

use super::{
    COUNTED, DUPLICATE, Delta, Epoch, LogEnd, MALFORMED, Partition, Read, Recorded, Replay, SCHEMA,
    Tallies, event_type_name, span,
};
use crate::StoreError;
use crate::error::count;
use crate::migration::Migration;
use crate::postgres::connect;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "analytics projection",
    sql: SCHEMA,
}];

/// A group's first reading of the log: epoch 1, finished at once if the log is empty.
const FIRST_READING: &str =
    "INSERT INTO analytics_groups (grp, epoch, replays, events, started_ms, finished_ms)
     VALUES ($1, 1, 1, $2::BIGINT, $3::BIGINT, CASE WHEN $2::BIGINT = 0 THEN $3::BIGINT END)";

/// Otherwise a replay: the next epoch.
const OR_NEXT_EPOCH: &str = "ON CONFLICT (grp) DO UPDATE SET
         epoch = analytics_groups.epoch + 1,
         replays = analytics_groups.replays + 1,
         events = EXCLUDED.events,
         started_ms = EXCLUDED.started_ms,
         finished_ms = EXCLUDED.finished_ms
     RETURNING epoch";

pub(super) async fn open(url: &str) -> Result<Pool, StoreError> {
    connect(url, "analytics", MIGRATIONS).await
}

async fn write_log_ends(
    client: &impl GenericClient,
    group: &str,
    log: &[LogEnd],
) -> Result<(), StoreError> {
    client
        .execute("DELETE FROM analytics_log_ends WHERE grp = $1", &[&group])
        .await?;
    let insert = client
        .prepare_cached(
            "INSERT INTO analytics_log_ends (grp, topic, part, high) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    for end in log.iter().filter(|end| end.high > end.low) {
        client
            .execute(
                &insert,
                &[
                    &group,
                    &end.partition.topic,
                    &end.partition.partition,
                    &end.high,
                ],
            )
            .await?;
    }
    Ok(())
}

pub(super) async fn join(
    pool: &Pool,
    group: &str,
    log: &[LogEnd],
    now_ms: i64,
) -> Result<Epoch, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let events = LogEnd::events(log);
    // A member joining at the same moment waits here for the first's row.
    let started = tx
        .execute(
            &format!("{FIRST_READING} ON CONFLICT (grp) DO NOTHING"),
            &[&group, &events, &now_ms],
        )
        .await?
        == 1;
    if started {
        write_log_ends(&tx, group, log).await?;
    }
    let epoch: i64 = tx
        .query_one(
            "SELECT epoch FROM analytics_groups WHERE grp = $1",
            &[&group],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(Epoch(epoch))
}

pub(super) async fn begin_replay(
    pool: &Pool,
    group: &str,
    log: &[LogEnd],
    now_ms: i64,
) -> Result<Epoch, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let events = LogEnd::events(log);
    let epoch: i64 = tx
        .query_one(
            &format!("{FIRST_READING} {OR_NEXT_EPOCH}"),
            &[&group, &events, &now_ms],
        )
        .await?
        .get(0);
    for table in ["analytics_reads", "analytics_tallies", "analytics_minutes"] {
        tx.execute(&format!("DELETE FROM {table} WHERE grp = $1"), &[&group])
            .await?;
    }
    write_log_ends(&tx, group, log).await?;
    tx.commit().await?;
    Ok(Epoch(epoch))
}

/// The partitions rewound into the group's current epoch, and that epoch.
async fn current(
    client: &impl GenericClient,
    group: &str,
    lock: &str,
) -> Result<Option<(i64, Option<i64>, HashSet<Partition>)>, StoreError> {
    let Some(row) = client
        .query_opt(
            &format!("SELECT epoch, finished_ms FROM analytics_groups WHERE grp = $1 {lock}"),
            &[&group],
        )
        .await?
    else {
        return Ok(None);
    };
    let epoch: i64 = row.get(0);
    let select = client
        .prepare_cached("SELECT topic, part FROM analytics_positions WHERE grp = $1 AND epoch = $2")
        .await?;
    let positioned = client
        .query(&select, &[&group, &epoch])
        .await?
        .iter()
        .map(|row| Partition {
            topic: row.get(0),
            partition: row.get(1),
        })
        .collect();
    Ok(Some((epoch, row.get(1), positioned)))
}

pub(super) async fn behind(
    pool: &Pool,
    group: &str,
    assigned: &[Partition],
) -> Result<(Epoch, Vec<Partition>), StoreError> {
    let client = pool.get().await?;
    let (epoch, _, positioned) = current(&client, group, "").await?.unwrap_or_default();
    let behind = assigned
        .iter()
        .filter(|p| !positioned.contains(p))
        .cloned()
        .collect();
    Ok((Epoch(epoch), behind))
}

pub(super) async fn positioned(
    pool: &Pool,
    group: &str,
    epoch: Epoch,
    partitions: &[Partition],
) -> Result<bool, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let now: Option<i64> = tx
        .query_opt(
            "SELECT epoch FROM analytics_groups WHERE grp = $1 FOR SHARE",
            &[&group],
        )
        .await?
        .map(|row| row.get(0));
    if now != Some(epoch.0) {
        return Ok(false);
    }
    let upsert = tx
        .prepare_cached(
            "INSERT INTO analytics_positions (grp, topic, part, epoch) VALUES ($1, $2, $3, $4)
             ON CONFLICT (grp, topic, part) DO UPDATE SET epoch = EXCLUDED.epoch",
        )
        .await?;
    for p in partitions {
        tx.execute(&upsert, &[&group, &p.topic, &p.partition, &epoch.0])
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn record(
    pool: &Pool,
    group: &str,
    reads: &[Read],
    now_ms: i64,
) -> Result<Vec<Recorded>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some((epoch, finished, positioned)) = current(&tx, group, "FOR SHARE").await? else {
        return Ok(vec![Recorded::Stale; reads.len()]);
    };
    let insert = tx
        .prepare_cached(
            "INSERT INTO analytics_reads
                 (grp, topic, part, off, outcome, message_id, event_type, occurred_at_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .await?;
    let mut outcomes = Vec::with_capacity(reads.len());
    for read in reads {
        if !positioned.contains(&read.partition) {
            outcomes.push(Recorded::Stale);
            continue;
        }
        let write = |outcome| insert_read(&tx, &insert, group, read, outcome);
        let recorded = if read.event.is_none() {
            if write(MALFORMED).await? {
                Recorded::Malformed
            } else {
                Recorded::ReadBefore
            }
        } else if write(COUNTED).await? {
            Recorded::Counted
        } else if write(DUPLICATE).await? {
            // The offset was free: the message id was what conflicted.
            Recorded::Duplicate
        } else {
            Recorded::ReadBefore
        };
        outcomes.push(recorded);
    }
    add(&tx, group, &Delta::of(reads, &outcomes)).await?;
    tx.commit().await?;
    if finished.is_none() && outcomes.contains(&Recorded::Counted) {
        finish_if_read_again(&client, group, epoch, now_ms).await?;
    }
    Ok(outcomes)
}

/// Writes one read with `outcome`; `false` if a unique key refused it.
async fn insert_read(
    client: &impl GenericClient,
    insert: &tokio_postgres::Statement,
    group: &str,
    read: &Read,
    outcome: i16,
) -> Result<bool, StoreError> {
    let message_id = read.event.map(|e| e.message_id.to_string());
    let occurred = read.event.map(|e| e.occurred_at_us);
    let written = client
        .execute(
            insert,
            &[
                &group,
                &read.partition.topic,
                &read.partition.partition,
                &read.offset,
                &outcome,
                &message_id,
                &event_type_name(read.event.as_ref()),
                &occurred,
            ],
        )
        .await?;
    Ok(written == 1)
}

/// Adds a batch's delta to the group's tallies, in the batch's transaction
/// (the tallies row first, then the minutes in order: two members' batches
/// wait for each other, never in a circle).
async fn add(client: &impl GenericClient, group: &str, delta: &Delta) -> Result<(), StoreError> {
    if delta.is_empty() {
        return Ok(());
    }
    let upsert = client
        .prepare_cached(
            "INSERT INTO analytics_tallies (grp, orders, reserved, failures, malformed, duplicates,
                 first_us, last_us, first_order_us, last_order_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (grp) DO UPDATE SET
                 orders = analytics_tallies.orders + EXCLUDED.orders,
                 reserved = analytics_tallies.reserved + EXCLUDED.reserved,
                 failures = analytics_tallies.failures + EXCLUDED.failures,
                 malformed = analytics_tallies.malformed + EXCLUDED.malformed,
                 duplicates = analytics_tallies.duplicates + EXCLUDED.duplicates,
                 first_us = LEAST(analytics_tallies.first_us, EXCLUDED.first_us),
                 last_us = GREATEST(analytics_tallies.last_us, EXCLUDED.last_us),
                 first_order_us = LEAST(analytics_tallies.first_order_us, EXCLUDED.first_order_us),
                 last_order_us = GREATEST(analytics_tallies.last_order_us, EXCLUDED.last_order_us)",
        )
        .await?;
    let (first, last) = delta.events_span_us.unzip();
    let (first_order, last_order) = delta.orders_span_us.unzip();
    client
        .execute(
            &upsert,
            &[
                &group,
                &delta.orders,
                &delta.reserved,
                &delta.failures,
                &delta.malformed,
                &delta.duplicates,
                &first,
                &last,
                &first_order,
                &last_order,
            ],
        )
        .await?;
    let minute = client
        .prepare_cached(
            "INSERT INTO analytics_minutes (grp, minute, orders) VALUES ($1, $2, $3)
             ON CONFLICT (grp, minute) DO UPDATE SET
                 orders = analytics_minutes.orders + EXCLUDED.orders",
        )
        .await?;
    for (at, orders) in &delta.minutes {
        client.execute(&minute, &[&group, at, orders]).await?;
    }
    Ok(())
}

/// Marks the replay finished once every partition has been read up to
/// where its log ended when the replay began.
async fn finish_if_read_again(
    client: &impl GenericClient,
    group: &str,
    epoch: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    let finish = client
        .prepare_cached(
            "UPDATE analytics_groups SET finished_ms = $3
             WHERE grp = $1 AND epoch = $2 AND finished_ms IS NULL
               AND NOT EXISTS (
                   SELECT 1 FROM analytics_log_ends e
                   WHERE e.grp = $1 AND NOT EXISTS (
                       SELECT 1 FROM analytics_reads r
                       WHERE r.grp = e.grp AND r.topic = e.topic AND r.part = e.part
                         AND r.off >= e.high - 1))",
        )
        .await?;
    client.execute(&finish, &[&group, &epoch, &now_ms]).await?;
    Ok(())
}

pub(super) async fn tallies(pool: &Pool, group: &str) -> Result<Tallies, StoreError> {
    let client = pool.get().await?;
    let mut tallies = Tallies::default();
    if let Some(row) = client
        .query_opt(
            "SELECT orders, reserved, failures, malformed, duplicates,
                    first_us, last_us, first_order_us, last_order_us
             FROM analytics_tallies WHERE grp = $1",
            &[&group],
        )
        .await?
    {
        tallies.orders = count(row.get(0));
        tallies.reserved = count(row.get(1));
        tallies.failures = count(row.get(2));
        tallies.malformed = count(row.get(3));
        tallies.duplicates = count(row.get(4));
        tallies.events_span_us = span(row.get(5), row.get(6));
        tallies.orders_span_us = span(row.get(7), row.get(8));
    }
    for row in client
        .query(
            "SELECT minute, orders FROM analytics_minutes WHERE grp = $1",
            &[&group],
        )
        .await?
    {
        tallies
            .orders_by_minute
            .insert(row.get(0), count(row.get(1)));
    }
    if let Some(row) = client
        .query_opt(
            "SELECT epoch, replays, events, started_ms, finished_ms FROM analytics_groups
             WHERE grp = $1",
            &[&group],
        )
        .await?
    {
        tallies.replays = count(row.get(1));
        tallies.replay = Some(Replay {
            epoch: Epoch(row.get(0)),
            events: count(row.get(2)),
            started_ms: row.get(3),
            finished_ms: row.get(4),
        });
    }
    Ok(tallies)
}
