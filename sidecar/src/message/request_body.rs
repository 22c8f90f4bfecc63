//! A client's request body on its way upstream (to an origin, or over a TMP link): empty, read
//! whole so that a retry can send it again, or streamed under the Site's size limit — from a
//! client connection or from a TMP channel.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use causeway_link::{ChannelReceiver, LinkError};
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Why a client's request body could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// More bytes than the site allows.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client's stream broke.
    #[error("client request body: {0}")]
    Broken(#[source] hyper::Error),
    /// The front-end's channel broke (back-end side: the client or the link went away).
    #[error("request body from the front-end: {0}")]
    Link(#[source] causeway_link::LinkError),
}

/// A request body arriving on a TMP channel.
pub type LinkStream = Pin<Box<dyn Stream<Item = Result<Bytes, LinkError>> + Send>>;

/// Reads a channel's remaining bytes as a stream.
pub fn channel_stream(receiver: ChannelReceiver) -> LinkStream {
    Box::pin(futures_util::stream::unfold(
        Some(receiver),
        |receiver| async move {
            let mut receiver = receiver?;
            match receiver.read_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(receiver))),
                Ok(None) => None,
                Err(error) => Some((Err(error), None)),
            }
        },
    ))
}

/// A client's request body on its way to an origin.
pub enum RequestBody {
    /// No body: replayable on a retry.
    Empty,
    /// A small body read whole before the first attempt, so that it can be sent again when
    /// an origin refuses the connection; what is left of it to send.
    Buffered(Bytes),
    /// The client's streamed body, with the site's limit.
    Streaming {
        /// The client's body.
        inner: Incoming,
        /// Bytes still allowed.
        remaining: Option<u64>,
        /// The site's limit, for the error.
        limit: u64,
    },
    /// A body streamed from a front-end over a TMP channel (back-end side).
    Link {
        /// The channel's bytes.
        inner: LinkStream,
        /// Bytes still allowed.
        remaining: Option<u64>,
        /// The site's limit, for the error.
        limit: u64,
    },
}

impl std::fmt::Debug for LinkBodyMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkStream")
    }
}

/// Stands in for the stream in `Debug` output.
struct LinkBodyMarker;

impl RequestBody {
    /// Reads a client's small body whole (its Content-Length is known and small), so it can
    /// be sent more than once.
    pub async fn buffer(inner: Incoming) -> Result<Self, ClientBodyError> {
        let bytes = http_body_util::BodyExt::collect(inner)
            .await
            .map_err(ClientBodyError::Broken)?
            .to_bytes();
        Ok(if bytes.is_empty() {
            Self::Empty
        } else {
            Self::Buffered(bytes)
        })
    }

    /// Another copy of the body for a further attempt; `None` for a streamed body, which can
    /// be sent only once.
    pub fn replay(&self) -> Option<Self> {
        match self {
            Self::Empty => Some(Self::Empty),
            Self::Buffered(bytes) => Some(Self::Buffered(bytes.clone())),
            Self::Streaming { .. } | Self::Link { .. } => None,
        }
    }

    /// Reads a small body from a channel whole, so it can be sent more than once; more than
    /// `most` bytes is an error.
    pub async fn buffer_channel(
        receiver: ChannelReceiver,
        most: u64,
    ) -> Result<Self, ClientBodyError> {
        let mut stream = channel_stream(receiver);
        let mut bytes = bytes::BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(ClientBodyError::Link)?;
            if (bytes.len() + chunk.len()) as u64 > most {
                return Err(ClientBodyError::TooLarge { limit: most });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(if bytes.is_empty() {
            Self::Empty
        } else {
            Self::Buffered(bytes.freeze())
        })
    }

    /// Wraps a channel's body; `limit` is the site's maximum body size, if any.
    pub fn from_channel(receiver: ChannelReceiver, limit: Option<u64>) -> Self {
        Self::Link {
            inner: channel_stream(receiver),
            remaining: limit,
            limit: limit.unwrap_or(u64::MAX),
        }
    }

    /// Wraps a client's body; `limit` is the site's maximum body size, if any.
    pub fn new(inner: Incoming, limit: Option<u64>) -> Self {
        if inner.is_end_stream() {
            return Self::Empty;
        }
        Self::Streaming {
            inner,
            remaining: limit,
            limit: limit.unwrap_or(u64::MAX),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Buffered(bytes) if bytes.is_empty() => Poll::Ready(None),
            Self::Buffered(bytes) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes))))),
            Self::Streaming {
                inner,
                remaining,
                limit,
            } => {
                let frame = match Pin::new(inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => frame,
                    Poll::Ready(Some(Err(error))) => {
                        return Poll::Ready(Some(Err(ClientBodyError::Broken(error))));
                    }
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                };
                if let (Some(left), Some(data)) = (remaining.as_mut(), frame.data_ref()) {
                    let len = data.len() as u64;
                    if len > *left {
                        return Poll::Ready(Some(Err(ClientBodyError::TooLarge { limit: *limit })));
                    }
                    *left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Self::Link {
                inner,
                remaining,
                limit,
            } => match inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    if let Some(left) = remaining.as_mut() {
                        let len = data.len() as u64;
                        if len > *left {
                            return Poll::Ready(Some(Err(ClientBodyError::TooLarge {
                                limit: *limit,
                            })));
                        }
                        *left -= len;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Poll::Ready(Some(Err(error))) => {
                    Poll::Ready(Some(Err(ClientBodyError::Link(error))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Buffered(bytes) => bytes.is_empty(),
            Self::Streaming { inner, .. } => inner.is_end_stream(),
            Self::Link { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Buffered(bytes) => SizeHint::with_exact(bytes.len() as u64),
            Self::Streaming { inner, .. } => inner.size_hint(),
            Self::Link { .. } => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty"),
            Self::Buffered(bytes) => f.debug_tuple("Buffered").field(&bytes.len()).finish(),
            Self::Streaming { remaining, .. } => f
                .debug_struct("Streaming")
                .field("remaining", remaining)
                .finish_non_exhaustive(),
            Self::Link { remaining, .. } => f
                .debug_struct("Link")
                .field("remaining", remaining)
                .field("inner", &LinkBodyMarker)
                .finish_non_exhaustive(),
        }
    }
}
