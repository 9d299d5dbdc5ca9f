//! What the order service does the same over either broker: the outbox
//! relay (the events stored with their orders go to the broker in order,
//! and leave the outbox only once the broker has them; the broker is
//! whatever `publish` sends to; on a shared database each event is claimed
//! by one replica's relay) and recording inventory's decision.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use foodlab_domain::{Envelope, OrderStatus};
use foodlab_service_kit::{Hop, HopMetrics, MessageMetrics, now_ms};
use foodlab_store::{OrderStore, StoreError};
use tokio::sync::Notify;

/// The relay looks at the outbox at least this often, even without a nudge.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Batches sent whose confirms the relay has not had yet: the next batch
/// leaves while the broker confirms the ones before it.
const CONFIRM_WINDOW: usize = 4;

/// Relays until sending, a confirm or the store fails; unconfirmed batches
/// stay in the outbox for the next session. `send` queues a batch's events
/// in order and hands back the wait for their confirms; up to
/// `CONFIRM_WINDOW` batches are unconfirmed at once, and they leave the
/// outbox in the order sent. Each event's dwell in the outbox and the wait
/// for its confirm go to `hops`.
pub async fn relay<E, S, Sent, Confirmed>(
    store: &OrderStore,
    nudge: &Notify,
    hops: &HopMetrics,
    batch: usize,
    store_error: impl Fn(StoreError) -> E,
    mut send: S,
) -> Result<(), E>
where
    S: FnMut(Vec<Envelope>) -> Sent,
    Sent: Future<Output = Result<Confirmed, E>>,
    Confirmed: Future<Output = Result<Vec<Duration>, E>>,
{
    let mut claims = Claims {
        store: store.clone(),
        seqs: Vec::new(),
    };
    let mut unconfirmed: VecDeque<(Vec<i64>, Pin<Box<Confirmed>>)> = VecDeque::new();
    loop {
        if unconfirmed.len() < CONFIRM_WINDOW {
            let pending = store
                .claim_events(batch, now_ms(), &claims.seqs)
                .await
                .map_err(&store_error)?;
            if !pending.is_empty() {
                let (seqs, events): (Vec<i64>, Vec<Envelope>) = pending.into_iter().unzip();
                claims.seqs.extend(&seqs);
                for event in &events {
                    hops.since_stamp(
                        Hop::OutboxDwell,
                        Some(std::time::SystemTime::from(event.occurred_at)),
                    );
                }
                unconfirmed.push_back((seqs, Box::pin(send(events).await?)));
                continue;
            }
        }
        let room = unconfirmed.len() < CONFIRM_WINDOW;
        let Some((_, oldest)) = unconfirmed.front_mut() else {
            tokio::select! {
                () = nudge.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        };
        let confirmed = if room {
            tokio::select! {
                confirmed = oldest => confirmed?,
                // New events leave at once, beside the ones unconfirmed.
                () = nudge.notified() => continue,
            }
        } else {
            oldest.await?
        };
        for took in confirmed {
            hops.observe(Hop::PublishConfirm, took);
        }
        if let Some((seqs, _)) = unconfirmed.pop_front() {
            hops.time(Hop::StoreCommit, store.mark_published(&seqs))
                .await
                .map_err(&store_error)?;
            // Claimed in the order sent: the oldest batch's are the first.
            claims.seqs.drain(..seqs.len());
            tracing::debug!(count = seqs.len(), "outbox events handed to the broker");
        }
    }
}

/// The relay's claims not yet published. When the relay ends (an error, or
/// its session dropping it) they are released in the background, free for
/// the next attempt here or on another replica instead of after their lease;
/// a process that exits first leaves them to lapse with the lease.
struct Claims {
    store: OrderStore,
    seqs: Vec<i64>,
}

impl Drop for Claims {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.seqs.is_empty() {
            return;
        }
        let (store, seqs) = (self.store.clone(), std::mem::take(&mut self.seqs));
        runtime.spawn(async move {
            if let Err(release) = store.release_events(&seqs).await {
                tracing::warn!(error = %release, "unpublished outbox events not released; their claim lapses");
            }
        });
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
    decision: (OrderStatus, Option<String>),
) -> Result<(), StoreError> {
    let current = tracing::Span::current();
    settle_all(
        store,
        metrics,
        hops,
        source,
        [(envelope, decision, current)],
    )
    .await
}

/// `settle` for results that arrived together, in one store call; each
/// logged in its own span (its trace).
pub async fn settle_all<'a>(
    store: &OrderStore,
    metrics: &MessageMetrics,
    hops: &HopMetrics,
    source: &str,
    results: impl IntoIterator<Item = (&'a Envelope, (OrderStatus, Option<String>), tracing::Span)>,
) -> Result<(), StoreError> {
    let (settled, outcomes): (Vec<_>, Vec<_>) = results
        .into_iter()
        .map(|(envelope, (status, reason), span)| {
            (
                (envelope, status, span),
                (envelope.order_id, status, reason),
            )
        })
        .unzip();
    if settled.is_empty() {
        return Ok(());
    }
    let applied = hops
        .time(Hop::StoreCommit, store.settle_all(outcomes, now_ms()))
        .await?;
    for ((envelope, status, span), applied) in settled.into_iter().zip(applied) {
        metrics.count(source, if applied { "processed" } else { "duplicate" });
        span.in_scope(|| {
            tracing::info!(
                message_id = %envelope.message_id,
                order_id = %envelope.order_id,
                correlation_id = %envelope.correlation_id,
                %status,
                duplicate = !applied,
                "order settled"
            );
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use foodlab_domain::{Event, ItemName, Order, OrderId, OrderLine, OrderStatus};
    use foodlab_store::Database;

    use super::*;

    /// A store with `n` placed orders whose events wait in the outbox.
    async fn outbox_of(n: usize) -> (tempfile::TempDir, OrderStore, Vec<OrderId>) {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::Sqlite(dir.path().join("orders.db"));
        let (store, ids) = outbox_in(&database, n).await;
        (dir, store, ids)
    }

    async fn outbox_in(database: &Database, n: usize) -> (OrderStore, Vec<OrderId>) {
        let store = OrderStore::open(database).await.unwrap();
        let mut ids = Vec::new();
        for at in 0..n {
            let items = vec![OrderLine {
                item: ItemName::parse("burger").unwrap(),
                quantity: 1,
            }];
            let order = Order {
                order_id: OrderId::new(),
                customer_id: None,
                items: items.clone(),
                status: OrderStatus::Placed,
                reason: None,
                created_at_ms: at as i64,
                updated_at_ms: at as i64,
            };
            let event = Event::OrderPlaced {
                customer_id: None,
                items,
            };
            let envelope =
                Envelope::new(order.order_id, "test".into(), jiff::Timestamp::now(), event);
            ids.push(order.order_id);
            store.insert_with_event(order, &envelope).await.unwrap();
        }
        (store, ids)
    }

    fn hops() -> HopMetrics {
        HopMetrics::register(&mut prometheus_client::registry::Registry::default())
    }

    #[tokio::test]
    async fn a_confirm_lost_mid_window_leaves_that_batch_and_the_later_ones_for_the_next_session() {
        let (_dir, store, ids) = outbox_of(10).await;
        let sent: Arc<Mutex<Vec<OrderId>>> = Arc::default();
        let (nudge, hops) = (Notify::new(), hops());
        // Batches of 2; the third batch's confirm fails (the connection
        // dropped) after the fourth and fifth were sent behind it.
        let batches = Arc::new(Mutex::new(0));
        let lost = relay(
            &store,
            &nudge,
            &hops,
            2,
            |e| e.to_string(),
            |events| {
                let (sent, batches) = (Arc::clone(&sent), Arc::clone(&batches));
                async move {
                    sent.lock()
                        .unwrap()
                        .extend(events.iter().map(|e| e.order_id));
                    let mut count = batches.lock().unwrap();
                    *count += 1;
                    let this = *count;
                    Ok(async move {
                        if this == 3 {
                            Err("connection lost".to_owned())
                        } else {
                            Ok(vec![Duration::ZERO; events.len()])
                        }
                    })
                }
            },
        )
        .await;
        assert_eq!(lost.unwrap_err(), "connection lost");
        // Every batch went out in order, each once, the later ones while the
        // third's confirm was awaited.
        assert_eq!(sent.lock().unwrap()[..], ids[..]);
        // The two confirmed batches left the outbox; the rest wait for the next session.
        assert_eq!(store.pending_count().await.unwrap(), 6);
        let next: Vec<OrderId> = store
            .claim_events(10, now_ms(), &[])
            .await
            .unwrap()
            .into_iter()
            .map(|(_, event)| event.order_id)
            .collect();
        assert_eq!(next, ids[4..]);

        // The next session publishes them, and nothing is left.
        sent.lock().unwrap().clear();
        let session = relay(
            &store,
            &nudge,
            &hops,
            4,
            |e| e.to_string(),
            |events| {
                let sent = Arc::clone(&sent);
                async move {
                    sent.lock()
                        .unwrap()
                        .extend(events.iter().map(|e| e.order_id));
                    Ok(async move { Ok::<_, String>(vec![Duration::ZERO; events.len()]) })
                }
            },
        );
        let emptied = async {
            while store.pending_count().await.unwrap() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            ended = session => panic!("the relay ended: {ended:?}"),
            () = emptied => {}
        }
        assert_eq!(sent.lock().unwrap()[..], ids[4..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_relay_dropped_by_its_session_releases_its_claims_at_once() {
        let test = foodlab_store::testing::postgres().await;
        let (store, ids) = outbox_in(&test.database, 3).await;
        let (nudge, hops) = (Notify::new(), hops());
        // Sent, and the confirms never come: the session ends and drops it.
        let relay = relay(
            &store,
            &nudge,
            &hops,
            10,
            |e| e.to_string(),
            |_events| async { Ok(std::future::pending::<Result<Vec<Duration>, String>>()) },
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), relay)
                .await
                .is_err()
        );
        // Free at once for another relay, not after the claims' lease.
        let mut taken = Vec::new();
        for _ in 0..50 {
            taken = store.claim_events(10, now_ms(), &[]).await.unwrap();
            if !taken.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let taken: Vec<OrderId> = taken.into_iter().map(|(_, e)| e.order_id).collect();
        assert_eq!(taken, ids);
    }
}
