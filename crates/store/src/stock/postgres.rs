//! The stock on PostgreSQL, shared by every inventory replica. A decision
//! locks the stock rows of its items (in item order, so two orders never
//! wait on each other in a circle) and decides on the locked levels; the
//! unique keys on the message id and the order id decide which of two
//! replicas handling the same order at once makes the decision: the other
//! rolls back and replays it.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Pool};
use foodlab_domain::{Catalogue, ItemName, OrderId};

use foodlab_domain::api::Decisions;

use super::{Outcome, Request, Reservation, ReserveResult, units};
use crate::StoreError;
use crate::error::{count, from_json, to_json};
use crate::migration::Migration;
use crate::postgres::connect;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "stock, reservations and processed messages",
    sql: "
CREATE TABLE stock (
    item      TEXT PRIMARY KEY,
    available BIGINT NOT NULL CHECK (available >= 0)
);
CREATE TABLE processed_messages (
    message_id      TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    processed_at_ms BIGINT NOT NULL
);
CREATE TABLE reservations (
    order_id      TEXT PRIMARY KEY,
    items         TEXT NOT NULL,
    units         BIGINT NOT NULL,
    outcome       TEXT NOT NULL,
    reason        TEXT,
    created_at_ms BIGINT NOT NULL
);
",
}];

pub(super) async fn open(url: &str, catalogue: &Catalogue) -> Result<Pool, StoreError> {
    let pool = connect(url, "inventory", MIGRATIONS).await?;
    let client = pool.get().await?;
    let insert = client
        .prepare_cached(
            "INSERT INTO stock (item, available) VALUES ($1, $2) ON CONFLICT (item) DO NOTHING",
        )
        .await?;
    for (item, available) in catalogue.initial_stock() {
        client
            .execute(&insert, &[&item.as_str(), &level(*available)])
            .await?;
    }
    Ok(pool)
}

fn level(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn decide(pool: &Pool, request: Request) -> Result<ReserveResult, StoreError> {
    let mut client = pool.get().await?;
    // The second round only runs when another replica decided the same order
    // during the first: it then finds that decision and replays it.
    for _ in 0..2 {
        if let Some(result) = try_decide(&mut client, &request).await? {
            return Ok(result);
        }
    }
    Err(StoreError::Corrupt(format!(
        "the decision on order {} was neither made nor found",
        request.order_id
    )))
}

/// One attempt; `None` when another transaction decided the order first.
async fn try_decide(
    client: &mut deadpool_postgres::Object,
    request: &Request,
) -> Result<Option<ReserveResult>, StoreError> {
    let tx = client.transaction().await?;
    let order_id = request.order_id.to_string();
    if let Some(message_id) = &request.message_id {
        // A second transaction with the same message id waits here until the
        // first commits, then finds its row.
        let claim = tx
            .prepare_cached(
                "INSERT INTO processed_messages (message_id, order_id, processed_at_ms)
                 VALUES ($1, $2, $3) ON CONFLICT (message_id) DO NOTHING",
            )
            .await?;
        if tx
            .execute(&claim, &[message_id, &order_id, &request.now_ms])
            .await?
            == 0
        {
            let earlier: String = tx
                .query_one(
                    "SELECT order_id FROM processed_messages WHERE message_id = $1",
                    &[message_id],
                )
                .await?
                .get(0);
            // The same id on another order is a broken producer, not a replay.
            if earlier != order_id {
                return Err(StoreError::MessageIdReused {
                    earlier_order: earlier,
                });
            }
        }
    }
    if let Some(reservation) = read_reservation(&tx, request.order_id).await? {
        tx.commit().await?;
        return Ok(Some(ReserveResult {
            reservation,
            replayed: true,
        }));
    }
    let mut items: Vec<&str> = request.lines.iter().map(|l| l.item.as_str()).collect();
    items.sort_unstable();
    items.dedup();
    let lock = tx
        .prepare_cached(
            "SELECT item, available FROM stock WHERE item = ANY($1) ORDER BY item FOR UPDATE",
        )
        .await?;
    let mut stock = BTreeMap::new();
    for row in tx.query(&lock, &[&items]).await? {
        stock.insert(parse_item(row.get(0))?, count(row.get(1)));
    }
    let (outcome, reason, levels) = request.decide(&stock);
    let update = tx
        .prepare_cached("UPDATE stock SET available = $2 WHERE item = $1")
        .await?;
    for (item, left) in &levels {
        tx.execute(&update, &[&item.as_str(), &level(*left)])
            .await?;
    }
    let units = match outcome {
        Outcome::Reserved => level(units(&request.lines)),
        _ => 0,
    };
    let record = tx
        .prepare_cached(
            "INSERT INTO reservations (order_id, items, units, outcome, reason, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (order_id) DO NOTHING",
        )
        .await?;
    let recorded = tx
        .execute(
            &record,
            &[
                &order_id,
                &to_json(&request.lines)?,
                &units,
                &outcome.as_str(),
                &reason,
                &request.now_ms,
            ],
        )
        .await?;
    if recorded == 0 {
        // Decided meanwhile elsewhere: this attempt's stock changes roll back.
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(ReserveResult {
        reservation: request.reservation(outcome, reason),
        replayed: false,
    }))
}

fn parse_item(name: &str) -> Result<ItemName, StoreError> {
    ItemName::parse(name).ok_or_else(|| StoreError::Corrupt(format!("item name `{name}`")))
}

async fn read_stock(client: &impl GenericClient) -> Result<BTreeMap<ItemName, u64>, StoreError> {
    let all = client
        .prepare_cached("SELECT item, available FROM stock")
        .await?;
    client
        .query(&all, &[])
        .await?
        .iter()
        .map(|row| Ok((parse_item(row.get(0))?, count(row.get(1)))))
        .collect()
}

pub(super) async fn stock(pool: &Pool) -> Result<BTreeMap<ItemName, u64>, StoreError> {
    read_stock(&pool.get().await?).await
}

pub(super) async fn set_stock(
    pool: &Pool,
    levels: &BTreeMap<ItemName, u64>,
) -> Result<BTreeMap<ItemName, u64>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO stock (item, available) VALUES ($1, $2)
             ON CONFLICT (item) DO UPDATE SET available = excluded.available",
        )
        .await?;
    for (item, available) in levels {
        tx.execute(&upsert, &[&item.as_str(), &level(*available)])
            .await?;
    }
    let stock = read_stock(&tx).await?;
    tx.commit().await?;
    Ok(stock)
}

async fn read_reservation(
    client: &impl GenericClient,
    order_id: OrderId,
) -> Result<Option<Reservation>, StoreError> {
    let select = client
        .prepare_cached(
            "SELECT items, outcome, reason, created_at_ms FROM reservations WHERE order_id = $1",
        )
        .await?;
    let Some(row) = client.query_opt(&select, &[&order_id.to_string()]).await? else {
        return Ok(None);
    };
    Ok(Some(Reservation {
        order_id,
        items: from_json(row.get(0))?,
        outcome: Outcome::parse(row.get(1))?,
        reason: row.get(2),
        created_at_ms: row.get(3),
    }))
}

pub(super) async fn reservation(
    pool: &Pool,
    order_id: OrderId,
) -> Result<Option<Reservation>, StoreError> {
    read_reservation(&pool.get().await?, order_id).await
}

pub(super) async fn stats(pool: &Pool) -> Result<Decisions, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT outcome, COUNT(*), COALESCE(SUM(units), 0)::BIGINT
             FROM reservations GROUP BY outcome",
            &[],
        )
        .await?;
    let mut stats = Decisions::default();
    for row in rows {
        let orders = count(row.get(1));
        match Outcome::parse(row.get(0))? {
            Outcome::Reserved => {
                stats.reserved_orders = orders;
                stats.units_reserved = count(row.get(2));
            }
            Outcome::OutOfStock => stats.out_of_stock_orders = orders,
            Outcome::UnknownItem => stats.unknown_item_orders = orders,
            Outcome::Rejected => stats.rejected_orders = orders,
        }
    }
    Ok(stats)
}
