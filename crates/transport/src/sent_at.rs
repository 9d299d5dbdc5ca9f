//! The moment a sender handed a message to its broker, carried in a header
//! on both brokers, so the receiver can time the broker's part of the way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, as decimal text.
pub const SENT_AT_HEADER: &str = "x-foodlab-sent-at-us";

/// This moment, as the header carries it.
pub fn now() -> String {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    us.to_string()
}

/// The moment a header value names (none when it is not a number).
pub fn parse(value: &[u8]) -> Option<SystemTime> {
    let us: u64 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_micros(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_as_the_moment_it_was_taken() {
        let before = SystemTime::now();
        let stamp = now();
        let read = parse(stamp.as_bytes()).unwrap();
        let off = read.duration_since(before).unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(1), "{off:?}");
        assert_eq!(parse(b"soon"), None);
        assert_eq!(parse(b"1000000"), Some(UNIX_EPOCH + Duration::from_secs(1)));
    }
}
