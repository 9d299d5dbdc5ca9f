//! Persistence of each FoodLab service, on one of two backends behind the
//! same interface:
//!
//! - **SQLite** (the embedded default on one machine): one database file
//!   per service, one connection per process, so one process per file.
//!   Files use WAL with `synchronous=NORMAL`: a commit survives a crash of
//!   the service; a power cut may lose the last commits.
//! - **PostgreSQL** (`postgres://…`): one database shared by every replica of
//!   every service of a part. Exactly once is the database's job there:
//!   unique keys and row locks decide, so any number of replicas can serve
//!   and consume at once.
//!
//! Each store (`OrderStore`, `StockStore`, `NotificationStore`,
//! `AnalyticsStore`) has one module per backend; its `mod.rs` holds the
//! types and dispatches.

pub mod analytics;
mod database;
mod error;
mod migration;
pub mod notifications;
pub mod orders;
mod postgres;
mod sqlite;
pub mod stock;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use analytics::AnalyticsStore;
pub use database::Database;
pub use error::StoreError;
pub use notifications::{Notification, NotificationStore};
pub use orders::{OrderCounts, OrderStore};
pub use stock::{OrderMessage, Outcome, Reservation, ReserveResult, StockStore};
