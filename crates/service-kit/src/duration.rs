//! Durations in admin bodies, read the same way by every service: seconds
//! (`{"seconds": 0.1}`, as the seed labs send them), milliseconds
//! (`{"ms": 100}`), or a duration with its unit (`{"delay": "100ms"}`).

use std::time::Duration;

use serde_json::Value;

use crate::problem::ApiError;

/// One duration-like setting: its name (`delay`, `throttle`) and the most it may be.
#[derive(Debug, Clone, Copy)]
pub struct DurationSetting {
    pub name: &'static str,
    pub max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Milliseconds,
    /// A string with its unit; a bare number is seconds.
    Written,
}

impl DurationSetting {
    /// The keys a body may use, each with its unit.
    fn keys(&self) -> Vec<(String, Unit)> {
        let name = self.name;
        vec![
            ("seconds".into(), Unit::Seconds),
            (format!("{name}_seconds"), Unit::Seconds),
            ("ms".into(), Unit::Milliseconds),
            ("milliseconds".into(), Unit::Milliseconds),
            (format!("{name}_ms"), Unit::Milliseconds),
            (name.into(), Unit::Written),
        ]
    }

    fn accepted(&self) -> String {
        self.keys()
            .iter()
            .map(|(key, _)| format!("`{key}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads the setting from a JSON object holding exactly one of its keys.
    pub fn read(&self, body: &Value) -> Result<Duration, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::unprocessable(format!(
                "the body must be an object with the {} as one of {}",
                self.name,
                self.accepted()
            )));
        };
        let keys = self.keys();
        if let Some(unknown) = object
            .keys()
            .find(|k| !keys.iter().any(|(key, _)| key == *k))
        {
            return Err(ApiError::unprocessable(format!(
                "unknown field `{unknown}`; give the {} as one of {}",
                self.name,
                self.accepted()
            )));
        }
        let given: Vec<_> = keys
            .iter()
            .filter_map(|(key, unit)| object.get(key).map(|value| (key, *unit, value)))
            .collect();
        match given[..] {
            [(key, unit, value)] => self.value(key, unit, value),
            [] => Err(ApiError::unprocessable(format!(
                "the {} is missing: give it as one of {}",
                self.name,
                self.accepted()
            ))),
            _ => Err(ApiError::unprocessable(format!(
                "give the {} once, as one of {}",
                self.name,
                self.accepted()
            ))),
        }
    }

    /// Reads one field of a larger body (`"dependencyTimeout": "5s"`): a
    /// duration written with its unit, or a number of seconds.
    pub fn read_field(&self, key: &str, value: &Value) -> Result<Duration, ApiError> {
        self.value(key, Unit::Written, value)
    }

    fn value(&self, key: &str, unit: Unit, value: &Value) -> Result<Duration, ApiError> {
        let range = self.range(key, unit);
        let duration = match (unit, value) {
            (Unit::Written, Value::String(text)) => humantime::parse_duration(text.trim())
                .map_err(|e| {
                    ApiError::unprocessable(format!(
                        "`{key}` is not a duration such as 2s or 150ms ({e}); {range}"
                    ))
                })?,
            (_, Value::Number(n)) => {
                let per_unit = if unit == Unit::Milliseconds {
                    0.001
                } else {
                    1.0
                };
                let seconds = n.as_f64().map(|n| n * per_unit);
                match seconds {
                    Some(s) if s >= 0.0 && s <= self.max.as_secs_f64() => {
                        Duration::from_millis((s * 1000.0).round() as u64)
                    }
                    _ => {
                        return Err(ApiError::unprocessable(format!("{range}, got {n}")));
                    }
                }
            }
            _ => {
                return Err(ApiError::unprocessable(format!("{range}, got {value}")));
            }
        };
        if duration > self.max {
            return Err(ApiError::unprocessable(format!("{range}, got {value}")));
        }
        Ok(duration)
    }

    /// What `key` takes, in its unit.
    fn range(&self, key: &str, unit: Unit) -> String {
        let max_ms = self.max.as_millis();
        let max_s = self.max.as_secs_f64();
        match unit {
            Unit::Seconds => {
                format!("`{key}` must be a number of seconds from 0 to {max_s} ({max_ms} ms)")
            }
            Unit::Milliseconds => {
                format!("`{key}` must be a number of milliseconds from 0 to {max_ms} ({max_s} s)")
            }
            Unit::Written => {
                format!("`{key}` must be from 0s to {max_s}s (e.g. \"2s\", \"150ms\")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use super::*;

    const THROTTLE: DurationSetting = DurationSetting {
        name: "throttle",
        max: Duration::from_secs(10),
    };

    #[test]
    fn seconds_milliseconds_and_written_durations_agree() {
        let cases = [
            (json!({"seconds": 0.1}), 100),
            (json!({"seconds": 2}), 2000),
            (json!({"throttle_seconds": 0.25}), 250),
            (json!({"ms": 100}), 100),
            (json!({"milliseconds": 5}), 5),
            (json!({"throttle_ms": 0}), 0),
            (json!({"throttle": "150ms"}), 150),
            (json!({"throttle": "2s"}), 2000),
            (json!({"throttle": 1.5}), 1500),
            (json!({"seconds": 10}), 10_000),
        ];
        for (body, ms) in cases {
            assert_eq!(THROTTLE.read(&body).unwrap().as_millis(), ms, "{body}");
        }
    }

    #[test]
    fn a_field_of_a_larger_body_is_written_or_seconds() {
        let timeout = |v: Value| THROTTLE.read_field("dependencyTimeout", &v);
        assert_eq!(timeout(json!("800ms")).unwrap(), Duration::from_millis(800));
        assert_eq!(timeout(json!(5)).unwrap(), Duration::from_secs(5));
        assert!(
            timeout(json!("1h"))
                .unwrap_err()
                .detail
                .starts_with("`dependencyTimeout` must be from 0s to 10s")
        );
    }

    #[test]
    fn out_of_range_values_say_what_the_range_is() {
        let cases = [
            (
                json!({"seconds": 11}),
                "`seconds` must be a number of seconds from 0 to 10 (10000 ms), got 11",
            ),
            (
                json!({"ms": 10_001}),
                "`ms` must be a number of milliseconds from 0 to 10000 (10 s), got 10001",
            ),
            (
                json!({"seconds": -1}),
                "`seconds` must be a number of seconds from 0 to 10 (10000 ms), got -1",
            ),
            (
                json!({"ms": "fast"}),
                "`ms` must be a number of milliseconds from 0 to 10000 (10 s), got \"fast\"",
            ),
            (
                json!({"throttle": "11s"}),
                "`throttle` must be from 0s to 10s (e.g. \"2s\", \"150ms\"), got \"11s\"",
            ),
            (
                json!({"throttle": "soon"}),
                "`throttle` is not a duration such as 2s or 150ms",
            ),
            (
                json!({}),
                "the throttle is missing: give it as one of `seconds`",
            ),
            (
                json!({"seconds": 1, "ms": 5}),
                "give the throttle once, as one of",
            ),
            (
                json!({"secs": 1}),
                "unknown field `secs`; give the throttle as one of",
            ),
            (json!([1]), "the body must be an object"),
        ];
        for (body, detail) in cases {
            let error = THROTTLE.read(&body).unwrap_err();
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(
                error.detail.starts_with(detail),
                "{body}: {} does not start with {detail}",
                error.detail
            );
        }
    }
}
