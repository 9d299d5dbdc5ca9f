//! Notifications on PostgreSQL: the unique order id decides which of two
//! replicas notifies an order.

use deadpool_postgres::Pool;
use foodlab_domain::OrderId;
use tokio_postgres::Row;

use super::Notification;
use crate::StoreError;
use crate::migration::Migration;
use crate::postgres::connect;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "notifications",
    sql: "
CREATE TABLE notifications (
    notification_id BIGSERIAL PRIMARY KEY,
    order_id        TEXT NOT NULL UNIQUE,
    customer_id     TEXT,
    message         TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL
);
",
}];

macro_rules! columns {
    () => {
        "notification_id, order_id, customer_id, message, created_at_ms"
    };
}

const RECORD: &str = concat!(
    "INSERT INTO notifications (order_id, customer_id, message, created_at_ms)
     VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING RETURNING ",
    columns!()
);
const OF_ORDER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM notifications WHERE order_id = $1"
);
const ALL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM notifications ORDER BY notification_id"
);

pub(super) async fn open(url: &str) -> Result<Pool, StoreError> {
    connect(url, "notification", MIGRATIONS).await
}

pub(super) async fn record(
    pool: &Pool,
    order_id: OrderId,
    customer_id: Option<String>,
    message: String,
    now_ms: i64,
) -> Result<(Notification, bool), StoreError> {
    let client = pool.get().await?;
    let insert = client.prepare_cached(RECORD).await?;
    let id = order_id.to_string();
    if let Some(row) = client
        .query_opt(&insert, &[&id, &customer_id, &message, &now_ms])
        .await?
    {
        return Ok((read(&row)?, true));
    }
    // Notified before (here or by another replica, which may have committed
    // only now: the insert waited for it).
    let select = client.prepare_cached(OF_ORDER).await?;
    let row = client.query_one(&select, &[&id]).await?;
    Ok((read(&row)?, false))
}

pub(super) async fn list(pool: &Pool) -> Result<Vec<Notification>, StoreError> {
    let client = pool.get().await?;
    client.query(ALL, &[]).await?.iter().map(read).collect()
}

fn read(row: &Row) -> Result<Notification, StoreError> {
    let order_id: &str = row.get(1);
    Ok(Notification {
        notification_id: row.get(0),
        order_id: order_id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("order id `{order_id}`")))?,
        customer_id: row.get(2),
        message: row.get(3),
        created_at_ms: row.get(4),
    })
}
