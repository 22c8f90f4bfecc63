//! The proxy's one error type: who failed (the client, an origin, or us), whether another
//! attempt may help, and the single place that turns an error into an HTTP answer.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::balancer::AcquireError;

/// Who is at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something we cannot serve.
    Client,
    /// An origin failed or is overloaded.
    Upstream,
}

/// Everything that can stop a request from being proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request target is not an origin-form path.
    #[error("the request target is not a path")]
    BadTarget,
    /// A front-end has no TMP link up to any of the Site's back-ends.
    #[error("no link to a back-end of site {site} is up")]
    NoLink {
        /// The Site.
        site: String,
    },
    /// The TMP link to the back-end broke before the answer arrived whole.
    #[error("link to back-end {backend} failed: {detail}")]
    Link {
        /// The back-end's address.
        backend: String,
        /// What happened.
        detail: String,
    },
    /// No Host header or authority.
    #[error("the request has no Host header")]
    MissingHost,
    /// More than one Host field (RFC 9112 §3.2): which one names the Site is a guess, and
    /// an origin could pick the other.
    #[error("the request carries more than one Host field")]
    DuplicateHost,
    /// A transfer coding other than chunked (RFC 9112 §6.1): the body cannot be decoded
    /// here, and passing it on undecoded would hand the origin bytes it cannot read.
    #[error("transfer coding {0:?} is not implemented")]
    UnknownTransferCoding(String),
    /// CONNECT tunnels and upgrades to other protocols are not proxied.
    #[error("method {0} is not supported by this proxy")]
    MethodNotSupported(http::Method),
    /// No Site serves the host.
    #[error("no site is configured for host {0:?}")]
    UnknownHost(String),
    /// Both Content-Length and Transfer-Encoding: a request-smuggling attempt.
    #[error("the request carries both Content-Length and Transfer-Encoding")]
    AmbiguousLength,
    /// The request body is larger than the site allows.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The site's limit.
        limit: u64,
    },
    /// The client stopped sending its body part-way.
    #[error("the client's request body ended early: {0}")]
    ClientBody(String),
    /// No origin serves the request.
    #[error("no origin can serve this request")]
    NoOrigin,
    /// The release queue is full.
    #[error("every origin is at its limit and the queue is full")]
    QueueFull {
        /// When to try again.
        retry_after: Duration,
    },
    /// The request waited the whole queue timeout.
    #[error("no origin became free within the queue timeout")]
    QueueTimeout {
        /// When to try again.
        retry_after: Duration,
    },
    /// The queue stood (the origins are overloaded) and the request waited its standing wait.
    #[error("the origins are overloaded; please retry later")]
    QueueShed {
        /// When to try again.
        retry_after: Duration,
    },
    /// The origin could not be reached.
    #[error("cannot connect to origin {origin}: {detail}")]
    Connect {
        /// Origin name.
        origin: String,
        /// What failed.
        detail: String,
    },
    /// The origin did not answer in time.
    #[error("origin {origin} did not answer within {timeout:?}")]
    Timeout {
        /// Origin name.
        origin: String,
        /// The site's response timeout.
        timeout: Duration,
    },
    /// The origin broke the exchange.
    #[error("origin {origin} failed: {detail}")]
    Upstream {
        /// Origin name.
        origin: String,
        /// What failed.
        detail: String,
    },
}

impl ProxyError {
    /// Maps a balancer refusal.
    pub fn from_acquire(error: AcquireError, queue_timeout: Duration) -> Self {
        // Suggest coming back after about one queue timeout: the backlog ahead is at most that old.
        let retry_after = queue_timeout.max(Duration::from_secs(1));
        match error {
            AcquireError::Unavailable => Self::NoOrigin,
            AcquireError::QueueFull => Self::QueueFull { retry_after },
            AcquireError::QueueTimeout => Self::QueueTimeout { retry_after },
            AcquireError::QueueShed => Self::QueueShed { retry_after },
        }
    }

    /// Who failed.
    pub fn blame(&self) -> Blame {
        match self {
            Self::MissingHost
            | Self::DuplicateHost
            | Self::UnknownTransferCoding(_)
            | Self::BadTarget
            | Self::MethodNotSupported(_)
            | Self::UnknownHost(_)
            | Self::AmbiguousLength
            | Self::BodyTooLarge { .. }
            | Self::ClientBody(_) => Blame::Client,
            Self::NoOrigin
            | Self::QueueFull { .. }
            | Self::QueueTimeout { .. }
            | Self::QueueShed { .. }
            | Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Upstream { .. }
            | Self::NoLink { .. }
            | Self::Link { .. } => Blame::Upstream,
        }
    }

    /// The status code answered for it.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingHost
            | Self::DuplicateHost
            | Self::BadTarget
            | Self::AmbiguousLength
            | Self::ClientBody(_) => StatusCode::BAD_REQUEST,
            Self::UnknownTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            Self::UnknownHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::MethodNotSupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoOrigin
            | Self::QueueFull { .. }
            | Self::QueueTimeout { .. }
            | Self::QueueShed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Upstream { .. } | Self::Link { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::NoLink { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The answer sent to the client. Client errors close the connection, since after a
    /// framing error nothing further on it can be trusted.
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let mut response = Response::new(B::from(Bytes::from(format!("{self}\n"))));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match self {
            Self::QueueFull { retry_after }
            | Self::QueueTimeout { retry_after }
            | Self::QueueShed { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            Self::MissingHost
            | Self::DuplicateHost
            | Self::UnknownTransferCoding(_)
            | Self::AmbiguousLength
            | Self::BodyTooLarge { .. }
            | Self::ClientBody(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_refusals_are_503_with_retry_after() {
        let error = ProxyError::from_acquire(AcquireError::QueueFull, Duration::from_secs(5));
        let response: Response<Bytes> = error.to_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(error.blame(), Blame::Upstream);
    }

    #[test]
    fn framing_errors_close_the_connection() {
        for (error, status) in [
            (ProxyError::AmbiguousLength, StatusCode::BAD_REQUEST),
            (ProxyError::DuplicateHost, StatusCode::BAD_REQUEST),
            (
                ProxyError::UnknownTransferCoding("gzip".into()),
                StatusCode::NOT_IMPLEMENTED,
            ),
        ] {
            let response: Response<Bytes> = error.to_response();
            assert_eq!(response.status(), status, "{error}");
            assert_eq!(response.headers()[header::CONNECTION], "close", "{error}");
            assert_eq!(error.blame(), Blame::Client);
        }
    }
}
