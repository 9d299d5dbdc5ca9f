//! The log span of one hop: every line logged while a service handles a
//! request or message carries its trace's id.

use foodlab_domain::TraceContext;

pub fn span(trace: &TraceContext) -> tracing::Span {
    tracing::info_span!("trace", trace_id = %trace.trace_id())
}
