//! Bodies on a front-end: an answer streamed from a TMP channel (decompressed when the
//! back-end compressed it), or one the front-end wrote itself; either way the request is
//! recorded when the body ends.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use causeway_link::compress::Decompressor;
use http_body::{Body, Frame, SizeHint};

use crate::message::BoxError;
use crate::message::request_body::LinkStream;
use crate::metrics::SiteMetrics;

/// Records a finished client request when dropped.
#[derive(Debug)]
pub struct FrontCompletion {
    metrics: SiteMetrics,
    class: u8,
    status: u16,
    started: Instant,
}

impl FrontCompletion {
    /// A request of `class` answered with `status`, started at `started`.
    pub fn new(metrics: &SiteMetrics, class: u8, status: u16, started: Instant) -> Self {
        Self {
            metrics: metrics.clone(),
            class,
            status,
            started,
        }
    }
}

impl Drop for FrontCompletion {
    fn drop(&mut self) {
        self.metrics.record_request(
            self.class,
            self.status,
            self.started.elapsed().as_secs_f64(),
        );
    }
}

/// A body the client receives from a front-end.
pub struct FrontBody {
    kind: Kind,
    completion: Option<FrontCompletion>,
}

enum Kind {
    Link {
        stream: LinkStream,
        decompressor: Option<Decompressor>,
    },
    Local(Option<Bytes>),
}

impl std::fmt::Debug for FrontBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontBody").finish_non_exhaustive()
    }
}

impl FrontBody {
    /// The body arriving on a channel; `decompressor` when the back-end compressed it.
    pub fn link(
        stream: LinkStream,
        decompressor: Option<Decompressor>,
        completion: FrontCompletion,
    ) -> Self {
        Self {
            kind: Kind::Link {
                stream,
                decompressor,
            },
            completion: Some(completion),
        }
    }

    /// Attaches the record of a locally answered request.
    pub fn with_completion(mut self, completion: FrontCompletion) -> Self {
        self.completion = Some(completion);
        self
    }
}

impl From<Bytes> for FrontBody {
    fn from(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Local(Some(bytes)),
            completion: None,
        }
    }
}

impl Body for FrontBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Link {
                stream,
                decompressor,
            } => loop {
                match stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        let Some(decompressor) = decompressor.as_mut() else {
                            break Poll::Ready(Some(Ok(Frame::data(chunk))));
                        };
                        match decompressor.chunk(&chunk) {
                            // A zstd block boundary may yield nothing yet: read on.
                            Ok(plain) if plain.is_empty() => continue,
                            Ok(plain) => break Poll::Ready(Some(Ok(Frame::data(plain)))),
                            Err(error) => {
                                break Poll::Ready(Some(Err(Box::new(error) as BoxError)));
                            }
                        }
                    }
                    Poll::Ready(Some(Err(error))) => {
                        break Poll::Ready(Some(Err(Box::new(error) as BoxError)));
                    }
                    Poll::Ready(None) => break Poll::Ready(None),
                    Poll::Pending => break Poll::Pending,
                }
            },
        };
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            this.completion.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.kind, Kind::Local(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Local(None) => SizeHint::with_exact(0),
            Kind::Link { .. } => SizeHint::default(),
        }
    }
}
