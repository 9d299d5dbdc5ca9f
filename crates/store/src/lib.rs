//! SQLite persistence, one database file per service.
//!
//! Every store runs its statements on a blocking thread so the async services
//! never stall on disk I/O. Files use WAL with `synchronous=NORMAL`: a commit
//! survives a crash of the service; a power cut may lose the last commits.

mod db;
pub mod notifications;
pub mod orders;
pub mod stock;

pub use db::{Db, StoreError};
pub use notifications::{Notification, NotificationStore};
pub use orders::{OrderCounts, OrderPage, OrderStore};
pub use stock::{Outcome, Reservation, ReserveResult, StockStats, StockStore};
