//! The reverse proxy: one client request in, through classification and the site's balancer,
//! to an origin and back, with retries of idempotent requests on another origin.
//!
//! The phases, in order: [`Proxy::route`] finds the site and refuses what cannot be served;
//! the classifier gives class and type; [`Proxy::forward`] takes a slot from the balancer,
//! sends the request, and retries where that is safe; the answer streams back inside a
//! [`body::ProxyBody`] that holds the slot until its last byte.

pub mod attempt;
pub mod body;
pub mod error;
pub mod headers;
pub mod origin_connection;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use self::attempt::{Attempt, AttemptResult};
use self::body::{ClientBodyError, Completion, ProxyBody, RequestBody};
use self::error::ProxyError;
use crate::balancer::{Lease, OriginSet, Resent};
use crate::caching::{self, Upstream, body::CachedBody};
use crate::classify::RequestProfile;
use crate::framing_guard::AmbiguousLength;
use crate::metrics::Metrics;
use crate::server::{ConnectionInfo, Handler};
use crate::sites::{LiveRouter, Router, SiteRuntime};

/// The proxy shared by every client connection.
#[derive(Debug)]
pub struct Proxy {
    router: LiveRouter,
    metrics: Metrics,
}

/// Methods a retry may repeat (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Origin answers that say "try elsewhere".
fn is_gateway_error(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

impl Proxy {
    /// A proxy over the routed sites; a reload swaps the router under it.
    pub fn new(router: LiveRouter, metrics: Metrics) -> Self {
        Self { router, metrics }
    }

    async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> Response<CachedBody<ProxyBody>> {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        // The request keeps the Site it is routed to until it ends, whatever a reload does.
        let site = match route(&**self.router.load(), &parts) {
            Ok(site) => site.clone(),
            Err(error) => {
                let status = error.status().as_u16();
                self.metrics.record_unrouted(status);
                tracing::debug!(peer = %connection.peer, %error, "request refused");
                return error.to_response();
            }
        };
        let profile = site.classifier.classify(&parts);
        let upstream = GatewayUpstream {
            site: site.clone(),
            profile,
            started,
        };
        if let (Some(limit), Some(length)) = (site.max_body_bytes, body_length(&parts))
            && length > limit
        {
            return direct(upstream.failure(&ProxyError::BodyTooLarge { limit }));
        }
        prepare_upstream_headers(&mut parts, connection);
        if let Some(cache) = &site.cache
            && caching::applies(&parts)
        {
            return caching::serve(cache, upstream, parts).await;
        }
        // An unsafe request that succeeds invalidates what it changed: keep its head.
        let invalidation = site
            .cache
            .as_ref()
            .filter(|_| !parts.method.is_safe())
            .map(|cache| (cache.clone(), caching::copy_parts(&parts)));
        let body = match body_length(&parts) {
            Some(length) if length <= REPLAY_BUFFER_BYTES => {
                match RequestBody::buffer(body).await {
                    Ok(body) => body,
                    Err(error) => {
                        return direct(
                            upstream.failure(&ProxyError::ClientBody(error.to_string())),
                        );
                    }
                }
            }
            _ => RequestBody::new(body, site.max_body_bytes),
        };
        match forward(&site, parts, body, profile).await {
            Ok((response, lease)) => {
                if let Some((cache, request)) = &invalidation {
                    let (head, inner) = response.into_parts();
                    caching::invalidate_after(cache, request, &head);
                    direct(upstream.answer(Response::from_parts(head, inner), lease))
                } else {
                    direct(upstream.answer(response, lease))
                }
            }
            Err(error) => {
                tracing::debug!(site = %site.name, peer = %connection.peer, %error, "request failed");
                direct(upstream.failure(&error))
            }
        }
    }
}

/// A gateway answer that did not go through the cache.
fn direct(response: Response<ProxyBody>) -> Response<CachedBody<ProxyBody>> {
    response.map(CachedBody::Direct)
}

/// One gateway request's way to its Site's origins, for the proxy and its cache phase.
#[derive(Clone, Debug)]
struct GatewayUpstream {
    site: Arc<SiteRuntime>,
    profile: RequestProfile,
    started: Instant,
}

impl GatewayUpstream {
    /// The client's answer from an origin's response: hop-by-hop fields off, `Via` on, and
    /// the origin slot held until the body's last byte.
    fn answer(&self, response: Response<Incoming>, lease: Lease) -> Response<ProxyBody> {
        let (mut head, inner) = response.into_parts();
        headers::remove_hop_by_hop(&mut head.headers);
        headers::add_via(&mut head.headers);
        let completion = Completion::new(
            &self.site.balancer,
            self.profile.class,
            head.status.as_u16(),
            self.started,
            Some(lease),
        );
        Response::from_parts(head, ProxyBody::upstream(inner, completion))
    }

    fn completion(&self, status: StatusCode) -> Completion {
        Completion::new(
            &self.site.balancer,
            self.profile.class,
            status.as_u16(),
            self.started,
            None,
        )
    }
}

impl Upstream for GatewayUpstream {
    type Body = ProxyBody;

    async fn fetch(&self, parts: Parts) -> Result<Response<ProxyBody>, ProxyError> {
        let (response, lease) =
            forward(&self.site, parts, RequestBody::Empty, self.profile).await?;
        Ok(self.answer(response, lease))
    }

    fn local(&self, response: Response<Bytes>) -> Response<ProxyBody> {
        let completion = self.completion(response.status());
        response.map(|bytes| ProxyBody::local(bytes).with_completion(completion))
    }

    fn failure(&self, error: &ProxyError) -> Response<ProxyBody> {
        let completion = self.completion(error.status());
        error
            .to_response::<ProxyBody>()
            .map(|body| body.with_completion(completion))
    }
}

/// Finds the site for a request and refuses requests that cannot be served safely.
pub(crate) fn route<'a, S>(router: &'a Router<S>, parts: &Parts) -> Result<&'a Arc<S>, ProxyError> {
    // hyper drops Content-Length when Transfer-Encoding is present, so an HTTP/1.1
    // request with both shows only Transfer-Encoding; the connection's framing guard
    // saw the raw head and marked it.
    if parts.extensions.get::<AmbiguousLength>().is_some()
        || (parts.headers.contains_key(TRANSFER_ENCODING)
            && parts.headers.contains_key(CONTENT_LENGTH))
    {
        return Err(ProxyError::AmbiguousLength);
    }
    if parts.method == Method::CONNECT {
        return Err(ProxyError::MethodNotSupported(Method::CONNECT));
    }
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(HOST).and_then(|h| h.to_str().ok()))
        .ok_or(ProxyError::MissingHost)?;
    let host = headers::host_of(authority).ok_or(ProxyError::MissingHost)?;
    router
        .route(host)
        .ok_or_else(|| ProxyError::UnknownHost(host.to_owned()))
}

/// Request bodies up to this size (by Content-Length) are read whole before an origin is
/// chosen, so a POST whose connection an origin refuses — it never reached the origin — is
/// sent to another instead of failing. Larger bodies stream and are sent once; the bound
/// keeps memory per request small.
pub(crate) const REPLAY_BUFFER_BYTES: u64 = 64 * 1024;

/// The request body's declared length (`Content-Length`), if valid.
pub(crate) fn body_length(parts: &Parts) -> Option<u64> {
    causeway_cache::storable::content_length(&parts.headers)
}

/// Rewrites a client request's head for the origin hop.
pub(crate) fn prepare_upstream_headers(parts: &mut Parts, connection: ConnectionInfo) {
    // An HTTP/2 request carries its host in the authority; the HTTP/1.1 origin needs Host.
    if !parts.headers.contains_key(HOST)
        && let Some(value) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(HOST, value);
    }
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::add_forwarding(&mut parts.headers, connection.peer.ip(), connection.tls);
    headers::ensure_request_id(&mut parts.headers);
    parts.version = Version::HTTP_11;
    // The cache keys by scheme, and a request in origin form does not carry it.
    if connection.tls {
        parts.extensions.insert(http::uri::Scheme::HTTPS);
    }
}

/// The request for one attempt on the leased origin.
fn attempt_request(
    parts: &Parts,
    lease: &Lease,
    body: RequestBody,
) -> Result<Request<RequestBody>, ProxyError> {
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(lease.info().authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| ProxyError::Upstream {
            origin: lease.info().name.clone(),
            detail: e.to_string(),
        })?;
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    Ok(request)
}

/// Sends the request to an origin, retrying on another where it is safe: the body can be sent
/// again (none, or a small buffered one) and the request is idempotent — or it never reached
/// the origin (connect failure, or a kept-alive connection the origin closed as the request
/// went out: that request is sent once more, on a new connection where the race cannot
/// recur, and costs no retry).
pub(crate) async fn forward(
    site: &SiteRuntime,
    parts: Parts,
    body: RequestBody,
    profile: RequestProfile,
) -> Result<(Response<Incoming>, Lease), ProxyError> {
    let replay = body.replay();
    let replayable = replay.is_some();
    let idempotent = is_idempotent(&parts.method);
    let mut body = Some(body);
    let mut tried = OriginSet::default();
    let mut attempts_left = site.retry_attempts;
    let mut resend_on_a_new_connection = false;
    // A reload may hand the Site's balancer over while the request waits: each lease comes
    // from the balancer in force, and a retry goes on from that one.
    let mut balancer = site.balancer.clone();
    balancer.record_request();
    loop {
        let lease = balancer
            .acquire(profile, tried)
            .await
            .map_err(|e| ProxyError::from_acquire(e, site.queue_timeout))?;
        balancer = lease.balancer();
        tried = lease.tried();
        let attempt_body = body
            .take()
            .or_else(|| replay.as_ref().and_then(RequestBody::replay))
            .unwrap_or(RequestBody::Empty);
        let request = attempt_request(&parts, &lease, attempt_body)?;
        // The name is only wanted on the error paths; look it up there, not per request.
        let origin_index = lease.origin();
        let origin = || balancer.origins()[origin_index].name.clone();
        let client = if resend_on_a_new_connection {
            &site.fresh_client
        } else {
            &site.client
        };
        let mut attempt = Attempt::send(site, client, request, lease);
        let Some((result, lease)) = attempt.answer().await else {
            return Err(ProxyError::Upstream {
                origin: origin(),
                detail: "the attempt was awaited twice".to_owned(),
            });
        };
        let elapsed = attempt.sent().elapsed();
        let (error, may_retry) = match result {
            AttemptResult::Answered(Ok(response)) if !is_gateway_error(response.status()) => {
                lease.record(elapsed, true);
                return Ok((response, lease));
            }
            AttemptResult::Answered(Ok(response)) => {
                lease.record(elapsed, false);
                if !(replayable && idempotent && attempts_left > 0 && balancer.try_retry()) {
                    return Ok((response, lease));
                }
                tracing::debug!(site = %site.name, origin = %origin(), status = %response.status(), "retrying on another origin");
                attempts_left -= 1;
                continue;
            }
            AttemptResult::NeverWritten if !resend_on_a_new_connection => {
                // The pooled connection took the request and never wrote it: nothing reached
                // the origin, and nothing is known against it.
                lease.record_resent(Resent::NeverWritten);
                resend_on_a_new_connection = true;
                tracing::debug!(site = %site.name, origin = %origin(), "origin connection never wrote the request; sending it on a new one");
                continue;
            }
            AttemptResult::NeverWritten | AttemptResult::Stalled => {
                lease.record(elapsed, false);
                // Unwritten twice is like a connect failure: any method may go elsewhere. A
                // write begun as the request was abandoned may have reached the origin.
                let unwritten = matches!(result, AttemptResult::NeverWritten);
                (
                    ProxyError::Upstream {
                        origin: origin(),
                        detail: "the origin connection stalled before writing the request"
                            .to_owned(),
                    },
                    replayable && (unwritten || idempotent),
                )
            }
            AttemptResult::Answered(Err(error)) => {
                if let Some(client_error) = client_body_error(&error) {
                    // The client's fault, not the origin's: no penalty, no retry.
                    return Err(match client_error {
                        ClientBodyError::TooLarge { limit } => {
                            ProxyError::BodyTooLarge { limit: *limit }
                        }
                        ClientBodyError::Broken(e) => ProxyError::ClientBody(e.to_string()),
                        ClientBodyError::Link(e) => ProxyError::ClientBody(e.to_string()),
                    });
                }
                if replayable
                    && !resend_on_a_new_connection
                    && origin_connection::lost_to_a_closing_connection(&error)
                {
                    // The origin closed a connection it thought idle as the request went out:
                    // nothing reached its application, and nothing is wrong with it.
                    lease.record_resent(Resent::ClosedConnection);
                    resend_on_a_new_connection = true;
                    tracing::debug!(site = %site.name, origin = %origin(), "kept-alive connection closed under the request; sending it again");
                    continue;
                }
                lease.record(elapsed, false);
                let detail = error_chain(&error);
                if error.is_connect() {
                    (
                        ProxyError::Connect {
                            origin: origin(),
                            detail,
                        },
                        replayable,
                    )
                } else {
                    (
                        ProxyError::Upstream {
                            origin: origin(),
                            detail,
                        },
                        replayable && idempotent,
                    )
                }
            }
            AttemptResult::TimedOut => {
                lease.record(elapsed, false);
                (
                    ProxyError::Timeout {
                        origin: origin(),
                        timeout: site.response_timeout,
                    },
                    replayable && idempotent,
                )
            }
        };
        if !(may_retry && attempts_left > 0 && balancer.try_retry()) {
            return Err(error);
        }
        tracing::debug!(site = %site.name, %error, "retrying on another origin");
        attempts_left -= 1;
    }
}

fn client_body_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ClientBodyError> {
    error_sources(error).find_map(|e| e.downcast_ref::<ClientBodyError>())
}

/// `error` and each error beneath it, outermost first.
pub(crate) fn error_sources<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    error_sources(error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

impl Handler for Proxy {
    type Body = CachedBody<ProxyBody>;

    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> impl Future<Output = Response<CachedBody<ProxyBody>>> + Send + 'static {
        self.serve(request, connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_methods_are_retried() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }

    #[test]
    fn only_gateway_errors_invite_another_origin() {
        assert!(is_gateway_error(StatusCode::BAD_GATEWAY));
        assert!(is_gateway_error(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_gateway_error(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!is_gateway_error(StatusCode::NOT_FOUND));
    }
}
