//! The services' admin token of each namespace. The operator chart makes one
//! token per namespace (the services and the workload Job of a namespace know
//! only theirs) and gives the operator all of them, as JSON
//! `{"<namespace>": "<token>"}` in `FOODLAB_ADMIN_TOKENS`; a namespace not
//! named there gets `FOODLAB_ADMIN_TOKEN` (its own namespace's, a part
//! installed on its own), or none.

use std::collections::HashMap;

use foodlab_lab::faults::{ADMIN_TOKEN_ENV, ClientError, FaultClient};

pub const ADMIN_TOKENS_ENV: &str = "FOODLAB_ADMIN_TOKENS";

/// One admin client per namespace, each sending that namespace's token.
#[derive(Clone)]
pub struct AdminTokens {
    by_namespace: HashMap<String, FaultClient>,
    other: FaultClient,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("{ADMIN_TOKENS_ENV} is not a JSON object of namespace to token: {0}")]
    NotAMap(#[from] serde_json::Error),
    #[error("{ADMIN_TOKENS_ENV} gives namespace {0:?} an empty token")]
    Empty(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl AdminTokens {
    /// From the operator's environment.
    pub fn from_env() -> Result<Self, TokensError> {
        let tokens = std::env::var(ADMIN_TOKENS_ENV).unwrap_or_default();
        let other = std::env::var(ADMIN_TOKEN_ENV).unwrap_or_default();
        Self::new(&tokens, &other)
    }

    /// `tokens`: the JSON map (empty: none); `other`: for the namespaces it
    /// does not name.
    pub fn new(tokens: &str, other: &str) -> Result<Self, TokensError> {
        let map: HashMap<String, String> = if tokens.trim().is_empty() {
            HashMap::new()
        } else {
            serde_json::from_str(tokens)?
        };
        let mut by_namespace = HashMap::new();
        for (namespace, token) in map {
            if token.trim().is_empty() {
                return Err(TokensError::Empty(namespace));
            }
            by_namespace.insert(namespace, FaultClient::with_token(&token)?);
        }
        Ok(Self {
            by_namespace,
            other: FaultClient::with_token(other)?,
        })
    }

    /// The client for the services of `namespace`.
    pub fn of(&self, namespace: &str) -> &FaultClient {
        self.by_namespace.get(namespace).unwrap_or(&self.other)
    }

    /// The namespaces with a token of their own.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.by_namespace.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_malformed_map_is_refused() {
        assert!(matches!(
            AdminTokens::new(r#"{"labs": " "}"#, ""),
            Err(TokensError::Empty(ns)) if ns == "labs"
        ));
        assert!(matches!(
            AdminTokens::new("labs=abc", ""),
            Err(TokensError::NotAMap(_))
        ));
        assert_eq!(AdminTokens::new("", "").unwrap().namespaces().count(), 0);
    }
}
