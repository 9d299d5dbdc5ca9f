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
    /// The configured token; an empty one (or an empty file) counts as none.
    pub fn token(&self) -> std::io::Result<AdminToken> {
        let token = match &self.admin_token_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot read the admin token file {}: {e}", path.display()),
                )
            })?),
            None => self.admin_token.clone(),
        };
        Ok(AdminToken::new(token.as_deref()))
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
    fn the_comparison_needs_every_byte() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
