//! The SQLite file of one service: its one connection, and the WAL kept in bounds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;
use crate::migration::{self, Migration};

/// How often the background checkpointer folds the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);

/// One SQLite connection shared by a service, and one for its long reads.
///
/// In WAL mode with `synchronous=NORMAL` a commit is an append to the WAL
/// without fsync, which takes microseconds; so the statements of requests
/// and messages run inline on the caller's thread, under the connection's
/// lock. (Handing each to a thread of the store's cost 22–30% more CPU per
/// order and per drained message, measured with `foodlab bench`: two
/// wake-ups per statement on two cores.) What can take long runs elsewhere:
/// a read of a whole table (`read`) on the runtime's blocking threads with
/// a read-only connection of its own, which in WAL mode neither waits for
/// the writer nor holds it; and the slow part of checkpointing (copying the
/// WAL into the database, fsync) on a background thread with a third.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// The long reads' connection, opened on the first; `None` while a
    /// read has it (a second read at once opens its own).
    reader: Mutex<Option<Connection>>,
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
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            reader: Mutex::new(None),
            checkpoints: AtomicBool::new(true),
        });
        spawn_checkpointer(path.to_path_buf(), Arc::downgrade(&inner))?;
        Ok(Self { inner })
    }

    /// Runs `work` with the connection (start-up and tests).
    pub fn blocking<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        work(&mut self.inner.lock())
    }

    /// Runs `work` with the connection, inline: a statement or a short
    /// transaction of a request or a message. Async so callers stay unaware
    /// of how the store schedules its work.
    pub async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError>,
    {
        self.blocking(work)
    }

    /// Runs a read that may take long (a whole table) on a blocking thread,
    /// with the read connection: it sees the last commit before it began,
    /// and the service's writes go on meanwhile.
    pub async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let taken = inner
                .reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            let mut conn = match taken {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let read = work(&mut conn);
            *inner
                .reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(conn);
            read
        })
        .await
        .map_err(StoreError::ReadFailed)?
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (an
        // open transaction rolls back on drop), so a poisoned lock is safe to reuse.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
/// connection, under its lock, copies the last few frames: the next commit
/// writes from the WAL's beginning. Under the lock nothing is refused
/// (from another connection a writer got "database is locked" at once),
/// and the hold is short; truncating the file there instead held the
/// service's writes for ~140 ms.
fn checkpoint(own: &Connection, service: &Inner, restart_after: i64) -> rusqlite::Result<()> {
    let passive = |conn: &Connection| -> rusqlite::Result<i64> {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
    };
    if passive(own)? > restart_after {
        passive(own)?;
        // A checkpoint that could not finish says so in its first column.
        let busy: i64 = service
            .lock()
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| row.get(0))?;
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
            db.blocking(|conn| {
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

    #[tokio::test]
    async fn a_long_read_neither_waits_for_nor_holds_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let table = [Migration {
            version: 1,
            name: "t",
            sql: "CREATE TABLE t (n INTEGER, pad TEXT);",
        }];
        let db = Db::open(&dir.path().join("t.db"), "test", &table).unwrap();
        let insert = |n: i64| {
            db.call(move |conn| {
                conn.run("INSERT INTO t VALUES (?1, ?2)", params_of(n))?;
                Ok(())
            })
        };
        let count = |conn: &Connection| -> rusqlite::Result<i64> {
            conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
        };
        insert(1).await.unwrap();

        let (started, reading) = tokio::sync::oneshot::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let read = db.read(move |conn| {
            let tx = conn.transaction()?;
            let first = count(&tx)?;
            started.send(()).unwrap();
            // Held while the writer commits.
            held.recv_timeout(Duration::from_secs(10)).unwrap();
            let again = count(&tx)?;
            Ok((first, again))
        });
        let write = async {
            reading.await.unwrap();
            // The read holds its snapshot: this commits at once all the same.
            insert(2).await.unwrap();
            release.send(()).unwrap();
        };
        let (read, ()) = tokio::join!(read, write);
        assert_eq!(read.unwrap(), (1, 1), "the read's snapshot");
        assert_eq!(db.call(|conn| Ok(count(conn)?)).await.unwrap(), 2);
        // The read connection is kept for the next read, which sees both.
        assert_eq!(db.read(move |conn| Ok(count(conn)?)).await.unwrap(), 2);
    }

    /// The test's limit, in frames.
    const LIMIT: i64 = 200;

    fn params_of(n: i64) -> (i64, String) {
        (n, "x".repeat(100))
    }
}
