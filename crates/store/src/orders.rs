//! The order service's orders.

use std::collections::BTreeMap;
use std::path::Path;

use foodlab_domain::{Envelope, Order, OrderId, OrderStatus};
use rusqlite::{OptionalExtension, Row, params};

use crate::db::{Cached, Db, StoreError, from_json, to_json};

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

const COLUMNS: &str = "order_id, customer_id, items, status, reason, created_at_ms, updated_at_ms";

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

const NEXT_SEQ: &str = "(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM orders)";

/// The most orders one page holds.
pub const MAX_PAGE: u32 = 1000;

/// Orders by status, and the cursor when they were counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCounts {
    pub by_status: BTreeMap<String, u64>,
    pub cursor: i64,
}

/// One page of orders and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    /// The cursor to read on from: `None` when a page by placement reached
    /// the last order; always given for changes (more may come).
    pub next: Option<i64>,
}

#[derive(Clone)]
pub struct OrderStore {
    db: Db,
}

impl OrderStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, SCHEMA)?;
        db.blocking(add_sequence)?;
        Ok(Self { db })
    }

    pub async fn insert(&self, order: Order) -> Result<(), StoreError> {
        self.db.call(move |conn| insert_order(conn, &order)).await
    }

    /// Stores an order and the event announcing it in one transaction (the
    /// outbox): there is never an order without its event or the reverse.
    pub async fn insert_with_event(
        &self,
        order: Order,
        event: &Envelope,
    ) -> Result<(), StoreError> {
        self.insert_all_with_events(vec![(order, event.clone())])
            .await
    }

    /// As `insert_with_event` for many orders, all in one transaction.
    pub async fn insert_all_with_events(
        &self,
        placed: Vec<(Order, Envelope)>,
    ) -> Result<(), StoreError> {
        self.db
            .call(move |conn| {
                let tx = conn.transaction()?;
                for (seq, (order, event)) in (next_seq(&tx)?..).zip(&placed) {
                    insert_order_at(&tx, order, seq)?;
                    tx.run(
                        "INSERT INTO outbox (message_id, envelope) VALUES (?1, ?2)",
                        params![event.message_id.to_string(), event.to_stored_json()],
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// Events not yet confirmed by the broker, oldest first, with their position.
    pub async fn pending_events(&self, limit: usize) -> Result<Vec<(i64, Envelope)>, StoreError> {
        self.db
            .call(move |conn| {
                let mut statement =
                    conn.prepare_cached("SELECT seq, envelope FROM outbox ORDER BY seq LIMIT ?1")?;
                let rows = statement.query_map([limit as i64], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                })?;
                rows.map(|row| {
                    let (seq, body) = row?;
                    let envelope = Envelope::parse(&body)
                        .map_err(|e| StoreError::Corrupt(format!("outbox event {seq}: {e}")))?;
                    Ok((seq, envelope))
                })
                .collect()
            })
            .await
    }

    /// Forgets events the broker has confirmed, up to and including `seq`.
    pub async fn mark_published(&self, up_to_seq: i64) -> Result<(), StoreError> {
        self.db
            .call(move |conn| {
                conn.run("DELETE FROM outbox WHERE seq <= ?1", [up_to_seq])?;
                Ok(())
            })
            .await
    }

    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        self.db
            .call(|conn| Ok(conn.row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))?))
            .await
    }

    /// Records the outcome of an order that is still `placed`; an outcome
    /// heard again (a redelivered result) changes nothing. Returns whether it applied.
    pub async fn settle(
        &self,
        id: OrderId,
        status: OrderStatus,
        reason: Option<String>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.db
            .call(move |conn| {
                let changed = conn.run(
                    &format!(
                        "UPDATE orders SET status = ?2, reason = ?3, updated_at_ms = ?4,
                         change_seq = {NEXT_SEQ}
                         WHERE order_id = ?1 AND status = 'placed'"
                    ),
                    params![id.to_string(), status.as_str(), reason, now_ms],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    /// Moves an order to `status`; returns the updated order, or `None` if unknown.
    pub async fn set_status(
        &self,
        id: OrderId,
        status: OrderStatus,
        reason: Option<String>,
        now_ms: i64,
    ) -> Result<Option<Order>, StoreError> {
        self.db
            .call(move |conn| {
                let sql = format!(
                    "UPDATE orders SET status = ?2, reason = ?3, updated_at_ms = ?4,
                     change_seq = {NEXT_SEQ}
                     WHERE order_id = ?1 RETURNING {COLUMNS}"
                );
                conn.row(
                    &sql,
                    params![id.to_string(), status.as_str(), reason, now_ms],
                    read_order,
                )
                .optional()?
                .transpose()
            })
            .await
    }

    pub async fn get(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        self.db
            .call(move |conn| {
                let sql = format!("SELECT {COLUMNS} FROM orders WHERE order_id = ?1");
                conn.row(&sql, [id.to_string()], read_order)
                    .optional()?
                    .transpose()
            })
            .await
    }

    /// All orders, oldest first.
    pub async fn list(&self) -> Result<Vec<Order>, StoreError> {
        self.db
            .call(|conn| {
                // Placement order: what the pages (`placed_seq`) follow too, also
                // for orders placed in the same millisecond.
                let sql = format!("SELECT {COLUMNS} FROM orders ORDER BY placed_seq");
                let mut statement = conn.prepare(&sql)?;
                let rows = statement.query_map([], read_order)?;
                rows.map(|row| row?).collect()
            })
            .await
    }

    /// How many orders are in each status.
    pub async fn count_by_status(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self.counts_placed_after(0).await?.by_status)
    }

    /// The position of the latest change (0 before the first order): orders
    /// placed or changed later have a higher one.
    pub async fn cursor(&self) -> Result<i64, StoreError> {
        self.db
            .call(|conn| {
                Ok(conn.row(
                    "SELECT COALESCE(MAX(change_seq), 0) FROM orders",
                    [],
                    |row| row.get(0),
                )?)
            })
            .await
    }

    /// How many of the orders placed after `cursor` are in each status,
    /// and the cursor they were counted at.
    pub async fn counts_placed_after(&self, cursor: i64) -> Result<OrderCounts, StoreError> {
        self.db
            .call(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT status, COUNT(*) FROM orders WHERE placed_seq > ?1 GROUP BY status",
                )?;
                let rows = statement.query_map([cursor], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
                })?;
                let by_status = rows.collect::<Result<_, _>>()?;
                Ok(OrderCounts {
                    by_status,
                    cursor: current_cursor(conn)?,
                })
            })
            .await
    }

    /// Up to `limit` orders placed after `cursor`, in the order they were placed.
    pub async fn page_placed_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let page = self.read_after("placed_seq", cursor, limit).await?;
        let next = (page.len() == limit as usize)
            .then(|| page.last().map(|(seq, _)| *seq))
            .flatten();
        Ok(OrderPage {
            orders: page.into_iter().map(|(_, order)| order).collect(),
            next,
        })
    }

    /// Up to `limit` orders changed (placed, or given a new status) after
    /// `cursor`, in the order of their latest change: each change is seen
    /// once; an order that changed again shows up again, with its new status.
    pub async fn changed_after(&self, cursor: i64, limit: u32) -> Result<OrderPage, StoreError> {
        let page = self.read_after("change_seq", cursor, limit).await?;
        let next = page.last().map_or(cursor, |(seq, _)| *seq);
        Ok(OrderPage {
            orders: page.into_iter().map(|(_, order)| order).collect(),
            next: Some(next),
        })
    }

    /// Orders whose `sequence` column is above `cursor`, ascending, with it.
    async fn read_after(
        &self,
        sequence: &'static str,
        cursor: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Order)>, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        self.db
            .call(move |conn| {
                let sql = format!(
                    "SELECT {COLUMNS}, {sequence} FROM orders WHERE {sequence} > ?1
                     ORDER BY {sequence} LIMIT ?2"
                );
                let mut statement = conn.prepare_cached(&sql)?;
                let rows = statement.query_map(params![cursor, limit], |row| {
                    let seq: i64 = row.get(7)?;
                    Ok(read_order(row)?.map(|order| (seq, order)))
                })?;
                rows.map(|row| row?).collect()
            })
            .await
    }
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

fn current_cursor(conn: &rusqlite::Connection) -> Result<i64, StoreError> {
    Ok(conn.row(
        "SELECT COALESCE(MAX(change_seq), 0) FROM orders",
        [],
        |row| row.get(0),
    )?)
}

fn next_seq(conn: &rusqlite::Connection) -> Result<i64, StoreError> {
    Ok(conn.row(&format!("SELECT {NEXT_SEQ}"), [], |row| row.get(0))?)
}

fn insert_order(conn: &rusqlite::Connection, order: &Order) -> Result<(), StoreError> {
    insert_order_at(conn, order, next_seq(conn)?)
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

#[cfg(test)]
mod tests {
    use foodlab_domain::{ItemName, OrderLine};

    use super::*;

    fn order(at: i64) -> Order {
        Order {
            order_id: OrderId::new(),
            customer_id: Some("s1".into()),
            items: vec![OrderLine {
                item: ItemName::parse("burger").unwrap(),
                quantity: 2,
            }],
            status: OrderStatus::Placed,
            reason: None,
            created_at_ms: at,
            updated_at_ms: at,
        }
    }

    #[tokio::test]
    async fn orders_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        let first = order(1);
        let second = order(2);
        {
            let store = OrderStore::open(&path).unwrap();
            store.insert(first.clone()).await.unwrap();
            store.insert(second.clone()).await.unwrap();
            let updated = store
                .set_status(
                    first.order_id,
                    OrderStatus::Failed,
                    Some("out of stock".into()),
                    5,
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(updated.status, OrderStatus::Failed);
            assert_eq!(updated.updated_at_ms, 5);
        }
        let store = OrderStore::open(&path).unwrap();
        let all = store.list().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].order_id, first.order_id);
        assert_eq!(all[0].status, OrderStatus::Failed);
        assert_eq!(all[0].reason.as_deref(), Some("out of stock"));
        assert_eq!(all[1], second);
        assert_eq!(store.get(second.order_id).await.unwrap(), Some(second));
        let counts = store.count_by_status().await.unwrap();
        assert_eq!(counts.get("failed"), Some(&1));
        assert_eq!(counts.get("placed"), Some(&1));
    }

    #[tokio::test]
    async fn the_outbox_keeps_events_until_published_and_settling_happens_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        let placed = order(1);
        let event = foodlab_domain::Envelope::new(
            placed.order_id,
            "c".into(),
            jiff::Timestamp::UNIX_EPOCH,
            foodlab_domain::Event::OrderPlaced {
                customer_id: None,
                items: placed.items.clone(),
            },
        );
        {
            let store = OrderStore::open(&path).unwrap();
            store
                .insert_with_event(placed.clone(), &event)
                .await
                .unwrap();
            store
                .insert_with_event(order(2), &event.clone())
                .await
                .unwrap_err();
        }
        // A restart before publishing keeps the event.
        let store = OrderStore::open(&path).unwrap();
        let pending = store.pending_events(10).await.unwrap();
        assert_eq!(
            pending.len(),
            1,
            "the failed insert left neither order nor event"
        );
        assert_eq!(store.list().await.unwrap().len(), 1);
        assert_eq!(pending[0].1, event);
        store.mark_published(pending[0].0).await.unwrap();
        assert_eq!(store.pending_count().await.unwrap(), 0);

        let id = placed.order_id;
        assert!(
            store
                .settle(id, OrderStatus::Reserved, None, 5)
                .await
                .unwrap()
        );
        assert!(
            !store
                .settle(id, OrderStatus::Failed, Some("late".into()), 6)
                .await
                .unwrap()
        );
        assert_eq!(
            store.get(id).await.unwrap().unwrap().status,
            OrderStatus::Reserved
        );
    }

    #[tokio::test]
    async fn unknown_orders_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = OrderStore::open(&dir.path().join("orders.db")).unwrap();
        assert_eq!(store.get(OrderId::new()).await.unwrap(), None);
        let missing = store
            .set_status(OrderId::new(), OrderStatus::Reserved, None, 1)
            .await
            .unwrap();
        assert_eq!(missing, None);
    }

    async fn placed(store: &OrderStore, n: usize) -> Vec<Order> {
        let mut orders = Vec::new();
        for i in 0..n {
            let order = order(i as i64);
            store.insert(order.clone()).await.unwrap();
            orders.push(order);
        }
        orders
    }

    #[tokio::test]
    async fn counts_since_a_cursor_are_of_the_orders_placed_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = OrderStore::open(&dir.path().join("orders.db")).unwrap();
        assert_eq!(store.cursor().await.unwrap(), 0);
        let before = placed(&store, 3).await;
        let cursor = store.cursor().await.unwrap();
        assert_eq!(cursor, 3);
        let after = placed(&store, 4).await;
        // An earlier order changing does not make it one placed after the cursor.
        store
            .set_status(before[0].order_id, OrderStatus::Failed, None, 9)
            .await
            .unwrap();
        store
            .settle(after[0].order_id, OrderStatus::Reserved, None, 9)
            .await
            .unwrap();
        store
            .settle(
                after[1].order_id,
                OrderStatus::Failed,
                Some("out".into()),
                9,
            )
            .await
            .unwrap();
        let counts = store.counts_placed_after(cursor).await.unwrap();
        assert_eq!(counts.cursor, 10);
        assert_eq!(
            counts.by_status,
            BTreeMap::from([
                ("failed".to_owned(), 1),
                ("placed".to_owned(), 2),
                ("reserved".to_owned(), 1),
            ])
        );
        assert_eq!(
            store.count_by_status().await.unwrap().values().sum::<u64>(),
            7
        );
        assert_eq!(store.cursor().await.unwrap(), 10);
    }

    #[tokio::test]
    async fn changes_are_read_once_each_in_order_with_the_next_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = OrderStore::open(&dir.path().join("orders.db")).unwrap();
        placed(&store, 2).await;
        let cursor = store.cursor().await.unwrap();
        let orders = placed(&store, 3).await;
        store
            .settle(orders[0].order_id, OrderStatus::Reserved, None, 7)
            .await
            .unwrap();
        // Heard again: no change, so nothing new to read.
        store
            .settle(orders[0].order_id, OrderStatus::Failed, None, 8)
            .await
            .unwrap();

        let first = store.changed_after(cursor, 2).await.unwrap();
        let ids: Vec<_> = first.orders.iter().map(|o| o.order_id).collect();
        assert_eq!(ids, vec![orders[1].order_id, orders[2].order_id]);
        assert_eq!(first.next, Some(cursor + 3));
        let second = store.changed_after(cursor + 3, 2).await.unwrap();
        assert_eq!(second.orders.len(), 1);
        assert_eq!(second.orders[0].order_id, orders[0].order_id);
        assert_eq!(second.orders[0].status, OrderStatus::Reserved);
        assert_eq!(second.orders[0].updated_at_ms, 7);
        let end = second.next.unwrap();
        assert_eq!(end, cursor + 4);
        // Nothing since: the same cursor back, to ask again later.
        let empty = store.changed_after(end, 2).await.unwrap();
        assert_eq!((empty.orders.len(), empty.next), (0, Some(end)));
        store
            .set_status(orders[2].order_id, OrderStatus::Notified, None, 9)
            .await
            .unwrap();
        let later = store.changed_after(end, 2).await.unwrap();
        assert_eq!(later.orders.len(), 1);
        assert_eq!(
            (later.orders[0].order_id, later.orders[0].status),
            (orders[2].order_id, OrderStatus::Notified)
        );
        assert_eq!(later.next, Some(end + 1));
    }

    #[tokio::test]
    async fn pages_cover_every_order_once_in_placement_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = OrderStore::open(&dir.path().join("orders.db")).unwrap();
        let orders = placed(&store, 7).await;
        // A status change does not move an order between pages.
        store
            .set_status(orders[1].order_id, OrderStatus::Failed, None, 9)
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut cursor = 0;
        let mut pages = 0;
        loop {
            let page = store.page_placed_after(cursor, 3).await.unwrap();
            pages += 1;
            seen.extend(page.orders.iter().map(|o| o.order_id));
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, orders.iter().map(|o| o.order_id).collect::<Vec<_>>());
        // A last page that is exactly full is followed by an empty one.
        let full = store.page_placed_after(3, 4).await.unwrap();
        assert_eq!((full.orders.len(), full.next), (4, Some(7)));
        let empty = store.page_placed_after(7, 4).await.unwrap();
        assert_eq!((empty.orders.len(), empty.next), (0, None));
        assert_eq!(store.list().await.unwrap().len(), 7);
    }

    #[tokio::test]
    async fn a_database_without_the_sequence_gets_it_in_insertion_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE orders (
                    order_id TEXT PRIMARY KEY, customer_id TEXT, items TEXT NOT NULL,
                    status TEXT NOT NULL, reason TEXT,
                    created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);
                 INSERT INTO orders VALUES
                    ('00000000-0000-4000-8000-000000000002', NULL, '[]', 'reserved', NULL, 5, 6),
                    ('00000000-0000-4000-8000-000000000001', NULL, '[]', 'placed', NULL, 1, 1);",
            )
            .unwrap();
        }
        let store = OrderStore::open(&path).unwrap();
        assert_eq!(store.cursor().await.unwrap(), 2);
        let page = store.page_placed_after(0, 10).await.unwrap();
        let ids: Vec<String> = page.orders.iter().map(|o| o.order_id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "00000000-0000-4000-8000-000000000002",
                "00000000-0000-4000-8000-000000000001"
            ]
        );
        let added = order(9);
        store.insert(added.clone()).await.unwrap();
        let changed = store.changed_after(2, 10).await.unwrap();
        assert_eq!(changed.orders, vec![added]);
        // Opening it again changes nothing.
        drop(store);
        let store = OrderStore::open(&path).unwrap();
        assert_eq!(store.cursor().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn the_lab_queries_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = OrderStore::open(&dir.path().join("orders.db")).unwrap();
        let plan = |sql: &str| {
            store
                .db
                .blocking(|conn| {
                    let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows = statement.query_map([], |row| row.get::<_, String>(3))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?.join("; "))
                })
                .unwrap()
        };
        let counts =
            plan("SELECT status, COUNT(*) FROM orders WHERE placed_seq > 5 GROUP BY status");
        assert!(
            counts
                .contains("SEARCH orders USING COVERING INDEX orders_by_placement (placed_seq>?)"),
            "{counts}"
        );
        let page = plan(&format!(
            "SELECT {COLUMNS}, placed_seq FROM orders WHERE placed_seq > 5 ORDER BY placed_seq LIMIT 10"
        ));
        assert!(
            page.contains("SEARCH orders USING INDEX orders_by_placement (placed_seq>?)")
                && !page.contains("TEMP B-TREE"),
            "{page}"
        );
        let changed = plan(&format!(
            "SELECT {COLUMNS}, change_seq FROM orders WHERE change_seq > 5 ORDER BY change_seq LIMIT 10"
        ));
        assert!(
            changed.contains("SEARCH orders USING INDEX orders_by_change (change_seq>?)")
                && !changed.contains("TEMP B-TREE"),
            "{changed}"
        );
        let cursor = plan("SELECT COALESCE(MAX(change_seq), 0) FROM orders");
        assert!(
            cursor.contains("SEARCH orders USING COVERING INDEX orders_by_change"),
            "{cursor}"
        );
    }
}
