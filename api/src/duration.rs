//! A duration written the way Kubernetes users write them: `250ms`, `5s`, `1m30s`, `2h`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern every duration string matches; shared by the parser's error and the CRD schema.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// The longest duration text accepted; the bound also keeps the API server's cost estimate
/// of CEL rules on durations within budget.
pub const DURATION_MAX_LENGTH: usize = 32;

/// A non-negative duration serialized as a string such as `1m30s`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected a sequence of <number><unit> with unit ms, s, m or h (for example 250ms, 5s, 1m30s), at most {DURATION_MAX_LENGTH} characters"
)]
pub struct ParseDurationError {
    input: String,
}

impl Duration {
    /// A duration of whole milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// A duration of whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    /// The standard library duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError {
            input: input.to_owned(),
        };
        if input.is_empty() || input.len() > DURATION_MAX_LENGTH {
            return Err(err());
        }
        let mut total_ms: u64 = 0;
        let mut rest = input;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let (unit_ms, unit_len) = if rest.starts_with("ms") {
                (1, 2)
            } else if rest.starts_with('s') {
                (1_000, 1)
            } else if rest.starts_with('m') {
                (60_000, 1)
            } else if rest.starts_with('h') {
                (3_600_000, 1)
            } else {
                return Err(err());
            };
            rest = &rest[unit_len..];
            let part = value.checked_mul(unit_ms).ok_or_else(err)?;
            total_ms = total_ms.checked_add(part).ok_or_else(err)?;
        }
        Ok(Self::from_millis(total_ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            f.write_str("0s")
        } else if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
            "description": "A duration such as 250ms, 5s, 1m30s or 2h."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!("250ms".parse::<Duration>(), Ok(Duration::from_millis(250)));
        assert_eq!("1m30s".parse::<Duration>(), Ok(Duration::from_secs(90)));
        assert_eq!("2h".parse::<Duration>(), Ok(Duration::from_secs(7200)));
        assert_eq!("0s".parse::<Duration>(), Ok(Duration::default()));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-1s",
            "1.5s",
            "5 s",
            "99999999999999999999h",
            "1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["250ms", "5s", "2m", "3h", "1500ms", "0s"] {
            let d: Duration = text.parse().expect("valid");
            assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
        }
    }
}
