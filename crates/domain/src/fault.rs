//! Injected faults: how a service should misbehave, and the per-request decision.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The faults a service currently injects into its business endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Added to every business request before it is handled.
    pub delay_ms: u64,
    /// Fraction of business requests that fail, in 0..=1.
    pub fail_rate: f64,
    /// Status code of an injected failure (a 4xx or 5xx).
    pub fail_status: u16,
}

pub const DEFAULT_FAIL_STATUS: u16 = 500;

/// The longest injected delay: a day.
pub const MAX_DELAY_SECONDS: f64 = 86_400.0;

impl Default for Faults {
    fn default() -> Self {
        Self {
            delay_ms: 0,
            fail_rate: 0.0,
            fail_status: DEFAULT_FAIL_STATUS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("fail rate must be between 0 and 1, got {0}")]
    RateOutOfRange(String),
    #[error("fail status must be a 4xx or 5xx code, got {0}")]
    StatusNotAnError(u16),
    #[error("delay must be a number of seconds from 0 to {MAX_DELAY_SECONDS}, got {0}")]
    InvalidDelay(String),
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultDecision {
    Proceed,
    Fail(u16),
}

impl Faults {
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }

    /// Delay from a number of seconds, as people write it (`2`, `0.25`).
    pub fn delay_ms_from_seconds(seconds: f64) -> Result<u64, FaultError> {
        if !(0.0..=MAX_DELAY_SECONDS).contains(&seconds) {
            return Err(FaultError::InvalidDelay(seconds.to_string()));
        }
        Ok((seconds * 1000.0).round() as u64)
    }

    pub fn validate(&self) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(FaultError::RateOutOfRange(self.fail_rate.to_string()));
        }
        if !(400..=599).contains(&self.fail_status) {
            return Err(FaultError::StatusNotAnError(self.fail_status));
        }
        Ok(())
    }

    /// Decides one request given a uniform random `roll` in `[0, 1)`.
    pub fn decide(&self, roll: f64) -> FaultDecision {
        if roll < self.fail_rate {
            FaultDecision::Fail(self.fail_status)
        } else {
            FaultDecision::Proceed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(rate: f64) -> Faults {
        Faults {
            fail_rate: rate,
            fail_status: 503,
            ..Faults::default()
        }
    }

    #[test]
    fn decision_follows_the_rate() {
        assert_eq!(Faults::default().decide(0.0), FaultDecision::Proceed);
        assert_eq!(failing(1.0).decide(0.999_999), FaultDecision::Fail(503));
        assert_eq!(failing(0.25).decide(0.24), FaultDecision::Fail(503));
        assert_eq!(failing(0.25).decide(0.25), FaultDecision::Proceed);
    }

    #[test]
    fn validation_rejects_rates_and_statuses_out_of_range() {
        assert!(failing(0.5).validate().is_ok());
        assert_eq!(
            failing(1.5).validate(),
            Err(FaultError::RateOutOfRange("1.5".into()))
        );
        assert_eq!(
            failing(f64::NAN).validate(),
            Err(FaultError::RateOutOfRange("NaN".into()))
        );
        let ok_status = Faults {
            fail_status: 200,
            ..failing(1.0)
        };
        assert_eq!(ok_status.validate(), Err(FaultError::StatusNotAnError(200)));
    }

    #[test]
    fn delay_seconds_convert_to_milliseconds() {
        assert_eq!(Faults::delay_ms_from_seconds(2.0), Ok(2000));
        assert_eq!(Faults::delay_ms_from_seconds(0.25), Ok(250));
        assert!(Faults::delay_ms_from_seconds(-1.0).is_err());
        assert_eq!(
            Faults::delay_ms_from_seconds(90_000.0)
                .unwrap_err()
                .to_string(),
            "delay must be a number of seconds from 0 to 86400, got 90000"
        );
        assert!(Faults::delay_ms_from_seconds(f64::INFINITY).is_err());
    }
}
