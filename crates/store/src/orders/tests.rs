#![allow(clippy::unwrap_used)]

use foodlab_domain::{ItemName, OrderLine};

use super::*;
use crate::testing::on_both_backends;

fn order(at: i64) -> Order {
    Order {
        order_id: OrderId::new(),
        customer_id: Some("s1".into()),
        items: vec![OrderLine {
            item: ItemName::parse("burger").unwrap(),
            quantity: 2,
        }],
        status: OrderStatus::Placed,
        reason: None,
        created_at_ms: at,
        updated_at_ms: at,
    }
}

async fn placed(store: &OrderStore, n: usize) -> Vec<Order> {
    let mut orders = Vec::new();
    for i in 0..n {
        let order = order(i as i64);
        store.insert(order.clone()).await.unwrap();
        orders.push(order);
    }
    orders
}

on_both_backends! { "orders.db";
        async fn orders_survive_reopening_the_file(db: Database) {
            let first = order(1);
            let second = order(2);
            {
                let store = OrderStore::open(&db).await.unwrap();
                store.insert(first.clone()).await.unwrap();
                store.insert(second.clone()).await.unwrap();
                let updated = store
                    .set_status(
                        first.order_id,
                        OrderStatus::Failed,
                        Some("out of stock".into()),
                        5,
                    )
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(updated.status, OrderStatus::Failed);
                assert_eq!(updated.updated_at_ms, 5);
            }
            let store = OrderStore::open(&db).await.unwrap();
            let all = store.list().await.unwrap();
            assert_eq!(all.len(), 2);
            assert_eq!(all[0].order_id, first.order_id);
            assert_eq!(all[0].status, OrderStatus::Failed);
            assert_eq!(all[0].reason.as_deref(), Some("out of stock"));
            assert_eq!(all[1], second);
            assert_eq!(store.get(second.order_id).await.unwrap(), Some(second));
            let counts = store.count_by_status().await.unwrap();
            assert_eq!(counts.get("failed"), Some(&1));
            assert_eq!(counts.get("placed"), Some(&1));
        }

        async fn the_outbox_keeps_events_until_published_and_settling_happens_once(db: Database) {
            let placed = order(1);
            let event = foodlab_domain::Envelope::new(
                placed.order_id,
                "c".into(),
                jiff::Timestamp::UNIX_EPOCH,
                foodlab_domain::Event::OrderPlaced {
                    customer_id: None,
                    items: placed.items.clone(),
                },
            );
            {
                let store = OrderStore::open(&db).await.unwrap();
                store
                    .insert_with_event(placed.clone(), &event)
                    .await
                    .unwrap();
                store
                    .insert_with_event(order(2), &event.clone())
                    .await
                    .unwrap_err();
            }
            // A restart before publishing keeps the event.
            let store = OrderStore::open(&db).await.unwrap();
            let pending = store.claim_events(10, 1, &[]).await.unwrap();
            assert_eq!(
                pending.len(),
                1,
                "the failed insert left neither order nor event"
            );
            assert_eq!(store.list().await.unwrap().len(), 1);
            assert_eq!(pending[0].1, event);
            store.mark_published(&[pending[0].0]).await.unwrap();
            assert_eq!(store.pending_count().await.unwrap(), 0);

            let id = placed.order_id;
            assert!(
                store
                    .settle(id, OrderStatus::Reserved, None, 5)
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .settle(id, OrderStatus::Failed, Some("late".into()), 6)
                    .await
                    .unwrap()
            );
            assert_eq!(
                store.get(id).await.unwrap().unwrap().status,
                OrderStatus::Reserved
            );
        }

        async fn a_batch_settles_each_placed_order_once(db: Database) {
            let store = OrderStore::open(&db).await.unwrap();
            let orders = placed(&store, 2).await;
            let (a, b) = (orders[0].order_id, orders[1].order_id);
            let batch = vec![
                (a, OrderStatus::Reserved, None),
                (b, OrderStatus::Failed, Some("out of stock".into())),
                // A redelivered result in the same batch, and an unknown order.
                (a, OrderStatus::Failed, None),
                (OrderId::new(), OrderStatus::Reserved, None),
            ];
            assert_eq!(store.settle_all(batch, 5).await.unwrap(), [true, true, false, false]);
            let a = store.get(a).await.unwrap().unwrap();
            let b = store.get(b).await.unwrap().unwrap();
            assert_eq!((a.status, a.updated_at_ms), (OrderStatus::Reserved, 5));
            assert_eq!((b.status, b.reason.as_deref()), (OrderStatus::Failed, Some("out of stock")));
        }

        async fn unknown_orders_are_none(db: Database) {
            let store = OrderStore::open(&db).await.unwrap();
            assert_eq!(store.get(OrderId::new()).await.unwrap(), None);
            let missing = store
                .set_status(OrderId::new(), OrderStatus::Reserved, None, 1)
                .await
                .unwrap();
            assert_eq!(missing, None);
        }

        async fn counts_since_a_cursor_are_of_the_orders_placed_after_it(db: Database) {
            let store = OrderStore::open(&db).await.unwrap();
            assert_eq!(store.cursor().await.unwrap(), 0);
            let before = placed(&store, 3).await;
            let cursor = store.cursor().await.unwrap();
            assert_eq!(cursor, 3);
            let after = placed(&store, 4).await;
            // An earlier order changing does not make it one placed after the cursor.
            store
                .set_status(before[0].order_id, OrderStatus::Failed, None, 9)
                .await
                .unwrap();
            store
                .settle(after[0].order_id, OrderStatus::Reserved, None, 9)
                .await
                .unwrap();
            store
                .settle(
                    after[1].order_id,
                    OrderStatus::Failed,
                    Some("out".into()),
                    9,
                )
                .await
                .unwrap();
            let counts = store.counts_placed_after(cursor).await.unwrap();
            assert_eq!(counts.cursor, 10);
            assert_eq!(
                counts.by_status,
                BTreeMap::from([
                    ("failed".to_owned(), 1),
                    ("placed".to_owned(), 2),
                    ("reserved".to_owned(), 1),
                ])
            );
            assert_eq!(
                store.count_by_status().await.unwrap().values().sum::<u64>(),
                7
            );
            assert_eq!(store.cursor().await.unwrap(), 10);
        }

        async fn changes_are_read_once_each_in_order_with_the_next_cursor(db: Database) {
            let store = OrderStore::open(&db).await.unwrap();
            placed(&store, 2).await;
            let cursor = store.cursor().await.unwrap();
            let orders = placed(&store, 3).await;
            store
                .settle(orders[0].order_id, OrderStatus::Reserved, None, 7)
                .await
                .unwrap();
            // Heard again: no change, so nothing new to read.
            store
                .settle(orders[0].order_id, OrderStatus::Failed, None, 8)
                .await
                .unwrap();

            let first = store.changed_after(cursor, 2).await.unwrap();
            let ids: Vec<_> = first.orders.iter().map(|o| o.order_id).collect();
            assert_eq!(ids, vec![orders[1].order_id, orders[2].order_id]);
            assert_eq!(first.next, Some(cursor + 3));
            let second = store.changed_after(cursor + 3, 2).await.unwrap();
            assert_eq!(second.orders.len(), 1);
            assert_eq!(second.orders[0].order_id, orders[0].order_id);
            assert_eq!(second.orders[0].status, OrderStatus::Reserved);
            assert_eq!(second.orders[0].updated_at_ms, 7);
            let end = second.next.unwrap();
            assert_eq!(end, cursor + 4);
            // Nothing since: the same cursor back, to ask again later.
            let empty = store.changed_after(end, 2).await.unwrap();
            assert_eq!((empty.orders.len(), empty.next), (0, Some(end)));
            store
                .set_status(orders[2].order_id, OrderStatus::Notified, None, 9)
                .await
                .unwrap();
            let later = store.changed_after(end, 2).await.unwrap();
            assert_eq!(later.orders.len(), 1);
            assert_eq!(
                (later.orders[0].order_id, later.orders[0].status),
                (orders[2].order_id, OrderStatus::Notified)
            );
            assert_eq!(later.next, Some(end + 1));
        }

        async fn pages_cover_every_order_once_in_placement_order(db: Database) {
            let store = OrderStore::open(&db).await.unwrap();
            let orders = placed(&store, 7).await;
            // A status change does not move an order between pages.
            store
                .set_status(orders[1].order_id, OrderStatus::Failed, None, 9)
                .await
                .unwrap();
            let mut seen = Vec::new();
            let mut cursor = 0;
            let mut pages = 0;
            loop {
                let page = store.page_placed_after(cursor, 3).await.unwrap();
                pages += 1;
                seen.extend(page.orders.iter().map(|o| o.order_id));
                match page.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            assert_eq!(pages, 3);
            assert_eq!(seen, orders.iter().map(|o| o.order_id).collect::<Vec<_>>());
            // A last page that is exactly full is followed by an empty one.
            let full = store.page_placed_after(3, 4).await.unwrap();
            assert_eq!((full.orders.len(), full.next), (4, Some(7)));
            let empty = store.page_placed_after(7, 4).await.unwrap();
            assert_eq!((empty.orders.len(), empty.next), (0, None));
            assert_eq!(store.list().await.unwrap().len(), 7);
        }

    async fn a_reader_following_the_changes_of_two_writers_misses_none(db: Database) {
        let first = OrderStore::open(&db).await.unwrap();
        // Two replicas on a shared database; on SQLite (one process per
        // file) two tasks of one process.
        let second = if db.is_shared() {
            OrderStore::open(&db).await.unwrap()
        } else {
            first.clone()
        };
        let writers = [first, second];
        let tasks: Vec<_> = writers
            .iter()
            .cloned()
            .map(|store| {
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..150 {
                        let order = order(i);
                        store.insert(order.clone()).await.unwrap();
                        if i % 2 == 0 {
                            store
                                .settle(order.order_id, OrderStatus::Reserved, None, i)
                                .await
                                .unwrap();
                        }
                        ids.push(order.order_id);
                    }
                    ids
                })
            })
            .collect();
        // A lab settling: it follows the change sequence while they write.
        let reader = OrderStore::open(&db).await.unwrap();
        let mut seen = std::collections::HashMap::new();
        let mut cursor = 0;
        let mut done = false;
        loop {
            let page = reader.changed_after(cursor, 50).await.unwrap();
            for order in page.orders {
                seen.insert(order.order_id, order.status);
            }
            cursor = page.next.unwrap();
            if done && cursor == reader.cursor().await.unwrap() {
                break;
            }
            done = tasks.iter().all(|t| t.is_finished());
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        assert_eq!(seen.len(), 300, "every order seen");
        let reserved = seen.values().filter(|s| **s == OrderStatus::Reserved).count();
        assert_eq!(reserved, 150, "every settle seen");
        assert!(all.iter().all(|id| seen.contains_key(id)));
        let counts = reader.count_by_status().await.unwrap();
        assert_eq!((counts["placed"], counts["reserved"]), (150, 150));
    }
}

// On a shared database: relays of several order replicas.

fn event_for(order: &Order) -> Envelope {
    Envelope::new(
        order.order_id,
        "c".into(),
        jiff::Timestamp::UNIX_EPOCH,
        foodlab_domain::Event::OrderPlaced {
            customer_id: None,
            items: order.items.clone(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_outbox_event_is_claimed_by_one_relay_of_two() {
    let test = crate::testing::postgres().await;
    let first = OrderStore::open(&test.database).await.unwrap();
    let second = OrderStore::open(&test.database).await.unwrap();
    let placed: Vec<_> = (0..200)
        .map(|i| {
            let order = order(i);
            let event = event_for(&order);
            (order, event)
        })
        .collect();
    first.insert_all_with_events(placed.clone()).await.unwrap();
    let relay = |store: OrderStore| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_events(7, 1_000, &[]).await.unwrap();
                if batch.is_empty() {
                    break mine;
                }
                let seqs: Vec<i64> = batch.iter().map(|(seq, _)| *seq).collect();
                mine.extend(batch.into_iter().map(|(_, event)| event.message_id));
                store.mark_published(&seqs).await.unwrap();
            }
        })
    };
    let (a, b) = (relay(first.clone()), relay(second.clone()));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let mut all: Vec<_> = a.iter().chain(&b).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200, "every event published");
    assert_eq!(a.len() + b.len(), 200, "none published by both");
    assert_eq!(first.pending_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_a_relay_that_died_lapses_and_a_released_one_is_free_at_once() {
    let test = crate::testing::postgres().await;
    let store = OrderStore::open(&test.database).await.unwrap();
    let other = OrderStore::open(&test.database).await.unwrap();
    let placed = order(1);
    store
        .insert_with_event(placed.clone(), &event_for(&placed))
        .await
        .unwrap();
    let now = 50_000;
    let claimed = store.claim_events(10, now, &[]).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // The claiming relay dies before the broker confirms: nobody else takes
    // the event until its lease is over, then another relay does.
    assert!(
        other
            .claim_events(10, now + 1, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let taken = other
        .claim_events(10, now + CLAIM_LEASE_MS + 1, &[])
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].1.message_id, claimed[0].1.message_id);
    // Released (the broker refused it): free for the next attempt at once.
    other.release_events(&[taken[0].0]).await.unwrap();
    let again = store
        .claim_events(10, now + CLAIM_LEASE_MS + 2, &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    // Its confirm outlasts the lease: the relay that has it in flight is not
    // given it again, whatever the lease says.
    let in_flight = [again[0].0];
    let later = now + 3 * CLAIM_LEASE_MS;
    assert!(
        store
            .claim_events(10, later, &in_flight)
            .await
            .unwrap()
            .is_empty()
    );
    store.mark_published(&in_flight).await.unwrap();
    assert_eq!(other.pending_count().await.unwrap(), 0);
}

// The SQLite file of an earlier release, and its query plans.

#[tokio::test]
async fn a_database_without_the_sequence_gets_it_in_insertion_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE orders (
                order_id TEXT PRIMARY KEY, customer_id TEXT, items TEXT NOT NULL,
                status TEXT NOT NULL, reason TEXT,
                created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);
             INSERT INTO orders VALUES
                ('00000000-0000-4000-8000-000000000002', NULL, '[]', 'reserved', NULL, 5, 6),
                ('00000000-0000-4000-8000-000000000001', NULL, '[]', 'placed', NULL, 1, 1);",
        )
        .unwrap();
    }
    let store = OrderStore::open(&Database::Sqlite(path.clone()))
        .await
        .unwrap();
    assert_eq!(store.cursor().await.unwrap(), 2);
    let page = store.page_placed_after(0, 10).await.unwrap();
    let ids: Vec<String> = page.orders.iter().map(|o| o.order_id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "00000000-0000-4000-8000-000000000002",
            "00000000-0000-4000-8000-000000000001"
        ]
    );
    let added = order(9);
    store.insert(added.clone()).await.unwrap();
    let changed = store.changed_after(2, 10).await.unwrap();
    assert_eq!(changed.orders, vec![added]);
    // Opening it again changes nothing; the file now says which steps it has had.
    drop(store);
    let version: i32 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let store = OrderStore::open(&Database::Sqlite(path.clone()))
        .await
        .unwrap();
    assert_eq!(store.cursor().await.unwrap(), 3);
}

#[tokio::test]
async fn the_lab_queries_use_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite::open(&dir.path().join("orders.db")).unwrap();
    let plan = |sql: &str| {
        let sql = format!("EXPLAIN QUERY PLAN {sql}");
        db.blocking(move |conn| {
            let mut statement = conn.prepare(&sql)?;
            // Every parameter (a cursor, a limit) given 5.
            let params = rusqlite::params_from_iter(vec![5_i64; statement.parameter_count()]);
            let rows = statement.query_map(params, |row| row.get::<_, String>(3))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?.join("; "))
        })
        .unwrap()
    };
    let counts = plan("SELECT status, COUNT(*) FROM orders WHERE placed_seq > 5 GROUP BY status");
    assert!(
        counts.contains("SEARCH orders USING COVERING INDEX orders_by_placement (placed_seq>?)"),
        "{counts}"
    );
    let page = plan(sqlite::AFTER_PLACED);
    assert!(
        page.contains("SEARCH orders USING INDEX orders_by_placement (placed_seq>?)")
            && !page.contains("TEMP B-TREE"),
        "{page}"
    );
    let changed = plan(sqlite::AFTER_CHANGED);
    assert!(
        changed.contains("SEARCH orders USING INDEX orders_by_change (change_seq>?)")
            && !changed.contains("TEMP B-TREE"),
        "{changed}"
    );
    let cursor = plan("SELECT COALESCE(MAX(change_seq), 0) FROM orders");
    assert!(
        cursor.contains("SEARCH orders USING COVERING INDEX orders_by_change"),
        "{cursor}"
    );
}
