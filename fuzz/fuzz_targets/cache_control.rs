//! Fuzzes the cache's header parsing: `Cache-Control` and `Pragma` (both directions), the
//! freshness rules built on them (`Date`, `Expires`, `Age`, `Last-Modified`), and `Range`.
//! Origins and clients send whatever they like; nothing they send may panic the cache, and
//! every duration it derives stays within the 2^31-second bound of RFC 9111 §1.2.2.
//!
//! Input: response header lines, a blank line, then request header lines. A line
//! `name: value` is that header; a line without a colon is a `Cache-Control` value.
#![no_main]

use std::time::{Duration, SystemTime};

use causeway_cache::cache_control::{
    DELTA_SECONDS_MAX, FieldScope, MaxStale, RequestDirectives, ResponseDirectives, delta_seconds,
};
use causeway_cache::freshness::{
    self, Freshness, Heuristic, assess, corrected_initial_age, current_age, freshness_lifetime,
};
use causeway_cache::range::{self, RangeAnswer};
use http::header::{CACHE_CONTROL, RANGE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

/// 2^31 seconds: the largest age or lifetime a cache represents.
const BOUND: Duration = Duration::from_secs(DELTA_SECONDS_MAX);

/// The clock the entry was stored at (2024-01-01), so that HTTP dates land on both sides of it.
const STORED_AT_UNIX: u64 = 1_704_067_200;

/// Reads header lines into a map, skipping lines that are not a valid name and value (the
/// HTTP parser would have refused them before the cache saw them).
fn headers(lines: &[&[u8]]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let Ok(name) = HeaderName::from_bytes(&line[..colon]) else {
                    continue;
                };
                (name, line[colon + 1..].trim_ascii())
            }
            None => (CACHE_CONTROL, line.trim_ascii()),
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name, value);
        }
    }
    map
}

fn within_bound(what: &str, value: Option<Duration>) {
    if let Some(value) = value {
        assert!(value <= BOUND, "{what} {value:?} beyond 2^31 s");
    }
}

fn check_scope(what: &str, scope: &FieldScope) {
    if let FieldScope::Fields(names) = scope {
        assert!(
            !names.is_empty(),
            "{what} qualified by no field reads as unqualified"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .collect();
    let blank = lines
        .iter()
        .position(|line| line.is_empty())
        .unwrap_or(lines.len());
    let response_headers = headers(&lines[..blank]);
    let request_headers = headers(lines.get(blank + 1..).unwrap_or_default());

    let response = ResponseDirectives::from_headers(&response_headers);
    let request = RequestDirectives::from_headers(&request_headers);
    assert_eq!(
        response,
        ResponseDirectives::from_headers(&response_headers),
        "parsing is pure"
    );
    for (what, value) in [
        ("max-age", response.max_age),
        ("s-maxage", response.s_maxage),
        ("stale-while-revalidate", response.stale_while_revalidate),
        ("stale-if-error", response.stale_if_error),
        ("request max-age", request.max_age),
        ("min-fresh", request.min_fresh),
        ("request stale-if-error", request.stale_if_error),
    ] {
        within_bound(what, value);
    }
    if let Some(MaxStale::Limit(limit)) = request.max_stale {
        within_bound("max-stale", Some(limit));
    }
    check_scope("no-cache", &response.no_cache);
    check_scope("private", &response.private);
    if response.s_maxage.is_some() {
        assert!(
            response.forbids_stale(),
            "s-maxage implies proxy-revalidate"
        );
    }

    let stored_at = SystemTime::UNIX_EPOCH + Duration::from_secs(STORED_AT_UNIX);
    let requested_at = stored_at - Duration::from_secs(1);
    let heuristic = Heuristic::default();
    let initial_age = corrected_initial_age(&response_headers, requested_at, stored_at);
    assert!(
        initial_age <= BOUND,
        "initial age {initial_age:?} beyond 2^31 s"
    );
    within_bound("Age", freshness::age_header(&response_headers));
    for status in [StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR] {
        let lifetime = freshness_lifetime(
            status,
            &response,
            &response_headers,
            stored_at,
            Some(&heuristic),
        );
        assert!(lifetime <= BOUND, "lifetime {lifetime:?} beyond 2^31 s");
        for resident in [0, 59, 3_600, 86_400 * 365, DELTA_SECONDS_MAX + 1] {
            let now = stored_at + Duration::from_secs(resident);
            let age = current_age(initial_age, stored_at, now);
            assert!(age <= BOUND, "age {age:?} beyond 2^31 s");
            match assess(lifetime, age, &response, &request) {
                Freshness::Fresh { remaining } => {
                    assert!(
                        remaining > Duration::ZERO && remaining <= lifetime,
                        "fresh for {remaining:?} of {lifetime:?}"
                    );
                }
                Freshness::Stale { staleness, .. } => {
                    assert!(
                        age >= lifetime && staleness == age - lifetime,
                        "stale by {staleness:?}"
                    );
                }
                Freshness::MustRevalidate => {}
            }
        }
    }

    // Delta-seconds and Range values are parsed from the same kinds of bytes.
    for line in &lines {
        if let Ok(text) = std::str::from_utf8(line) {
            within_bound("delta-seconds", delta_seconds(text));
        }
    }
    for value in request_headers.get_all(RANGE) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for len in [0, 1, 100, u64::MAX] {
            if let RangeAnswer::Partial(bytes) = range::select(text, len) {
                assert!(
                    bytes.start < bytes.end && bytes.end <= len,
                    "range {bytes:?} of {len} bytes"
                );
            }
        }
    }
});
