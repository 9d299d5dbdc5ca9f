//! The pause between tries of anything that can fail for a while (a broker
//! away, a database starting, a Service not routed yet): `first`, doubling
//! each try, at most `max`; back to `first` after a try that lasted.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The pause before the next try; the one after is twice as long.
    pub fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// The pause the next try would wait, without taking it.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// From the first pause again (the last try lasted: it was no quick failure).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_max_and_starts_again_after_a_reset() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(500));
        let pauses: Vec<Duration> = (0..5).map(|_| backoff.pause()).collect();
        assert_eq!(pauses, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(backoff.peek(), ms(500));
        backoff.reset();
        assert_eq!(backoff.pause(), ms(100));
    }
}
