//! The origin side of the pipeline: a request sent to one of its Site's origins through the
//! balancer (a lease per attempt), retried on another where that is safe, and the answer
//! streamed back inside a [`body::ProxyBody`] that holds the slot until its last byte. The
//! single-tier gateway is [`Gateway`]: the [pipeline](crate::pipeline) over this side.

pub mod attempt;
pub mod body;
pub mod origin_connection;
pub mod origin_pool;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use self::attempt::{Attempt, AttemptBounds, AttemptResult, OriginError};
use self::body::{Completion, ProxyBody};
use self::origin_pool::PooledConnection;
use crate::balancer::{Lease, OriginSet, Resent};
use crate::caching::Upstream;
use crate::classify::{Classifier, RequestProfile};
use crate::message::error::ProxyError;
use crate::message::request_body::{ClientBodyError, RequestBody};
use crate::message::{headers, is_idempotent};
use crate::pipeline::{Pipeline, RoutedSite, Tier};
use crate::sites::SiteRuntime;

/// The single-tier gateway: clients to origins, through the pipeline.
pub type Proxy = Pipeline<Gateway>;

/// The single-tier gateway's part of the pipeline: its Sites run balancers over origins.
#[derive(Debug)]
pub enum Gateway {}

impl Tier for Gateway {
    type Site = SiteRuntime;
    type Upstream = GatewayUpstream;

    fn upstream(
        site: Arc<SiteRuntime>,
        profile: RequestProfile,
        started: Instant,
    ) -> GatewayUpstream {
        GatewayUpstream {
            site,
            profile,
            started,
        }
    }
}

impl RoutedSite for SiteRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    fn max_body_bytes(&self) -> Option<u64> {
        self.max_body_bytes
    }

    fn cache(&self) -> Option<&Arc<causeway_cache::Cache>> {
        self.cache.as_ref()
    }
}

/// Origin answers that say "try elsewhere".
fn is_gateway_error(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// One gateway request's way to its Site's origins, for the proxy and its cache phase.
#[derive(Clone, Debug)]
pub struct GatewayUpstream {
    site: Arc<SiteRuntime>,
    profile: RequestProfile,
    started: Instant,
}

impl GatewayUpstream {
    /// The client's answer from an origin's response: hop-by-hop fields off, `Via` on, and
    /// the origin slot held until the body's last byte.
    fn answer(&self, forwarded: Forwarded) -> Response<ProxyBody> {
        let (mut head, inner) = forwarded.response.into_parts();
        headers::remove_hop_by_hop(&mut head.headers);
        headers::add_via(&mut head.headers);
        let completion = Completion::new(
            &self.site.balancer,
            self.profile.class,
            head.status.as_u16(),
            self.started,
            Some(forwarded.lease),
        );
        Response::from_parts(
            head,
            ProxyBody::upstream(inner, forwarded.connection, completion),
        )
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

    async fn send(
        &self,
        parts: Parts,
        body: RequestBody,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let forwarded = forward(&self.site, parts, body, self.profile).await?;
        Ok(self.answer(forwarded))
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

/// The request for one attempt: the client's head, in origin form (the lease's origin is
/// where the connection goes; the client's Host is forwarded as it is).
fn attempt_request(parts: &Parts, body: RequestBody) -> Request<RequestBody> {
    let target = match parts.uri.path_and_query() {
        Some(path_and_query) => Uri::from(path_and_query.clone()),
        None => Uri::from_static("/"),
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = target;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// An origin's answer head, with the slot and the connection its body holds.
#[derive(Debug)]
pub struct Forwarded {
    /// The answer, its body still to come.
    pub response: Response<Incoming>,
    /// The origin slot, held until the body's last byte.
    pub lease: Lease,
    /// The connection the body comes on, given back to its pool after the last byte.
    pub connection: PooledConnection,
}

/// Sends the request to an origin, retrying on another (never one that already failed it) where
/// it is safe: the body can be sent again (none, or a small buffered one) and the request is
/// idempotent — or it never reached
/// the origin (connect failure, or a kept-alive connection the origin closed as the request
/// went out: that request is sent once more, on a new connection where the race cannot
/// recur, and costs no retry).
pub(crate) async fn forward(
    site: &SiteRuntime,
    parts: Parts,
    body: RequestBody,
    profile: RequestProfile,
) -> Result<Forwarded, ProxyError> {
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
        let request = attempt_request(&parts, attempt_body);
        // The name is only wanted on the error paths; look it up there, not per request.
        let origin_index = lease.origin();
        let origin = || balancer.origins()[origin_index].name.clone();
        let bounds = AttemptBounds {
            write_grace: site.connect_timeout,
            response_timeout: site.response_timeout,
            fresh_connection: resend_on_a_new_connection,
        };
        let mut attempt = Attempt::send(site.pool_for(&lease), request, lease, bounds);
        let Some((result, lease)) = attempt.answer().await else {
            return Err(ProxyError::Upstream {
                origin: origin(),
                detail: "the attempt was awaited twice".to_owned(),
            });
        };
        let elapsed = attempt.sent().elapsed();
        let (error, may_retry) = match result {
            AttemptResult::Answered(Ok((response, connection)))
                if !is_gateway_error(response.status()) =>
            {
                lease.record(elapsed, true);
                return Ok(Forwarded {
                    response,
                    lease,
                    connection,
                });
            }
            AttemptResult::Answered(Ok((response, connection))) => {
                lease.record(elapsed, false);
                if !(replayable
                    && idempotent
                    && attempts_left > 0
                    && balancer.has_untried(profile.request_type, tried)
                    && balancer.try_retry())
                {
                    return Ok(Forwarded {
                        response,
                        lease,
                        connection,
                    });
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
            AttemptResult::NeverWritten => {
                lease.record(elapsed, false);
                // Unwritten twice is like a connect failure: any method may go elsewhere.
                (
                    ProxyError::Upstream {
                        origin: origin(),
                        detail: "the origin connection stalled before writing the request"
                            .to_owned(),
                    },
                    replayable,
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
                    && let OriginError::Exchange { error, history } = &error
                    && origin_connection::lost_to_a_closing_connection(error, history)
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
        if !(may_retry
            && attempts_left > 0
            && balancer.has_untried(profile.request_type, tried)
            && balancer.try_retry())
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gateway_errors_invite_another_origin() {
        assert!(is_gateway_error(StatusCode::BAD_GATEWAY));
        assert!(is_gateway_error(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_gateway_error(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!is_gateway_error(StatusCode::NOT_FOUND));
    }
}
