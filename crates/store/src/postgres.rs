//! The PostgreSQL side shared by every store: a connection pool, and the
//! schema migrations, run once per database however many replicas start at
//! the same moment.

use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use foodlab_domain::Backoff;
use tokio_postgres::NoTls;

use crate::StoreError;
use crate::migration::Migration;

/// Connections per service process: enough for its HTTP handlers, its
/// consumer and its relay at once; PostgreSQL's own limit is shared by all
/// replicas of all services.
const POOL_SIZE: usize = 16;

/// How long a service waits at start-up for the database to answer (a
/// database pod starting beside the services, or a restarting server).
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// Serialises the migrations of every store on one database (the value is
/// arbitrary, the same for every FoodLab process).
const MIGRATION_LOCK: i64 = 0x0046_6f6f_644c_6162;

/// A pool on the database at `url`, with `store`'s migrations applied.
pub(crate) async fn connect(
    url: &str,
    store: &'static str,
    migrations: &[Migration],
) -> Result<Pool, StoreError> {
    let config: tokio_postgres::Config =
        url.parse()
            .map_err(|e: tokio_postgres::Error| StoreError::DatabaseUrl {
                url: crate::Database::Postgres(url.to_owned()).to_string(),
                reason: e.to_string(),
            })?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .build()
        .map_err(|e| StoreError::DatabaseUrl {
            url: crate::Database::Postgres(url.to_owned()).to_string(),
            reason: e.to_string(),
        })?;
    let mut client = first_connection(&pool).await?;
    migrate(&mut client, store, migrations).await?;
    Ok(pool)
}

async fn first_connection(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match pool.get().await {
            Ok(client) => return Ok(client),
            Err(error) if started.elapsed() < CONNECT_PATIENCE => {
                let pause = backoff.pause();
                tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "database not reachable yet");
                tokio::time::sleep(pause).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

async fn migrate(
    client: &mut deadpool_postgres::Object,
    store: &'static str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Replicas starting together wait here for the first to finish.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // "already exists, skipping" is every start but the first: not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS foodlab_migrations (
             store      TEXT NOT NULL,
             version    INTEGER NOT NULL,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
             PRIMARY KEY (store, version)
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query(
            "SELECT version FROM foodlab_migrations WHERE store = $1",
            &[&store],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for migration in migrations {
        if applied.contains(&migration.version) {
            continue;
        }
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO foodlab_migrations (store, version, name) VALUES ($1, $2, $3)",
            &[&store, &migration.version, &migration.name],
        )
        .await?;
        tracing::info!(
            store,
            version = migration.version,
            name = migration.name,
            "database migrated"
        );
    }
    tx.commit().await?;
    Ok(())
}
