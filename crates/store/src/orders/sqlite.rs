//! Orders on SQLite: the service's one connection serialises every write,
//! so changes commit in sequence order.

use std::collections::BTreeMap;
use std::path::Path;

use foodlab_domain::{Envelope, Order, OrderId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Change, OrderCounts, Sequence, order_columns};
use crate::StoreError;
use crate::error::{from_json, to_json};
use crate::migration::Migration;
use crate::sqlite::{Cached, Db};

/// After them, `add_sequence` gives a file made before the change sequence
/// (and before versions were kept) its columns.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "orders, change sequence and outbox",
    sql: SCHEMA,
}];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    order_id      TEXT PRIMARY KEY,
    customer_id   TEXT,
    items         TEXT NOT NULL,
    status        TEXT NOT NULL,
    reason        TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    placed_seq    INTEGER NOT NULL DEFAULT 0,
    change_seq    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS orders_by_creation ON orders (created_at_ms, order_id);
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    envelope   BLOB NOT NULL
);
";

/// The change sequence: `placed_seq` is an order's position when it was
/// placed, `change_seq` its position when it last changed (placed or a new
/// status); both come from one counter, the highest `change_seq` so far
/// plus one. Every write holds the service's one connection, so changes
/// commit in sequence order and a reader never sees a later number before
/// an earlier one. Added to databases made before it existed (the old rows
/// numbered in insertion order), then indexed.
const SEQUENCE: &str = "
CREATE INDEX IF NOT EXISTS orders_by_placement ON orders (placed_seq, status);
CREATE UNIQUE INDEX IF NOT EXISTS orders_by_change ON orders (change_seq);
";

macro_rules! next_seq {
    () => {
        "(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM orders)"
    };
}

const NEXT_SEQ: &str = concat!("SELECT ", next_seq!());

macro_rules! change_sql {
    ($condition:literal) => {
        concat!(
            "UPDATE orders SET status = ?2, reason = ?3, updated_at_ms = ?4, change_seq = ",
            next_seq!(),
            " WHERE order_id = ?1",
            $condition,
            " RETURNING ",
            order_columns!()
        )
    };
}

const CHANGE: &str = change_sql!("");
const CHANGE_IF_PLACED: &str = change_sql!(" AND status = 'placed'");
const GET: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM orders WHERE order_id = ?1"
);
pub(super) const AFTER_PLACED: &str = concat!(
    "SELECT ",
    order_columns!(),
    ", placed_seq FROM orders WHERE placed_seq > ?1 ORDER BY placed_seq LIMIT ?2"
);
pub(super) const AFTER_CHANGED: &str = concat!(
    "SELECT ",
    order_columns!(),
    ", change_seq FROM orders WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2"
);

pub(super) fn open(path: &Path) -> Result<Db, StoreError> {
    let db = Db::open(path, "order", MIGRATIONS)?;
    db.blocking(add_sequence)?;
    Ok(db)
}

pub(super) fn store(
    conn: &mut Connection,
    placed: &[(Order, Option<Envelope>)],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for (seq, (order, event)) in (next_seq(&tx)?..).zip(placed) {
        insert_order_at(&tx, order, seq)?;
        if let Some(event) = event {
            tx.run(
                "INSERT INTO outbox (message_id, envelope) VALUES (?1, ?2)",
                params![event.message_id.to_string(), event.to_stored_json()],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn pending(
    conn: &mut Connection,
    limit: usize,
    after: i64,
) -> Result<Vec<(i64, Envelope)>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT seq, envelope FROM outbox WHERE seq > ?2 ORDER BY seq LIMIT ?1")?;
    let rows = statement.query_map([limit as i64, after], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    rows.map(|row| {
        let (seq, body) = row?;
        let envelope = Envelope::parse(&body)
            .map_err(|e| StoreError::Corrupt(format!("outbox event {seq}: {e}")))?;
        Ok((seq, envelope))
    })
    .collect()
}

pub(super) fn forget(conn: &mut Connection, seqs: &[i64]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for seq in seqs {
        tx.run("DELETE FROM outbox WHERE seq = ?1", [seq])?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn pending_count(conn: &mut Connection) -> Result<u64, StoreError> {
    Ok(conn.row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))?)
}

pub(super) fn change(conn: &Connection, change: &Change) -> Result<Option<Order>, StoreError> {
    let sql = if change.only_if_placed {
        CHANGE_IF_PLACED
    } else {
        CHANGE
    };
    conn.row(
        sql,
        params![
            change.id.to_string(),
            change.status.as_str(),
            change.reason,
            change.now_ms
        ],
        read_order,
    )
    .optional()?
    .transpose()
}

/// `change` for each of `changes` in one transaction: whether each applied.
pub(super) fn change_all(
    conn: &mut Connection,
    changes: &[Change],
) -> Result<Vec<bool>, StoreError> {
    let tx = conn.transaction()?;
    let mut applied = Vec::with_capacity(changes.len());
    for change in changes {
        applied.push(self::change(&tx, change)?.is_some());
    }
    tx.commit()?;
    Ok(applied)
}

pub(super) fn get(conn: &mut Connection, id: OrderId) -> Result<Option<Order>, StoreError> {
    conn.row(GET, [id.to_string()], read_order)
        .optional()?
        .transpose()
}

pub(super) fn counts(conn: &mut Connection, cursor: i64) -> Result<OrderCounts, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT status, COUNT(*) FROM orders WHERE placed_seq > ?1 GROUP BY status",
    )?;
    let rows = statement.query_map([cursor], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
    })?;
    let by_status: BTreeMap<String, u64> = rows.collect::<Result<_, _>>()?;
    Ok(OrderCounts {
        by_status,
        cursor: self::cursor(conn)?,
    })
}

pub(super) fn read_after(
    conn: &mut Connection,
    sequence: Sequence,
    cursor: i64,
    limit: u32,
) -> Result<Vec<(i64, Order)>, StoreError> {
    let sql = match sequence {
        Sequence::Placed => AFTER_PLACED,
        Sequence::Changed => AFTER_CHANGED,
    };
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params![cursor, limit], |row| {
        let seq: i64 = row.get(7)?;
        Ok(read_order(row)?.map(|order| (seq, order)))
    })?;
    rows.map(|row| row?).collect()
}

/// Gives a database made before the change sequence its two columns (the
/// existing orders numbered in insertion order), and the indexes.
fn add_sequence(conn: &mut rusqlite::Connection) -> Result<(), StoreError> {
    let has_sequence: bool = conn.row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('orders') WHERE name = 'change_seq'",
        [],
        |row| row.get(0),
    )?;
    let tx = conn.transaction()?;
    if !has_sequence {
        tx.execute_batch(
            "ALTER TABLE orders ADD COLUMN placed_seq INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE orders ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
             UPDATE orders SET placed_seq = rowid, change_seq = rowid;",
        )?;
        tracing::info!("orders migrated: change sequence added");
    }
    tx.execute_batch(SEQUENCE)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn cursor(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.row(
        "SELECT COALESCE(MAX(change_seq), 0) FROM orders",
        [],
        |row| row.get(0),
    )?)
}

fn next_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.row(NEXT_SEQ, [], |row| row.get(0))?)
}

fn insert_order_at(conn: &rusqlite::Connection, order: &Order, seq: i64) -> Result<(), StoreError> {
    conn.run(
        "INSERT INTO orders (order_id, customer_id, items, status, reason, created_at_ms, updated_at_ms,
                             placed_seq, change_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            order.order_id.to_string(),
            order.customer_id,
            to_json(&order.items)?,
            order.status.as_str(),
            order.reason,
            order.created_at_ms,
            order.updated_at_ms,
            seq,
        ],
    )?;
    Ok(())
}

fn read_order(row: &Row<'_>) -> rusqlite::Result<Result<Order, StoreError>> {
    let id: String = row.get(0)?;
    let items: String = row.get(2)?;
    let status: String = row.get(3)?;
    let customer_id = row.get(1)?;
    let reason = row.get(4)?;
    let created_at_ms = row.get(5)?;
    let updated_at_ms = row.get(6)?;
    Ok((|| {
        Ok(Order {
            order_id: id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("order id `{id}`")))?,
            customer_id,
            items: from_json(&items)?,
            status: status
                .parse()
                .map_err(|e: foodlab_domain::order::UnknownStatus| {
                    StoreError::Corrupt(e.to_string())
                })?,
            reason,
            created_at_ms,
            updated_at_ms,
        })
    })())
}
