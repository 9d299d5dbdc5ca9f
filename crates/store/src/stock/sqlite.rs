//! The stock on SQLite: one connection, so `BEGIN IMMEDIATE` serialises
//! every decision of the process (one process per file).

use std::collections::BTreeMap;
use std::path::Path;

use foodlab_domain::{Catalogue, ItemName, OrderId, OrderLine};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use foodlab_domain::api::Decisions;

use super::{Outcome, Request, Reservation, ReserveResult, units};
use crate::StoreError;
use crate::error::{from_json, to_json};
use crate::migration::Migration;
use crate::sqlite::{Cached, Db};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "stock, reservations and processed messages",
    sql: SCHEMA,
}];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    item      TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS processed_messages (
    message_id    TEXT PRIMARY KEY,
    order_id      TEXT NOT NULL,
    processed_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id      TEXT PRIMARY KEY,
    items         TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    reason        TEXT,
    created_at_ms INTEGER NOT NULL
);
";

pub(super) fn open(path: &Path, catalogue: &Catalogue) -> Result<Db, StoreError> {
    let db = Db::open(path, "inventory", MIGRATIONS)?;
    db.blocking(|conn| {
        let tx = conn.transaction()?;
        for (item, count) in catalogue.initial_stock() {
            tx.run(
                "INSERT OR IGNORE INTO stock (item, available) VALUES (?1, ?2)",
                params![item.as_str(), count],
            )?;
        }
        tx.commit()?;
        Ok(())
    })?;
    Ok(db)
}

pub(super) fn decide(conn: &mut Connection, request: Request) -> Result<ReserveResult, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let decided = decide_in(&tx, &request)?;
    tx.commit()?;
    Ok(decided)
}

/// Decides `requests` in turn in one transaction, each on the stock the ones
/// before it left: one commit for the lot. A reused message id refuses its
/// request alone (nothing of it is written); any other error fails them all.
pub(super) fn decide_all(
    conn: &mut Connection,
    requests: Vec<Request>,
) -> Result<Vec<Result<ReserveResult, StoreError>>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut decided = Vec::with_capacity(requests.len());
    for request in &requests {
        match decide_in(&tx, request) {
            Err(reused @ StoreError::MessageIdReused { .. }) => decided.push(Err(reused)),
            other => decided.push(Ok(other?)),
        }
    }
    tx.commit()?;
    Ok(decided)
}

/// One decision inside `tx`, which the caller commits.
fn decide_in(tx: &Connection, request: &Request) -> Result<ReserveResult, StoreError> {
    let order_id = request.order_id;
    if let Some(message_id) = &request.message_id {
        let earlier: Option<String> = tx
            .row(
                "SELECT order_id FROM processed_messages WHERE message_id = ?1",
                [message_id],
                |row| row.get(0),
            )
            .optional()?;
        // A message id seen before is a replay of the order it carried then;
        // the same id on another order is a broken producer, not a replay.
        if let Some(earlier) = earlier
            && earlier != order_id.to_string()
        {
            return Err(StoreError::MessageIdReused {
                earlier_order: earlier,
            });
        }
        let decided = read_reservation(tx, order_id)?;
        tx.run(
            "INSERT OR IGNORE INTO processed_messages (message_id, order_id, processed_at_ms)
             VALUES (?1, ?2, ?3)",
            params![message_id, order_id.to_string(), request.now_ms],
        )?;
        if let Some(reservation) = decided {
            return Ok(ReserveResult {
                reservation,
                replayed: true,
            });
        }
    } else if let Some(reservation) = read_reservation(tx, order_id)? {
        return Ok(ReserveResult {
            reservation,
            replayed: true,
        });
    }
    let (outcome, reason, levels) = request.decide(&read_stock(tx)?);
    for (item, left) in levels {
        tx.run(
            "UPDATE stock SET available = ?2 WHERE item = ?1",
            params![item.as_str(), left],
        )?;
    }
    tx.run(
        "INSERT INTO reservations (order_id, items, outcome, reason, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            order_id.to_string(),
            to_json(&request.lines)?,
            outcome.as_str(),
            reason,
            request.now_ms
        ],
    )?;
    Ok(ReserveResult {
        reservation: request.reservation(outcome, reason),
        replayed: false,
    })
}

pub(super) fn set_stock(
    conn: &mut Connection,
    levels: &BTreeMap<ItemName, u64>,
) -> Result<BTreeMap<ItemName, u64>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (item, available) in levels {
        tx.run(
            "INSERT INTO stock (item, available) VALUES (?1, ?2)
             ON CONFLICT (item) DO UPDATE SET available = excluded.available",
            params![item.as_str(), available],
        )?;
    }
    let stock = read_stock(&tx)?;
    tx.commit()?;
    Ok(stock)
}

pub(super) fn stats(conn: &mut Connection) -> Result<Decisions, StoreError> {
    let mut stats = Decisions::default();
    let mut statement = conn.prepare("SELECT outcome, items FROM reservations")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        match Outcome::parse(&row.get::<_, String>(0)?)? {
            Outcome::Reserved => {
                stats.reserved_orders += 1;
                let lines: Vec<OrderLine> = from_json(&row.get::<_, String>(1)?)?;
                stats.units_reserved += units(&lines);
            }
            Outcome::OutOfStock => stats.out_of_stock_orders += 1,
            Outcome::UnknownItem => stats.unknown_item_orders += 1,
            Outcome::Rejected => stats.rejected_orders += 1,
        }
    }
    Ok(stats)
}

pub(super) fn read_stock(conn: &Connection) -> Result<BTreeMap<ItemName, u64>, StoreError> {
    let mut statement = conn.prepare_cached("SELECT item, available FROM stock")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
    })?;
    rows.map(|row| {
        let (item, available) = row?;
        let item = ItemName::parse(&item)
            .ok_or_else(|| StoreError::Corrupt(format!("item name `{item}`")))?;
        Ok((item, available))
    })
    .collect()
}

pub(super) fn read_reservation(
    conn: &Connection,
    order_id: OrderId,
) -> Result<Option<Reservation>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT items, outcome, reason, created_at_ms FROM reservations WHERE order_id = ?1",
        )?
        .query_row([order_id.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    row.map(|(items, outcome, reason, created_at_ms)| {
        Ok(Reservation {
            order_id,
            items: from_json(&items)?,
            outcome: Outcome::parse(&outcome)?,
            reason,
            created_at_ms,
        })
    })
    .transpose()
}
