//! The notification service's sent notifications, one per order.

mod postgres;
mod sqlite;

use foodlab_domain::OrderId;
use serde::Serialize;

use crate::{Database, StoreError};

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
enum Backend {
    Sqlite(crate::sqlite::Db),
    Postgres(deadpool_postgres::Pool),
}

#[derive(Clone)]
pub struct NotificationStore {
    backend: Backend,
}

impl NotificationStore {
    pub async fn open(database: &Database) -> Result<Self, StoreError> {
        let backend = match database {
            Database::Sqlite(path) => Backend::Sqlite(sqlite::open(path)?),
            Database::Postgres(url) => Backend::Postgres(postgres::open(url).await?),
        };
        Ok(Self { backend })
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
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |conn| sqlite::record(conn, order_id, customer_id, message, now_ms))
                    .await
            }
            Backend::Postgres(pool) => {
                postgres::record(pool, order_id, customer_id, message, now_ms).await
            }
        }
    }

    /// `record` for each of `notifications` (order id, customer, message):
    /// whether each was new. On SQLite the lot is one transaction, so a batch
    /// of deliveries costs one commit; on PostgreSQL each is its own (one
    /// for the lot could wait on another replica's batch in the opposite order).
    pub async fn record_all(
        &self,
        notifications: Vec<(OrderId, Option<String>, String)>,
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |conn| sqlite::record_all(conn, notifications, now_ms))
                    .await
            }
            Backend::Postgres(pool) => {
                let mut fresh = Vec::with_capacity(notifications.len());
                for (order_id, customer_id, message) in notifications {
                    let (_, new) =
                        postgres::record(pool, order_id, customer_id, message, now_ms).await?;
                    fresh.push(new);
                }
                Ok(fresh)
            }
        }
    }

    /// Every notification, in the order they were recorded.
    pub async fn list(&self) -> Result<Vec<Notification>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.read(sqlite::list).await,
            Backend::Postgres(pool) => postgres::list(pool).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::on_both_backends;

    on_both_backends! { "notification.db";
        async fn an_order_is_notified_once_even_after_reopening(db: Database) {
            let id = OrderId::new();
            {
                let store = NotificationStore::open(&db).await.unwrap();
                let (first, fresh) = store
                    .record(id, Some("s1".into()), "ready".into(), 1)
                    .await
                    .unwrap();
                assert!(fresh);
                assert_eq!(first.message, "ready");
            }
            let store = NotificationStore::open(&db).await.unwrap();
            let (again, fresh) = store.record(id, None, "again".into(), 2).await.unwrap();
            assert!(!fresh);
            assert_eq!(again.message, "ready");
            assert_eq!(store.list().await.unwrap().len(), 1);
        }

        async fn a_batch_notifies_each_order_once_and_says_which_were_new(db: Database) {
            let store = NotificationStore::open(&db).await.unwrap();
            let (a, b) = (OrderId::new(), OrderId::new());
            store.record(a, None, "first".into(), 1).await.unwrap();
            let batch = vec![
                (a, None, "again".into()),
                (b, Some("s2".into()), "ready".into()),
                (b, None, "twice in one batch".into()),
            ];
            assert_eq!(store.record_all(batch, 2).await.unwrap(), [false, true, false]);
            let messages: Vec<_> = store.list().await.unwrap().into_iter().map(|n| n.message).collect();
            assert_eq!(messages, ["first", "ready"]);
        }

        async fn two_replicas_notifying_the_same_orders_at_once_notify_each_once(db: Database) {
            let first = NotificationStore::open(&db).await.unwrap();
            let second = NotificationStore::open(&db).await.unwrap();
            let orders: Vec<OrderId> = (0..30).map(|_| OrderId::new()).collect();
            let mut tasks = Vec::new();
            for order in &orders {
                for store in [first.clone(), second.clone()] {
                    let order = *order;
                    tasks.push(tokio::spawn(async move {
                        store.record(order, None, "ready".into(), 1).await.unwrap()
                    }));
                }
            }
            let mut fresh = 0;
            for task in tasks {
                let (notification, inserted) = task.await.unwrap();
                assert!(orders.contains(&notification.order_id));
                fresh += usize::from(inserted);
            }
            assert_eq!(fresh, orders.len());
            assert_eq!(second.list().await.unwrap().len(), orders.len());
        }
    }
}
