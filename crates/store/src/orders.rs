//! The order service's orders.

use std::collections::BTreeMap;
use std::path::Path;

use foodlab_domain::{Envelope, Order, OrderId, OrderStatus};
use rusqlite::{OptionalExtension, Row, params};

use crate::db::{Db, StoreError, from_json, to_json};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    order_id      TEXT PRIMARY KEY,
    customer_id   TEXT,
    items         TEXT NOT NULL,
    status        TEXT NOT NULL,
    reason        TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_creation ON orders (created_at_ms, order_id);
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    envelope   BLOB NOT NULL
);
";

const COLUMNS: &str = "order_id, customer_id, items, status, reason, created_at_ms, updated_at_ms";

#[derive(Clone)]
pub struct OrderStore {
    db: Db,
}

impl OrderStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::open(path, SCHEMA)?,
        })
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
                for (order, event) in &placed {
                    insert_order(&tx, order)?;
                    tx.execute(
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
                conn.execute("DELETE FROM outbox WHERE seq <= ?1", [up_to_seq])?;
                Ok(())
            })
            .await
    }

    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        self.db
            .call(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))?))
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
                let changed = conn.execute(
                    "UPDATE orders SET status = ?2, reason = ?3, updated_at_ms = ?4
                     WHERE order_id = ?1 AND status = 'placed'",
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
                    "UPDATE orders SET status = ?2, reason = ?3, updated_at_ms = ?4
                     WHERE order_id = ?1 RETURNING {COLUMNS}"
                );
                conn.query_row(
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
                conn.query_row(&sql, [id.to_string()], read_order)
                    .optional()?
                    .transpose()
            })
            .await
    }

    /// All orders, oldest first.
    pub async fn list(&self) -> Result<Vec<Order>, StoreError> {
        self.db
            .call(|conn| {
                let sql = format!("SELECT {COLUMNS} FROM orders ORDER BY created_at_ms, order_id");
                let mut statement = conn.prepare(&sql)?;
                let rows = statement.query_map([], read_order)?;
                rows.map(|row| row?).collect()
            })
            .await
    }

    /// How many orders are in each status.
    pub async fn count_by_status(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.db
            .call(|conn| {
                let mut statement =
                    conn.prepare("SELECT status, COUNT(*) FROM orders GROUP BY status")?;
                let rows = statement.query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }
}

fn insert_order(conn: &rusqlite::Connection, order: &Order) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO orders (order_id, customer_id, items, status, reason, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            order.order_id.to_string(),
            order.customer_id,
            to_json(&order.items)?,
            order.status.as_str(),
            order.reason,
            order.created_at_ms,
            order.updated_at_ms,
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
}
