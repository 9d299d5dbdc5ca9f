//! The order service's orders and its outbox.
//!
//! An order and the event announcing it are stored in one transaction (the
//! outbox): there is never an order without its event or the reverse. The
//! relay claims events, hands them to the broker, and deletes them once
//! confirmed; on a shared database each event is claimed by one relay at a
//! time, and a claim of a relay that died lapses so another publishes it.
//!
//! Every change of an order takes the next number of one change sequence
//! (`placed_seq` when placed, `change_seq` for its latest change), and
//! changes commit in sequence order, so a reader that follows the sequence
//! (a lab settling) never skips one.

mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use foodlab_domain::api::OrderPage;
use foodlab_domain::{Envelope, Order, OrderId, OrderStatus};

use crate::{Database, StoreError};

/// The most orders one page holds.
pub const MAX_PAGE: u32 = 1000;

/// How long a relay's claim on outbox events holds before another relay may
/// take them (a relay that died mid-publish).
pub const CLAIM_LEASE_MS: i64 = 10_000;

/// Orders by status, and the cursor when they were counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCounts {
    pub by_status: BTreeMap<String, u64>,
    pub cursor: i64,
}

/// The columns an order is read from, in `read_order`'s order; a macro so
/// each statement is one `concat!`ed constant, not built per call.
macro_rules! order_columns {
    () => {
        "order_id, customer_id, items, status, reason, created_at_ms, updated_at_ms"
    };
}
pub(crate) use order_columns;

/// Which sequence a page follows.
#[derive(Debug, Clone, Copy)]
enum Sequence {
    Placed,
    Changed,
}

#[derive(Clone)]
enum Backend {
    Sqlite(crate::sqlite::Db),
    Postgres(deadpool_postgres::Pool),
}

#[derive(Clone)]
pub struct OrderStore {
    backend: Backend,
}

impl OrderStore {
    pub async fn open(database: &Database) -> Result<Self, StoreError> {
        let backend = match database {
            Database::Sqlite(path) => Backend::Sqlite(sqlite::open(path)?),
            Database::Postgres(url) => Backend::Postgres(postgres::open(url).await?),
        };
        Ok(Self { backend })
    }

    pub async fn insert(&self, order: Order) -> Result<(), StoreError> {
        self.store(vec![(order, None)]).await
    }

    /// Stores an order and the event announcing it in one transaction.
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
        self.store(
            placed
                .into_iter()
                .map(|(order, event)| (order, Some(event)))
                .collect(),
        )
        .await
    }

    async fn store(&self, placed: Vec<(Order, Option<Envelope>)>) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(move |conn| sqlite::store(conn, &placed)).await,
            Backend::Postgres(pool) => postgres::store(pool, &placed).await,
        }
    }

    /// Claims up to `limit` events not yet confirmed by the broker, oldest
    /// first, with their positions: no other relay is given them until they
    /// are published, released, or the claim's lease (`CLAIM_LEASE_MS`) ends.
    /// `in_flight` are the caller's own claims still unconfirmed, never given
    /// again (a confirm may take longer than the lease).
    pub async fn claim_events(
        &self,
        limit: usize,
        now_ms: i64,
        in_flight: &[i64],
    ) -> Result<Vec<(i64, Envelope)>, StoreError> {
        match &self.backend {
            // One relay per file, claiming in order: what it has in flight is
            // everything up to its last claim that is still in the outbox.
            Backend::Sqlite(db) => {
                let after = in_flight.iter().copied().max().unwrap_or(i64::MIN);
                db.call(move |conn| sqlite::pending(conn, limit, after))
                    .await
            }
            Backend::Postgres(pool) => postgres::claim(pool, limit, now_ms, in_flight).await,
        }
    }

    /// Forgets events the broker has confirmed.
    pub async fn mark_published(&self, seqs: &[i64]) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => {
                let seqs = seqs.to_vec();
                db.call(move |conn| sqlite::forget(conn, &seqs)).await
            }
            Backend::Postgres(pool) => postgres::forget(pool, seqs).await,
        }
    }

    /// Gives back claimed events that were not published (the broker
    /// refused them), for the next attempt of any relay.
    pub async fn release_events(&self, seqs: &[i64]) -> Result<(), StoreError> {
        match &self.backend {
            // One relay per file: a claim there is only a read.
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(pool) => postgres::release(pool, seqs).await,
        }
    }

    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::pending_count).await,
            Backend::Postgres(pool) => postgres::pending_count(pool).await,
        }
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
        let change = Change {
            id,
            status,
            reason,
            now_ms,
            only_if_placed: true,
        };
        Ok(self.change(change).await?.is_some())
    }

    /// `settle` for each of `outcomes` (order, status, reason): whether each
    /// applied. On SQLite the lot is one transaction, so a batch of
    /// deliveries costs one commit; on PostgreSQL each is its own (one for
    /// the lot would hold its rows' locks across orders, against the other
    /// replicas' batches).
    pub async fn settle_all(
        &self,
        outcomes: Vec<(OrderId, OrderStatus, Option<String>)>,
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let changes = outcomes.into_iter().map(|(id, status, reason)| Change {
            id,
            status,
            reason,
            now_ms,
            only_if_placed: true,
        });
        match &self.backend {
            Backend::Sqlite(db) => {
                let changes: Vec<Change> = changes.collect();
                db.call(move |conn| sqlite::change_all(conn, &changes))
                    .await
            }
            Backend::Postgres(pool) => {
                let mut applied = Vec::new();
                for change in changes {
                    applied.push(postgres::change(pool, &change).await?.is_some());
                }
                Ok(applied)
            }
        }
    }

    /// Moves an order to `status`; returns the updated order, or `None` if unknown.
    pub async fn set_status(
        &self,
        id: OrderId,
        status: OrderStatus,
        reason: Option<String>,
        now_ms: i64,
    ) -> Result<Option<Order>, StoreError> {
        let change = Change {
            id,
            status,
            reason,
            now_ms,
            only_if_placed: false,
        };
        self.change(change).await
    }

    async fn change(&self, change: Change) -> Result<Option<Order>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(move |conn| sqlite::change(conn, &change)).await,
            Backend::Postgres(pool) => postgres::change(pool, &change).await,
        }
    }

    pub async fn get(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(move |conn| sqlite::get(conn, id)).await,
            Backend::Postgres(pool) => postgres::get(pool, id).await,
        }
    }

    /// Every order, in placement order: on SQLite a long read, off the
    /// connection the service writes with.
    pub async fn list(&self) -> Result<Vec<Order>, StoreError> {
        let all = match &self.backend {
            Backend::Sqlite(db) => {
                db.read(|conn| sqlite::read_after(conn, Sequence::Placed, 0, u32::MAX))
                    .await?
            }
            Backend::Postgres(pool) => {
                postgres::read_after(pool, Sequence::Placed, 0, u32::MAX).await?
            }
        };
        Ok(all.into_iter().map(|(_, order)| order).collect())
    }

    /// How many orders are in each status.
    pub async fn count_by_status(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self.counts_placed_after(0).await?.by_status)
    }

    /// The position of the latest change (0 before the first order): orders
    /// placed or changed later have a higher one.
    pub async fn cursor(&self) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(|conn| sqlite::cursor(conn)).await,
            Backend::Postgres(pool) => postgres::cursor(&pool.get().await?).await,
        }
    }

    /// How many of the orders placed after `cursor` are in each status,
    /// and the cursor they were counted at.
    pub async fn counts_placed_after(&self, cursor: i64) -> Result<OrderCounts, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(move |conn| sqlite::counts(conn, cursor)).await,
            Backend::Postgres(pool) => postgres::counts(pool, cursor).await,
        }
    }

    /// Up to `limit` orders placed after `cursor`, in the order they were placed.
    pub async fn page_placed_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let page = self.read_after(Sequence::Placed, cursor, limit).await?;
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
        let limit = limit.clamp(1, MAX_PAGE);
        let page = self.read_after(Sequence::Changed, cursor, limit).await?;
        let next = page.last().map_or(cursor, |(seq, _)| *seq);
        Ok(OrderPage {
            orders: page.into_iter().map(|(_, order)| order).collect(),
            next: Some(next),
        })
    }

    /// Orders whose `sequence` is above `cursor`, ascending, with it.
    async fn read_after(
        &self,
        sequence: Sequence,
        cursor: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Order)>, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |conn| sqlite::read_after(conn, sequence, cursor, limit))
                    .await
            }
            Backend::Postgres(pool) => postgres::read_after(pool, sequence, cursor, limit).await,
        }
    }
}

/// A new status for one order.
struct Change {
    id: OrderId,
    status: OrderStatus,
    reason: Option<String>,
    now_ms: i64,
    /// Only an order still `placed` changes (an outcome heard again is not).
    only_if_placed: bool,
}

#[cfg(test)]
mod tests;
