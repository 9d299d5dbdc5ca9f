//! Who may use a service's admin API (`/admin/*`: faults, stock, settings,
//! throttle, offsets). With a token configured, only callers sending
//! `Authorization: Bearer <token>` (the lab: the operator and its workload
//! Job); without one, everyone, as on a developer's machine. The scrape
//! path `/admin/metrics` and the read-only endpoints labs read (`/stock`,
//! `/stats`, `/metrics`, `/lag`) are never gated.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics::SCRAPE_PATH;
use crate::problem::ApiError;

/// Where the admin token comes from: the variable, or a file (a mounted Secret).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminArgs {
    /// Token the admin API asks for (`Authorization: Bearer <token>`); open when unset.
    #[arg(long, env = "FOODLAB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// File holding the admin token (e.g. a mounted Secret); wins over --admin-token.
    #[arg(long, env = "FOODLAB_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl AdminArgs {
    /// The configured token, or none when neither is given (an open admin
    /// API, as on a developer's machine). One given but empty or blank is
    /// refused: it is a Secret gone wrong, and would open the API to anyone.
    pub fn token(&self) -> std::io::Result<AdminToken> {
        let (token, from) = match &self.admin_token_file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot read the admin token file {}: {e}", path.display()),
                    )
                })?,
                format!("the admin token file {}", path.display()),
            ),
            None => match &self.admin_token {
                Some(token) => (token.clone(), "FOODLAB_ADMIN_TOKEN".to_owned()),
                None => return Ok(AdminToken::default()),
            },
        };
        let token = AdminToken::new(Some(&token));
        if !token.is_set() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{from} is empty: the admin API would be open to anyone; \
                     give it a token (on a cluster, the lab Secret's FOODLAB_ADMIN_TOKEN), \
                     or leave it unset for an open admin API on a developer's machine"
                ),
            ));
        }
        Ok(token)
    }
}

/// The token, or none (an open admin API).
#[derive(Clone, Default)]
pub struct AdminToken(Option<Arc<str>>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() { "set" } else { "none" };
        f.debug_tuple("AdminToken").field(&shown).finish()
    }
}

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        Self(
            token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Arc::from),
        )
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), ApiError> {
        let Some(expected) = &self.0 else {
            return Ok(());
        };
        let presented = authorization
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the admin API needs `Authorization: Bearer <token>` (the lab's admin token)",
            )),
            Some(token) if same(token.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this admin token is not the lab's",
            )),
        }
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn gated(path: &str) -> bool {
    path.starts_with("/admin/") && path != SCRAPE_PATH
}

/// Middleware over the whole router: refuses `/admin/*` without the token.
pub async fn require(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    if !gated(request.uri().path()) {
        return next.run(request).await;
    }
    match token.check(request.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            tracing::warn!(
                status = error.status.as_u16(),
                method = %request.method(),
                path = %request.uri().path(),
                "admin request refused"
            );
            let unauthorized = error.status == StatusCode::UNAUTHORIZED;
            let mut response = error.into_response();
            if unauthorized {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"foodlab-admin\""),
                );
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_paths_but_the_scrape_path_are_gated() {
        assert!(gated("/admin/faults"));
        assert!(gated("/admin/stock"));
        assert!(!gated("/admin/metrics"));
        assert!(!gated("/stock"));
        assert!(!gated("/stats"));
        assert!(!gated("/metrics"));
        assert!(!gated("/lag"));
        assert!(!gated("/administrator"));
    }

    #[test]
    fn an_empty_token_is_none() {
        assert!(!AdminToken::new(Some("  \n")).is_set());
        assert!(!AdminToken::new(None).is_set());
        assert!(AdminToken::new(Some("s3cret\n")).is_set());
    }

    #[test]
    fn a_token_given_but_empty_is_refused_and_none_given_is_open() {
        let args = |token: Option<&str>, file: Option<PathBuf>| AdminArgs {
            admin_token: token.map(str::to_owned),
            admin_token_file: file,
        };
        assert!(!args(None, None).token().unwrap().is_set());
        assert!(args(Some("s3cret"), None).token().unwrap().is_set());
        let blank = args(Some(" \t"), None).token().unwrap_err();
        assert_eq!(blank.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            blank
                .to_string()
                .starts_with("FOODLAB_ADMIN_TOKEN is empty"),
            "{blank}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").unwrap();
        let empty_file = args(Some("s3cret"), Some(path.clone()))
            .token()
            .unwrap_err();
        assert!(
            empty_file.to_string().contains("token file"),
            "{empty_file}"
        );
        std::fs::write(&path, "from-the-secret\n").unwrap();
        assert!(args(None, Some(path)).token().unwrap().is_set());
    }

    #[test]
    fn the_comparison_needs_every_byte() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
