//! The request pipeline, written once for every tier that answers clients (the single-tier
//! gateway and the front-end); the back-end runs the same phases on a TMP channel's request
//! ([`route`], [`over_limit`], [`REPLAY_BUFFER_BYTES`]).
//!
//! The phases, in order:
//! 1. **route** — find the Site by host (the target's authority before the Host field);
//!    refuse what cannot be served safely (ambiguous framing, a transfer coding other than
//!    chunked, `CONNECT`, no, two or unknown hosts);
//! 2. **classify** — the Site's classifier gives the request's class and type;
//! 3. **admit** — a declared body over the Site's limit is refused before a byte is read;
//! 4. **upstream head** — hop-by-hop fields off, Host made the authority routed on, cookies
//!    in one field, forwarding fields and a request id on;
//! 5. **cache phase** — on a Site with a cache, a `GET`/`HEAD` is answered there (and goes
//!    upstream only on a miss); a Site without one skips the phase entirely;
//! 6. **body** — a small declared body is read whole so that a retry can send it again;
//!    a larger one streams under the limit;
//! 7. **send** — the tier's [`Tier::Upstream`] sends it (an origin through the balancer, or
//!    a TMP link) with the tier's retries; an unsafe request that succeeded invalidates what
//!    it changed in the cache;
//! 8. **account** — the answer's body records the request when its last byte has gone.
//!
//! A tier supplies only what differs: its Site type ([`RoutedSite`]) and where the upstream
//! is ([`Tier::upstream`]).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use causeway_cache::Cache;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::caching::{self, Upstream, body::CachedBody};
use crate::classify::{Classifier, RequestProfile};
use crate::framing_guard::AmbiguousLength;
use crate::message::error::ProxyError;
use crate::message::request_body::RequestBody;
use crate::message::{body_length, headers};
use crate::metrics::Metrics;
use crate::server::{ConnectionInfo, Handler};
use crate::sites::{LiveRouter, Router};

/// Request bodies up to this size (by Content-Length) are read whole before an upstream is
/// chosen, so a POST whose connection an origin refuses — it never reached the origin — is
/// sent to another instead of failing. Larger bodies stream and are sent once; the bound
/// keeps memory per request small.
pub const REPLAY_BUFFER_BYTES: u64 = 64 * 1024;

/// What the pipeline reads of a routed Site, whatever the tier runs besides.
pub trait RoutedSite: Send + Sync + 'static {
    /// The Site's name, for logs.
    fn name(&self) -> &str;
    /// Priority and type rules.
    fn classifier(&self) -> &Classifier;
    /// The largest request body the Site takes.
    fn max_body_bytes(&self) -> Option<u64>;
    /// The Site's response cache, when it has one.
    fn cache(&self) -> Option<&Arc<Cache>>;
}

/// What one tier supplies to the pipeline: its Site type and its way upstream.
pub trait Tier: Send + Sync + 'static {
    /// The Site as this tier runs it.
    type Site: RoutedSite;
    /// One request's way upstream (the cache phase fetches through it too).
    type Upstream: Upstream;

    /// The way upstream of a request of `profile` to `site`, started at `started`.
    fn upstream(site: Arc<Self::Site>, profile: RequestProfile, started: Instant)
    -> Self::Upstream;
}

/// The answer body of a tier's pipeline.
pub type PipelineBody<T> = CachedBody<<<T as Tier>::Upstream as Upstream>::Body>;

/// The pipeline of tier `T`, shared by every client connection.
pub struct Pipeline<T: Tier> {
    router: LiveRouter<T::Site>,
    metrics: Metrics,
    tier: PhantomData<fn() -> T>,
}

impl<T: Tier> std::fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("tier", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T: Tier> Pipeline<T> {
    /// A pipeline over the routed Sites; a reload swaps the router under it.
    pub fn new(router: LiveRouter<T::Site>, metrics: Metrics) -> Self {
        Self {
            router,
            metrics,
            tier: PhantomData,
        }
    }

    async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> Response<PipelineBody<T>> {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        // The request keeps the Site it is routed to until it ends, whatever a reload does.
        let site = match route(&**self.router.load(), &parts) {
            Ok(site) => site.clone(),
            Err(error) => {
                self.metrics.record_unrouted(error.status().as_u16());
                tracing::debug!(peer = %connection.peer, %error, "request refused");
                return error.to_response();
            }
        };
        let profile = site.classifier().classify(&parts);
        let upstream = T::upstream(site.clone(), profile, started);
        let failed = |error: &ProxyError| upstream.failure(error).map(CachedBody::Direct);
        if let Some(error) = over_limit(site.max_body_bytes(), &parts) {
            return failed(&error);
        }
        prepare_upstream_headers(&mut parts, connection);
        let cache = site.cache();
        if let Some(cache) = cache
            && caching::applies(&parts)
        {
            return caching::serve(cache, upstream.clone(), parts).await;
        }
        // An unsafe request that succeeds invalidates what it changed: keep its head.
        let invalidation = cache
            .filter(|_| !parts.method.is_safe())
            .map(|cache| (cache, caching::copy_parts(&parts)));
        let body = match body_length(&parts) {
            Some(length) if length <= REPLAY_BUFFER_BYTES => {
                match RequestBody::buffer(body).await {
                    Ok(body) => body,
                    Err(error) => return failed(&ProxyError::ClientBody(error.to_string())),
                }
            }
            _ => RequestBody::new(body, site.max_body_bytes()),
        };
        match upstream.send(parts, body).await {
            Ok(response) => match &invalidation {
                Some((cache, request)) => {
                    let (head, inner) = response.into_parts();
                    caching::invalidate_after(cache, request, &head);
                    Response::from_parts(head, CachedBody::Direct(inner))
                }
                None => response.map(CachedBody::Direct),
            },
            Err(error) => {
                tracing::debug!(site = %site.name(), peer = %connection.peer, %error, "request failed");
                failed(&error)
            }
        }
    }
}

impl<T: Tier> Handler for Pipeline<T> {
    type Body = PipelineBody<T>;

    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static {
        self.serve(request, connection)
    }
}

/// Finds the Site for a request and refuses requests that cannot be served safely.
///
/// The Site is the one of the target's authority (absolute form, HTTP/2 `:authority`) when
/// it has one, else of the Host field — the same authority
/// [`prepare_upstream_headers`] makes the origin's Host.
///
/// # Errors
/// [`ProxyError::AmbiguousLength`], [`ProxyError::DuplicateHost`] for two Host fields,
/// [`ProxyError::UnknownTransferCoding`] for a coding other than chunked,
/// [`ProxyError::MethodNotSupported`] for `CONNECT`, [`ProxyError::MissingHost`] and
/// [`ProxyError::UnknownHost`].
pub fn route<'a, S>(router: &'a Router<S>, parts: &Parts) -> Result<&'a Arc<S>, ProxyError> {
    // hyper drops Content-Length when Transfer-Encoding is present, so an HTTP/1.1
    // request with both shows only Transfer-Encoding; the connection's framing guard
    // saw the raw head and marked it.
    if parts.extensions.get::<AmbiguousLength>().is_some()
        || (parts.headers.contains_key(TRANSFER_ENCODING)
            && parts.headers.contains_key(CONTENT_LENGTH))
    {
        return Err(ProxyError::AmbiguousLength);
    }
    // Refused even when the target names the host (RFC 9112 §3.2 says any such request).
    if parts.headers.get_all(HOST).iter().nth(1).is_some() {
        return Err(ProxyError::DuplicateHost);
    }
    if let Some(coding) = headers::unknown_transfer_coding(&parts.headers) {
        return Err(ProxyError::UnknownTransferCoding(coding));
    }
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotSupported(Method::CONNECT));
    }
    let authority =
        headers::request_authority(&parts.uri, &parts.headers).ok_or(ProxyError::MissingHost)?;
    let host = headers::host_of(authority).ok_or(ProxyError::MissingHost)?;
    router
        .route(host)
        .ok_or_else(|| ProxyError::UnknownHost(host.to_owned()))
}

/// The refusal of a request whose declared body is over `limit`, before a byte of it is read.
pub fn over_limit(limit: Option<u64>, parts: &Parts) -> Option<ProxyError> {
    match (limit, body_length(parts)) {
        (Some(limit), Some(length)) if length > limit => Some(ProxyError::BodyTooLarge { limit }),
        _ => None,
    }
}

/// Rewrites a client request's head for the upstream hop (always HTTP/1.1).
pub fn prepare_upstream_headers(parts: &mut Parts, connection: ConnectionInfo) {
    headers::remove_hop_by_hop(&mut parts.headers);
    // After the hop-by-hop fields are off, so nothing can remove it again: the origin's Host
    // is the authority [`route`] routed on — an HTTP/2 request's `:authority`, or an
    // absolute-form target's, over any Host field the client sent beside it.
    headers::set_host_from_target(&parts.uri, &mut parts.headers);
    headers::join_cookies(&mut parts.headers);
    headers::add_forwarding(
        &mut parts.headers,
        connection.peer.ip(),
        connection.tls,
        parts.version,
    );
    headers::ensure_request_id(&mut parts.headers);
    parts.version = Version::HTTP_11;
    // The cache keys by scheme, and a request in origin form does not carry it.
    if connection.tls {
        parts.extensions.insert(http::uri::Scheme::HTTPS);
    }
}
