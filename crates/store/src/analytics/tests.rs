#![allow(clippy::unwrap_used)]

use foodlab_domain::EventType;
use uuid::Uuid;

use super::*;
use crate::testing::on_both_backends;

const GROUP: &str = "analytics-group";
const MINUTE_US: i64 = 60_000_000;

fn partition(topic: &str, partition: i32) -> Partition {
    Partition {
        topic: topic.to_owned(),
        partition,
    }
}

fn orders(n: i32) -> Partition {
    partition("order-events", n)
}

fn results(n: i32) -> Partition {
    partition("inventory-events", n)
}

fn event(at: &Partition, offset: i64, id: Uuid, event_type: EventType, minute: i64) -> Read {
    Read {
        partition: at.clone(),
        offset,
        event: Some(ReadEvent {
            message_id: id,
            event_type,
            occurred_at_us: 1_800_000_000_000_000 + minute * MINUTE_US,
        }),
    }
}

fn malformed(at: &Partition, offset: i64) -> Read {
    Read {
        partition: at.clone(),
        offset,
        event: None,
    }
}

fn end(partition: Partition, high: i64) -> LogEnd {
    LogEnd {
        partition,
        low: 0,
        high,
    }
}

/// A log of two partitions: three orders (one read twice by its producer's
/// retry, at another offset), two results and a message that is no event.
fn log() -> (Vec<LogEnd>, Vec<Read>) {
    let (a, b, c, r1, r2) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let reads = vec![
        event(&orders(0), 0, a, EventType::OrderPlaced, 0),
        event(&orders(0), 1, b, EventType::OrderPlaced, 0),
        event(&orders(0), 2, a, EventType::OrderPlaced, 0),
        event(&orders(0), 3, c, EventType::OrderPlaced, 1),
        event(&results(0), 0, r1, EventType::InventoryReserved, 0),
        malformed(&results(0), 1),
        event(&results(0), 2, r2, EventType::InventoryFailed, 1),
    ];
    (vec![end(orders(0), 4), end(results(0), 3)], reads)
}

fn expected() -> Tallies {
    Tallies {
        orders: 3,
        reserved: 1,
        failures: 1,
        malformed: 1,
        duplicates: 1,
        orders_by_minute: [(30_000_000, 2), (30_000_001, 1)].into(),
        events_span_us: Some((1_800_000_000_000_000, 1_800_000_000_000_000 + MINUTE_US)),
        orders_span_us: Some((1_800_000_000_000_000, 1_800_000_000_000_000 + MINUTE_US)),
        replays: 1,
        replay: None,
    }
}

/// The tallies without the replay record, which each test checks itself.
fn counts(mut tallies: Tallies) -> Tallies {
    tallies.replay = None;
    tallies
}

async fn joined(db: &Database, ends: &[LogEnd]) -> (AnalyticsStore, Epoch) {
    let store = AnalyticsStore::open(db, GROUP).await.unwrap();
    let epoch = store.join(ends, 1_000).await.unwrap();
    let parts: Vec<Partition> = ends.iter().map(|e| e.partition.clone()).collect();
    assert_eq!(store.behind(&parts).await.unwrap(), (epoch, parts.to_vec()));
    assert!(store.positioned(epoch, &parts).await.unwrap());
    (store, epoch)
}

on_both_backends! { "analytics.db";
    async fn each_offset_counts_once_and_each_event_once_by_its_id(db: Database) {
        let (ends, reads) = log();
        let (store, epoch) = joined(&db, &ends).await;
        assert_eq!(epoch, Epoch(1));
        let recorded = store.record(&reads, 2_000).await.unwrap();
        assert_eq!(recorded[2], Recorded::Duplicate);
        assert_eq!(recorded[5], Recorded::Malformed);
        assert_eq!(recorded.iter().filter(|r| **r == Recorded::Counted).count(), 5);
        // The same offsets delivered again (a rebalance, a restart) change nothing.
        let again = store.record(&reads, 3_000).await.unwrap();
        assert!(again.iter().all(|r| *r == Recorded::ReadBefore), "{again:?}");
        let tallies = store.tallies().await.unwrap();
        assert_eq!(counts(tallies.clone()), expected());
        // The last offset of each partition was read: the first reading is done.
        let replay = tallies.replay.unwrap();
        assert_eq!((replay.events, replay.finished_ms), (7, Some(2_000)));
    }

    async fn two_members_reading_their_shares_at_once_sum_exactly(db: Database) {
        let ends: Vec<LogEnd> = (0..3).map(|p| end(orders(p), 400)).collect();
        let (first, epoch) = joined(&db, &ends).await;
        let second = AnalyticsStore::open(&db, GROUP).await.unwrap();
        assert_eq!(second.join(&ends, 1_500).await.unwrap(), epoch);
        let reads: Vec<Read> = (0..3)
            .flat_map(|p| {
                (0..400).map(move |offset| {
                    event(&orders(p), offset, Uuid::new_v4(), EventType::OrderPlaced, 0)
                })
            })
            .collect();
        // Partition 0 to the first member, 2 to the second, and 1 read by
        // both (it moved in a rebalance before the first's offsets were committed).
        let share = |p: i32| -> Vec<Read> {
            reads.iter().filter(|r| r.partition.partition == p).cloned().collect()
        };
        let mut tasks = Vec::new();
        for (store, parts) in [(first.clone(), [0, 1]), (second.clone(), [2, 1])] {
            for p in parts {
                let store = store.clone();
                let batch = share(p);
                tasks.push(tokio::spawn(async move {
                    for chunk in batch.chunks(50) {
                        store.record(chunk, 2_000).await.unwrap();
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        let tallies = second.tallies().await.unwrap();
        assert_eq!((tallies.orders, tallies.duplicates), (1_200, 0));
        assert_eq!(tallies.orders_by_minute[&30_000_000], 1_200);
        assert_eq!(tallies.replays, 1);
    }

    async fn a_replay_clears_and_counts_again_only_from_rewound_partitions(db: Database) {
        let (ends, reads) = log();
        let (store, _) = joined(&db, &ends).await;
        store.record(&reads, 2_000).await.unwrap();
        let epoch = store.begin_replay(&ends, 5_000).await.unwrap();
        assert_eq!(epoch, Epoch(2));
        let cleared = store.tallies().await.unwrap();
        assert_eq!((cleared.orders, cleared.replays), (0, 2));
        assert_eq!(cleared.replay.unwrap().finished_ms, None);
        // Read before the rewind: refused, and the partitions are behind.
        let stale = store.record(&reads[..2], 5_100).await.unwrap();
        assert_eq!(stale, [Recorded::Stale, Recorded::Stale]);
        let parts = [orders(0), results(0)];
        assert_eq!(store.behind(&parts).await.unwrap(), (epoch, parts.to_vec()));
        // A member still positioning for the replay before is turned away.
        assert!(!store.positioned(Epoch(1), &parts).await.unwrap());
        assert!(store.positioned(epoch, &parts).await.unwrap());
        assert!(store.behind(&parts).await.unwrap().1.is_empty());
        // In another interleaving of the partitions: the same figures.
        let mut replayed = reads.clone();
        replayed.sort_by_key(|r| (std::cmp::Reverse(r.partition.topic.clone()), r.offset));
        store.record(&replayed[..4], 6_000).await.unwrap();
        assert_eq!(store.tallies().await.unwrap().replay.unwrap().finished_ms, None);
        store.record(&replayed[4..], 7_000).await.unwrap();
        let tallies = store.tallies().await.unwrap();
        let replay = tallies.replay.unwrap();
        assert_eq!((replay.epoch, replay.started_ms, replay.finished_ms), (epoch, 5_000, Some(7_000)));
        assert_eq!(counts(tallies), Tallies { replays: 2, ..expected() });
    }

    async fn a_member_joining_again_keeps_the_group_s_reading(db: Database) {
        let (ends, reads) = log();
        let (store, epoch) = joined(&db, &ends).await;
        store.record(&reads[..3], 2_000).await.unwrap();
        drop(store);
        // A restart: the group's epoch and positions stand; reading on counts the rest.
        let store = AnalyticsStore::open(&db, GROUP).await.unwrap();
        assert_eq!(store.join(&ends, 9_000).await.unwrap(), epoch);
        let parts = [orders(0), results(0)];
        assert!(store.behind(&parts).await.unwrap().1.is_empty());
        store.record(&reads, 9_500).await.unwrap();
        assert_eq!(counts(store.tallies().await.unwrap()), expected());
        // Another group is another projection.
        let other = AnalyticsStore::open(&db, "other-group").await.unwrap();
        assert_eq!(other.tallies().await.unwrap(), Tallies::default());
    }

    async fn an_empty_log_is_read_at_once(db: Database) {
        let store = AnalyticsStore::open(&db, GROUP).await.unwrap();
        store.join(&[end(orders(0), 0)], 1_000).await.unwrap();
        let replay = store.tallies().await.unwrap().replay.unwrap();
        assert_eq!((replay.events, replay.finished_ms), (0, Some(1_000)));
    }
}
