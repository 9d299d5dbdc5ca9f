//! The exchanges and queues, their names (each configurable, the seeds'
//! by default) and their declaration.

use foodlab_domain::EventType;
use lapin::Channel;
use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::AmqpError;

/// Names of the exchanges and queues (every one configurable).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Topology {
    /// Topic exchange the workflow's events are published to.
    #[arg(long, env = "FOODLAB_AMQP_EXCHANGE", default_value = Topology::EXCHANGE)]
    pub exchange: String,
    /// Exchange that dead letters go to.
    #[arg(
        long,
        env = "FOODLAB_AMQP_DEAD_LETTER_EXCHANGE",
        default_value = Topology::DEAD_LETTER_EXCHANGE
    )]
    pub dead_letter_exchange: String,
    /// Queue of OrderPlaced, consumed by inventory.
    #[arg(
        long,
        env = "FOODLAB_AMQP_INVENTORY_QUEUE",
        default_value = Topology::INVENTORY_QUEUE
    )]
    pub inventory_queue: String,
    /// Queue of InventoryReserved, consumed by notification.
    #[arg(
        long,
        env = "FOODLAB_AMQP_NOTIFICATION_QUEUE",
        default_value = Topology::NOTIFICATION_QUEUE
    )]
    pub notification_queue: String,
    /// Queue of InventoryReserved/Failed, consumed by order.
    #[arg(
        long,
        env = "FOODLAB_AMQP_ORDER_STATUS_QUEUE",
        default_value = Topology::ORDER_STATUS_QUEUE
    )]
    pub order_status_queue: String,
    /// Queue of dead letters.
    #[arg(
        long,
        env = "FOODLAB_AMQP_DEAD_LETTER_QUEUE",
        default_value = Topology::DEAD_LETTER_QUEUE
    )]
    pub dead_letter_queue: String,
    /// Type of the four queues: classic (one node's), or quorum (replicated
    /// over a cluster's nodes, with at-least-once dead lettering). A queue
    /// keeps the type it was declared with: switching needs it deleted.
    #[arg(
        long,
        env = "FOODLAB_AMQP_QUEUE_TYPE",
        value_enum,
        default_value_t = QueueType::Classic
    )]
    pub queue_type: QueueType,
}

/// How the queues are kept on the broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

impl QueueType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            exchange: Topology::EXCHANGE.into(),
            dead_letter_exchange: Topology::DEAD_LETTER_EXCHANGE.into(),
            inventory_queue: Topology::INVENTORY_QUEUE.into(),
            notification_queue: Topology::NOTIFICATION_QUEUE.into(),
            order_status_queue: Topology::ORDER_STATUS_QUEUE.into(),
            dead_letter_queue: Topology::DEAD_LETTER_QUEUE.into(),
            queue_type: QueueType::Classic,
        }
    }
}

impl Topology {
    // The names a part uses unless told otherwise (the seeds' names).
    pub const EXCHANGE: &str = "orders_exchange";
    pub const DEAD_LETTER_EXCHANGE: &str = "orders_dlx";
    pub const INVENTORY_QUEUE: &str = "inventory_queue";
    pub const NOTIFICATION_QUEUE: &str = "notification_queue";
    pub const ORDER_STATUS_QUEUE: &str = "order_status_queue";
    pub const DEAD_LETTER_QUEUE: &str = "dlq_queue";

    /// Declares everything; safe to repeat (same arguments each time).
    pub async fn declare(&self, channel: &Channel) -> Result<(), AmqpError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        self.queue(
            channel,
            &self.dead_letter_queue,
            self.dead_letter_queue_arguments(),
        )
        .await?;
        channel
            .queue_bind(
                self.dead_letter_queue.as_str().into(),
                self.dead_letter_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let dead_lettered = self.work_queue_arguments();
        let bindings = [
            (&self.inventory_queue, &[EventType::OrderPlaced][..]),
            (
                &self.notification_queue,
                &[EventType::InventoryReserved][..],
            ),
            (
                &self.order_status_queue,
                &[EventType::InventoryReserved, EventType::InventoryFailed][..],
            ),
        ];
        for (queue, events) in bindings {
            self.queue(channel, queue, dead_lettered.clone()).await?;
            for event in events {
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        self.exchange.as_str().into(),
                        event.routing_key().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// The dead-letter queue's arguments.
    pub fn dead_letter_queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            arguments.insert("x-queue-type".into(), long_string("quorum"));
        }
        arguments
    }

    /// The arguments of the queues the services consume: what the broker
    /// rejects goes to the dead-letter exchange. On quorum queues it is dead
    /// lettered at least once (the queue keeps a message until the dead-letter
    /// queue has confirmed it), which RabbitMQ allows only when a full queue
    /// refuses new messages instead of dropping its oldest.
    pub fn work_queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.dead_letter_exchange),
        );
        if self.queue_type == QueueType::Quorum {
            arguments.insert("x-queue-type".into(), long_string("quorum"));
            arguments.insert(
                "x-dead-letter-strategy".into(),
                long_string("at-least-once"),
            );
            arguments.insert("x-overflow".into(), long_string("reject-publish"));
        }
        arguments
    }

    async fn queue(
        &self,
        channel: &Channel,
        name: &str,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        channel
            .queue_declare(name.into(), QueueDeclareOptions::durable(), arguments)
            .await?;
        Ok(())
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(arguments: &FieldTable) -> Vec<(String, String)> {
        arguments
            .inner()
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    AMQPValue::LongString(s) => s.to_string(),
                    other => format!("{other:?}"),
                };
                (key.to_string(), value)
            })
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn classic_queues_by_default_with_only_their_dead_letter_exchange() {
        let topology = Topology::default();
        assert_eq!(topology.queue_type, QueueType::Classic);
        assert!(strings(&topology.dead_letter_queue_arguments()).is_empty());
        assert_eq!(
            strings(&topology.work_queue_arguments()),
            pairs(&[("x-dead-letter-exchange", Topology::DEAD_LETTER_EXCHANGE)])
        );
    }

    #[test]
    fn quorum_queues_dead_letter_at_least_once_and_refuse_when_full() {
        let topology = Topology {
            queue_type: QueueType::Quorum,
            ..Topology::default()
        };
        assert_eq!(
            strings(&topology.dead_letter_queue_arguments()),
            pairs(&[("x-queue-type", "quorum")])
        );
        let mut work = strings(&topology.work_queue_arguments());
        work.sort();
        assert_eq!(
            work,
            pairs(&[
                ("x-dead-letter-exchange", Topology::DEAD_LETTER_EXCHANGE),
                ("x-dead-letter-strategy", "at-least-once"),
                ("x-overflow", "reject-publish"),
                ("x-queue-type", "quorum"),
            ])
        );
    }

    #[test]
    fn the_queue_type_is_a_flag_refusing_other_types() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            topology: Topology,
        }
        let parsed = Args::try_parse_from(["service", "--queue-type", "quorum"]).unwrap();
        assert_eq!(parsed.topology.queue_type, QueueType::Quorum);
        assert!(Args::try_parse_from(["service", "--queue-type", "stream"]).is_err());
    }
}
