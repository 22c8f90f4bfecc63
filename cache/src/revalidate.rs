//! Validation (RFC 9111 §4.3): the conditional request sent upstream for a stored response,
//! merging a `304 Not Modified` into it, and answering a client's own conditional request
//! from a stored response.

use std::sync::Arc;

use http::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, response};

use crate::freshness::{self, Heuristic};
use crate::storable::is_hop_by_hop;
use crate::store::{ExchangeTimes, StoredEntry};

/// Prepares the headers of a request sent upstream to fill the cache: the client's own
/// preconditions and range go (the cache wants the whole current representation, and answers
/// the client's conditions and range from it); with a stored entry, its validators go in
/// (§4.3.1).
pub fn prepare_fill(headers: &mut HeaderMap, stored: Option<&StoredEntry>) {
    for name in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ] {
        headers.remove(name);
    }
    let Some(entry) = stored else { return };
    if let Some(etag) = entry.etag() {
        headers.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = entry.last_modified()
        && let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified))
    {
        headers.insert(IF_MODIFIED_SINCE, value);
    }
}

/// Why a 304 does not freshen the stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MergeRefused {
    /// The 304 names a different strong validator than the stored one (§4.3.4): the stored
    /// response is not the one the origin validated; fetch it whole.
    #[error("the 304 validates another representation")]
    OtherRepresentation,
}

/// Merges a `304 Not Modified` into the stored entry it validated (§4.3.4, §3.2): every field
/// of the 304 replaces the stored one, except hop-by-hop fields, `Content-Length` and the
/// fields describing the stored body (`Content-Encoding`, `Content-Type`, `Content-Range`) and
/// the `Vary` it was selected by; the body is kept and the ages restart from this exchange.
///
/// # Errors
/// The 304 carries an `ETag` other than the stored one.
pub fn merge_not_modified(
    stored: &Arc<StoredEntry>,
    not_modified: &response::Parts,
    request_headers: &HeaderMap,
    times: ExchangeTimes,
    heuristic: Option<&Heuristic>,
) -> Result<Arc<StoredEntry>, MergeRefused> {
    if let (Some(new), Some(old)) = (not_modified.headers.get(ETAG), stored.etag())
        && !weak_eq(new.as_bytes(), old.as_bytes())
    {
        return Err(MergeRefused::OtherRepresentation);
    }
    let mut headers = stored.headers().clone();
    let kept = |name: &http::HeaderName| {
        is_hop_by_hop(name)
            || [
                CONTENT_LENGTH,
                CONTENT_ENCODING,
                CONTENT_TYPE,
                CONTENT_RANGE,
                VARY,
            ]
            .contains(name)
    };
    for name in not_modified.headers.keys() {
        if kept(name) {
            continue;
        }
        headers.remove(name);
        for value in not_modified.headers.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let merged = StoredEntry::new(
        stored.status(),
        headers,
        stored.body().clone(),
        request_headers,
        times,
        heuristic,
    );
    merged.inherit_hits(stored);
    Ok(Arc::new(merged))
}

/// Weak comparison of entity tags (RFC 9110 §8.8.3.2): equal opaque tags, `W/` ignored.
fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    let opaque = |tag: &'_ [u8]| -> Vec<u8> {
        let tag = tag.trim_ascii();
        tag.strip_prefix(b"W/").unwrap_or(tag).to_vec()
    };
    opaque(a) == opaque(b)
}

/// Whether a client's `If-None-Match` / `If-Modified-Since` (RFC 9110 §13.1.2, §13.1.3) lets a
/// cache hit be answered `304 Not Modified`. `If-Modified-Since` counts only without
/// `If-None-Match`, as RFC 9110 §13.2.2 orders.
#[must_use]
pub fn client_not_modified(request_headers: &HeaderMap, entry: &StoredEntry) -> bool {
    if request_headers.contains_key(IF_NONE_MATCH) {
        let Some(etag) = entry.etag() else {
            return false;
        };
        return request_headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .flat_map(|line| line.as_bytes().split(|b| *b == b','))
            .any(|tag| tag.trim_ascii() == b"*" || weak_eq(tag, etag.as_bytes()));
    }
    let since = freshness::http_date(request_headers, IF_MODIFIED_SINCE);
    match (since, entry.last_modified()) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{at, header_map as headers};
    use bytes::Bytes;
    use http::{Response, StatusCode};
    use std::time::Duration;

    fn entry(pairs: &[(&'static str, &str)]) -> Arc<StoredEntry> {
        let times = ExchangeTimes {
            request_time: at(0),
            response_time: at(0),
        };
        Arc::new(StoredEntry::new(
            StatusCode::OK,
            headers(pairs),
            Bytes::from_static(b"body"),
            &HeaderMap::new(),
            times,
            None,
        ))
    }

    #[test]
    fn fill_requests_drop_client_preconditions_and_carry_validators() {
        let stored = entry(&[
            ("etag", "\"v1\""),
            ("last-modified", &httpdate::fmt_http_date(at(0))),
        ]);
        let mut request = headers(&[
            ("if-none-match", "\"client\""),
            ("range", "bytes=0-1"),
            ("if-range", "\"x\""),
            ("accept", "text/html"),
        ]);
        prepare_fill(&mut request, Some(&stored));
        assert_eq!(
            request.get(IF_NONE_MATCH),
            Some(&HeaderValue::from_static("\"v1\""))
        );
        assert!(request.contains_key(IF_MODIFIED_SINCE));
        assert!(!request.contains_key(RANGE) && !request.contains_key(IF_RANGE));
        assert!(request.contains_key("accept"));
        let mut plain = headers(&[("if-modified-since", "x")]);
        prepare_fill(&mut plain, None);
        assert!(plain.is_empty());
    }

    #[test]
    fn not_modified_updates_headers_but_not_the_body_or_its_description() {
        let stored = entry(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=10"),
            ("content-type", "text/plain"),
            ("x-old", "1"),
        ]);
        stored.record_hit();
        let (not_modified, ()) = Response::builder()
            .status(304)
            .header("etag", "W/\"v1\"")
            .header("cache-control", "max-age=600")
            .header("content-type", "application/evil")
            .header("content-length", "0")
            .header("x-new", "2")
            .body(())
            .expect("304")
            .into_parts();
        let times = ExchangeTimes {
            request_time: at(100),
            response_time: at(100),
        };
        let merged = merge_not_modified(&stored, &not_modified, &HeaderMap::new(), times, None)
            .expect("merge");
        assert_eq!(merged.body(), &Bytes::from_static(b"body"));
        assert_eq!(merged.lifetime(), Duration::from_secs(600));
        assert_eq!(
            merged.headers().get("content-type"),
            Some(&HeaderValue::from_static("text/plain"))
        );
        assert!(merged.headers().contains_key("x-old") && merged.headers().contains_key("x-new"));
        assert!(!merged.headers().contains_key("content-length"));
        assert_eq!(
            merged.age(at(110)),
            Duration::from_secs(10),
            "age restarts at the 304"
        );
        assert_eq!(merged.hits(), 1, "hits carry over");
    }

    #[test]
    fn not_modified_for_another_etag_is_refused() {
        let stored = entry(&[("etag", "\"v1\"")]);
        let (not_modified, ()) = Response::builder()
            .status(304)
            .header("etag", "\"v2\"")
            .body(())
            .expect("304")
            .into_parts();
        let times = ExchangeTimes {
            request_time: at(1),
            response_time: at(1),
        };
        assert_eq!(
            merge_not_modified(&stored, &not_modified, &HeaderMap::new(), times, None).err(),
            Some(MergeRefused::OtherRepresentation)
        );
    }

    #[test]
    fn client_conditionals_answered_from_the_store() {
        let stored = entry(&[
            ("etag", "\"v1\""),
            ("last-modified", &httpdate::fmt_http_date(at(0))),
        ]);
        assert!(client_not_modified(
            &headers(&[("if-none-match", "\"a\", W/\"v1\"")]),
            &stored
        ));
        assert!(client_not_modified(
            &headers(&[("if-none-match", "*")]),
            &stored
        ));
        assert!(!client_not_modified(
            &headers(&[("if-none-match", "\"v2\"")]),
            &stored
        ));
        let since = |t| headers(&[("if-modified-since", &httpdate::fmt_http_date(t))]);
        assert!(client_not_modified(&since(at(5)), &stored));
        assert!(!client_not_modified(
            &since(at(0) - Duration::from_secs(5)),
            &stored
        ));
        // If-None-Match wins over If-Modified-Since.
        let both = headers(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", &httpdate::fmt_http_date(at(5))),
        ]);
        assert!(!client_not_modified(&both, &stored));
    }
}
