//! The body of an answer that went through the cache phase, and the relay that streams a
//! filling response to its client while the cache keeps a copy.
//!
//! A response being stored is read by a task of its own, not by the client's connection: the
//! store gets the whole body even when the client leaves half-way (the followers of a
//! collapsed miss are waiting for it), and the client may be shown only part of it (a range
//! of a full fetch). The channel between the two is short, so a slow client still slows the
//! fetch while it stays.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use causeway_cache::{Cache, FlightLeader, FlightOutcome, PendingBody};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::message::BoxError;

/// Chunks in flight between the relay and the client: enough to keep the pipe full, few
/// enough that a slow client holds the fetch back.
const RELAY_CHUNKS: usize = 8;

/// An answer's body: the tier's own (an upstream stream or one made locally), or one relayed
/// from a response being stored.
#[derive(Debug)]
pub enum CachedBody<B> {
    /// The tier's body, streamed as it is.
    Direct(B),
    /// The client's part of a response the relay is storing.
    Relayed(mpsc::Receiver<Result<Bytes, BoxError>>),
}

impl<B: From<Bytes>> From<Bytes> for CachedBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self::Direct(B::from(bytes))
    }
}

impl<B> Body for CachedBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Direct(inner) => Pin::new(inner).poll_frame(cx),
            Self::Relayed(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|result| result.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Direct(inner) => inner.is_end_stream(),
            Self::Relayed(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Direct(inner) => inner.size_hint(),
            Self::Relayed(_) => SizeHint::default(),
        }
    }
}

/// A response on its way into the store.
pub(super) struct Storing {
    pub cache: Arc<Cache>,
    pub pending: Box<PendingBody>,
    /// The collapsed flight this fetch leads, told the outcome at the end.
    pub leader: Option<FlightLeader>,
    /// The body's length as the head announced it (`Content-Length`), if it did.
    pub announced_length: Option<u64>,
}

impl Storing {
    /// Gives up storing: the followers fetch for themselves.
    fn abandon(self, outcome: FlightOutcome) {
        if let Some(leader) = self.leader {
            leader.publish(outcome);
        }
    }

    /// Stores the whole body and tells the followers.
    fn commit(self) {
        let outcome = match self.cache.commit(*self.pending, SystemTime::now()) {
            Some(entry) => FlightOutcome::Stored(entry),
            None => FlightOutcome::NotShared,
        };
        if let Some(leader) = self.leader {
            leader.publish(outcome);
        }
    }
}

/// Where the relay sends the client's bytes: all of them, or one range, or none (a background
/// refresh, or a client answered without the body).
pub(super) struct ClientView {
    pub sender: Option<mpsc::Sender<Result<Bytes, BoxError>>>,
    pub window: Option<Range<u64>>,
}

impl ClientView {
    /// A channel for the whole body (or `window` of it) and the client's end of it.
    pub fn channel<B>(window: Option<Range<u64>>) -> (Self, CachedBody<B>) {
        let (sender, receiver) = mpsc::channel(RELAY_CHUNKS);
        (
            Self {
                sender: Some(sender),
                window,
            },
            CachedBody::Relayed(receiver),
        )
    }

    /// Nobody reads: only the store wants the body.
    pub fn none() -> Self {
        Self {
            sender: None,
            window: None,
        }
    }
}

/// Reads `body` to its end, storing it when `storing` and handing the client its view.
/// Stops reading early only when neither the store nor a client wants more.
pub(super) async fn relay<B>(mut body: B, mut storing: Option<Storing>, mut client: ClientView)
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let mut offset = 0u64;
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                tracing::debug!(%error, "upstream body broke; nothing stored");
                if let Some(sender) = client.sender.take() {
                    let _ = sender.send(Err(error)).await;
                }
                if let Some(storing) = storing.take() {
                    storing.abandon(FlightOutcome::Failed);
                }
                return;
            }
            None => break,
        };
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers are not kept
        };
        if let Some(store) = storing.as_mut()
            && store.pending.push(&chunk).is_err()
        {
            // Past the per-object limit: the rest streams through uncached.
            if let Some(store) = storing.take() {
                store.abandon(FlightOutcome::NotShared);
            }
        }
        let start = offset;
        offset += chunk.len() as u64;
        if storing
            .as_ref()
            .is_some_and(|store| store.announced_length == Some(offset))
            && let Some(store) = storing.take()
        {
            // Complete: stored before the client has its last byte, so a request it sends
            // next finds the entry rather than this fill still in flight.
            store.commit();
        }
        if let Some(sender) = &client.sender {
            let part = match &client.window {
                None => chunk,
                Some(window) => slice(&chunk, start, window),
            };
            if !part.is_empty() && sender.send(Ok(part)).await.is_err() {
                client.sender = None; // the client left; the store may still want the rest
            }
        }
        if storing.is_none() && client.sender.is_none() {
            return;
        }
    }
    if let Some(store) = storing {
        store.commit();
    }
}

/// The part of `chunk` (which starts at byte `start` of the body) inside `window`.
fn slice(chunk: &Bytes, start: u64, window: &Range<u64>) -> Bytes {
    let end = start + chunk.len() as u64;
    let from = window.start.clamp(start, end) - start;
    let to = window.end.clamp(start, end) - start;
    // Both offsets are within the chunk, whose length is a usize.
    chunk.slice(from as usize..to as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_keep_only_the_window() {
        let chunk = Bytes::from_static(b"0123456789");
        assert_eq!(slice(&chunk, 0, &(2..5)), "234");
        assert_eq!(slice(&chunk, 10, &(12..15)), "234");
        assert_eq!(slice(&chunk, 10, &(5..12)), "01");
        assert_eq!(slice(&chunk, 20, &(5..12)), "");
        assert_eq!(slice(&chunk, 10, &(15..100)), "56789");
        assert_eq!(slice(&chunk, 0, &(0..100)), "0123456789");
    }
}
