//! The crate's error type: what went wrong on a link or a channel, and whose fault it was.

use crate::frame::FrameError;

/// Why a link or channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No link to the peer is up.
    #[error("no link is up")]
    NoLink,
    /// The link (QUIC connection) is gone.
    #[error("link lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Dialling the peer failed before any packet left.
    #[error("dial: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// Sending on a channel failed (the link died or the peer stopped reading).
    #[error("channel send: {0}")]
    Write(#[from] quinn::WriteError),
    /// Receiving on a channel failed (the link died or the peer reset the channel).
    #[error("channel receive: {0}")]
    Read(#[from] quinn::ReadError),
    /// The channel ended inside a frame.
    #[error("channel ended inside a frame")]
    Truncated,
    /// The peer sent an invalid frame.
    #[error("malformed frame from peer: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent an invalid control message.
    #[error("malformed control message from peer: {0}")]
    Control(String),
    /// The channel was closed by our side.
    #[error("channel closed")]
    Closed,
    /// Socket setup failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// Credentials are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl LinkError {
    /// True when the failure says nothing about the request itself: the link broke before the
    /// peer could act on it, so an idempotent request may be sent again on another link.
    pub fn link_failed(&self) -> bool {
        matches!(
            self,
            Self::NoLink
                | Self::Connection(_)
                | Self::Connect(_)
                | Self::Write(quinn::WriteError::ConnectionLost(_))
                | Self::Read(quinn::ReadError::ConnectionLost(_))
        )
    }
}

impl From<quinn::ReadExactError> for LinkError {
    fn from(error: quinn::ReadExactError) -> Self {
        match error {
            quinn::ReadExactError::FinishedEarly(_) => Self::Truncated,
            quinn::ReadExactError::ReadError(e) => Self::Read(e),
        }
    }
}

impl From<quinn::ClosedStream> for LinkError {
    fn from(_: quinn::ClosedStream) -> Self {
        Self::Closed
    }
}
