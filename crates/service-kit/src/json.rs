//! A JSON body extractor whose rejections are problem details:
//! malformed JSON is 400, well-formed JSON of the wrong shape is 422, a body
//! over the size limit is 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A body over the size limit is 413 Payload Too Large, as axum's
        // rejection says; any other unreadable body is 400.
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::new(e.status(), format!("cannot read the request body: {e}")))?;
        parse(&bytes).map(JsonBody)
    }
}

/// One pass over the body: serde says whether it failed on the syntax
/// (400) or on the data, well-formed JSON of another shape (422).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::unprocessable(format!("invalid body: {e}")),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Delay {
        seconds: f64,
    }

    #[test]
    fn malformed_is_400_and_wrong_shape_is_422() {
        assert_eq!(
            parse::<Delay>(b"{nope").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse::<Delay>(b"").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let wrong = parse::<Delay>(br#"{"seconds":"two"}"#).unwrap_err();
        assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(wrong.detail.contains("seconds") || wrong.detail.contains("invalid type"));
        assert!(parse::<Delay>(br#"{"seconds":2}"#).is_ok());
        // Cut off inside a well-typed value is still malformed, not 422.
        assert_eq!(
            parse::<Delay>(br#"{"seconds":2"#).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let missing = parse::<Delay>(b"{}").unwrap_err();
        assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(missing.detail.contains("seconds"), "{}", missing.detail);
    }
}
