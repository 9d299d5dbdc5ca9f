//! W3C trace context (`traceparent`): one order's trace id travels through
//! every hop (HTTP header, AMQP header, Kafka header) so its log lines in
//! all services can be found by that one id.
//!
//! `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; a version other
//! than `00` is read by the same rules (the spec's forward compatibility).

use std::fmt;

use uuid::Uuid;

/// The header (and AMQP/Kafka header) name.
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    /// The span of the hop that sent it (on an outgoing message: ours).
    span_id: u64,
    flags: u8,
}

const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// A new trace, for a request or message that came without one.
    pub fn start() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            flags: SAMPLED,
        }
    }

    /// This hop's context in the same trace: a new span id, whose parent is `self`.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// The context a hop continues: the sender's (if it is valid) or a new trace.
    pub fn continue_from(header: Option<&str>) -> Self {
        header
            .and_then(Self::parse)
            .map_or_else(Self::start, |parent| parent.child())
    }

    /// Reads a `traceparent` value; `None` if it is not a valid one.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = hex_field(parts.next()?, 2)?;
        let trace_id = hex_field(parts.next()?, 32)?;
        let span_id = hex_field(parts.next()?, 16)?;
        let flags = hex_field(parts.next()?, 2)?;
        // Version 00 has exactly four fields; a later one may append more.
        let extra = parts.next().is_some();
        if version == 0xff || (version == 0 && extra) || trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id,
            span_id: u64::try_from(span_id).ok()?,
            flags: u8::try_from(flags).ok()?,
        })
    }

    /// The trace id as 32 lower-case hex digits (what the logs carry).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// The `traceparent` value (version 00).
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// A field of exactly `len` lower-case hex digits.
fn hex_field(field: &str, len: usize) -> Option<u128> {
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    (field.len() == len && field.chars().all(lower_hex))
        .then(|| u128::from_str_radix(field, 16).ok())
        .flatten()
}

fn nonzero_u128() -> u128 {
    loop {
        let id = Uuid::new_v4().as_u128();
        if id != 0 {
            return id;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        // Truncation keeps 64 of the UUID's random bits.
        let id = Uuid::new_v4().as_u128() as u64;
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_spec_example() {
        let context = TraceContext::parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id(), "00f067aa0ba902b7");
        assert!(context.sampled());
        assert_eq!(context.to_string(), SPEC_EXAMPLE);
        let unsampled =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn refuses_invalid_values() {
        let invalid = [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // All-zero ids are invalid.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Upper case, wrong lengths, non-hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            // Version ff is forbidden; version 00 has no fifth field.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
        ];
        for value in invalid {
            assert_eq!(TraceContext::parse(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_the_same_rules() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        let context = TraceContext::parse(later).unwrap();
        assert_eq!(context.to_string(), SPEC_EXAMPLE);
    }

    #[test]
    fn a_hop_keeps_the_trace_and_takes_a_new_span() {
        let parent = TraceContext::parse(SPEC_EXAMPLE).unwrap();
        let hop = TraceContext::continue_from(Some(SPEC_EXAMPLE));
        assert_eq!(hop.trace_id(), parent.trace_id());
        assert_ne!(hop.span_id(), parent.span_id());
        assert_eq!(TraceContext::parse(&hop.to_string()), Some(hop));
    }

    #[test]
    fn a_missing_or_broken_header_starts_a_new_trace() {
        let a = TraceContext::continue_from(None);
        let b = TraceContext::continue_from(Some("garbage"));
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.trace_id().len(), 32);
        assert!(a.sampled());
        assert_eq!(TraceContext::parse(&a.to_string()), Some(a));
    }
}
