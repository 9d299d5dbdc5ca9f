//! W3C trace context on every request: the caller's `traceparent` is
//! continued (or a trace started), the handler runs in a span carrying its
//! `trace_id`, finds the context as an extension (to pass it on), and the
//! answer names it in `traceresponse`.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use foodlab_domain::{TRACEPARENT, TraceContext};
use tracing::Instrument;

/// The answer's header naming the trace the request was handled in.
pub const TRACERESPONSE: &str = "traceresponse";

pub async fn continue_trace(mut request: Request, next: Next) -> Response {
    let sent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok());
    let trace = TraceContext::continue_from(sent);
    request.extensions_mut().insert(trace);
    let span = tracing::info_span!("trace", trace_id = %trace.trace_id());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(TRACERESPONSE, value);
    }
    response
}
