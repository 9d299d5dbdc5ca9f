//! The inventory service's stock and reservations.
//!
//! A reservation is decided and written in one `BEGIN IMMEDIATE` transaction,
//! so concurrent orders are serialised by SQLite and stock never goes negative
//! (the table's CHECK constraint backs that up). The reservation row is keyed
//! by order id, which makes reserving the same order twice a replay.

use std::collections::BTreeMap;
use std::path::Path;

use foodlab_domain::{Catalogue, ItemName, OrderId, OrderLine, ReservationError, plan_reservation};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::db::{Cached, Db, StoreError, from_json, to_json};

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

/// How a reservation request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Reserved,
    OutOfStock,
    UnknownItem,
    /// Refused without looking at the stock (an injected failure).
    Rejected,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::OutOfStock => "out_of_stock",
            Self::UnknownItem => "unknown_item",
            Self::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        [
            Self::Reserved,
            Self::OutOfStock,
            Self::UnknownItem,
            Self::Rejected,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("reservation outcome `{s}`")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    pub order_id: OrderId,
    pub items: Vec<OrderLine>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveResult {
    pub reservation: Reservation,
    /// The order had already been decided; nothing changed this time.
    pub replayed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StockStats {
    pub reserved_orders: u64,
    pub out_of_stock_orders: u64,
    pub unknown_item_orders: u64,
    pub rejected_orders: u64,
    pub units_reserved: u64,
}

#[derive(Clone)]
pub struct StockStore {
    db: Db,
}

impl StockStore {
    /// Opens the inventory database; items of `catalogue` not yet stocked are
    /// added with their initial stock (existing levels are kept across restarts).
    pub fn open(path: &Path, catalogue: &Catalogue) -> Result<Self, StoreError> {
        let db = Db::open(path, SCHEMA)?;
        let store = Self { db };
        store.seed_blocking(catalogue)?;
        Ok(store)
    }

    fn seed_blocking(&self, catalogue: &Catalogue) -> Result<(), StoreError> {
        self.db.blocking(|conn| {
            let tx = conn.transaction()?;
            for (item, count) in catalogue.initial_stock() {
                tx.run(
                    "INSERT OR IGNORE INTO stock (item, available) VALUES (?1, ?2)",
                    params![item.as_str(), count],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Reserves every line of an order, or nothing. Deciding the same order
    /// again returns the first decision with `replayed: true`.
    pub async fn reserve(
        &self,
        order_id: OrderId,
        lines: Vec<OrderLine>,
        now_ms: i64,
    ) -> Result<ReserveResult, StoreError> {
        self.db
            .call(move |conn| reserve_in(conn, None, order_id, lines, None, now_ms))
            .await
    }

    /// As `reserve`, for an order that arrived as a message: the message id
    /// is recorded in the same transaction as the decision, so a redelivered
    /// or duplicated message (same message id, or same order id) is a replay.
    pub async fn reserve_message(
        &self,
        message_id: &str,
        order_id: OrderId,
        lines: Vec<OrderLine>,
        now_ms: i64,
    ) -> Result<ReserveResult, StoreError> {
        let message_id = message_id.to_owned();
        self.db
            .call(move |conn| reserve_in(conn, Some(&message_id), order_id, lines, None, now_ms))
            .await
    }

    /// Records that an order that arrived as a message is refused for
    /// `reason` (an injected failure), unless it was decided before: the
    /// decision is durable, so a redelivery gets the same answer.
    pub async fn reject_message(
        &self,
        message_id: &str,
        order_id: OrderId,
        lines: Vec<OrderLine>,
        reason: String,
        now_ms: i64,
    ) -> Result<ReserveResult, StoreError> {
        let message_id = message_id.to_owned();
        self.db
            .call(move |conn| {
                reserve_in(
                    conn,
                    Some(&message_id),
                    order_id,
                    lines,
                    Some(reason),
                    now_ms,
                )
            })
            .await
    }

    pub async fn stock(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.db
            .call(|conn| {
                read_stock(conn).map(|s| {
                    s.into_iter()
                        .map(|(item, n)| (item.to_string(), n))
                        .collect()
                })
            })
            .await
    }

    /// Sets the available stock of each item named (adding new items);
    /// items not named keep their level. Returns the whole stock.
    pub async fn set_stock(
        &self,
        levels: BTreeMap<ItemName, u64>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                for (item, available) in &levels {
                    tx.run(
                        "INSERT INTO stock (item, available) VALUES (?1, ?2)
                         ON CONFLICT (item) DO UPDATE SET available = excluded.available",
                        params![item.as_str(), available],
                    )?;
                }
                let stock = read_stock(&tx)?;
                tx.commit()?;
                Ok(stock
                    .into_iter()
                    .map(|(item, n)| (item.to_string(), n))
                    .collect())
            })
            .await
    }

    pub async fn reservation(&self, order_id: OrderId) -> Result<Option<Reservation>, StoreError> {
        self.db
            .call(move |conn| read_reservation(conn, order_id))
            .await
    }

    pub async fn stats(&self) -> Result<StockStats, StoreError> {
        self.db
            .call(|conn| {
                let mut stats = StockStats::default();
                let mut statement = conn.prepare("SELECT outcome, items FROM reservations")?;
                let mut rows = statement.query([])?;
                while let Some(row) = rows.next()? {
                    let outcome = Outcome::parse(&row.get::<_, String>(0)?)?;
                    match outcome {
                        Outcome::Reserved => {
                            stats.reserved_orders += 1;
                            let lines: Vec<OrderLine> = from_json(&row.get::<_, String>(1)?)?;
                            stats.units_reserved +=
                                lines.iter().map(|l| u64::from(l.quantity)).sum::<u64>();
                        }
                        Outcome::OutOfStock => stats.out_of_stock_orders += 1,
                        Outcome::UnknownItem => stats.unknown_item_orders += 1,
                        Outcome::Rejected => stats.rejected_orders += 1,
                    }
                }
                Ok(stats)
            })
            .await
    }
}

fn reserve_in(
    conn: &mut Connection,
    message_id: Option<&str>,
    order_id: OrderId,
    lines: Vec<OrderLine>,
    rejection: Option<String>,
    now_ms: i64,
) -> Result<ReserveResult, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(message_id) = message_id {
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
        let decided = read_reservation(&tx, order_id)?;
        tx.run(
            "INSERT OR IGNORE INTO processed_messages (message_id, order_id, processed_at_ms)
             VALUES (?1, ?2, ?3)",
            params![message_id, order_id.to_string(), now_ms],
        )?;
        if let Some(reservation) = decided {
            tx.commit()?;
            return Ok(ReserveResult {
                reservation,
                replayed: true,
            });
        }
    } else if let Some(reservation) = read_reservation(&tx, order_id)? {
        return Ok(ReserveResult {
            reservation,
            replayed: true,
        });
    }
    let stock = read_stock(&tx)?;
    let (outcome, reason) = match rejection {
        Some(reason) => (Outcome::Rejected, Some(reason)),
        None => match plan_reservation(&stock, &lines) {
            Ok(levels) => {
                for (item, left) in levels {
                    tx.run(
                        "UPDATE stock SET available = ?2 WHERE item = ?1",
                        params![item.as_str(), left],
                    )?;
                }
                (Outcome::Reserved, None)
            }
            Err(e @ ReservationError::OutOfStock { .. }) => {
                (Outcome::OutOfStock, Some(e.to_string()))
            }
            Err(e @ ReservationError::UnknownItem(_)) => {
                (Outcome::UnknownItem, Some(e.to_string()))
            }
        },
    };
    tx.run(
        "INSERT INTO reservations (order_id, items, outcome, reason, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            order_id.to_string(),
            to_json(&lines)?,
            outcome.as_str(),
            reason,
            now_ms
        ],
    )?;
    tx.commit()?;
    Ok(ReserveResult {
        reservation: Reservation {
            order_id,
            items: lines,
            outcome,
            reason,
            created_at_ms: now_ms,
        },
        replayed: false,
    })
}

fn read_stock(conn: &Connection) -> Result<BTreeMap<ItemName, u64>, StoreError> {
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

fn read_reservation(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(item: &str, quantity: u32) -> OrderLine {
        OrderLine {
            item: ItemName::parse(item).unwrap(),
            quantity,
        }
    }

    fn open(dir: &tempfile::TempDir, spec: &str) -> StockStore {
        StockStore::open(
            &dir.path().join("inventory.db"),
            &Catalogue::with_overrides(spec).unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn reserving_decrements_all_lines_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, "burger=5,pizza=1");
        let ok = store
            .reserve(OrderId::new(), vec![line("burger", 2), line("pizza", 1)], 1)
            .await
            .unwrap();
        assert_eq!(ok.reservation.outcome, Outcome::Reserved);
        let short = store
            .reserve(OrderId::new(), vec![line("burger", 1), line("pizza", 1)], 2)
            .await
            .unwrap();
        assert_eq!(short.reservation.outcome, Outcome::OutOfStock);
        let unknown = store
            .reserve(OrderId::new(), vec![line("sushi", 1)], 3)
            .await
            .unwrap();
        assert_eq!(unknown.reservation.outcome, Outcome::UnknownItem);
        let stock = store.stock().await.unwrap();
        assert_eq!(stock["burger"], 3);
        assert_eq!(stock["pizza"], 0);
        assert_eq!(stock["salad"], 100);
        assert_eq!(
            store.stats().await.unwrap(),
            StockStats {
                reserved_orders: 1,
                out_of_stock_orders: 1,
                unknown_item_orders: 1,
                rejected_orders: 0,
                units_reserved: 3,
            }
        );
    }

    #[tokio::test]
    async fn a_rejected_message_keeps_its_stock_and_stays_rejected_when_redelivered() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, "");
        let id = OrderId::new();
        let rejected = store
            .reject_message("m-1", id, vec![line("burger", 2)], "injected".into(), 1)
            .await
            .unwrap();
        assert_eq!(rejected.reservation.outcome, Outcome::Rejected);
        assert!(!rejected.replayed);
        // Redelivered after a crash: the decision is replayed, not retaken,
        // whether the next roll would have rejected it or not.
        let again = store
            .reserve_message("m-1", id, vec![line("burger", 2)], 2)
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.reservation.outcome, Outcome::Rejected);
        assert_eq!(again.reservation.reason.as_deref(), Some("injected"));
        assert_eq!(store.stock().await.unwrap()["burger"], 100);
        assert_eq!(store.stats().await.unwrap().rejected_orders, 1);
    }

    #[tokio::test]
    async fn the_same_order_is_reserved_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, "");
        let id = OrderId::new();
        let first = store.reserve(id, vec![line("burger", 4)], 1).await.unwrap();
        let again = store.reserve(id, vec![line("burger", 4)], 2).await.unwrap();
        assert!(!first.replayed);
        assert!(again.replayed);
        assert_eq!(again.reservation, first.reservation);
        assert_eq!(store.stock().await.unwrap()["burger"], 96);
    }

    #[tokio::test]
    async fn a_message_is_processed_once_by_message_id_or_order_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, "");
        let order = OrderId::new();
        let first = store
            .reserve_message("m-1", order, vec![line("salad", 5)], 1)
            .await
            .unwrap();
        assert!(!first.replayed);
        // The same message again (a redelivery).
        let again = store
            .reserve_message("m-1", order, vec![line("salad", 5)], 2)
            .await
            .unwrap();
        assert!(again.replayed);
        // Another message for the same order (a duplicate publish).
        let duplicate = store
            .reserve_message("m-2", order, vec![line("salad", 5)], 3)
            .await
            .unwrap();
        assert!(duplicate.replayed);
        assert_eq!(duplicate.reservation, first.reservation);
        // The same message id reused for another order is refused, not replayed.
        let reused = store
            .reserve_message("m-1", OrderId::new(), vec![line("salad", 5)], 4)
            .await;
        assert!(
            matches!(reused, Err(StoreError::MessageIdReused { ref earlier_order }) if *earlier_order == order.to_string()),
            "{reused:?}"
        );
        assert_eq!(store.stock().await.unwrap()["salad"], 95);
    }

    #[tokio::test]
    async fn stock_and_reservations_survive_a_restart_and_are_not_reseeded() {
        let dir = tempfile::tempdir().unwrap();
        let id = OrderId::new();
        {
            let store = open(&dir, "burger=10");
            store.reserve(id, vec![line("burger", 7)], 1).await.unwrap();
        }
        let store = open(&dir, "burger=10");
        assert_eq!(store.stock().await.unwrap()["burger"], 3);
        let replay = store.reserve(id, vec![line("burger", 7)], 2).await.unwrap();
        assert!(replay.replayed);
        assert_eq!(store.stock().await.unwrap()["burger"], 3);
        assert_eq!(
            store.reservation(id).await.unwrap().map(|r| r.outcome),
            Some(Outcome::Reserved)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_orders_never_oversell() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, "burger=10");
        // A second connection to the same file, as a second process would have.
        let other = open(&dir, "burger=10");
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = if i % 2 == 0 {
                    store.clone()
                } else {
                    other.clone()
                };
                tokio::spawn(async move {
                    store
                        .reserve(OrderId::new(), vec![line("burger", 1)], i)
                        .await
                        .unwrap()
                        .reservation
                        .outcome
                })
            })
            .collect();
        let mut reserved = 0;
        for task in tasks {
            if task.await.unwrap() == Outcome::Reserved {
                reserved += 1;
            }
        }
        assert_eq!(reserved, 10);
        assert_eq!(store.stock().await.unwrap()["burger"], 0);
    }
}
