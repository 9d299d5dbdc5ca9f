//! A query-string extractor whose rejections are problem details: a
//! parameter that is unknown, given twice or not of its type is 422, with
//! the parameter's name in the detail.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// `T` from the query string. Give `T` `#[serde(deny_unknown_fields)]` so
/// a misspelt parameter is refused instead of ignored.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(params)| QueryParams(params))
            .map_err(|rejection| {
                // axum's text is "Failed to deserialize query string: <field>: <why>".
                let text = rejection.body_text();
                let why = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::unprocessable(format!("invalid query: {why}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Request, StatusCode};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Page {
        limit: Option<u32>,
        after: Option<i64>,
    }

    async fn extract(query: &str) -> Result<Page, ApiError> {
        let request = Request::get(format!("/orders?{query}")).body(()).unwrap();
        let (mut parts, ()) = request.into_parts();
        QueryParams::<Page>::from_request_parts(&mut parts, &())
            .await
            .map(|QueryParams(page)| page)
    }

    #[tokio::test]
    async fn known_parameters_are_read_and_the_rest_refused_with_their_name() {
        assert_eq!(
            extract("limit=2&after=7").await.unwrap(),
            Page {
                limit: Some(2),
                after: Some(7)
            }
        );
        assert_eq!(
            extract("").await.unwrap(),
            Page {
                limit: None,
                after: None
            }
        );
        for (query, named) in [
            ("offset=3", "offset"),
            ("limit=ten", "limit"),
            ("limit=1&limit=2", "limit"),
        ] {
            let refused = extract(query).await.unwrap_err();
            assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
            assert!(
                refused.detail.starts_with("invalid query: ") && refused.detail.contains(named),
                "{query}: {}",
                refused.detail
            );
        }
    }
}
