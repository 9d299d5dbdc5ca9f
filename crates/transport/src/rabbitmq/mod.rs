//! RabbitMQ: topology, a confirming publisher, dead-lettering with a reason,
//! and a session loop that reconnects with backoff.
//!
//! - `topology`: the exchanges and queues, their names and declaration
//! - `publisher`: persistent messages with confirms; acks once confirmed
//! - `headers`: retries, dead-letter reason, trace context, send time
//! - `session`: a session on every fresh connection; consuming
//! - `admission`: what every consumer checks of a delivery first

mod admission;
mod headers;
mod publisher;
mod session;
mod topology;

pub use admission::*;
pub use headers::{reason_of, retries_of, sent_at, trace_of};
pub use publisher::*;
pub use session::*;
pub use topology::{QueueType, Topology};

/// Header carrying why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-foodlab-reason";
/// Header counting how often a message was retried after a failure.
pub const RETRIES_HEADER: &str = "x-foodlab-retries";

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("AMQP: {0}")]
    Lapin(#[from] lapin::Error),
    #[error("the broker refused message {0} (nack)")]
    Nacked(String),
    #[error("the consumer of {0} was cancelled or its connection closed")]
    ConsumerEnded(String),
    #[error("{0}")]
    Handler(String),
    #[error("no RabbitMQ node answered: {0}")]
    Unreachable(String),
    #[error("a delivery could not be settled: its channel is closed")]
    NotSettled,
}

/// Settings of a service's RabbitMQ connection.
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// RabbitMQ URL; the nodes of a cluster separated by commas (tried in
    /// turn, and again when the node connected to is lost).
    #[arg(
        long,
        env = "FOODLAB_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Unacknowledged deliveries a consumer may hold.
    #[arg(long, env = "FOODLAB_AMQP_PREFETCH", default_value_t = 100)]
    pub prefetch: u16,
    #[command(flatten)]
    pub topology: Topology,
}
