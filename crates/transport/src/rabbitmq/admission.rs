//! The checks every consumer makes of a delivery first: its shape, its
//! event, and the consumer's injected faults (retried or dead-lettered).

use foodlab_domain::{Arrival, Envelope, EventType};
use lapin::message::Delivery;

use super::{AmqpError, Publisher, ack, retries_of, trace_of};

/// How often a failing delivery is retried before it is dead-lettered.
pub const MAX_RETRIES: u32 = 3;

/// What injected faults did to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    /// No failure injected: handle the delivery.
    Proceed,
    /// Failed and put back for another try.
    Retried,
    /// Failed too often: dead-lettered.
    DeadLettered,
}

impl FaultOutcome {
    /// How the message metrics count it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Proceed => "processed",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// A delivery after the checks every consumer makes first.
#[derive(Debug)]
pub enum Admission {
    /// The expected event and no injected failure: handle it.
    Handle(Envelope),
    /// Already settled: dead-lettered as poison, or retried or dead-lettered
    /// by an injected failure. `outcome` is its metrics label.
    Settled { outcome: &'static str },
}

/// What a delivery's channel says about it: the event its routing key
/// carries (a retried delivery comes back with the queue's name, and the
/// queue carries the `expected` event), and when the broker stamped it.
pub fn arrival(delivery: &Delivery, expected: EventType, queue: &str) -> Arrival {
    let key = delivery.routing_key.as_str();
    let carries = EventType::for_routing_key(key).or((key == queue).then_some(expected));
    let stamped = delivery
        .properties
        .timestamp()
        .and_then(|s| jiff::Timestamp::from_second(i64::try_from(s).ok()?).ok());
    Arrival {
        carries,
        at: Some(stamped.unwrap_or_else(jiff::Timestamp::now)),
    }
}

/// Reads a delivery (any shape the tolerant reader knows), dead-letters it
/// if it is poison or not the `expected` event, and applies the consumer's
/// injected faults. `given_up` is what a valid event given up on (failed too
/// often) still causes, published before the delivery is acked: its order
/// must end somewhere even if the consumer dies at that moment.
pub async fn admit(
    delivery: &Delivery,
    expected: EventType,
    faults: &foodlab_domain::Faults,
    publisher: &Publisher,
    queue: &str,
    given_up: impl FnOnce(&Envelope) -> Option<Envelope>,
) -> Result<Admission, AmqpError> {
    let arrived = arrival(delivery, expected, queue);
    let poison = match Envelope::read(&delivery.data, arrived) {
        Ok(mut envelope) if envelope.event_type() == expected => {
            envelope.trace = trace_of(&delivery.properties);
            let roll = rand::random();
            let faulted = apply_faults(faults, roll, publisher, delivery, queue, || {
                given_up(&envelope)
            })
            .await?;
            if faulted == FaultOutcome::Proceed {
                return Ok(Admission::Handle(envelope));
            }
            tracing::warn!(
                message_id = %envelope.message_id,
                order_id = %envelope.order_id,
                outcome = faulted.label(),
                "injected failure"
            );
            return Ok(Admission::Settled {
                outcome: faulted.label(),
            });
        }
        Ok(other) => format!("expected {expected:?}, got {:?}", other.event_type()),
        Err(poison) => poison.0,
    };
    publisher.reject_poison(delivery, &poison).await?;
    Ok(Admission::Settled {
        outcome: "dead_lettered",
    })
}

/// Applies a consumer's injected faults to a delivery: waits the delay, and
/// on an injected failure retries (up to `MAX_RETRIES`) or dead-letters it
/// and publishes what `given_up` says it still causes, acking the original
/// after either.
pub async fn apply_faults(
    faults: &foodlab_domain::Faults,
    roll: f64,
    publisher: &Publisher,
    delivery: &Delivery,
    queue: &str,
    given_up: impl FnOnce() -> Option<Envelope>,
) -> Result<FaultOutcome, AmqpError> {
    if faults.delay_ms > 0 {
        tokio::time::sleep(faults.delay()).await;
    }
    if faults.decide(roll) == foodlab_domain::FaultDecision::Proceed {
        return Ok(FaultOutcome::Proceed);
    }
    let retries = retries_of(delivery);
    let outcome = if retries < MAX_RETRIES {
        publisher.retry(delivery, queue, retries + 1).await?;
        FaultOutcome::Retried
    } else {
        let reason = format!("injected failure, gave up after {MAX_RETRIES} retries");
        publisher.dead_letter(delivery, &reason).await?;
        if let Some(result) = given_up() {
            publisher.publish(&result).await?;
        }
        FaultOutcome::DeadLettered
    };
    ack(delivery).await?;
    Ok(outcome)
}
