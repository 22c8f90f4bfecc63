//! The answer body of the origin side: it streams the origin's bytes (or a local answer)
//! frame by frame, carries the request's lease, and records the request when it ends; an
//! origin's answer read to its end gives its connection back to the origin's pool.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::origin_pool::PooledConnection;
use crate::balancer::{Balancer, Lease};
use crate::message::BoxError;

/// Records a finished client request when dropped: its metrics, and the release of its
/// origin slot, at the moment the last byte of the answer has come from the origin (or the
/// client left).
#[derive(Debug)]
pub struct Completion {
    /// The request's slot on an origin, if it got one.
    pub lease: Option<Lease>,
    site: Balancer,
    class: u8,
    status: u16,
    started: Instant,
}

impl Completion {
    /// A request of `class` to the site of `balancer`, started at `started`, answered with
    /// `status`.
    pub fn new(
        balancer: &Balancer,
        class: u8,
        status: u16,
        started: Instant,
        lease: Option<Lease>,
    ) -> Self {
        Self {
            lease,
            site: balancer.clone(),
            class,
            status,
            started,
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.site
            .metrics()
            .record_request(self.class, self.status, seconds);
    }
}

/// The body of every answer the proxy gives.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    completion: Option<Completion>,
    /// The origin connection the answer comes on, until its last byte has.
    connection: Option<PooledConnection>,
}

#[derive(Debug)]
enum Kind {
    Upstream(Incoming),
    Local(Full<Bytes>),
}

impl ProxyBody {
    /// An origin's body, streamed through; `connection` goes back to its pool after it.
    pub fn upstream(inner: Incoming, connection: PooledConnection, completion: Completion) -> Self {
        Self {
            kind: Kind::Upstream(inner),
            completion: Some(completion),
            connection: Some(connection),
        }
    }

    /// A body the proxy wrote itself.
    pub fn local(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Local(Full::new(bytes)),
            completion: None,
            connection: None,
        }
    }

    /// Gives the origin connection back if its answer has been read to the end; otherwise
    /// it closes, as the rest of the answer would be taken for the next one.
    fn release_connection(&mut self) {
        if let Some(connection) = self.connection.take()
            && self.is_end_stream()
        {
            connection.give_back();
        }
    }

    /// Attaches the completion record of a locally answered request.
    pub fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = Some(completion);
        self
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // An answer with no body (a HEAD's, a 304) may never be polled.
        self.release_connection();
    }
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        Self::local(bytes)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Upstream(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            Kind::Local(inner) => Pin::new(inner)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        };
        let done = match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            // A body of known length ends with its last frame: hyper need not poll again,
            // and the origin is free as soon as that frame is out of it.
            Poll::Ready(Some(Ok(_))) => this.is_end_stream(),
            Poll::Pending => false,
        };
        if done {
            if matches!(polled, Poll::Ready(Some(Err(_)))) {
                this.connection.take();
            }
            this.release_connection();
            // Free the origin slot now rather than when hyper gets round to dropping us.
            this.completion.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(inner) => inner.is_end_stream(),
            Kind::Local(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(inner) => inner.size_hint(),
            Kind::Local(inner) => inner.size_hint(),
        }
    }
}
