//! How FoodLab services talk to each other.
//!
//! - `errors`: what the services see of their broker going wrong, counted.
//! - `http`: the pooled client of the synchronous part, with a timeout per
//!   call and failures sorted into the classes callers map to 502/503/504.
//! - `rabbitmq`: RabbitMQ topology, confirming publisher, dead-lettering, and a
//!   reconnecting session loop.
//! - `kafka`: topics, an idempotent producer keyed by order id, consumers that
//!   commit only processed offsets, and consumer lag.
//! - `sent_at`: when a message was handed to its broker (a header on both).
//! - `trace`: the log span of one hop of a trace (`traceparent` travels in
//!   each transport's headers).

pub mod errors;
pub mod http;
pub mod kafka;
pub mod rabbitmq;
pub mod sent_at;
pub mod trace;

pub use errors::{BrokerErrors, Role};
pub use http::{CallError, HttpClient};
