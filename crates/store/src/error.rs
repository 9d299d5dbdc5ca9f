#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("invalid database URL `{url}`: {reason}")]
    DatabaseUrl { url: String, reason: String },
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
    #[error("a read of the store did not finish: {0}")]
    ReadFailed(#[source] tokio::task::JoinError),
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A count read from the database as the unsigned figure it is.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
