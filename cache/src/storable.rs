//! Whether a response may be stored in a shared cache (RFC 9111 §3), and which of its header
//! fields are kept (§3.1).

use std::time::Duration;

use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION,
    SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{HeaderMap, Method, StatusCode, request, response};

use crate::cache_control::{RequestDirectives, ResponseDirectives};
use crate::freshness::{Heuristic, has_explicit_freshness, heuristically_cacheable};

/// A Site's storage policy.
#[derive(Debug, Clone, PartialEq)]
pub struct StorePolicy {
    /// Store and share responses that set cookies. Off by default: a `Set-Cookie` is usually
    /// one visitor's session, and sharing it hands that session to the next visitor.
    pub share_set_cookie: bool,
    /// Store and share responses to requests with `Authorization` even without `public`,
    /// `s-maxage` or `must-revalidate` (§3.5). Off by default.
    pub share_authorized: bool,
    /// Heuristic freshness for responses without explicit freshness; `None` keeps them
    /// stale from the start (stored only when they can be revalidated).
    pub heuristic: Option<Heuristic>,
    /// The largest body stored; larger responses stream through uncached.
    pub max_object_bytes: u64,
}

impl Default for StorePolicy {
    fn default() -> Self {
        Self {
            share_set_cookie: false,
            share_authorized: false,
            heuristic: None,
            max_object_bytes: 8 << 20,
        }
    }
}

/// Why a response is not stored; also the `detail` of its `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotStorable {
    /// Only GET responses are stored (HEAD is answered from them).
    #[error("method")]
    Method,
    /// The status code is neither understood nor explicitly made cacheable.
    #[error("status")]
    Status,
    /// `no-store` on the request or the response.
    #[error("no-store")]
    NoStore,
    /// `private` on the response.
    #[error("private")]
    Private,
    /// The request carried `Authorization` and the response did not allow sharing.
    #[error("authorization")]
    Authorization,
    /// The response sets a cookie and the Site does not share those.
    #[error("set-cookie")]
    SetCookie,
    /// `Vary: *`: no later request could ever match it.
    #[error("vary-star")]
    VaryStar,
    /// Zero lifetime, no stale window and no validator: nothing could reuse it.
    #[error("not-reusable")]
    NotReusable,
    /// `Content-Length` or the streamed body exceeds the per-object limit.
    #[error("too-large")]
    TooLarge,
}

impl NotStorable {
    /// The reason as an RFC 8941 token, for `Cache-Status` `detail`.
    #[must_use]
    pub fn token(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Status => "status",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::SetCookie => "set-cookie",
            Self::VaryStar => "vary-star",
            Self::NotReusable => "not-reusable",
            Self::TooLarge => "too-large",
        }
    }
}

/// Decides whether the response to this request may be stored (§3), before its body is read.
///
/// `lifetime` is the response's freshness lifetime as [`crate::freshness::freshness_lifetime`]
/// computed it; a response nobody could reuse is refused so it does not evict useful ones.
///
/// # Errors
/// The first rule the exchange breaks.
pub fn check(
    request: &request::Parts,
    request_cc: &RequestDirectives,
    response: &response::Parts,
    response_cc: &ResponseDirectives,
    lifetime: Duration,
    policy: &StorePolicy,
) -> Result<(), NotStorable> {
    if request.method != Method::GET {
        return Err(NotStorable::Method);
    }
    // Partial content and informational responses are not stored: this cache keeps whole
    // representations and answers ranges from them.
    let status = response.status;
    if status == StatusCode::PARTIAL_CONTENT || status.is_informational() {
        return Err(NotStorable::Status);
    }
    if !heuristically_cacheable(status)
        && !has_explicit_freshness(response_cc, &response.headers)
        && !response_cc.public
    {
        return Err(NotStorable::Status);
    }
    if request_cc.no_store || response_cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if response_cc.private.is_all() {
        return Err(NotStorable::Private);
    }
    if request.headers.contains_key(AUTHORIZATION)
        && !policy.share_authorized
        && !response_cc.allows_authorized_sharing()
    {
        return Err(NotStorable::Authorization);
    }
    if response.headers.contains_key(SET_COOKIE)
        && !policy.share_set_cookie
        && !names(
            response_cc.private.fields(),
            response_cc.no_cache.fields(),
            &SET_COOKIE,
        )
    {
        return Err(NotStorable::SetCookie);
    }
    if vary_star(&response.headers) {
        return Err(NotStorable::VaryStar);
    }
    let stale_window = response_cc
        .stale_while_revalidate
        .or(response_cc.stale_if_error);
    if lifetime.is_zero() && stale_window.is_none() && !has_validator(&response.headers) {
        return Err(NotStorable::NotReusable);
    }
    if content_length(&response.headers).is_some_and(|len| len > policy.max_object_bytes) {
        return Err(NotStorable::TooLarge);
    }
    Ok(())
}

fn names(a: &[HeaderName], b: &[HeaderName], name: &HeaderName) -> bool {
    a.contains(name) || b.contains(name)
}

/// Whether any `Vary` line lists `*`.
#[must_use]
pub fn vary_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim() == "*")
}

/// Whether the response carries a validator (`ETag` or `Last-Modified`).
#[must_use]
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::ETAG) || headers.contains_key(http::header::LAST_MODIFIED)
}

/// The declared `Content-Length`, if valid.
#[must_use]
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Header fields a cache never stores (§3.1): hop-by-hop fields, fields named by
/// `Connection`, and the fields named by qualified `no-cache` and `private` (§5.2.2.4 and
/// §5.2.2.7 let a cache store the rest of the response without them, which is how this cache
/// honours those directives). `Content-Length` goes too: the stored body's length is authoritative.
#[must_use]
pub fn stored_headers(headers: &HeaderMap, cc: &ResponseDirectives) -> HeaderMap {
    let connection_listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.keys_len());
    for (name, value) in headers {
        let dropped = is_hop_by_hop(name)
            || name == CONTENT_LENGTH
            || connection_listed.contains(name)
            || cc.no_cache.fields().contains(name)
            || cc.private.fields().contains(name);
        if !dropped {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and the ones a cache must not store or replay.
#[must_use]
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == TRAILER
        || name == PROXY_AUTHENTICATE
        || name == PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Request, Response};

    fn exchange(
        req: Request<()>,
        resp: Response<()>,
        policy: &StorePolicy,
    ) -> Result<(), NotStorable> {
        let (req, ()) = req.into_parts();
        let (resp, ()) = resp.into_parts();
        let req_cc = RequestDirectives::from_headers(&req.headers);
        let resp_cc = ResponseDirectives::from_headers(&resp.headers);
        let lifetime = resp_cc.s_maxage.or(resp_cc.max_age).unwrap_or_default();
        check(&req, &req_cc, &resp, &resp_cc, lifetime, policy)
    }

    fn get() -> http::request::Builder {
        Request::get("http://example.com/a")
    }

    fn ok(cc: &str) -> http::response::Builder {
        Response::builder().header("cache-control", cc)
    }

    fn build<T>(builder: Result<T, http::Error>) -> T {
        builder.expect("test message")
    }

    fn check_default(
        req: http::request::Builder,
        resp: http::response::Builder,
    ) -> Result<(), NotStorable> {
        exchange(
            build(req.body(())),
            build(resp.body(())),
            &StorePolicy::default(),
        )
    }

    #[test]
    fn plain_cacheable_get() {
        assert_eq!(check_default(get(), ok("max-age=60")), Ok(()));
    }

    #[test]
    fn only_get() {
        assert_eq!(
            check_default(Request::head("/a"), ok("max-age=60")),
            Err(NotStorable::Method)
        );
        assert_eq!(
            check_default(Request::post("/a"), ok("max-age=60")),
            Err(NotStorable::Method)
        );
    }

    #[test]
    fn status_codes() {
        assert_eq!(check_default(get(), ok("max-age=60").status(404)), Ok(()));
        // 500 is not heuristically cacheable, so only with explicit freshness.
        assert_eq!(
            check_default(
                get(),
                Response::builder().status(500).header("etag", "\"x\"")
            ),
            Err(NotStorable::Status)
        );
        assert_eq!(check_default(get(), ok("max-age=5").status(500)), Ok(()));
        assert_eq!(
            check_default(get(), ok("max-age=60").status(206)),
            Err(NotStorable::Status)
        );
    }

    #[test]
    fn no_store_on_either_side() {
        assert_eq!(
            check_default(get(), ok("no-store, max-age=60")),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            check_default(get().header("cache-control", "no-store"), ok("max-age=60")),
            Err(NotStorable::NoStore)
        );
    }

    #[test]
    fn private_whole_or_fields() {
        assert_eq!(
            check_default(get(), ok("private, max-age=60")),
            Err(NotStorable::Private)
        );
        assert_eq!(
            check_default(get(), ok("private=\"x-user\", max-age=60")),
            Ok(())
        );
    }

    #[test]
    fn authorization_needs_public_s_maxage_or_must_revalidate() {
        let authed = || get().header("authorization", "Bearer t");
        assert_eq!(
            check_default(authed(), ok("max-age=60")),
            Err(NotStorable::Authorization)
        );
        assert_eq!(check_default(authed(), ok("public, max-age=60")), Ok(()));
        assert_eq!(check_default(authed(), ok("s-maxage=60")), Ok(()));
        assert_eq!(
            check_default(authed(), ok("max-age=60, must-revalidate")),
            Ok(())
        );
        let policy = StorePolicy {
            share_authorized: true,
            ..StorePolicy::default()
        };
        assert_eq!(
            exchange(
                build(authed().body(())),
                build(ok("max-age=60").body(())),
                &policy
            ),
            Ok(())
        );
    }

    #[test]
    fn set_cookie_only_when_the_site_allows_or_the_field_is_excluded() {
        let cookie = || ok("max-age=60").header("set-cookie", "s=1");
        assert_eq!(check_default(get(), cookie()), Err(NotStorable::SetCookie));
        let policy = StorePolicy {
            share_set_cookie: true,
            ..StorePolicy::default()
        };
        assert_eq!(
            exchange(build(get().body(())), build(cookie().body(())), &policy),
            Ok(())
        );
        let excluded = Response::builder()
            .header("cache-control", "max-age=60, no-cache=\"Set-Cookie\"")
            .header("set-cookie", "s=1");
        assert_eq!(check_default(get(), excluded), Ok(()));
    }

    #[test]
    fn vary_star_and_unreusable_and_too_large() {
        assert_eq!(
            check_default(get(), ok("max-age=60").header("vary", "accept, *")),
            Err(NotStorable::VaryStar)
        );
        assert_eq!(
            check_default(get(), Response::builder()),
            Err(NotStorable::NotReusable)
        );
        assert_eq!(
            check_default(get(), Response::builder().header("etag", "\"v1\"")),
            Ok(())
        );
        assert_eq!(
            check_default(get(), ok("max-age=0, stale-if-error=60")),
            Ok(())
        );
        let big = ok("max-age=60").header("content-length", (9u64 << 20).to_string());
        assert_eq!(check_default(get(), big), Err(NotStorable::TooLarge));
    }

    #[test]
    fn stored_headers_drop_hop_by_hop_connection_listed_and_excluded_fields() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("content-length", "10"),
            ("set-cookie", "s=1"),
            ("x-user", "alice"),
            ("etag", "\"v\""),
            (
                "cache-control",
                "max-age=9, no-cache=\"set-cookie\", private=\"x-user\"",
            ),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let cc = ResponseDirectives::from_headers(&headers);
        let kept = stored_headers(&headers, &cc);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["etag", "cache-control"]);
    }
}
