use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("stored row is unreadable: {0}")]
    Corrupt(String),
    #[error("the message id was already used for order {earlier_order}")]
    MessageIdReused { earlier_order: String },
    #[error("cannot start the WAL checkpointer: {0}")]
    Checkpointer(std::io::Error),
}

/// How often the background checkpointer folds the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);

/// One SQLite connection shared by a service.
///
/// In WAL mode with `synchronous=NORMAL` a commit is an append to the WAL
/// without fsync, which takes microseconds; so statements run inline on the
/// caller's thread. The slow part of checkpointing (copying the WAL into
/// the database, fsync) runs on a background thread with its own
/// connection, off the request path.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    /// Off only in tests that checkpoint by hand.
    checkpoints: AtomicBool,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies `schema`,
    /// which must be idempotent (`CREATE TABLE IF NOT EXISTS ...`).
    pub fn open(path: &Path, schema: &str) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(schema)?;
        conn.set_prepared_statement_cache_capacity(64);
        let inner = Arc::new(Inner {
            conn: Mutex::new(conn),
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

    /// Runs `work` with the connection. Async so callers stay unaware of how
    /// the store schedules its work.
    pub async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError>,
    {
        self.blocking(work)
    }
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

/// WAL frames (pages) past which the WAL is truncated: 256 MiB of 4 KiB
/// pages, a bound on disk use reached only by long labs (a truncation holds
/// the service's writes for tens of milliseconds; at 64 MiB it came every
/// few seconds in the sync bench and showed in its p99.9).
const TRUNCATE_AFTER_FRAMES: i64 = 65_536;

/// Folds the WAL into the database. The copying is a passive checkpoint on
/// `own`, beside the service's writes. Under a steady stream of commits it
/// never catches up with the frames appended meanwhile, so SQLite never
/// restarts the WAL and it grows without end (7 GB in 60,000 orders of a
/// long lab); past `truncate_after` frames the WAL is therefore truncated
/// on the service's own connection, under its lock: nothing writes
/// meanwhile (no writer is refused with "database is locked", as one is
/// when another connection truncates), and it takes a few milliseconds, as
/// the passive rounds did the bulk of the copying.
fn checkpoint(own: &Connection, service: &Inner, truncate_after: i64) -> rusqlite::Result<()> {
    let frames: i64 = own.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?;
    if frames > truncate_after {
        service
            .lock()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
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
                if let Err(error) = checkpoint(&conn, &service, TRUNCATE_AFTER_FRAMES) {
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

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_large_wal_is_folded_in_and_truncated_a_small_one_only_folded_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path, "CREATE TABLE IF NOT EXISTS t (n INTEGER, pad TEXT);").unwrap();
        // Only this test checkpoints.
        db.inner.checkpoints.store(false, Ordering::Relaxed);
        let wal = dir.path().join("t.db-wal");
        let commit = |n: i64| {
            db.blocking(|conn| {
                conn.run("INSERT INTO t VALUES (?1, ?2)", params_of(n))?;
                Ok(())
            })
            .unwrap();
        };
        let checkpointer = Connection::open(&path).unwrap();

        // A few frames: folded in, the file kept for reuse.
        commit(0);
        checkpoint(&checkpointer, &db.inner, LIMIT).unwrap();
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);

        // More frames than the limit (each commit writes at least one).
        for n in 1..=(LIMIT + 10) {
            commit(n);
        }
        assert!(std::fs::metadata(&wal).unwrap().len() > 4096 * LIMIT as u64);
        checkpoint(&checkpointer, &db.inner, LIMIT).unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        let rows: i64 = db
            .blocking(|conn| Ok(conn.row("SELECT count(*) FROM t", [], |row| row.get(0))?))
            .unwrap();
        assert_eq!(rows, LIMIT + 11);
    }

    /// The test's truncation limit, in frames.
    const LIMIT: i64 = 200;

    fn params_of(n: i64) -> (i64, String) {
        (n, "x".repeat(100))
    }
}
