//! A TMP link: one long-lived QUIC connection between a front-end and a back-end, its
//! blender, the count of channels it hosts, and both ends' latest QoS reports.
//!
//! [`dial`] keeps a front-end's link to one back-end up; [`listen`] accepts links on a
//! back-end; [`control`] runs the control stream that carries QoS reports both ways;
//! [`silence`] tells a path that died silently long before QUIC's idle timeout does.

pub mod control;
pub mod dial;
pub mod listen;
pub mod silence;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::blender::{Blender, CLASSES};
use crate::channel::Channel;
use crate::congestion::ChannelCount;
use crate::error::LinkError;
use crate::frame::ChannelHead;
use crate::qos::{LinkQos, Load, Role, TransportSample};
use silence::{Exchange, Silence};

/// A function reporting this gateway's load with each QoS report.
pub type LoadProbe = Arc<dyn Fn() -> Load + Send + Sync>;

/// One live link.
#[derive(Debug)]
pub struct Link {
    connection: quinn::Connection,
    role: Role,
    blender: Arc<Blender>,
    channels: ChannelCount,
    qos: Mutex<LinkQos>,
    peer_name: Mutex<String>,
    /// Set once this end starts shutting down; told to the peer in the next QoS report.
    draining: AtomicBool,
    /// Wakes the control stream to send that report at once.
    drain_started: tokio::sync::Notify,
    silence: Mutex<Silence>,
}

/// A link as `/qos` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    /// The peer's UDP address.
    pub peer_address: SocketAddr,
    /// The peer's gateway name.
    pub peer_name: String,
    /// This end's role.
    pub role: Role,
    /// Channels open now.
    pub channels: usize,
    /// Bytes let through per class by the blender since the link opened.
    pub blended_bytes: [u64; CLASSES],
    /// Both ends' latest reports.
    pub qos: LinkQos,
}

impl Link {
    pub(crate) fn new(
        connection: quinn::Connection,
        role: Role,
        blender: Arc<Blender>,
        channels: ChannelCount,
    ) -> Arc<Self> {
        Arc::new(Self {
            connection,
            role,
            blender,
            channels,
            qos: Mutex::new(LinkQos::default()),
            peer_name: Mutex::new(String::new()),
            draining: AtomicBool::new(false),
            drain_started: tokio::sync::Notify::new(),
            silence: Mutex::new(Silence::default()),
        })
    }

    /// Starts draining: the peer is told at once (in a QoS report) to open no new channels
    /// here; channels already open carry on until they finish.
    pub fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            self.drain_started.notify_one();
        }
    }

    /// Whether this end is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether the peer said it is draining.
    pub fn peer_draining(&self) -> bool {
        lock(&self.qos)
            .of(self.role.peer())
            .is_some_and(|report| report.draining)
    }

    /// Resolves when draining starts (once).
    pub(crate) async fn drain_started(&self) {
        self.drain_started.notified().await;
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's UDP address.
    pub fn peer_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// The peer's gateway name, once its hello arrived.
    pub fn peer_name(&self) -> String {
        lock(&self.peer_name).clone()
    }

    pub(crate) fn set_peer_name(&self, name: String) {
        *lock(&self.peer_name) = name;
    }

    /// The link's blender.
    pub fn blender(&self) -> &Arc<Blender> {
        &self.blender
    }

    /// Channels open now.
    pub fn channels_open(&self) -> usize {
        self.channels.open()
    }

    /// Both ends' latest QoS reports.
    pub fn qos(&self) -> LinkQos {
        lock(&self.qos).clone()
    }

    pub(crate) fn store_report(&self, report: crate::qos::QosReport) {
        lock(&self.qos).store(report);
    }

    /// The link as `/qos` shows it.
    pub fn view(&self) -> LinkView {
        LinkView {
            peer_address: self.peer_address(),
            peer_name: self.peer_name(),
            role: self.role,
            channels: self.channels_open(),
            blended_bytes: self.blender.sent_bytes(),
            qos: self.qos(),
        }
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.connection.close_reason().is_some()
    }

    /// Resolves when the connection closes, with the reason.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.connection.closed().await
    }

    /// Closes the link, telling the peer why.
    pub fn close(&self, reason: &str) {
        self.connection
            .close(quinn::VarInt::from_u32(0), reason.as_bytes());
    }

    /// Transport counters now.
    pub fn sample(&self) -> TransportSample {
        self.sample_of(&self.connection.stats())
    }

    fn sample_of(&self, stats: &quinn::ConnectionStats) -> TransportSample {
        TransportSample {
            rtt: stats.path.rtt,
            min_rtt: self.connection.min_rtt(),
            cwnd: stats.path.cwnd,
            sent_packets: stats.path.sent_packets,
            lost_packets: stats.path.lost_packets,
            sent_bytes: stats.udp_tx.bytes,
        }
    }

    /// How long the peer has left this end's frames unanswered (zero while it ACKs): a link
    /// silent for longer than [`silence::stall_after`] its RTT has most likely lost its path.
    fn unanswered_of(&self, stats: &quinn::ConnectionStats) -> Duration {
        lock(&self.silence).observe(Exchange::of(stats), Instant::now())
    }

    /// Transport counters and the peer's silence from one read of the connection's
    /// statistics, for a choice made per request.
    pub fn sample_and_silence(&self) -> (TransportSample, Duration) {
        let stats = self.connection.stats();
        (self.sample_of(&stats), self.unanswered_of(&stats))
    }

    /// Opens a channel and sends its head.
    pub async fn open(&self, head: &ChannelHead) -> Result<Channel, LinkError> {
        let (send, recv) = self.connection.open_bi().await?;
        let mut channel = Channel::new(
            send,
            recv,
            self.blender.clone(),
            head.class,
            self.channels.open_channel(),
        );
        channel.sender.send_frame(head.encode()).await?;
        Ok(channel)
    }

    /// Opens a channel without sending a head, for tools that write the wire format
    /// themselves (probes, fuzzers, tests of a peer's defences). The channel counts as
    /// hosted and is blended as class 4.
    pub async fn open_unframed(&self) -> Result<Channel, LinkError> {
        let (send, recv) = self.connection.open_bi().await?;
        Ok(Channel::new(
            send,
            recv,
            self.blender.clone(),
            crate::frame::LOWEST_CLASS,
            self.channels.open_channel(),
        ))
    }

    /// Accepts the next channel the peer opens (without reading its head).
    pub(crate) async fn accept(&self) -> Result<Channel, LinkError> {
        let (send, recv) = self.connection.accept_bi().await?;
        Ok(Channel::new(
            send,
            recv,
            self.blender.clone(),
            crate::frame::LOWEST_CLASS,
            self.channels.open_channel(),
        ))
    }

    /// Keeps QUIC's send buffer near the congestion window so that the blender, not QUIC's
    /// buffer, decides the order of bytes on a busy link, while never starving the window.
    pub(crate) fn fit_send_window(&self) {
        let cwnd = self.connection.stats().path.cwnd;
        self.connection
            .set_send_window(cwnd.saturating_mul(2).max(MIN_SEND_WINDOW));
    }
}

/// The smallest send window: a few sub-packets, so a fresh link is never stuck.
const MIN_SEND_WINDOW: u64 = 256 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
