//! The SQLite file of one service: its one connection, and the WAL kept in bounds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;
use crate::migration::{self, Migration};

/// How often the background checkpointer folds the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);

/// One SQLite connection shared by a service, owned by a thread of its own.
///
/// Statements run on that thread, one unit of work at a time (the order a
/// single connection imposes anyway), and async callers await the result:
/// a commit waiting on SQLite (the busy timeout, a checkpoint's restart, a
/// large read) holds the store's thread, never one of the runtime's few
/// worker threads and the requests queued behind it. In WAL mode with
/// `synchronous=NORMAL` a commit is an append to the WAL without fsync.
/// The slow part of checkpointing (copying the WAL into the database,
/// fsync) runs on a second thread with its own connection.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

/// A unit of work for the store's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

struct Inner {
    jobs: mpsc::Sender<Job>,
    /// Off only in tests that checkpoint by hand.
    checkpoints: AtomicBool,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies the
    /// `migrations` of `store` it has not had yet.
    pub fn open(
        path: &Path,
        store: &'static str,
        migrations: &[Migration],
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        migration::apply_sqlite(&mut conn, store, migrations)?;
        conn.set_prepared_statement_cache_capacity(64);
        let jobs = spawn_worker(path, conn)?;
        let inner = Arc::new(Inner {
            jobs,
            checkpoints: AtomicBool::new(true),
        });
        spawn_checkpointer(path.to_path_buf(), Arc::downgrade(&inner))?;
        Ok(Self { inner })
    }

    /// Runs `work` on the store's thread and waits for it, blocking the
    /// caller (start-up, the checkpointer and tests; never a request).
    pub fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.blocking(work)
    }

    /// Runs `work` on the store's thread; the caller's task waits without
    /// holding its thread.
    pub async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner.submit(Box::new(move |conn| {
            // The caller may have gone (a request cancelled): nobody to tell.
            let _ = reply.send(work(conn));
        }))?;
        answer.await.map_err(|_| StoreError::WorkerGone)?
    }
}

impl Inner {
    fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).map_err(|_| StoreError::WorkerGone)
    }

    fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(Box::new(move |conn| {
            let _ = reply.send(work(conn));
        }))?;
        answer.recv().map_err(|_| StoreError::WorkerGone)?
    }
}

/// The thread that owns the service's connection: it runs each job in
/// turn until every handle of the store is dropped, then closes the
/// connection. A job that panics (a bug) loses its answer, not the thread:
/// its open transaction is rolled back.
fn spawn_worker(path: &Path, mut conn: Connection) -> Result<mpsc::Sender<Job>, StoreError> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let path = path.display().to_string();
    std::thread::Builder::new()
        .name("sqlite-store".into())
        .spawn(move || {
            for job in queue {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
                if ran.is_err() {
                    tracing::error!(%path, "a unit of store work panicked; it was rolled back");
                    if !conn.is_autocommit()
                        && let Err(error) = conn.execute_batch("ROLLBACK")
                    {
                        tracing::error!(%path, %error, "cannot roll the panicked work back");
                    }
                }
            }
        })
        .map_err(StoreError::Worker)?;
    Ok(jobs)
}

/// WAL frames (pages) past which the WAL is started again from its
/// beginning: 256 MiB of 4 KiB pages, a bound reached only by long labs.
const RESTART_AFTER_FRAMES: i64 = 65_536;

/// Folds the WAL into the database. The copying is a passive checkpoint on
/// `own`, beside the service's writes. Under a steady stream of commits it
/// never catches up with the frames appended meanwhile, so SQLite never
/// starts the WAL again and it grows without end (7 GB in 60,000 orders of
/// a long lab). Past `restart_after` frames a second passive round copies
/// what came meanwhile, and a restarting checkpoint on the service's own
/// connection, as a job of its thread, copies the last few frames: the next
/// commit writes from the WAL's beginning. There nothing is refused
/// (from another connection a writer got "database is locked" at once),
/// and the hold is short; truncating the file there instead held the
/// service's writes for ~140 ms.
fn checkpoint(own: &Connection, service: &Inner, restart_after: i64) -> Result<(), StoreError> {
    let passive = |conn: &Connection| -> rusqlite::Result<i64> {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
    };
    if passive(own)? > restart_after {
        passive(own)?;
        // A checkpoint that could not finish says so in its first column.
        let busy: i64 = service.blocking(|conn| {
            Ok(conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| row.get(0))?)
        })?;
        if busy != 0 {
            tracing::warn!(
                "the WAL could not be started again: a reader held it past the busy timeout"
            );
        }
    }
    Ok(())
}

/// Checkpoints every `CHECKPOINT_EVERY` for as long as the service's
/// connection lives.
fn spawn_checkpointer(path: PathBuf, service: Weak<Inner>) -> Result<(), StoreError> {
    let conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(CHECKPOINT_EVERY);
                let Some(service) = service.upgrade() else {
                    break;
                };
                if !service.checkpoints.load(Ordering::Relaxed) {
                    continue;
                }
                if let Err(error) = checkpoint(&conn, &service, RESTART_AFTER_FRAMES) {
                    tracing::warn!(path = %path.display(), %error, "WAL checkpoint failed");
                }
            }
        })
        .map_err(StoreError::Checkpointer)?;
    Ok(())
}

/// The statements of the hot paths, prepared once per connection and
/// kept: parsing SQL again on every order was a measurable share of each
/// service's CPU.
pub(crate) trait Cached {
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        read: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        read: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, read)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_wal_past_the_limit_is_started_again_while_a_reader_holds_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let table = [Migration {
            version: 1,
            name: "t",
            sql: "CREATE TABLE t (n INTEGER, pad TEXT);",
        }];
        let db = Db::open(&path, "test", &table).unwrap();
        // Only this test checkpoints.
        db.inner.checkpoints.store(false, Ordering::Relaxed);
        let commit = |n: i64| {
            db.blocking(move |conn| {
                conn.run("INSERT INTO t VALUES (?1, ?2)", params_of(n))?;
                Ok(())
            })
            .unwrap();
        };
        let checkpointer = Connection::open(&path).unwrap();
        // Frames in the WAL now (a passive checkpoint reports them).
        let frames = || -> i64 {
            checkpointer
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
                .unwrap()
        };

        // (Each commit writes at least one frame; a checkpoint now would
        // fold them in, and the next commit start the WAL again.)
        for n in 0..=LIMIT {
            commit(n);
        }
        // A reader in the middle, as under a steady stream of requests: the
        // passive rounds cannot fold in what came after its snapshot, so
        // SQLite alone would never start the WAL again.
        let reader = Connection::open(&path).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        for n in 1..=10 {
            commit(LIMIT + n);
        }
        let done = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            reader.execute_batch("COMMIT;").unwrap();
        });
        checkpoint(&checkpointer, &db.inner, LIMIT).unwrap();
        done.join().unwrap();
        commit(LIMIT + 11);
        assert!(frames() <= 2, "the WAL was not started again");
        let rows: i64 = db
            .blocking(|conn| Ok(conn.row("SELECT count(*) FROM t", [], |row| row.get(0))?))
            .unwrap();
        assert_eq!(rows, LIMIT + 12);
    }

    fn one_table() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let table = [Migration {
            version: 1,
            name: "t",
            sql: "CREATE TABLE t (n INTEGER, pad TEXT);",
        }];
        let db = Db::open(&dir.path().join("t.db"), "test", &table).unwrap();
        (dir, db)
    }

    fn rows(db: &Db) -> i64 {
        db.blocking(|conn| Ok(conn.row("SELECT count(*) FROM t", [], |row| row.get(0))?))
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_unit_of_work_leaves_the_callers_thread_free() {
        let (_dir, db) = one_table();
        let (held, hold) = std::sync::mpsc::channel::<()>();
        let slow = db.call(move |conn| {
            conn.run("INSERT INTO t VALUES (1, 'slow')", [])?;
            // Held until the other task has run on the caller's one thread:
            // work run on that thread itself would wait here in vain.
            Ok(hold.recv_timeout(Duration::from_secs(5)).is_ok())
        });
        let other = async move {
            tokio::task::yield_now().await;
            held.send(()).unwrap();
            "ran"
        };
        let (slow, other) = tokio::join!(slow, other);
        assert!(
            slow.unwrap(),
            "the other task did not run while the work was held"
        );
        assert_eq!(other, "ran");
        assert_eq!(rows(&db), 1);
    }

    #[tokio::test]
    async fn a_unit_of_work_that_panics_is_rolled_back_and_the_store_goes_on() {
        let (_dir, db) = one_table();
        let panicked = db
            .call(|conn| -> Result<(), StoreError> {
                conn.execute_batch("BEGIN; INSERT INTO t VALUES (1, 'lost');")?;
                panic!("a bug in the middle of a transaction");
            })
            .await;
        assert!(
            matches!(panicked, Err(StoreError::WorkerGone)),
            "{panicked:?}"
        );
        db.call(|conn| {
            conn.run("INSERT INTO t VALUES (2, 'kept')", [])?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(rows(&db), 1);
    }

    /// The test's limit, in frames.
    const LIMIT: i64 = 200;

    fn params_of(n: i64) -> (i64, String) {
        (n, "x".repeat(100))
    }
}
