//! Where a service keeps its state: its own SQLite file, or a PostgreSQL
//! database shared with the part's other services and replicas.

use std::fmt;
use std::path::PathBuf;

use crate::StoreError;

#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file of the service's own (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its `postgres://` URL.
    Postgres(String),
}

impl Database {
    /// The service's SQLite file `SERVICE.db` in `data_dir`, or the
    /// PostgreSQL database at `url` when one is given.
    pub fn for_service(
        service: &str,
        data_dir: &std::path::Path,
        url: Option<&str>,
    ) -> Result<Self, StoreError> {
        match url.map(str::trim).filter(|url| !url.is_empty()) {
            Some(url) => Self::from_url(url),
            None => Ok(Self::Sqlite(data_dir.join(format!("{service}.db")))),
        }
    }

    /// A `postgres://` (or `postgresql://`) URL; anything else is refused
    /// with the reason.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let refused = |reason: &str| StoreError::DatabaseUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(refused(
                "only PostgreSQL URLs (postgres://user:password@host:port/database) are taken; \
                 leave it unset for the embedded SQLite",
            ));
        }
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| refused(&e.to_string()))?;
        Ok(Self::Postgres(url.to_owned()))
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// Shows the URL without its password.
impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(url) => write!(f, "{}", redact(url)),
        }
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_uses_its_file_unless_a_postgres_url_is_given() {
        let dir = std::path::Path::new("/data");
        assert_eq!(
            Database::for_service("inventory", dir, None).unwrap(),
            Database::Sqlite("/data/inventory.db".into())
        );
        assert_eq!(
            Database::for_service("inventory", dir, Some("  ")).unwrap(),
            Database::Sqlite("/data/inventory.db".into())
        );
        let url = "postgres://foodlab:secret@db:5432/foodlab";
        let database = Database::for_service("inventory", dir, Some(url)).unwrap();
        assert_eq!(database, Database::Postgres(url.into()));
        assert_eq!(
            database.to_string(),
            "postgres://foodlab:***@db:5432/foodlab"
        );
    }

    #[test]
    fn other_urls_are_refused_with_the_reason_and_no_password() {
        let error = Database::from_url("mysql://u:secret@db/x").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("only PostgreSQL URLs"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        let error = Database::from_url("postgres://u:secret@db:notaport/x").unwrap_err();
        assert!(matches!(error, StoreError::DatabaseUrl { .. }), "{error}");
    }
}
