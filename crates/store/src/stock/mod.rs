//! The inventory service's stock and reservations.
//!
//! A reservation is decided and written in one transaction with the stock
//! it takes, and the reservation row is keyed by order id, which makes
//! reserving the same order twice a replay. A message's id is recorded in
//! the same transaction, so a redelivered or duplicated message is a replay
//! too. Stock never goes below zero (a CHECK constraint backs that up).

mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use foodlab_domain::api::Decisions;
use foodlab_domain::{Catalogue, ItemName, OrderId, OrderLine, ReservationError, plan_reservation};
use serde::Serialize;

use crate::{Database, StoreError};

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

/// An order that arrived as a message, for `StockStore::decide_messages`.
#[derive(Debug, Clone)]
pub struct OrderMessage {
    pub message_id: String,
    pub order_id: OrderId,
    pub lines: Vec<OrderLine>,
    /// Refuse it for this reason without looking at the stock (an injected
    /// failure), unless it was decided before (`reject_message`).
    pub rejection: Option<String>,
    pub now_ms: i64,
}

/// What one request asks of the stock.
struct Request {
    message_id: Option<String>,
    order_id: OrderId,
    lines: Vec<OrderLine>,
    /// Refuse it for this reason without looking at the stock.
    rejection: Option<String>,
    now_ms: i64,
}

impl Request {
    /// The decision on this request given the stock of the items it names
    /// (items absent from `stock` are unknown), and the levels to write.
    fn decide(
        &self,
        stock: &BTreeMap<ItemName, u64>,
    ) -> (Outcome, Option<String>, BTreeMap<ItemName, u64>) {
        if let Some(reason) = &self.rejection {
            return (Outcome::Rejected, Some(reason.clone()), BTreeMap::new());
        }
        match plan_reservation(stock, &self.lines) {
            Ok(levels) => (Outcome::Reserved, None, levels),
            Err(e @ ReservationError::OutOfStock { .. }) => {
                (Outcome::OutOfStock, Some(e.to_string()), BTreeMap::new())
            }
            Err(e @ ReservationError::UnknownItem(_)) => {
                (Outcome::UnknownItem, Some(e.to_string()), BTreeMap::new())
            }
        }
    }

    fn reservation(&self, outcome: Outcome, reason: Option<String>) -> Reservation {
        Reservation {
            order_id: self.order_id,
            items: self.lines.clone(),
            outcome,
            reason,
            created_at_ms: self.now_ms,
        }
    }
}

fn units(lines: &[OrderLine]) -> u64 {
    lines.iter().map(|l| u64::from(l.quantity)).sum()
}

#[derive(Clone)]
enum Backend {
    Sqlite(crate::sqlite::Db),
    Postgres(deadpool_postgres::Pool),
}

#[derive(Clone)]
pub struct StockStore {
    backend: Backend,
}

impl StockStore {
    /// Opens the inventory database; items of `catalogue` not yet stocked are
    /// added with their initial stock (existing levels are kept across
    /// restarts, and on a shared database across replicas).
    pub async fn open(database: &Database, catalogue: &Catalogue) -> Result<Self, StoreError> {
        let backend = match database {
            Database::Sqlite(path) => Backend::Sqlite(sqlite::open(path, catalogue)?),
            Database::Postgres(url) => Backend::Postgres(postgres::open(url, catalogue).await?),
        };
        Ok(Self { backend })
    }

    /// Reserves every line of an order, or nothing. Deciding the same order
    /// again returns the first decision with `replayed: true`.
    pub async fn reserve(
        &self,
        order_id: OrderId,
        lines: Vec<OrderLine>,
        now_ms: i64,
    ) -> Result<ReserveResult, StoreError> {
        self.decide(Request {
            message_id: None,
            order_id,
            lines,
            rejection: None,
            now_ms,
        })
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
        self.decide(Request {
            message_id: Some(message_id.to_owned()),
            order_id,
            lines,
            rejection: None,
            now_ms,
        })
        .await
    }

    /// `reserve_message` (or `reject_message`, for an order with a
    /// `rejection`) for each of `orders`, in turn, each on the stock the
    /// ones before it left; one answer per order (a reused message id refuses
    /// its order alone). On SQLite the lot is one transaction, so a batch of
    /// deliveries costs one commit, and an error of the store keeps nothing of
    /// it. On PostgreSQL each order is its own transaction: one for the lot
    /// would hold the stock rows it locks across orders, against the other
    /// replicas' batches.
    pub async fn decide_messages(
        &self,
        orders: Vec<OrderMessage>,
    ) -> Result<Vec<Result<ReserveResult, StoreError>>, StoreError> {
        let requests = orders.into_iter().map(|order| Request {
            message_id: Some(order.message_id),
            order_id: order.order_id,
            lines: order.lines,
            rejection: order.rejection,
            now_ms: order.now_ms,
        });
        match &self.backend {
            Backend::Sqlite(db) => {
                let requests = requests.collect();
                db.call(move |conn| sqlite::decide_all(conn, requests))
                    .await
            }
            Backend::Postgres(pool) => {
                let mut decided = Vec::new();
                for request in requests {
                    match postgres::decide(pool, request).await {
                        Err(reused @ StoreError::MessageIdReused { .. }) => {
                            decided.push(Err(reused));
                        }
                        other => decided.push(Ok(other?)),
                    }
                }
                Ok(decided)
            }
        }
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
        self.decide(Request {
            message_id: Some(message_id.to_owned()),
            order_id,
            lines,
            rejection: Some(reason),
            now_ms,
        })
        .await
    }

    async fn decide(&self, request: Request) -> Result<ReserveResult, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(move |conn| sqlite::decide(conn, request)).await,
            Backend::Postgres(pool) => postgres::decide(pool, request).await,
        }
    }

    pub async fn stock(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let stock = match &self.backend {
            Backend::Sqlite(db) => db.call(|conn| sqlite::read_stock(conn)).await?,
            Backend::Postgres(pool) => postgres::stock(pool).await?,
        };
        Ok(stock
            .into_iter()
            .map(|(item, n)| (item.to_string(), n))
            .collect())
    }

    /// Sets the available stock of each item named (adding new items);
    /// items not named keep their level. Returns the whole stock.
    pub async fn set_stock(
        &self,
        levels: BTreeMap<ItemName, u64>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let stock = match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |conn| sqlite::set_stock(conn, &levels))
                    .await?
            }
            Backend::Postgres(pool) => postgres::set_stock(pool, &levels).await?,
        };
        Ok(stock
            .into_iter()
            .map(|(item, n)| (item.to_string(), n))
            .collect())
    }

    pub async fn reservation(&self, order_id: OrderId) -> Result<Option<Reservation>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |conn| sqlite::read_reservation(conn, order_id))
                    .await
            }
            Backend::Postgres(pool) => postgres::reservation(pool, order_id).await,
        }
    }

    pub async fn stats(&self) -> Result<Decisions, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::stats).await,
            Backend::Postgres(pool) => postgres::stats(pool).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::on_both_backends;

    fn line(item: &str, quantity: u32) -> OrderLine {
        OrderLine {
            item: ItemName::parse(item).unwrap(),
            quantity,
        }
    }

    async fn open(db: &Database, spec: &str) -> StockStore {
        StockStore::open(db, &Catalogue::with_overrides(spec).unwrap())
            .await
            .unwrap()
    }

    async fn outcomes(tasks: Vec<tokio::task::JoinHandle<ReserveResult>>) -> Vec<ReserveResult> {
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    }

    on_both_backends! { "inventory.db";
        async fn reserving_decrements_all_lines_or_nothing(db: Database) {
            let store = open(&db, "burger=5,pizza=1").await;
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
                Decisions {
                    reserved_orders: 1,
                    out_of_stock_orders: 1,
                    unknown_item_orders: 1,
                    rejected_orders: 0,
                    units_reserved: 3,
                }
            );
        }

        async fn a_rejected_message_keeps_its_stock_and_stays_rejected_when_redelivered(db: Database) {
            let store = open(&db, "").await;
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

        async fn the_same_order_is_reserved_once(db: Database) {
            let store = open(&db, "").await;
            let id = OrderId::new();
            let first = store.reserve(id, vec![line("burger", 4)], 1).await.unwrap();
            let again = store.reserve(id, vec![line("burger", 4)], 2).await.unwrap();
            assert!(!first.replayed);
            assert!(again.replayed);
            assert_eq!(again.reservation, first.reservation);
            assert_eq!(store.stock().await.unwrap()["burger"], 96);
        }

        async fn a_message_is_processed_once_by_message_id_or_order_id(db: Database) {
            let store = open(&db, "").await;
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

        async fn a_batch_decides_each_order_in_turn_and_refuses_a_reused_id_alone(db: Database) {
            let store = open(&db, "burger=5").await;
            let (a, b, c, reused) = (OrderId::new(), OrderId::new(), OrderId::new(), OrderId::new());
            let message = |id: &str, order: OrderId, quantity: u32| OrderMessage {
                message_id: id.into(),
                order_id: order,
                lines: vec![line("burger", quantity)],
                rejection: None,
                now_ms: 1,
            };
            let decided = store
                .decide_messages(vec![
                    message("m-a", a, 3),
                    // Only 2 left after the first: out of stock.
                    message("m-b", b, 3),
                    message("m-c", c, 2),
                    // A duplicate of the first in the same batch: replayed.
                    message("m-a2", a, 3),
                    // The first's id on another order: refused, nothing written.
                    message("m-a", reused, 1),
                ])
                .await
                .unwrap();
            let outcomes: Vec<_> = decided
                .iter()
                .map(|d| d.as_ref().map(|r| (r.reservation.outcome, r.replayed)))
                .collect();
            assert!(matches!(
                outcomes[..],
                [
                    Ok((Outcome::Reserved, false)),
                    Ok((Outcome::OutOfStock, false)),
                    Ok((Outcome::Reserved, false)),
                    Ok((Outcome::Reserved, true)),
                    Err(StoreError::MessageIdReused { .. }),
                ]
            ), "{outcomes:?}");
            assert_eq!(store.stock().await.unwrap()["burger"], 0);
            assert_eq!(store.reservation(reused).await.unwrap(), None);
            // The whole batch again (a redelivery): every answer replayed, no stock taken.
            let again = store
                .decide_messages(vec![message("m-a", a, 3), message("m-b", b, 3), message("m-c", c, 2)])
                .await
                .unwrap();
            assert!(again.iter().all(|d| d.as_ref().is_ok_and(|r| r.replayed)), "{again:?}");
            assert_eq!(store.stats().await.unwrap().reserved_orders, 2);
            assert_eq!(store.stats().await.unwrap().units_reserved, 5);
        }

        async fn stock_and_reservations_survive_a_restart_and_are_not_reseeded(db: Database) {
            let id = OrderId::new();
            {
                let store = open(&db, "burger=10").await;
                store.reserve(id, vec![line("burger", 7)], 1).await.unwrap();
            }
            let store = open(&db, "burger=10").await;
            assert_eq!(store.stock().await.unwrap()["burger"], 3);
            let replay = store.reserve(id, vec![line("burger", 7)], 2).await.unwrap();
            assert!(replay.replayed);
            assert_eq!(store.stock().await.unwrap()["burger"], 3);
            assert_eq!(
                store.reservation(id).await.unwrap().map(|r| r.outcome),
                Some(Outcome::Reserved)
            );
        }

        async fn concurrent_orders_never_oversell(db: Database) {
            let store = open(&db, "burger=10").await;
            // A second store on the same database, as a second replica would have.
            let other = open(&db, "burger=10").await;
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let store = if i % 2 == 0 { store.clone() } else { other.clone() };
                    tokio::spawn(async move {
                        store
                            .reserve(OrderId::new(), vec![line("burger", 1)], i)
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let reserved = outcomes(tasks)
                .await
                .iter()
                .filter(|r| r.reservation.outcome == Outcome::Reserved)
                .count();
            assert_eq!(reserved, 10);
            assert_eq!(store.stock().await.unwrap()["burger"], 0);
            assert_eq!(other.stats().await.unwrap().units_reserved, 10);
        }

        async fn two_replicas_reserving_the_last_unit_at_once_one_wins(db: Database) {
            let first = open(&db, "burger=1").await;
            let second = open(&db, "burger=1").await;
            for round in 0..20 {
                first.set_stock(BTreeMap::from([(ItemName::parse("burger").unwrap(), 1)])).await.unwrap();
                let tasks = [first.clone(), second.clone()]
                    .into_iter()
                    .map(|store| {
                        tokio::spawn(async move {
                            store.reserve(OrderId::new(), vec![line("burger", 1)], round).await.unwrap()
                        })
                    })
                    .collect();
                let results = outcomes(tasks).await;
                let won = results.iter().filter(|r| r.reservation.outcome == Outcome::Reserved).count();
                let lost = results.iter().filter(|r| r.reservation.outcome == Outcome::OutOfStock).count();
                assert_eq!((won, lost), (1, 1), "round {round}: {results:?}");
                assert_eq!(second.stock().await.unwrap()["burger"], 0);
            }
        }

        async fn the_same_message_on_two_replicas_at_once_reserves_once(db: Database) {
            let first = open(&db, "burger=1000").await;
            let second = open(&db, "burger=1000").await;
            let mut tasks = Vec::new();
            let orders: Vec<OrderId> = (0..40).map(|_| OrderId::new()).collect();
            for (n, order) in orders.iter().enumerate() {
                // Each message delivered to both replicas (a redelivery after a
                // rebalance), and a duplicate publish of it under another id.
                for (store, message_id) in [
                    (first.clone(), format!("m-{n}")),
                    (second.clone(), format!("m-{n}")),
                    (second.clone(), format!("dup-{n}")),
                ] {
                    let order = *order;
                    tasks.push(tokio::spawn(async move {
                        store
                            .reserve_message(&message_id, order, vec![line("burger", 3)], 1)
                            .await
                            .unwrap()
                    }));
                }
            }
            let results = outcomes(tasks).await;
            let fresh = results.iter().filter(|r| !r.replayed).count();
            assert_eq!(fresh, orders.len(), "one decision per order");
            assert!(results.iter().all(|r| r.reservation.outcome == Outcome::Reserved));
            assert_eq!(first.stock().await.unwrap()["burger"], 1000 - 3 * 40);
            let stats = second.stats().await.unwrap();
            assert_eq!((stats.reserved_orders, stats.units_reserved), (40, 120));
        }
    }
}
