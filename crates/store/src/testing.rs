//! Databases for the store's tests: a SQLite file in a temporary directory,
//! or a schema of its own on the project's PostgreSQL (`scripts/postgres.sh`,
//! started when it is not running; `FOODLAB_TEST_DATABASE_URL` names another
//! server). Each test gets an empty one and it is dropped after. Other
//! crates' tests take them with the `testing` feature.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use tokio::sync::OnceCell;

use crate::Database;

pub struct TestDatabase {
    pub database: Database,
    _dir: Option<tempfile::TempDir>,
    /// The server's URL and the schema to drop after the test.
    schema: Option<(String, String)>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((url, schema)) = &self.schema {
            // psql, so the drop needs no runtime of its own inside Drop.
            let _ = Command::new("psql")
                .args([
                    url.as_str(),
                    "-qc",
                    &format!("DROP SCHEMA {schema} CASCADE"),
                ])
                .output();
        }
    }
}

pub fn sqlite(file: &str) -> TestDatabase {
    let dir = tempfile::tempdir().unwrap();
    TestDatabase {
        database: Database::Sqlite(dir.path().join(file)),
        _dir: Some(dir),
        schema: None,
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The server's URL, the project's server started first when none is named.
async fn server() -> &'static str {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("FOODLAB_TEST_DATABASE_URL") {
            return url;
        }
        let script = repo().join("scripts/postgres.sh");
        let up = Command::new(&script).arg("up").status().unwrap();
        assert!(up.success(), "scripts/postgres.sh up failed");
        let url = Command::new(&script).arg("url").output().unwrap();
        String::from_utf8(url.stdout).unwrap().trim().to_owned()
    })
    .await
}

pub async fn postgres() -> TestDatabase {
    let url = server().await.to_owned();
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let created = Command::new("psql")
        .args([url.as_str(), "-qc", &format!("CREATE SCHEMA {schema}")])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let separator = if url.contains('?') { '&' } else { '?' };
    TestDatabase {
        database: Database::Postgres(format!("{url}{separator}options=-csearch_path%3D{schema}")),
        _dir: None,
        schema: Some((url, schema)),
    }
}

/// One async test body run on each backend: `mod NAME { sqlite, postgres }`.
#[cfg(test)]
macro_rules! on_both_backends {
    ($file:literal; $(async fn $name:ident($db:ident: Database) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($db: crate::Database) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    let test = crate::testing::sqlite($file);
                    run(test.database.clone()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    let test = crate::testing::postgres().await;
                    run(test.database.clone()).await;
                }
            }
        )*
    };
}
#[cfg(test)]
pub(crate) use on_both_backends;
