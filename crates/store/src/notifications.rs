//! The notification service's sent notifications, one per order.

use std::path::Path;

use foodlab_domain::OrderId;
use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::db::{Cached, Db, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    notification_id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id        TEXT NOT NULL UNIQUE,
    customer_id     TEXT,
    message         TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL
);
";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub notification_id: i64,
    pub order_id: OrderId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    pub message: String,
    pub created_at_ms: i64,
}

#[derive(Clone)]
pub struct NotificationStore {
    db: Db,
}

impl NotificationStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::open(path, SCHEMA)?,
        })
    }

    /// Records the notification for an order; an order is notified once, so a
    /// second call returns the first notification and `false`.
    pub async fn record(
        &self,
        order_id: OrderId,
        customer_id: Option<String>,
        message: String,
        now_ms: i64,
    ) -> Result<(Notification, bool), StoreError> {
        self.db
            .call(move |conn| {
                let tx = conn.transaction()?;
                let inserted = tx.run(
                    "INSERT INTO notifications (order_id, customer_id, message, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (order_id) DO NOTHING",
                    params![order_id.to_string(), customer_id, message, now_ms],
                )? == 1;
                let notification = tx
                    .row(
                        "SELECT notification_id, order_id, customer_id, message, created_at_ms
                         FROM notifications WHERE order_id = ?1",
                        [order_id.to_string()],
                        read_notification,
                    )
                    .optional()?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("notification for {order_id} vanished"))
                    })??;
                tx.commit()?;
                Ok((notification, inserted))
            })
            .await
    }

    pub async fn list(&self) -> Result<Vec<Notification>, StoreError> {
        self.db
            .call(|conn| {
                let mut statement = conn.prepare(
                    "SELECT notification_id, order_id, customer_id, message, created_at_ms
                     FROM notifications ORDER BY notification_id",
                )?;
                let rows = statement.query_map([], read_notification)?;
                rows.map(|row| row?).collect()
            })
            .await
    }
}

fn read_notification(row: &Row<'_>) -> rusqlite::Result<Result<Notification, StoreError>> {
    let order_id: String = row.get(1)?;
    let notification_id = row.get(0)?;
    let customer_id = row.get(2)?;
    let message = row.get(3)?;
    let created_at_ms = row.get(4)?;
    Ok(order_id
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("order id `{order_id}`")))
        .map(|order_id| Notification {
            notification_id,
            order_id,
            customer_id,
            message,
            created_at_ms,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_order_is_notified_once_even_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notification.db");
        let id = OrderId::new();
        {
            let store = NotificationStore::open(&path).unwrap();
            let (first, fresh) = store
                .record(id, Some("s1".into()), "ready".into(), 1)
                .await
                .unwrap();
            assert!(fresh);
            assert_eq!(first.message, "ready");
        }
        let store = NotificationStore::open(&path).unwrap();
        let (again, fresh) = store.record(id, None, "again".into(), 2).await.unwrap();
        assert!(!fresh);
        assert_eq!(again.message, "ready");
        assert_eq!(store.list().await.unwrap().len(), 1);
    }
}
