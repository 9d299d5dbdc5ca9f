//! Schema migrations, the same shape on both backends: each store lists its
//! steps per backend (the SQL differs), and a database runs each step once,
//! in version order. SQLite keeps the version it has reached in
//! `PRAGMA user_version` (one store per file); PostgreSQL records every step
//! in `foodlab_migrations` (every store in one database, see `postgres`).

use rusqlite::Connection;

use crate::StoreError;

/// One step of a store's schema, applied once per database, in version order.
pub(crate) struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Applies the steps a SQLite file has not had yet, each in a transaction of
/// its own with the version it reaches. A file made before versions were
/// kept (`user_version` 0) runs them all: each first step only creates what
/// is missing.
pub(crate) fn apply_sqlite(
    conn: &mut Connection,
    store: &'static str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let reached: i32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for migration in migrations.iter().filter(|m| m.version > reached) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration.sql)?;
        tx.pragma_update(None, "user_version", migration.version)?;
        tx.commit()?;
        tracing::info!(
            store,
            version = migration.version,
            name = migration.name,
            "database migrated"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const FIRST: Migration = Migration {
        version: 1,
        name: "t",
        sql: "CREATE TABLE t (n INTEGER);",
    };
    const SECOND: Migration = Migration {
        version: 2,
        name: "t.m",
        sql: "ALTER TABLE t ADD COLUMN m INTEGER;",
    };

    fn version(conn: &Connection) -> i32 {
        conn.query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn each_step_runs_once_and_a_later_one_only_on_what_has_the_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        apply_sqlite(&mut conn, "t", &[FIRST]).unwrap();
        // Neither step is idempotent: running either twice would fail.
        apply_sqlite(&mut conn, "t", &[FIRST]).unwrap();
        assert_eq!(version(&conn), 1);
        drop(conn);
        let mut conn = Connection::open(&path).unwrap();
        apply_sqlite(&mut conn, "t", &[FIRST, SECOND]).unwrap();
        apply_sqlite(&mut conn, "t", &[FIRST, SECOND]).unwrap();
        assert_eq!(version(&conn), 2);
        conn.execute("INSERT INTO t (n, m) VALUES (1, 2)", [])
            .unwrap();
    }

    #[test]
    fn a_failing_step_leaves_the_file_at_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        let broken = Migration {
            version: 2,
            name: "broken",
            sql: "ALTER TABLE t ADD COLUMN m INTEGER; ALTER TABLE nowhere ADD COLUMN x;",
        };
        assert!(apply_sqlite(&mut conn, "t", &[FIRST, broken]).is_err());
        assert_eq!(version(&conn), 1);
        // The half of the step that ran was rolled back with it.
        apply_sqlite(&mut conn, "t", &[FIRST, SECOND]).unwrap();
        assert_eq!(version(&conn), 2);
    }
}
