use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
/// caller's thread. The one slow operation, the checkpoint (it fsyncs), runs
/// on a background thread with its own connection, off the request path.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    stop_checkpointer: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_checkpointer.store(true, Ordering::Relaxed);
    }
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
        let stop_checkpointer = Arc::new(AtomicBool::new(false));
        spawn_checkpointer(path.to_path_buf(), Arc::clone(&stop_checkpointer))?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                stop_checkpointer,
            }),
        })
    }

    /// Runs `work` with the connection (start-up and tests).
    pub fn blocking<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite half-written (an
        // open transaction rolls back on drop), so a poisoned lock is safe to reuse.
        let mut guard = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut guard)
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

fn spawn_checkpointer(path: PathBuf, stop: Arc<AtomicBool>) -> Result<(), StoreError> {
    let conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(CHECKPOINT_EVERY);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
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
