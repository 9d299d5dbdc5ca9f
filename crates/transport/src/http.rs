use std::time::Duration;

use foodlab_domain::{TRACEPARENT, TraceContext};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a call to another service did not produce the answer asked for.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the timeout.
    #[error("{url} did not answer within {}", humanize(*.after))]
    Timeout { url: String, after: Duration },
    /// Nothing listening, connection refused or reset.
    #[error("{url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The service answered with a non-success status.
    #[error("{url} answered {status}{}", .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        detail: Option<String>,
    },
    /// The service answered 2xx with a body that is not what was expected.
    #[error("{url} answered with an unreadable body: {reason}")]
    BadBody { url: String, reason: String },
}

fn humanize(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// One keep-alive connection pool per service, shared by every request it makes.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    timeout: Duration,
    /// Sent as `traceparent` with every call.
    trace: Option<TraceContext>,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let inner = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            inner,
            timeout,
            trace: None,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same connection pool with another per-call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// The same connection pool, its calls made as part of `trace`.
    pub fn with_trace(&self, trace: TraceContext) -> Self {
        Self {
            trace: Some(trace),
            ..self.clone()
        }
    }

    /// POSTs `body` as JSON and reads a JSON answer.
    pub async fn post_json<B, R>(&self, url: &str, body: &B) -> Result<R, CallError>
    where
        B: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let request = self.inner.post(url).json(body);
        self.send(url, request).await
    }

    /// GETs a JSON document.
    pub async fn get_json<R: DeserializeOwned>(&self, url: &str) -> Result<R, CallError> {
        let request = self.inner.get(url);
        self.send(url, request).await
    }

    async fn send<R: DeserializeOwned>(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<R, CallError> {
        let classify = |e: reqwest::Error| self.classify(url, e);
        let request = match self.trace {
            Some(trace) => request.header(TRACEPARENT, trace.to_string()),
            None => request,
        };
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        let body = response.bytes().await.map_err(classify)?;
        if !status.is_success() {
            return Err(CallError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                detail: detail_of(&body),
            });
        }
        serde_json::from_slice(&body).map_err(|e| CallError::BadBody {
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }

    fn classify(&self, url: &str, error: reqwest::Error) -> CallError {
        if error.is_timeout() {
            CallError::Timeout {
                url: url.to_owned(),
                after: self.timeout,
            }
        } else {
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(inner) = source {
                reason = format!("{reason}: {inner}");
                source = inner.source();
            }
            CallError::Unreachable {
                url: url.to_owned(),
                reason,
            }
        }
    }
}

/// The `detail` of a problem-details body, if the body is one.
fn detail_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("detail")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use serde_json::{Value, json};

    use super::*;

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn classifies_status_timeout_and_unreachable() {
        let base = serve(
            Router::new()
                .route("/ok", post(|| async { axum::Json(json!({"fine": true})) }))
                .route(
                    "/broken",
                    post(|| async {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            axum::Json(json!({"detail": "boom"})),
                        )
                    }),
                )
                .route(
                    "/slow",
                    post(|| async {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        "late"
                    }),
                ),
        )
        .await;
        let client = HttpClient::new(Duration::from_millis(200)).unwrap();

        let ok: Value = client
            .post_json(&format!("{base}/ok"), &json!({}))
            .await
            .unwrap();
        assert_eq!(ok, json!({"fine": true}));

        match client
            .post_json::<_, Value>(&format!("{base}/broken"), &json!({}))
            .await
        {
            Err(CallError::Status {
                status: 500,
                detail,
                ..
            }) => {
                assert_eq!(detail.as_deref(), Some("boom"))
            }
            other => panic!("expected a 500 status error, got {other:?}"),
        }

        let started = std::time::Instant::now();
        let slow = client
            .post_json::<_, Value>(&format!("{base}/slow"), &json!({}))
            .await;
        assert!(matches!(slow, Err(CallError::Timeout { .. })), "{slow:?}");
        assert!(started.elapsed() < Duration::from_secs(1));

        // A port that was just free has nothing listening on it.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let refused = client
            .post_json::<_, Value>(&format!("http://{closed}/x"), &json!({}))
            .await;
        assert!(
            matches!(refused, Err(CallError::Unreachable { .. })),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_traced_client_sends_its_traceparent() {
        let echo = |headers: axum::http::HeaderMap| async move {
            let sent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
            axum::Json(json!({ "traceparent": sent }))
        };
        let base = serve(Router::new().route("/echo", post(echo))).await;
        let url = format!("{base}/echo");
        let client = HttpClient::new(Duration::from_secs(2)).unwrap();
        let trace = TraceContext::start();

        let traced: Value = client
            .with_trace(trace)
            .post_json(&url, &json!({}))
            .await
            .unwrap();
        assert_eq!(traced, json!({ "traceparent": trace.to_string() }));
        let untraced: Value = client.post_json(&url, &json!({})).await.unwrap();
        assert_eq!(untraced, json!({ "traceparent": null }));
    }
}
