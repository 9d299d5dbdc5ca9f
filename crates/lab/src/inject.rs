//! Messages a lab publishes straight to the broker: duplicated orders and poison.

use foodlab_domain::{Envelope, Event, ItemName, OrderId, OrderLine};
use foodlab_transport::rabbitmq::{self, AmqpError, Publisher, Topology};
use lapin::BasicProperties;

use crate::spec::Inject;

/// Malformed messages, in turn: each is poison for a different reason.
pub fn poison_bodies(count: u32) -> Vec<Vec<u8>> {
    let order_id = OrderId::new();
    let samples: [Vec<u8>; 4] = [
        b"this is not JSON".to_vec(),
        serde_json::json!({"type": "OrderPlaced", "payload": {"items": [{"item": "burger", "quantity": 1}]}})
            .to_string()
            .into_bytes(),
        serde_json::json!({
            "message_id": uuid::Uuid::new_v4(), "type": "OrderPlaced", "order_id": order_id,
            "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "poison",
            "payload": {"items": [{"item": "burger", "quantity": -3}]}
        })
        .to_string()
        .into_bytes(),
        serde_json::json!({
            "message_id": uuid::Uuid::new_v4(), "type": "OrderCooked", "order_id": order_id,
            "occurred_at": "2026-01-01T00:00:00Z", "correlation_id": "poison", "payload": {}
        })
        .to_string()
        .into_bytes(),
    ];
    (0..count as usize)
        .map(|i| samples[i % samples.len()].clone())
        .collect()
}

/// Publishes the lab's injections; returns the ids of the duplicated orders.
pub async fn publish(
    amqp_url: &str,
    inject: &Inject,
    item: &str,
    quantity: u32,
) -> Result<Vec<OrderId>, AmqpError> {
    let connection = rabbitmq::connect(amqp_url, "foodlab-lab").await?;
    let publisher = Publisher::new(&connection, Topology::default()).await?;
    let routing_key = foodlab_domain::EventType::OrderPlaced.routing_key();
    let item = ItemName::parse(item)
        .ok_or_else(|| AmqpError::Handler(format!("invalid item `{item}`")))?;
    let mut duplicated = Vec::new();
    for _ in 0..inject.duplicate_orders {
        let order_id = OrderId::new();
        let envelope = Envelope::new(
            order_id,
            format!("lab-duplicate-{order_id}"),
            jiff::Timestamp::now(),
            Event::OrderPlaced {
                customer_id: Some("lab".into()),
                items: vec![OrderLine {
                    item: item.clone(),
                    quantity,
                }],
            },
        );
        for _ in 0..inject.copies.max(1) {
            publisher.publish(&envelope).await?;
        }
        duplicated.push(order_id);
    }
    for body in poison_bodies(inject.poison_messages) {
        let properties =
            BasicProperties::default().with_message_id(uuid::Uuid::new_v4().to_string().into());
        publisher
            .publish_raw(routing_key, &body, properties)
            .await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(duplicated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_poison_body_is_poison() {
        let bodies = poison_bodies(8);
        assert_eq!(bodies.len(), 8);
        for body in &bodies[..4] {
            let parsed = Envelope::parse(body);
            assert!(parsed.is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
