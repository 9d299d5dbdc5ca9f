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
    /// The expected event, failed too often by injected faults and
    /// dead-lettered, but not acked: its order still needs an end, which the
    /// consumer records (and publishes) like a decision before it acks the
    /// delivery, so a crash in between comes back to the same end.
    GivenUp(Envelope),
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
/// injected faults.
pub async fn admit(
    delivery: &Delivery,
    expected: EventType,
    faults: &foodlab_domain::Faults,
    publisher: &Publisher,
    queue: &str,
) -> Result<Admission, AmqpError> {
    let arrived = arrival(delivery, expected, queue);
    let poison = match Envelope::read(&delivery.data, arrived) {
        Ok(mut envelope) if envelope.event_type() == expected => {
            envelope.trace = trace_of(&delivery.properties);
            let faulted = apply_faults(faults, rand::random(), publisher, delivery, queue).await?;
            if faulted == FaultOutcome::Proceed {
                return Ok(Admission::Handle(envelope));
            }
            tracing::warn!(
                message_id = %envelope.message_id,
                order_id = %envelope.order_id,
                outcome = faulted.label(),
                "injected failure"
            );
            if faulted == FaultOutcome::DeadLettered {
                return Ok(Admission::GivenUp(envelope));
            }
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
/// on an injected failure retries it (up to `MAX_RETRIES`; the original is
/// acked) or dead-letters it (the original is left for the caller to ack
/// once the order's end is recorded).
pub async fn apply_faults(
    faults: &foodlab_domain::Faults,
    roll: f64,
    publisher: &Publisher,
    delivery: &Delivery,
    queue: &str,
) -> Result<FaultOutcome, AmqpError> {
    if faults.delay_ms > 0 {
        tokio::time::sleep(faults.delay()).await;
    }
    if faults.decide(roll) == foodlab_domain::FaultDecision::Proceed {
        return Ok(FaultOutcome::Proceed);
    }
    let retries = retries_of(delivery);
    if retries < MAX_RETRIES {
        publisher.retry(delivery, queue, retries + 1).await?;
        ack(delivery).await?;
        return Ok(FaultOutcome::Retried);
    }
    let reason = format!("injected failure, gave up after {MAX_RETRIES} retries");
    publisher.dead_letter(delivery, &reason).await?;
    Ok(FaultOutcome::DeadLettered)
}
