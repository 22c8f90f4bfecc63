//! A channel: one client exchange (or one tunnelled TCP connection) as a QUIC stream pair on a
//! link. Sends go through the link's blender in sub-packets; receives read the peer's frames
//! and body bytes. While either half lives, the channel counts towards the N the congestion
//! controller scales with.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{RecvStream, SendStream, VarInt};

use crate::blender::Blender;
use crate::congestion::ChannelGuard;
use crate::error::LinkError;
use crate::frame::{self, LOWEST_CLASS};

/// How long a send may wait inside QUIC, holding its blender turn, before it gives the turn
/// back. A send waiting for the link waits about `sub-packet / rate` (7 ms for 16 KiB at
/// 20 Mbit/s, 130 ms at 1 Mbit/s) since acknowledgements free space continuously; one waiting
/// far longer is blocked on its own stream (its reader is slow) and must not hold the link.
/// Generous on purpose: a turn given back while the link is merely full puts a second writer
/// inside QUIC, whose wake-up order then decides instead of the blender.
const STALLED_SEND: Duration = Duration::from_secs(2);

/// Why a channel was reset; the code travels to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelReset {
    /// The peer's frames were invalid.
    Malformed,
    /// The request names nothing this end serves (site, port, type).
    Refused,
    /// The origin side failed mid-answer.
    UpstreamFailed,
    /// The client went away.
    Cancelled,
}

impl ChannelReset {
    /// The code on the wire.
    pub fn code(self) -> VarInt {
        VarInt::from_u32(match self {
            Self::Malformed => 1,
            Self::Refused => 2,
            Self::UpstreamFailed => 3,
            Self::Cancelled => 4,
        })
    }

    /// The reason a received code stands for.
    pub fn from_code(code: VarInt) -> Option<Self> {
        match code.into_inner() {
            1 => Some(Self::Malformed),
            2 => Some(Self::Refused),
            3 => Some(Self::UpstreamFailed),
            4 => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// A channel's two halves.
#[derive(Debug)]
pub struct Channel {
    /// What this end sends.
    pub sender: ChannelSender,
    /// What the peer sends.
    pub receiver: ChannelReceiver,
}

impl Channel {
    pub(crate) fn new(
        send: SendStream,
        recv: RecvStream,
        blender: Arc<Blender>,
        class: u8,
        hosted: ChannelGuard,
    ) -> Self {
        let hosted = Arc::new(hosted);
        let class = class.min(LOWEST_CLASS);
        let mut sender = ChannelSender {
            stream: send,
            blender,
            class,
            _hosted: hosted.clone(),
        };
        sender.apply_priority();
        Self {
            sender,
            receiver: ChannelReceiver {
                stream: recv,
                _hosted: hosted,
            },
        }
    }
}

/// The sending half of a channel.
#[derive(Debug)]
pub struct ChannelSender {
    stream: SendStream,
    blender: Arc<Blender>,
    class: u8,
    _hosted: Arc<ChannelGuard>,
}

impl ChannelSender {
    /// The channel's priority class.
    pub fn class(&self) -> u8 {
        self.class
    }

    /// Changes the class (the back-end may learn it only from the request head).
    pub fn set_class(&mut self, class: u8) {
        self.class = class.min(LOWEST_CLASS);
        self.apply_priority();
    }

    fn apply_priority(&mut self) {
        // The blender decides the proportions of what enters QUIC; the stream priority makes
        // an urgent class's bytes already inside QUIC's buffer leave first.
        let _ = self
            .stream
            .set_priority(i32::from(LOWEST_CLASS) - i32::from(self.class));
    }

    /// Sends a frame (a head) in one blender turn, whatever its size: a head must not be
    /// split, and it too must wait its turn on a busy link rather than queue inside QUIC.
    pub async fn send_frame(&mut self, frame: Bytes) -> Result<(), LinkError> {
        let permit = self.blender.turn(self.class, frame.len()).await;
        self.write_in_turn(frame, permit).await
    }

    /// Sends body bytes, one sub-packet per blender turn. The next turn is asked for while a
    /// piece is being written, so that when the turn ends the schedule finds this channel
    /// waiting: a channel that asked only afterwards would lose every other turn to the
    /// classes beside it, whatever its weight.
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), LinkError> {
        if data.is_empty() {
            return Ok(());
        }
        let blender = self.blender.clone();
        let class = self.class;
        let mut permit = blender.turn(class, data.len()).await;
        loop {
            let piece = data.split_to(permit.bytes().min(data.len()));
            if data.is_empty() {
                return self.write_in_turn(piece, permit).await;
            }
            let next = blender.turn(class, data.len());
            let (written, next_permit) = tokio::join!(self.write_in_turn(piece, permit), next);
            written?;
            permit = next_permit;
        }
    }

    /// Hands `piece` to QUIC while holding the turn, giving the turn back early if the write
    /// stalls on this stream's own flow control.
    async fn write_in_turn(
        &mut self,
        piece: Bytes,
        mut permit: crate::blender::Permit,
    ) -> Result<(), LinkError> {
        let write = self.stream.write_chunk(piece);
        tokio::pin!(write);
        match tokio::time::timeout(STALLED_SEND, &mut write).await {
            Ok(result) => result?,
            Err(_) => {
                permit.release();
                write.await?;
            }
        }
        Ok(())
    }

    /// Ends the channel's sending side cleanly.
    pub fn finish(&mut self) -> Result<(), LinkError> {
        self.stream.finish()?;
        Ok(())
    }

    /// Abandons the sending side with a reason.
    pub fn reset(&mut self, why: ChannelReset) {
        let _ = self.stream.reset(why.code());
    }

    /// Resolves when the peer stops reading (it gave up on the channel).
    pub async fn stopped(&mut self) -> Option<ChannelReset> {
        match self.stream.stopped().await {
            Ok(Some(code)) => ChannelReset::from_code(code).or(Some(ChannelReset::Cancelled)),
            _ => None,
        }
    }
}

/// The receiving half of a channel.
#[derive(Debug)]
pub struct ChannelReceiver {
    stream: RecvStream,
    _hosted: Arc<ChannelGuard>,
}

/// The most body bytes one read returns.
const READ_CHUNK: usize = 64 * 1024;

impl ChannelReceiver {
    /// Reads one length-prefixed frame's payload.
    pub async fn read_frame(&mut self) -> Result<Vec<u8>, LinkError> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).await?;
        let length = frame::frame_length(prefix)?;
        let mut payload = vec![0u8; length];
        self.stream.read_exact(&mut payload).await?;
        Ok(payload)
    }

    /// Reads the next body bytes; `None` at the end of the channel.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, LinkError> {
        Ok(self
            .stream
            .read_chunk(READ_CHUNK, true)
            .await?
            .map(|chunk| chunk.bytes))
    }

    /// Tells the peer to stop sending (this end gave up).
    pub fn stop(&mut self, why: ChannelReset) {
        let _ = self.stream.stop(why.code());
    }
}
