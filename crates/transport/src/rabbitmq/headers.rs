//! What a message's headers carry: retries, the dead-letter reason, the
//! trace context, when it was sent.

use foodlab_domain::{TRACEPARENT, TraceContext};
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::AMQPValue;

use super::{REASON_HEADER, RETRIES_HEADER};

pub(super) fn with_header(
    properties: BasicProperties,
    key: &str,
    value: AMQPValue,
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(key.into(), value);
    properties.with_headers(headers)
}

/// How often a delivery has been retried so far (0 for a first delivery).
pub fn retries_of(delivery: &Delivery) -> u32 {
    let value = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(RETRIES_HEADER).cloned());
    match value {
        Some(AMQPValue::LongUInt(n)) => n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u32::from(n),
        _ => 0,
    }
}

/// The trace context a delivery carries, if any.
pub fn trace_of(properties: &BasicProperties) -> Option<TraceContext> {
    match properties.headers().as_ref()?.inner().get(TRACEPARENT)? {
        AMQPValue::LongString(s) => TraceContext::parse(&String::from_utf8_lossy(s.as_bytes())),
        _ => None,
    }
}

/// This hop's context for a delivery (the sender's trace, or a new one),
/// written into the delivery's headers: what it publishes, retries or
/// dead-letters carries it on.
pub(super) fn continue_trace(mut delivery: Delivery) -> (Delivery, TraceContext) {
    let trace =
        trace_of(&delivery.properties).map_or_else(TraceContext::start, |sent| sent.child());
    delivery.properties = with_header(
        delivery.properties,
        TRACEPARENT,
        AMQPValue::LongString(trace.to_string().into()),
    );
    (delivery, trace)
}

/// When the delivery's sender handed it to RabbitMQ, if it said.
pub fn sent_at(delivery: &Delivery) -> Option<std::time::SystemTime> {
    match delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(crate::sent_at::SENT_AT_HEADER)?
    {
        AMQPValue::LongString(s) => crate::sent_at::parse(s.as_bytes()),
        _ => None,
    }
}

/// The dead-letter reason a message carries, if any.
pub fn reason_of(properties: &BasicProperties) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(REASON_HEADER)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}
