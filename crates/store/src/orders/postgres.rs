//! Orders on PostgreSQL, shared by every order replica.
//!
//! The change sequence is one row, taken with `UPDATE … RETURNING` inside
//! each writing transaction: its row lock is held until commit, so the
//! numbers commit in order across replicas (a reader never sees number
//! n + 1 before n), as on SQLite's single connection. An order row is
//! always locked before the sequence row, so no two writers wait on each
//! other in a circle.

use deadpool_postgres::{GenericClient, Pool};
use foodlab_domain::{Envelope, Order, OrderId};
use tokio_postgres::{IsolationLevel, Row};

use super::{CLAIM_LEASE_MS, Change, OrderCounts, Sequence, order_columns};
use crate::StoreError;
use crate::error::{count, from_json, to_json};
use crate::migration::Migration;
use crate::postgres::connect;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "orders, change sequence and outbox",
    sql: "
CREATE TABLE orders (
    order_id      TEXT PRIMARY KEY,
    customer_id   TEXT,
    items         TEXT NOT NULL,
    status        TEXT NOT NULL,
    reason        TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    placed_seq    BIGINT NOT NULL,
    change_seq    BIGINT NOT NULL
);
CREATE INDEX orders_by_placement ON orders (placed_seq, status);
CREATE UNIQUE INDEX orders_by_change ON orders (change_seq);
CREATE TABLE order_sequence (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    value    BIGINT NOT NULL
);
INSERT INTO order_sequence (value) VALUES (0);
CREATE TABLE outbox (
    seq              BIGSERIAL PRIMARY KEY,
    message_id       TEXT NOT NULL UNIQUE,
    envelope         BYTEA NOT NULL,
    claimed_until_ms BIGINT
);
",
}];

const CHANGE: &str = concat!(
    "UPDATE orders SET status = $2, reason = $3, updated_at_ms = $4, change_seq = $5
     WHERE order_id = $1 RETURNING ",
    order_columns!()
);
const GET: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM orders WHERE order_id = $1"
);
const AFTER_PLACED: &str = concat!(
    "SELECT ",
    order_columns!(),
    ", placed_seq FROM orders WHERE placed_seq > $1 ORDER BY placed_seq LIMIT $2"
);
const AFTER_CHANGED: &str = concat!(
    "SELECT ",
    order_columns!(),
    ", change_seq FROM orders WHERE change_seq > $1 ORDER BY change_seq LIMIT $2"
);

pub(super) async fn open(url: &str) -> Result<Pool, StoreError> {
    connect(url, "order", MIGRATIONS).await
}

/// Takes `n` numbers of the change sequence; returns the first.
async fn take_seq(client: &impl GenericClient, n: i64) -> Result<i64, StoreError> {
    let take = client
        .prepare_cached("UPDATE order_sequence SET value = value + $1 RETURNING value")
        .await?;
    let last: i64 = client.query_one(&take, &[&n]).await?.get(0);
    Ok(last - n + 1)
}

pub(super) async fn store(
    pool: &Pool,
    placed: &[(Order, Option<Envelope>)],
) -> Result<(), StoreError> {
    if placed.is_empty() {
        return Ok(());
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let (message_ids, envelopes): (Vec<String>, Vec<Vec<u8>>) = placed
        .iter()
        .filter_map(|(_, event)| event.as_ref())
        .map(|event| (event.message_id.to_string(), event.to_stored_json()))
        .unzip();
    if !message_ids.is_empty() {
        let events = tx
            .prepare_cached(
                "INSERT INTO outbox (message_id, envelope)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BYTEA[])",
            )
            .await?;
        tx.execute(&events, &[&message_ids, &envelopes]).await?;
    }
    // Last, so the sequence is held for as short a time as possible.
    let first = take_seq(&tx, placed.len() as i64).await?;
    let mut columns = OrderColumns::default();
    for (seq, (order, _)) in (first..).zip(placed) {
        columns.push(order, seq)?;
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO orders (order_id, customer_id, items, status, reason, created_at_ms,
                                 updated_at_ms, placed_seq, change_seq)
             SELECT id, customer, items, status, reason, created, updated, seq, seq
             FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                         $6::BIGINT[], $7::BIGINT[], $8::BIGINT[])
                  AS o (id, customer, items, status, reason, created, updated, seq)",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &columns.ids,
            &columns.customers,
            &columns.items,
            &columns.statuses,
            &columns.reasons,
            &columns.created,
            &columns.updated,
            &columns.seqs,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Orders as one array per column, for one `INSERT … UNNEST`.
#[derive(Default)]
struct OrderColumns {
    ids: Vec<String>,
    customers: Vec<Option<String>>,
    items: Vec<String>,
    statuses: Vec<&'static str>,
    reasons: Vec<Option<String>>,
    created: Vec<i64>,
    updated: Vec<i64>,
    seqs: Vec<i64>,
}

impl OrderColumns {
    fn push(&mut self, order: &Order, seq: i64) -> Result<(), StoreError> {
        self.ids.push(order.order_id.to_string());
        self.customers.push(order.customer_id.clone());
        self.items.push(to_json(&order.items)?);
        self.statuses.push(order.status.as_str());
        self.reasons.push(order.reason.clone());
        self.created.push(order.created_at_ms);
        self.updated.push(order.updated_at_ms);
        self.seqs.push(seq);
        Ok(())
    }
}

pub(super) async fn claim(
    pool: &Pool,
    limit: usize,
    now_ms: i64,
    in_flight: &[i64],
) -> Result<Vec<(i64, Envelope)>, StoreError> {
    let client = pool.get().await?;
    let claim = client
        .prepare_cached(
            "UPDATE outbox SET claimed_until_ms = $2 + $3
             WHERE seq IN (
                 SELECT seq FROM outbox
                 WHERE (claimed_until_ms IS NULL OR claimed_until_ms < $2)
                   AND seq <> ALL($4)
                 ORDER BY seq LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING seq, envelope",
        )
        .await?;
    let rows = client
        .query(
            &claim,
            &[&(limit as i64), &now_ms, &CLAIM_LEASE_MS, &in_flight],
        )
        .await?;
    let mut events = rows
        .iter()
        .map(|row| {
            let seq: i64 = row.get(0);
            let envelope = Envelope::parse(row.get(1))
                .map_err(|e| StoreError::Corrupt(format!("outbox event {seq}: {e}")))?;
            Ok((seq, envelope))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    events.sort_by_key(|(seq, _)| *seq);
    Ok(events)
}

pub(super) async fn forget(pool: &Pool, seqs: &[i64]) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let forget = client
        .prepare_cached("DELETE FROM outbox WHERE seq = ANY($1)")
        .await?;
    client.execute(&forget, &[&seqs]).await?;
    Ok(())
}

pub(super) async fn release(pool: &Pool, seqs: &[i64]) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE outbox SET claimed_until_ms = NULL WHERE seq = ANY($1)",
            &[&seqs],
        )
        .await?;
    Ok(())
}

pub(super) async fn pending_count(pool: &Pool) -> Result<u64, StoreError> {
    let client = pool.get().await?;
    let row = client.query_one("SELECT COUNT(*) FROM outbox", &[]).await?;
    Ok(count(row.get(0)))
}

pub(super) async fn change(pool: &Pool, change: &Change) -> Result<Option<Order>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let id = change.id.to_string();
    let lock = tx
        .prepare_cached("SELECT status FROM orders WHERE order_id = $1 FOR UPDATE")
        .await?;
    let Some(row) = tx.query_opt(&lock, &[&id]).await? else {
        return Ok(None);
    };
    let status: &str = row.get(0);
    if change.only_if_placed && status != "placed" {
        return Ok(None);
    }
    let seq = take_seq(&tx, 1).await?;
    let update = tx.prepare_cached(CHANGE).await?;
    let row = tx
        .query_one(
            &update,
            &[
                &id,
                &change.status.as_str(),
                &change.reason,
                &change.now_ms,
                &seq,
            ],
        )
        .await?;
    let order = read_order(&row)?;
    tx.commit().await?;
    Ok(Some(order))
}

pub(super) async fn get(pool: &Pool, id: OrderId) -> Result<Option<Order>, StoreError> {
    let client = pool.get().await?;
    let select = client.prepare_cached(GET).await?;
    client
        .query_opt(&select, &[&id.to_string()])
        .await?
        .as_ref()
        .map(read_order)
        .transpose()
}

pub(super) async fn cursor(client: &impl GenericClient) -> Result<i64, StoreError> {
    let row = client
        .query_one("SELECT COALESCE(MAX(change_seq), 0) FROM orders", &[])
        .await?;
    Ok(row.get(0))
}

pub(super) async fn counts(pool: &Pool, cursor: i64) -> Result<OrderCounts, StoreError> {
    let mut client = pool.get().await?;
    // One snapshot for the counts and the cursor they were counted at.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let select = tx
        .prepare_cached("SELECT status, COUNT(*) FROM orders WHERE placed_seq > $1 GROUP BY status")
        .await?;
    let by_status = tx
        .query(&select, &[&cursor])
        .await?
        .iter()
        .map(|row| (row.get::<_, String>(0), count(row.get(1))))
        .collect();
    let at = self::cursor(&tx).await?;
    tx.commit().await?;
    Ok(OrderCounts {
        by_status,
        cursor: at,
    })
}

pub(super) async fn read_after(
    pool: &Pool,
    sequence: Sequence,
    cursor: i64,
    limit: u32,
) -> Result<Vec<(i64, Order)>, StoreError> {
    let client = pool.get().await?;
    let sql = match sequence {
        Sequence::Placed => AFTER_PLACED,
        Sequence::Changed => AFTER_CHANGED,
    };
    let select = client.prepare_cached(sql).await?;
    client
        .query(&select, &[&cursor, &i64::from(limit)])
        .await?
        .iter()
        .map(|row| Ok((row.get(7), read_order(row)?)))
        .collect()
}

fn read_order(row: &Row) -> Result<Order, StoreError> {
    let id: &str = row.get(0);
    let status: &str = row.get(3);
    Ok(Order {
        order_id: id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("order id `{id}`")))?,
        customer_id: row.get(1),
        items: from_json(row.get(2))?,
        status: status
            .parse()
            .map_err(|e: foodlab_domain::order::UnknownStatus| {
                StoreError::Corrupt(e.to_string())
            })?,
        reason: row.get(4),
        created_at_ms: row.get(5),
        updated_at_ms: row.get(6),
    })
}
