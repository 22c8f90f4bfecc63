//! The proxies' cache phase: a front-end (or single-tier gateway) asks its Site's
//! [`Cache`] before anything crosses a TMP link or reaches an origin, and feeds it what comes
//! back. Every decision is the cache crate's; this module does the I/O those decisions call
//! for — the upstream fetch, the background revalidation and refresh-ahead, the relay that
//! stores a body while it streams — for any tier through the [`Upstream`] trait.
//!
//! What reaches the cache phase: `GET` and `HEAD` requests without a body, of a Site whose
//! cache is on. Other methods pass by it, and an unsafe one that succeeds invalidates what
//! it changed ([`invalidate_after`]).

pub mod body;
pub mod purge;
pub mod settings;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use causeway_cache::range::{self, RangeAnswer};
use causeway_cache::respond::{self, CACHE_STATUS, CacheStatus, Forward};
use causeway_cache::storable::content_length;
use causeway_cache::store::ExchangeTimes;
use causeway_cache::{
    Admission, Bypass, Cache, Collapse, FlightLeader, FlightOutcome, Lookup, RevalidationResult,
};
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, IF_RANGE, RANGE, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, response};
use http_body::Body;

use self::body::{CachedBody, ClientView, Storing, relay};
use crate::message::BoxError;
use crate::message::error::ProxyError;
use crate::message::request_body::RequestBody;

/// How the cache phase reaches upstream and answers locally, for one tier and one request.
/// Clones go to background fetches.
pub trait Upstream: Clone + Send + Sync + 'static {
    /// The body of the tier's answers.
    type Body: Body<Data = Bytes, Error = BoxError> + From<Bytes> + Send + Unpin + 'static;

    /// Sends a request upstream (to an origin, or over a TMP link), with the tier's retries.
    fn send(
        &self,
        parts: Parts,
        body: RequestBody,
    ) -> impl Future<Output = Result<Response<Self::Body>, ProxyError>> + Send;

    /// Sends a request without a body upstream: what the cache phase asks for.
    fn fetch(
        &self,
        parts: Parts,
    ) -> impl Future<Output = Result<Response<Self::Body>, ProxyError>> + Send {
        self.send(parts, RequestBody::Empty)
    }

    /// Turns an answer the cache made into one of the tier's, recorded like any other.
    fn local(&self, response: Response<Bytes>) -> Response<Self::Body>;

    /// The tier's answer to a failure.
    fn failure(&self, error: &ProxyError) -> Response<Self::Body>;
}

/// Whether a request goes through the cache phase: a safe method the cache answers, and no
/// body (a body on a `GET` means something to someone, and it is not part of the key).
pub fn applies(parts: &Parts) -> bool {
    (parts.method == Method::GET || parts.method == Method::HEAD)
        && !parts.headers.contains_key(TRANSFER_ENCODING)
        && crate::message::body_length(parts).is_none_or(|length| length == 0)
}

/// Invalidates what an unsafe request changed once its response head is in (RFC 9111 §4.4).
pub fn invalidate_after(cache: &Cache, request: &Parts, response: &response::Parts) {
    let removed = cache.invalidate(request, response);
    if removed > 0 {
        tracing::debug!(uri = %request.uri, removed, "invalidated by an unsafe request");
    }
}

/// Answers a `GET` or `HEAD` through `cache`: from the store, or upstream through `upstream`
/// with what comes back stored on the way.
pub async fn serve<U: Upstream>(
    cache: &Arc<Cache>,
    upstream: U,
    parts: Parts,
) -> Response<CachedBody<U::Body>> {
    let now = SystemTime::now();
    match cache.lookup(&parts, now) {
        Lookup::Bypass(reason) => {
            let mut status = CacheStatus::forward(Forward::Bypass);
            status.detail = Some(match reason {
                Bypass::Method => "method",
                Bypass::NoKey => "no-host",
                Bypass::Authorization => "authorization",
            });
            let answer = match upstream.fetch(parts).await {
                Ok(response) => response,
                Err(error) => upstream.failure(&error),
            };
            direct(answer, &status)
        }
        Lookup::OnlyIfCachedMiss => {
            let mut response = Response::new(Bytes::from_static(
                b"not in the cache, and the request says only-if-cached\n",
            ));
            *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            let status = CacheStatus::forward(Forward::Miss);
            direct(upstream.local(response), &status)
        }
        Lookup::Hit { entry, refresh } => {
            if let Some(leader) = refresh {
                spawn_refresh(cache, &upstream, &parts, Arc::clone(&entry), leader);
            }
            let status = CacheStatus::hit(respond::ttl_seconds(&entry, now));
            from_store(&upstream, &entry, &parts, now, &status)
        }
        Lookup::Stale {
            entry,
            revalidation,
        } => {
            if let Some(leader) = revalidation {
                spawn_refresh(cache, &upstream, &parts, Arc::clone(&entry), leader);
            }
            let mut status = CacheStatus::hit(respond::ttl_seconds(&entry, now));
            status.detail = Some("stale-while-revalidate");
            from_store(&upstream, &entry, &parts, now, &status)
        }
        Lookup::Revalidate { entry, collapse } => {
            let fwd = if respond::ttl_seconds(&entry, now) > 0 {
                Forward::Request
            } else {
                Forward::Stale
            };
            let leader = match collapse {
                Collapse::Follower(follower) => match follower.wait().await {
                    Ok(validated) => {
                        return collapsed(&upstream, &validated, &parts, fwd);
                    }
                    Err(_) => None,
                },
                Collapse::Leader(leader) => Some(leader),
                Collapse::Alone => None,
            };
            validate(cache, &upstream, parts, entry, leader, fwd).await
        }
        Lookup::Miss {
            collapse,
            other_variant,
        } => {
            let fwd = if other_variant {
                Forward::VaryMiss
            } else {
                Forward::UriMiss
            };
            let leader = match collapse {
                Collapse::Follower(follower) => match follower.wait().await {
                    Ok(stored) => return collapsed(&upstream, &stored, &parts, fwd),
                    Err(_) => None,
                },
                Collapse::Leader(leader) => Some(leader),
                Collapse::Alone => None,
            };
            fill(cache, &upstream, parts, leader, fwd).await
        }
    }
}

/// Answers from a stored entry.
fn from_store<U: Upstream>(
    upstream: &U,
    entry: &causeway_cache::store::StoredEntry,
    parts: &Parts,
    now: SystemTime,
    status: &CacheStatus,
) -> Response<CachedBody<U::Body>> {
    let head = parts.method == Method::HEAD;
    let response = respond::serve(entry, &parts.headers, head, now, status);
    upstream.local(response).map(CachedBody::Direct)
}

/// Answers a request that waited for another one's fetch of the same resource.
fn collapsed<U: Upstream>(
    upstream: &U,
    entry: &causeway_cache::store::StoredEntry,
    parts: &Parts,
    fwd: Forward,
) -> Response<CachedBody<U::Body>> {
    let now = SystemTime::now();
    let status = CacheStatus {
        fwd: Some(fwd),
        ttl: Some(respond::ttl_seconds(entry, now)),
        collapsed: true,
        ..CacheStatus::default()
    };
    from_store(upstream, entry, parts, now, &status)
}

/// A tier's answer as it is, with its `Cache-Status`.
fn direct<B>(response: Response<B>, status: &CacheStatus) -> Response<CachedBody<B>> {
    let mut response = response.map(CachedBody::Direct);
    response
        .headers_mut()
        .insert(CACHE_STATUS, status.header_value());
    response
}

/// Fetches the whole current representation and stores it if it may be, relaying it to the
/// client meanwhile.
async fn fill<U: Upstream>(
    cache: &Arc<Cache>,
    upstream: &U,
    parts: Parts,
    leader: Option<FlightLeader>,
    fwd: Forward,
) -> Response<CachedBody<U::Body>> {
    let mut request = copy_parts(&parts);
    cache.prepare_upstream(&mut request.headers, None);
    let request_time = SystemTime::now();
    match upstream.fetch(request).await {
        Ok(response) => {
            let times = ExchangeTimes {
                request_time,
                response_time: SystemTime::now(),
            };
            store_and_answer(cache, &parts, response, times, leader, fwd)
        }
        Err(error) => {
            // Dropping the leader tells its followers to go upstream themselves.
            drop(leader);
            direct(upstream.failure(&error), &CacheStatus::forward(fwd))
        }
    }
}

/// Validates a stored entry with its origin (a conditional request) and answers from the
/// result: the freshened entry on `304`, a new response otherwise, the stale entry when the
/// origin fails and `stale-if-error` allows it.
async fn validate<U: Upstream>(
    cache: &Arc<Cache>,
    upstream: &U,
    parts: Parts,
    entry: Arc<causeway_cache::store::StoredEntry>,
    leader: Option<FlightLeader>,
    fwd: Forward,
) -> Response<CachedBody<U::Body>> {
    let mut request = copy_parts(&parts);
    cache.prepare_upstream(&mut request.headers, Some(&entry));
    let request_time = SystemTime::now();
    let fetched = upstream.fetch(request).await;
    let now = SystemTime::now();
    let times = ExchangeTimes {
        request_time,
        response_time: now,
    };
    let stale_answer = |leader: Option<FlightLeader>| {
        cache.record_revalidation(RevalidationResult::Failed);
        drop(leader);
        let status = CacheStatus {
            hit: true,
            fwd: Some(fwd),
            ttl: Some(respond::ttl_seconds(&entry, now)),
            detail: Some("stale-if-error"),
            ..CacheStatus::default()
        };
        from_store(upstream, &entry, &parts, now, &status)
    };
    let response = match fetched {
        Err(_) if cache.stale_if_error(&parts, &entry, now) => return stale_answer(leader),
        Err(error) => {
            cache.record_revalidation(RevalidationResult::Failed);
            return direct(upstream.failure(&error), &CacheStatus::forward(fwd));
        }
        Ok(response)
            if is_server_failure(response.status())
                && cache.stale_if_error(&parts, &entry, now) =>
        {
            return stale_answer(leader);
        }
        Ok(response) => response,
    };
    if response.status() != StatusCode::NOT_MODIFIED {
        cache.record_revalidation(RevalidationResult::Modified);
        return store_and_answer(cache, &parts, response, times, leader, fwd);
    }
    let (head, _) = response.into_parts();
    match cache.revalidated(&entry, &parts, &head, times) {
        Ok(merged) => {
            if let Some(leader) = leader {
                leader.publish(FlightOutcome::Stored(Arc::clone(&merged)));
            }
            let status = CacheStatus {
                fwd: Some(fwd),
                fwd_status: Some(StatusCode::NOT_MODIFIED),
                ttl: Some(respond::ttl_seconds(&merged, now)),
                ..CacheStatus::default()
            };
            from_store(upstream, &merged, &parts, now, &status)
        }
        Err(refused) => {
            tracing::debug!(uri = %parts.uri, %refused, "304 for another representation; fetching it whole");
            fill(cache, upstream, parts, leader, fwd).await
        }
    }
}

/// The statuses `stale-if-error` covers besides a failed exchange (RFC 5861 §4).
fn is_server_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Offers an upstream response to the store and answers the client with it: stored ones are
/// relayed (the client may see just its range), others stream through.
fn store_and_answer<B>(
    cache: &Arc<Cache>,
    parts: &Parts,
    response: Response<B>,
    times: ExchangeTimes,
    leader: Option<FlightLeader>,
    fwd: Forward,
) -> Response<CachedBody<B>>
where
    B: Body<Data = Bytes, Error = BoxError> + From<Bytes> + Send + Unpin + 'static,
{
    let (mut head, body) = response.into_parts();
    let mut status = CacheStatus::forward(fwd);
    let storing = match cache.admit(parts, &head, times) {
        Admission::Store(pending) => {
            status.stored = true;
            Some(Storing {
                cache: Arc::clone(cache),
                pending,
                leader,
                announced_length: content_length(&head.headers),
            })
        }
        Admission::Skip(reason) => {
            status.detail = Some(reason.token());
            if let Some(leader) = leader {
                leader.publish(FlightOutcome::NotShared);
            }
            None
        }
    };
    head.headers.insert(CACHE_STATUS, status.header_value());
    let window = client_range(parts, &mut head);
    if storing.is_none() && window.is_none() {
        return Response::from_parts(head, CachedBody::Direct(body));
    }
    let (view, client_body) = match window {
        Some(ClientRange::Unsatisfiable) => (ClientView::none(), CachedBody::from(Bytes::new())),
        Some(ClientRange::Part(range)) => ClientView::channel(Some(range)),
        None => ClientView::channel(None),
    };
    tokio::spawn(relay(body, storing, view));
    Response::from_parts(head, client_body)
}

/// What the client sees of a full response it asked a range of.
enum ClientRange {
    Part(std::ops::Range<u64>),
    Unsatisfiable,
}

/// The fill fetched the whole representation (the client's `Range` was taken off so the
/// cache gets all of it); gives the client the single range it asked for, as a 206 or 416,
/// when the length is known. `If-Range` or several ranges get the whole 200, which is always
/// a correct answer to a range request.
fn client_range(parts: &Parts, head: &mut response::Parts) -> Option<ClientRange> {
    if parts.method != Method::GET
        || head.status != StatusCode::OK
        || parts.headers.contains_key(IF_RANGE)
    {
        return None;
    }
    let asked = parts.headers.get(RANGE)?.to_str().ok()?;
    let length = content_length(&head.headers)?;
    match range::select(asked, length) {
        RangeAnswer::Full => None,
        RangeAnswer::Partial(part) => {
            head.status = StatusCode::PARTIAL_CONTENT;
            let content_range = format!("bytes {}-{}/{length}", part.start, part.end - 1);
            head.headers
                .insert(CONTENT_RANGE, HeaderValue::from_str(&content_range).ok()?);
            head.headers
                .insert(CONTENT_LENGTH, HeaderValue::from(part.end - part.start));
            Some(ClientRange::Part(part))
        }
        RangeAnswer::Unsatisfiable => {
            head.status = StatusCode::RANGE_NOT_SATISFIABLE;
            let content_range = format!("bytes */{length}");
            head.headers
                .insert(CONTENT_RANGE, HeaderValue::from_str(&content_range).ok()?);
            head.headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            Some(ClientRange::Unsatisfiable)
        }
    }
}

/// Revalidates (stale-while-revalidate) or refreshes ahead (a hot entry near expiry) in the
/// background, leading the resource's flight so nobody else fetches it meanwhile.
fn spawn_refresh<U: Upstream>(
    cache: &Arc<Cache>,
    upstream: &U,
    parts: &Parts,
    entry: Arc<causeway_cache::store::StoredEntry>,
    leader: FlightLeader,
) {
    let cache = Arc::clone(cache);
    let upstream = upstream.clone();
    let mut request = copy_parts(parts);
    // The background fetch is a plain GET whatever the client's request was.
    request.method = Method::GET;
    tokio::spawn(async move {
        let client_view = copy_parts(&request);
        cache.prepare_upstream(&mut request.headers, Some(&entry));
        let request_time = SystemTime::now();
        let fetched = upstream.fetch(request).await;
        let times = ExchangeTimes {
            request_time,
            response_time: SystemTime::now(),
        };
        let response = match fetched {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(uri = %client_view.uri, %error, "background revalidation failed");
                cache.record_revalidation(RevalidationResult::Failed);
                return;
            }
        };
        if response.status() == StatusCode::NOT_MODIFIED {
            let (head, _) = response.into_parts();
            match cache.revalidated(&entry, &client_view, &head, times) {
                Ok(merged) => leader.publish(FlightOutcome::Stored(merged)),
                Err(_) => cache.record_revalidation(RevalidationResult::Failed),
            }
            return;
        }
        if is_server_failure(response.status()) {
            cache.record_revalidation(RevalidationResult::Failed);
            return;
        }
        cache.record_revalidation(RevalidationResult::Modified);
        let (head, body) = response.into_parts();
        match cache.admit(&client_view, &head, times) {
            Admission::Store(pending) => {
                let storing = Storing {
                    cache: Arc::clone(&cache),
                    pending,
                    leader: Some(leader),
                    announced_length: content_length(&head.headers),
                };
                relay(body, Some(storing), ClientView::none()).await;
            }
            Admission::Skip(reason) => {
                tracing::debug!(uri = %client_view.uri, %reason, "refreshed response not stored");
                leader.publish(FlightOutcome::NotShared);
            }
        }
    });
}

/// A copy of a request head for an upstream fetch: method, URI, version, headers and the
/// scheme the cache keys by (`Parts` itself does not clone: extensions may not).
pub(crate) fn copy_parts(parts: &Parts) -> Parts {
    let mut copy = Request::new(()).into_parts().0;
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    if let Some(scheme) = parts.extensions.get::<http::uri::Scheme>() {
        copy.extensions.insert(scheme.clone());
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(builder: http::request::Builder) -> Parts {
        builder.body(()).expect("request").into_parts().0
    }

    fn response(builder: http::response::Builder) -> response::Parts {
        builder.body(()).expect("response").into_parts().0
    }

    #[test]
    fn only_bodiless_gets_and_heads_go_through_the_cache() {
        assert!(applies(&request(Request::get("/"))));
        assert!(applies(&request(Request::head("/"))));
        assert!(applies(&request(
            Request::get("/").header("content-length", "0")
        )));
        assert!(!applies(&request(
            Request::get("/").header("content-length", "3")
        )));
        assert!(!applies(&request(
            Request::get("/").header("transfer-encoding", "chunked")
        )));
        assert!(!applies(&request(Request::post("/"))));
    }

    #[test]
    fn a_full_fetch_answers_the_clients_single_range() {
        let parts = request(Request::get("/").header("range", "bytes=2-4"));
        let mut head = response(http::Response::builder().header("content-length", "10"));
        let Some(ClientRange::Part(part)) = client_range(&parts, &mut head) else {
            panic!("expected a part");
        };
        assert_eq!(part, 2..5);
        assert_eq!(head.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(head.headers[CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(head.headers[CONTENT_LENGTH], "3");

        let mut beyond = response(http::Response::builder().header("content-length", "10"));
        let late = request(Request::get("/").header("range", "bytes=20-"));
        assert!(matches!(
            client_range(&late, &mut beyond),
            Some(ClientRange::Unsatisfiable)
        ));
        assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);

        let conditional = request(
            Request::get("/")
                .header("range", "bytes=2-4")
                .header("if-range", "\"v1\""),
        );
        let mut whole = response(http::Response::builder().header("content-length", "10"));
        assert!(client_range(&conditional, &mut whole).is_none());
        let mut unknown_length = response(http::Response::builder());
        assert!(client_range(&parts, &mut unknown_length).is_none());
    }

    #[test]
    fn copies_keep_the_scheme_the_key_needs() {
        let mut parts = request(Request::get("/a").header("host", "shop.example"));
        parts.extensions.insert(http::uri::Scheme::HTTPS);
        let copy = copy_parts(&parts);
        assert_eq!(
            causeway_cache::PrimaryKey::from_request(&copy).map(|k| k.to_string()),
            Some("https://shop.example/a".to_owned())
        );
    }
}
