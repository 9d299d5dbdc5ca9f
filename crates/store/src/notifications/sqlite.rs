//! Notifications on SQLite.

use std::path::Path;

use foodlab_domain::OrderId;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Notification;
use crate::StoreError;
use crate::migration::Migration;
use crate::sqlite::{Cached, Db};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "notifications",
    sql: SCHEMA,
}];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    notification_id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id        TEXT NOT NULL UNIQUE,
    customer_id     TEXT,
    message         TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL
);
";

pub(super) fn open(path: &Path) -> Result<Db, StoreError> {
    Db::open(path, "notification", MIGRATIONS)
}

pub(super) fn record(
    conn: &mut Connection,
    order_id: OrderId,
    customer_id: Option<String>,
    message: String,
    now_ms: i64,
) -> Result<(Notification, bool), StoreError> {
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
        .ok_or_else(|| StoreError::Corrupt(format!("notification for {order_id} vanished")))??;
    tx.commit()?;
    Ok((notification, inserted))
}

pub(super) fn record_all(
    conn: &mut Connection,
    notifications: Vec<(OrderId, Option<String>, String)>,
    now_ms: i64,
) -> Result<Vec<bool>, StoreError> {
    let tx = conn.transaction()?;
    let mut fresh = Vec::with_capacity(notifications.len());
    for (order_id, customer_id, message) in notifications {
        let inserted = tx.run(
            "INSERT INTO notifications (order_id, customer_id, message, created_at_ms)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (order_id) DO NOTHING",
            params![order_id.to_string(), customer_id, message, now_ms],
        )?;
        fresh.push(inserted == 1);
    }
    tx.commit()?;
    Ok(fresh)
}

pub(super) fn list(conn: &mut Connection) -> Result<Vec<Notification>, StoreError> {
    let mut statement = conn.prepare(
        "SELECT notification_id, order_id, customer_id, message, created_at_ms
         FROM notifications ORDER BY notification_id",
    )?;
    let rows = statement.query_map([], read_notification)?;
    rows.map(|row| row?).collect()
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
