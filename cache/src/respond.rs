//! Answering from the cache: the `Age` header, the RFC 9211 `Cache-Status` header, and the
//! response built from a stored entry (whole, `HEAD`, `304` to a client's conditional, `206`
//! or `416` for a range).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT_RANGES, AGE, CONTENT_LENGTH, CONTENT_RANGE, HeaderName};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::range::{self, RangeAnswer};
use crate::revalidate::client_not_modified;
use crate::store::StoredEntry;

/// The cache's name in `Cache-Status` (RFC 9211 §2).
pub const CACHE_NAME: &str = "causeway";

/// The `Cache-Status` field name.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Why a request went upstream (RFC 9211 §2.2 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The cache was not consulted (method, `no-store`, no key).
    Bypass,
    /// The method is not cacheable.
    Method,
    /// Nothing stored for the URI.
    UriMiss,
    /// Stored, but not the variant this request selects.
    VaryMiss,
    /// Nothing usable stored.
    Miss,
    /// The request asked for validation (`no-cache`, `max-age`, `min-fresh`).
    Request,
    /// The stored response was stale.
    Stale,
}

impl Forward {
    fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::Method => "method",
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Miss => "miss",
            Self::Request => "request",
            Self::Stale => "stale",
        }
    }
}

/// One `Cache-Status` entry (RFC 9211 §2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    /// Served from the cache without going upstream.
    pub hit: bool,
    /// Why the request went upstream, if it did.
    pub fwd: Option<Forward>,
    /// The upstream status, when it differs from the one sent (e.g. a 304 revalidation).
    pub fwd_status: Option<StatusCode>,
    /// The remaining freshness in seconds; negative when stale.
    pub ttl: Option<i64>,
    /// The response was stored.
    pub stored: bool,
    /// The request waited for another request's upstream fetch.
    pub collapsed: bool,
    /// Why it was not stored, or another note.
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// A fresh hit with `ttl` left.
    #[must_use]
    pub fn hit(ttl: i64) -> Self {
        Self {
            hit: true,
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    /// A request that went upstream for `fwd`.
    #[must_use]
    pub fn forward(fwd: Forward) -> Self {
        Self {
            fwd: Some(fwd),
            ..Self::default()
        }
    }

    /// The header value, e.g. `causeway; fwd=stale; fwd-status=304; stored`.
    #[must_use]
    pub fn header_value(&self) -> HeaderValue {
        let mut text = String::from(CACHE_NAME);
        if self.hit {
            text.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            let _ = write!(text, "; fwd={}", fwd.as_str());
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(text, "; fwd-status={}", status.as_u16());
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(text, "; ttl={ttl}");
        }
        if self.stored {
            text.push_str("; stored");
        }
        if self.collapsed {
            text.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            // A token when it is one, else a quoted string (RFC 8941).
            if detail
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:*/".contains(&b))
            {
                let _ = write!(text, "; detail={detail}");
            } else {
                let _ = write!(text, "; detail=\"{}\"", detail.replace(['"', '\\'], ""));
            }
        }
        // Built only from ASCII tokens and digits above.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }
}

/// Remaining freshness in seconds, negative when stale (the `ttl` of `Cache-Status`).
#[must_use]
pub fn ttl_seconds(entry: &StoredEntry, now: SystemTime) -> i64 {
    let lifetime = entry.lifetime().as_secs();
    let age = entry.age(now).as_secs();
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    signed(lifetime) - signed(age)
}

/// The `Age` header value (§5.1): whole seconds.
#[must_use]
pub fn age_value(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs())
}

/// Builds the response to a request from a stored entry: `304` when the client's own
/// validators match, `206`/`416` for a single range of a stored 200, else the whole entry
/// (without a body for `HEAD`). `Age` and `Cache-Status` are set.
#[must_use]
pub fn serve(
    entry: &StoredEntry,
    request_headers: &HeaderMap,
    head: bool,
    now: SystemTime,
    status: &CacheStatus,
) -> Response<Bytes> {
    let mut headers = entry.headers().clone();
    headers.insert(AGE, age_value(entry.age(now)));
    headers.insert(CACHE_STATUS, status.header_value());
    let full_len = entry.body().len() as u64;
    let (code, body) = if entry.status().is_success() && client_not_modified(request_headers, entry)
    {
        // A 304 carries the validators and caching fields, not the body's description.
        headers.remove(http::header::CONTENT_TYPE);
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        match range::answer(request_headers, entry) {
            RangeAnswer::Full => {
                if entry.status() == StatusCode::OK {
                    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                }
                headers.insert(CONTENT_LENGTH, HeaderValue::from(full_len));
                (entry.status(), entry.body().clone())
            }
            RangeAnswer::Partial(bytes) => {
                let content_range = format!(
                    "bytes {}-{}/{full_len}",
                    bytes.start,
                    bytes.end.saturating_sub(1)
                );
                if let Ok(value) = HeaderValue::from_str(&content_range) {
                    headers.insert(CONTENT_RANGE, value);
                }
                headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.end - bytes.start));
                let (start, end) = (usize::try_from(bytes.start), usize::try_from(bytes.end));
                let part = match (start, end) {
                    (Ok(start), Ok(end)) => entry.body().slice(start..end),
                    _ => Bytes::new(),
                };
                (StatusCode::PARTIAL_CONTENT, part)
            }
            RangeAnswer::Unsatisfiable => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{full_len}")) {
                    headers.insert(CONTENT_RANGE, value);
                }
                headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
                (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
            }
        }
    };
    let mut response = Response::new(if head { Bytes::new() } else { body });
    *response.status_mut() = code;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ExchangeTimes;
    use crate::test_support::{at, header_map as request};

    fn entry() -> StoredEntry {
        let headers: HeaderMap = [
            (
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60"),
            ),
            (http::header::ETAG, HeaderValue::from_static("\"v1\"")),
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            ),
        ]
        .into_iter()
        .collect();
        let times = ExchangeTimes {
            request_time: at(0),
            response_time: at(0),
        };
        StoredEntry::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(b"0123456789"),
            &HeaderMap::new(),
            times,
            None,
        )
    }

    #[test]
    fn cache_status_values() {
        assert_eq!(CacheStatus::hit(12).header_value(), "causeway; hit; ttl=12");
        let stored = CacheStatus {
            stored: true,
            ..CacheStatus::forward(Forward::UriMiss)
        };
        assert_eq!(stored.header_value(), "causeway; fwd=uri-miss; stored");
        let revalidated = CacheStatus {
            fwd_status: Some(StatusCode::NOT_MODIFIED),
            ..CacheStatus::forward(Forward::Stale)
        };
        assert_eq!(
            revalidated.header_value(),
            "causeway; fwd=stale; fwd-status=304"
        );
        let detail = CacheStatus {
            detail: Some("too-large"),
            ..CacheStatus::forward(Forward::Miss)
        };
        assert_eq!(
            detail.header_value(),
            "causeway; fwd=miss; detail=too-large"
        );
        let odd = CacheStatus {
            detail: Some("a b"),
            ..CacheStatus::default()
        };
        assert_eq!(odd.header_value(), "causeway; detail=\"a b\"");
    }

    #[test]
    fn whole_hit_with_age_and_length() {
        let response = serve(
            &entry(),
            &HeaderMap::new(),
            false,
            at(7),
            &CacheStatus::hit(53),
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[AGE], "7");
        assert_eq!(response.headers()[CONTENT_LENGTH], "10");
        assert_eq!(response.headers()[CACHE_STATUS], "causeway; hit; ttl=53");
        assert_eq!(response.body(), &Bytes::from_static(b"0123456789"));
        assert_eq!(ttl_seconds(&entry(), at(70)), -10);
    }

    #[test]
    fn head_gets_headers_only() {
        let response = serve(
            &entry(),
            &HeaderMap::new(),
            true,
            at(0),
            &CacheStatus::hit(60),
        );
        assert_eq!(response.headers()[CONTENT_LENGTH], "10");
        assert!(response.body().is_empty());
    }

    #[test]
    fn ranges_and_conditionals() {
        let e = entry();
        let partial = serve(
            &e,
            &request(&[("range", "bytes=2-4")]),
            false,
            at(0),
            &CacheStatus::hit(60),
        );
        assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(partial.headers()[CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(partial.body(), &Bytes::from_static(b"234"));
        let none = serve(
            &e,
            &request(&[("range", "bytes=50-")]),
            false,
            at(0),
            &CacheStatus::hit(60),
        );
        assert_eq!(none.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(none.headers()[CONTENT_RANGE], "bytes */10");
        let many = serve(
            &e,
            &request(&[("range", "bytes=0-1,4-5")]),
            false,
            at(0),
            &CacheStatus::hit(60),
        );
        assert_eq!(many.status(), StatusCode::OK);
        let not_modified = serve(
            &e,
            &request(&[("if-none-match", "\"v1\"")]),
            false,
            at(0),
            &CacheStatus::hit(60),
        );
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
        assert!(not_modified.body().is_empty());
        assert_eq!(not_modified.headers()[http::header::ETAG], "\"v1\"");
    }
}
