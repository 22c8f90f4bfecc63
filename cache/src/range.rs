//! `Range` requests (RFC 9110 §14) answered from a stored full response.
//!
//! Only a single byte range is answered with a 206; several ranges get the whole response
//! (RFC 9110 §14.2 allows ignoring `Range`), which spares multipart/byteranges bodies.

use std::ops::Range;

use http::header::{IF_RANGE, RANGE};
use http::{HeaderMap, StatusCode};

use crate::store::StoredEntry;

/// What to send for a request's `Range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole response (no range, several ranges, an unknown unit, a failed `If-Range`, or
    /// a stored status other than 200).
    Full,
    /// `206 Partial Content` with these bytes.
    Partial(Range<u64>),
    /// `416 Range Not Satisfiable`.
    Unsatisfiable,
}

/// Decides the answer to `request_headers`' `Range` for a stored response.
#[must_use]
pub fn answer(request_headers: &HeaderMap, entry: &StoredEntry) -> RangeAnswer {
    if entry.status() != StatusCode::OK {
        return RangeAnswer::Full;
    }
    let Some(range) = request_headers.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Full;
    };
    if !if_range_holds(request_headers, entry) {
        return RangeAnswer::Full;
    }
    select(range, entry.body().len() as u64)
}

/// The answer to a `Range` value for a body of `len` bytes.
#[must_use]
pub fn select(range: &str, len: u64) -> RangeAnswer {
    let Some((unit, set)) = range.split_once('=') else {
        return RangeAnswer::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let number = |text: &str| -> Option<u64> {
        // Digits only: `parse` would also take a sign. Too many digits saturate.
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().unwrap_or(u64::MAX))
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `-n`: the last n bytes.
        return match number(last) {
            None => RangeAnswer::Full,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
            Some(suffix) => RangeAnswer::Partial(len.saturating_sub(suffix)..len),
        };
    }
    let Some(start) = number(first) else {
        return RangeAnswer::Full;
    };
    // `a-` runs to the end; `a-b` is clipped to it.
    let end = if last.is_empty() {
        len
    } else {
        match number(last) {
            // `b < a` is invalid rather than unsatisfiable: the Range is ignored.
            Some(end) if end >= start => end.saturating_add(1).min(len),
            _ => return RangeAnswer::Full,
        }
    };
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial(start..end)
}

/// `If-Range` (RFC 9110 §13.1.5): the range applies only if the validator still matches, by
/// strong comparison of the entity tag or exact equality of the date.
fn if_range_holds(request_headers: &HeaderMap, entry: &StoredEntry) -> bool {
    let Some(condition) = request_headers.get(IF_RANGE) else {
        return true;
    };
    let condition = condition.as_bytes().trim_ascii();
    if condition.starts_with(b"\"") {
        return entry
            .etag()
            .is_some_and(|etag| etag.as_bytes().trim_ascii() == condition);
    }
    if condition.starts_with(b"W/") {
        return false;
    }
    let date = std::str::from_utf8(condition)
        .ok()
        .and_then(|text| httpdate::parse_http_date(text).ok());
    date.is_some() && date == entry.last_modified()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ExchangeTimes;
    use crate::test_support::header_map as request;
    use bytes::Bytes;
    use http::{HeaderName, HeaderValue};
    use std::time::{Duration, SystemTime};

    fn p(range: Range<u64>) -> RangeAnswer {
        RangeAnswer::Partial(range)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(select("bytes=0-4", 10), p(0..5));
        assert_eq!(select("bytes=5-", 10), p(5..10));
        assert_eq!(select("bytes=-3", 10), p(7..10));
        assert_eq!(select("bytes=-30", 10), p(0..10));
        assert_eq!(select("bytes=8-100", 10), p(8..10));
        assert_eq!(select("Bytes = 1-1", 10), p(1..2));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(select("bytes=10-", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(select("bytes=20-30", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(select("bytes=-0", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(select("bytes=-5", 0), RangeAnswer::Unsatisfiable);
    }

    #[test]
    fn several_invalid_or_foreign_ranges_get_the_whole_response() {
        for range in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-2",
            "bytes=a-b",
            "bytes",
            "bytes=-",
            "bytes=1-x",
        ] {
            assert_eq!(select(range, 10), RangeAnswer::Full, "{range}");
        }
    }

    fn entry(status: u16, pairs: &[(&'static str, &str)]) -> StoredEntry {
        let headers = pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_static(n),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let times = ExchangeTimes {
            request_time: now,
            response_time: now,
        };
        let status = StatusCode::from_u16(status).expect("status");
        StoredEntry::new(
            status,
            headers,
            Bytes::from_static(b"0123456789"),
            &HeaderMap::new(),
            times,
            None,
        )
    }

    #[test]
    fn if_range_and_status() {
        let date = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(500));
        let stored = entry(200, &[("etag", "\"v1\""), ("last-modified", &date)]);
        assert_eq!(
            answer(&request(&[("range", "bytes=0-1")]), &stored),
            p(0..2)
        );
        assert_eq!(
            answer(
                &request(&[("range", "bytes=0-1"), ("if-range", "\"v1\"")]),
                &stored
            ),
            p(0..2)
        );
        assert_eq!(
            answer(
                &request(&[("range", "bytes=0-1"), ("if-range", "\"v2\"")]),
                &stored
            ),
            RangeAnswer::Full
        );
        assert_eq!(
            answer(
                &request(&[("range", "bytes=0-1"), ("if-range", "W/\"v1\"")]),
                &stored
            ),
            RangeAnswer::Full
        );
        assert_eq!(
            answer(
                &request(&[("range", "bytes=0-1"), ("if-range", &date)]),
                &stored
            ),
            p(0..2)
        );
        assert_eq!(answer(&request(&[]), &stored), RangeAnswer::Full);
        let not_found = entry(404, &[]);
        assert_eq!(
            answer(&request(&[("range", "bytes=0-1")]), &not_found),
            RangeAnswer::Full
        );
    }
}
