//! Helpers the unit tests of several modules share.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

/// `secs` seconds after a fixed instant, so dates in tests are stable.
pub(crate) fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// A header map from `(name, value)` pairs; names must be lowercase.
pub(crate) fn header_map(pairs: &[(&'static str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(n, v)| {
            (
                HeaderName::from_static(n),
                HeaderValue::from_str(v).expect("a valid header value"),
            )
        })
        .collect()
}
