//! Cache keys (RFC 9111 §2, §4.1): the primary key names the resource, the `Vary` secondary
//! key picks one of its stored variants.
//!
//! The primary key is `scheme://host[:port]/path?query` with the scheme and host lower-cased
//! and a default port dropped. The scheme is part of it because sites commonly answer `http`
//! with a cacheable redirect to `https`: sharing the two would loop. Requests reach a proxy in
//! origin form (`/path`), so the scheme comes from the URI when absolute, else from an
//! [`http::uri::Scheme`] the proxy puts in the request's extensions for TLS connections, else
//! `http`. Paths are compared as sent (no percent-decoding): normalising them is the origin's
//! business, and two spellings only cost a second copy.

use std::fmt;
use std::sync::Arc;

use http::header::{HOST, VARY};
use http::uri::Scheme;
use http::{HeaderMap, HeaderName, Uri, request};

/// The primary cache key of a resource. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrimaryKey(Arc<str>);

impl PrimaryKey {
    /// The key of a request (GET and HEAD share it: HEAD is answered from the GET entry);
    /// `None` without a host.
    #[must_use]
    pub fn from_request(request: &request::Parts) -> Option<Self> {
        let scheme = request
            .uri
            .scheme()
            .or_else(|| request.extensions.get::<Scheme>())
            .map_or("http", Scheme::as_str);
        let host = match request.uri.authority() {
            Some(authority) => authority.as_str(),
            None => request.headers.get(HOST)?.to_str().ok()?,
        };
        let path_and_query = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
        Self::compose(scheme, host, path_and_query)
    }

    /// The key of an absolute URL (purges, `Location` targets); `None` if it is not absolute.
    #[must_use]
    pub fn from_uri(uri: &Uri) -> Option<Self> {
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        Self::compose(uri.scheme_str()?, uri.authority()?.as_str(), path_and_query)
    }

    fn compose(scheme: &str, host: &str, path_and_query: &str) -> Option<Self> {
        let scheme = scheme.to_ascii_lowercase();
        let mut host = host.trim().to_ascii_lowercase();
        // Userinfo never belongs in a key (and is not valid in an http URI).
        if let Some((_, after)) = host.rsplit_once('@') {
            host = after.to_owned();
        }
        if host.is_empty() {
            return None;
        }
        let default_port = match scheme.as_str() {
            "http" => Some(":80"),
            "https" => Some(":443"),
            _ => None,
        };
        if let Some(port) = default_port
            && let Some(stripped) = host.strip_suffix(port)
        {
            host = stripped.to_owned();
        }
        let path = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            "/"
        };
        Some(Self(format!("{scheme}://{host}{path}").into()))
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `scheme://host` part, to tell same-origin targets (§4.4).
    #[must_use]
    pub fn origin(&self) -> &str {
        let after_scheme = self.0.find("://").map_or(0, |i| i + 3);
        let end = self.0[after_scheme..]
            .find('/')
            .map_or(self.0.len(), |i| after_scheme + i);
        &self.0[..end]
    }
}

impl fmt::Display for PrimaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request header values a stored variant was selected by (§4.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecondaryKey {
    /// `(field name, normalised value)`; `None` when the request lacked the field, which
    /// matches only a request that lacks it too.
    fields: Vec<(HeaderName, Option<String>)>,
}

impl SecondaryKey {
    /// The secondary key of a response's `Vary` for the request that produced it. The caller
    /// refuses `Vary: *` before storing (see [`crate::storable::vary_star`]); if one reaches
    /// here it yields a key that never matches.
    #[must_use]
    pub fn new(vary: &HeaderMap, request_headers: &HeaderMap) -> Self {
        let mut names: Vec<HeaderName> = Vec::new();
        for value in vary.get_all(VARY) {
            let Ok(text) = value.to_str() else {
                return Self::never();
            };
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                    // `*` and invalid names: nothing can be proven to match.
                    return Self::never();
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let fields = names.into_iter().map(|name| {
            let value = normalised(request_headers, &name);
            (name, value)
        });
        Self {
            fields: fields.collect(),
        }
    }

    /// A key no request matches (`Vary: *`).
    fn never() -> Self {
        Self {
            fields: vec![(HeaderName::from_static("*"), None)],
        }
    }

    /// Whether a request selects this variant.
    #[must_use]
    pub fn matches(&self, request_headers: &HeaderMap) -> bool {
        self.fields.iter().all(|(name, stored)| {
            name.as_str() != "*"
                && normalised(request_headers, name).as_deref() == stored.as_deref()
        })
    }

    /// Whether the response varies on nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Approximate bytes held, for the store's weigher.
    #[must_use]
    pub fn weight(&self) -> usize {
        self.fields
            .iter()
            .map(|(name, value)| name.as_str().len() + value.as_ref().map_or(0, String::len))
            .sum()
    }
}

/// All lines of a field combined (RFC 9110 §5.3) with the whitespace around list elements
/// removed (§4.1 allows this normalisation), so `gzip,br` and `gzip, br` select one variant.
fn normalised(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = String::new();
    for value in values {
        for element in String::from_utf8_lossy(value.as_bytes()).split(',') {
            let element = element.trim();
            if element.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(element);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::header_map as headers;
    use http::{HeaderValue, Request};

    fn parts(builder: http::request::Builder) -> request::Parts {
        builder.body(()).expect("test request").into_parts().0
    }

    fn key(builder: http::request::Builder) -> String {
        PrimaryKey::from_request(&parts(builder))
            .expect("key")
            .to_string()
    }

    #[test]
    fn head_and_get_share_a_key() {
        let get = key(Request::get("/a?b=1").header("host", "Example.COM"));
        let head = key(Request::head("/a?b=1").header("host", "example.com:80"));
        assert_eq!(get, "http://example.com/a?b=1");
        assert_eq!(get, head);
    }

    #[test]
    fn scheme_from_uri_or_extension() {
        assert_eq!(
            key(Request::get("HTTPS://example.com:443/x")),
            "https://example.com/x"
        );
        let mut tls = parts(Request::get("/x").header("host", "example.com"));
        tls.extensions.insert(Scheme::HTTPS);
        assert_eq!(
            PrimaryKey::from_request(&tls).expect("key").as_str(),
            "https://example.com/x"
        );
        assert_ne!(
            key(Request::get("/x").header("host", "example.com")),
            "https://example.com/x"
        );
    }

    #[test]
    fn non_default_port_and_query_are_kept() {
        assert_eq!(
            key(Request::get("/p?q").header("host", "h:8080")),
            "http://h:8080/p?q"
        );
        assert_ne!(
            key(Request::get("/p?q=1").header("host", "h")),
            key(Request::get("/p?q=2").header("host", "h"))
        );
    }

    #[test]
    fn no_host_no_key() {
        assert!(PrimaryKey::from_request(&parts(Request::get("/x"))).is_none());
        assert!(PrimaryKey::from_uri(&Uri::from_static("/relative")).is_none());
    }

    #[test]
    fn origin_part() {
        let key = PrimaryKey::from_uri(&Uri::from_static("https://h.example/a/b?c")).expect("key");
        assert_eq!(key.origin(), "https://h.example");
    }

    #[test]
    fn vary_selects_by_normalised_values() {
        let vary = headers(&[("vary", "Accept-Encoding, accept-language")]);
        let key = SecondaryKey::new(&vary, &headers(&[("accept-encoding", "gzip,  br")]));
        assert!(key.matches(&headers(&[("accept-encoding", "gzip,br")])));
        assert!(!key.matches(&headers(&[("accept-encoding", "br")])));
        // The stored request lacked Accept-Language: only requests lacking it match.
        assert!(!key.matches(&headers(&[
            ("accept-encoding", "gzip, br"),
            ("accept-language", "fr")
        ])));
        // An empty value is not an absent one.
        assert!(!key.matches(&headers(&[
            ("accept-encoding", "gzip, br"),
            ("accept-language", "")
        ])));
    }

    #[test]
    fn vary_combines_field_lines() {
        let vary = headers(&[("vary", "accept")]);
        let mut stored = HeaderMap::new();
        stored.append("accept", HeaderValue::from_static("a"));
        stored.append("accept", HeaderValue::from_static("b"));
        let key = SecondaryKey::new(&vary, &stored);
        assert!(key.matches(&headers(&[("accept", "a, b")])));
    }

    #[test]
    fn vary_star_never_matches() {
        let key = SecondaryKey::new(&headers(&[("vary", "*")]), &HeaderMap::new());
        assert!(!key.matches(&HeaderMap::new()));
    }

    #[test]
    fn no_vary_matches_everything() {
        let key = SecondaryKey::new(&HeaderMap::new(), &headers(&[("accept", "x")]));
        assert!(key.is_empty());
        assert!(key.matches(&HeaderMap::new()));
    }
}
