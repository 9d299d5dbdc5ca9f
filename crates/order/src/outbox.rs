//! What the order service does the same over either broker: the outbox
//! relay (the events stored with their orders go to the broker in order,
//! and leave the outbox only once the broker has them; the broker is
//! whatever `publish` sends to; on a shared database each event is claimed
//! by one replica's relay) and recording inventory's decision.

use std::future::Future;
use std::time::Duration;

use foodlab_domain::{Envelope, OrderStatus};
use foodlab_service_kit::{Hop, HopMetrics, MessageMetrics, now_ms};
use foodlab_store::{OrderStore, StoreError};
use tokio::sync::Notify;

/// The relay looks at the outbox at least this often, even without a nudge.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Relays until `publish` or the store fails; a failed batch stays in the
/// outbox for the next session. Each event's dwell in the outbox and the
/// wait for its batch's confirm go to `hops`.
pub async fn relay<E, F, Fut>(
    store: &OrderStore,
    nudge: &Notify,
    hops: &HopMetrics,
    batch: usize,
    store_error: impl Fn(StoreError) -> E,
    mut publish: F,
) -> Result<(), E>
where
    F: FnMut(Vec<Envelope>) -> Fut,
    Fut: Future<Output = Result<Vec<Duration>, E>>,
{
    loop {
        let pending = store
            .claim_events(batch, now_ms())
            .await
            .map_err(&store_error)?;
        if pending.is_empty() {
            tokio::select! {
                () = nudge.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        let (seqs, events): (Vec<i64>, Vec<Envelope>) = pending.into_iter().unzip();
        let count = events.len();
        for event in &events {
            hops.since_stamp(
                Hop::OutboxDwell,
                Some(std::time::SystemTime::from(event.occurred_at)),
            );
        }
        match publish(events).await {
            Ok(confirmed) => {
                for confirmed in confirmed {
                    hops.observe(Hop::PublishConfirm, confirmed);
                }
            }
            Err(error) => {
                // Free for the next attempt at once, here or on another replica.
                if let Err(release) = store.release_events(&seqs).await {
                    tracing::warn!(error = %release, "unpublished outbox events not released; their claim lapses");
                }
                return Err(error);
            }
        }
        hops.time(Hop::StoreCommit, store.mark_published(&seqs))
            .await
            .map_err(&store_error)?;
        tracing::debug!(count, "outbox events handed to the broker");
    }
}

/// Records inventory's decision on its order (only an order still `placed`
/// changes, so a redelivered result is a harmless duplicate).
pub async fn settle(
    store: &OrderStore,
    metrics: &MessageMetrics,
    hops: &HopMetrics,
    source: &str,
    envelope: &Envelope,
    (status, reason): (OrderStatus, Option<String>),
) -> Result<(), StoreError> {
    let applied = hops
        .time(
            Hop::StoreCommit,
            store.settle(envelope.order_id, status, reason, now_ms()),
        )
        .await?;
    metrics.count(source, if applied { "processed" } else { "duplicate" });
    tracing::info!(
        message_id = %envelope.message_id,
        order_id = %envelope.order_id,
        correlation_id = %envelope.correlation_id,
        %status,
        duplicate = !applied,
        "order settled"
    );
    Ok(())
}
