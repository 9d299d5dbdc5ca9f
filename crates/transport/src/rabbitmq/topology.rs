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
        self.queue(channel, &self.dead_letter_queue, FieldTable::default())
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
        let mut dead_lettered = FieldTable::default();
        dead_lettered.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange.as_str().into()),
        );
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
