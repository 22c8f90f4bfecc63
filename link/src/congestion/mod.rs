//! Congestion control for a TMP link: one QUIC connection that behaves like the N connections
//! it carries, sized by a model of the path rather than by every loss.
//!
//! A TMP link multiplexes N client connections (channels) over one QUIC connection. Had each
//! client reached the origin over its own TCP connection, a shared bottleneck would have given
//! them N shares, and the patent asks that the link keep them: it behaves like N flows and "a
//! TMP should not go down to a window size of less than the number of TCP connections that it
//! is hosting". The first controller did that with MulTCP ([`multcp`]: N Reno flows kept as
//! one), but a loss-based window mistakes the random loss of a long Internet path for
//! congestion: at 1–5% loss it ran at a tenth of what the path carries.
//!
//! [`ModelController`] estimates the path instead ([`model`]: bottleneck bandwidth as the
//! windowed maximum delivery rate, the windowed minimum RTT, a gain cycle that probes and
//! drains, an in-flight cap of gain × bandwidth-delay product) and tells congestive loss from
//! random loss: a loss while the RTT shows a queue, or a round that loses more than the path's
//! own random loss explains, takes 1/(2N) of the in-flight cap away, as one of N virtual flows
//! halving; a loss on an un-queued path costs nothing. When a queue stands that the link's own
//! draining does not empty, loss-based flows share the bottleneck, and the link competes as
//! N Reno flows would, through [`MulTcpState`], until the queue goes; flows that keep it at a
//! loss no loss-based flow sustains (BBR) are met like for like, not answered. N is read from a shared
//! [`ChannelCount`] at every decision, the window never drops below N segments, and the link
//! becomes gentler again as its channels close.
//!
//! [`ModelConfig`] is the factory handed to `TransportConfig::congestion_controller_factory`.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
// quinn's `Instant` is std's on every target but the browser, where no gateway runs.
use std::time::Instant;

use quinn_proto::RttEstimator;
use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics};

pub mod model;
pub mod multcp;
#[cfg(test)]
mod sim;

pub use model::{LinkModel, State};
pub use multcp::{MulTcp, MulTcpConfig, MulTcpState, MulTcpWindow};

/// quinn's base datagram size, the unit of RFC 9002's default initial window.
const BASE_DATAGRAM_SIZE: u64 = 1200;

/// RFC 9002's initial window, as quinn's NewReno uses it:
/// `min(10 × 1200, max(2 × 1200, 14720))` bytes.
const DEFAULT_INITIAL_WINDOW: u64 = 10 * BASE_DATAGRAM_SIZE;

/// RFC 9002's minimum window in segments, which even a single flow keeps.
const MINIMUM_SEGMENTS: u64 = 2;

/// The number of channels a link hosts now, shared by the link, which opens and closes
/// channels, and its congestion controller, which reads it at every decision.
///
/// Only [`ChannelGuard`]s change the count, so it cannot underflow. It is a hint published
/// through no other memory, hence relaxed atomics.
#[derive(Debug, Clone, Default)]
pub struct ChannelCount(Arc<AtomicUsize>);

impl ChannelCount {
    /// A count with no open channel.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more channel until the returned guard is dropped.
    #[must_use = "the channel is counted only while the guard lives"]
    pub fn open_channel(&self) -> ChannelGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        ChannelGuard {
            count: self.clone(),
        }
    }

    /// Channels open now.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// N, the number of TCP flows the link behaves like: its open channels, and at least one,
    /// since an idle link still behaves like one flow.
    pub fn flows(&self) -> u64 {
        u64::try_from(self.open()).unwrap_or(u64::MAX).max(1)
    }
}

/// One open channel, counted in its [`ChannelCount`] until dropped.
#[derive(Debug)]
pub struct ChannelGuard {
    count: ChannelCount,
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        self.count.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The quinn congestion controller of a TMP link: [`LinkModel`] fed by quinn's acks and
/// losses, with N read from the link's [`ChannelCount`] at every decision.
#[derive(Debug, Clone)]
pub struct ModelController {
    config: Arc<ModelConfig>,
    model: LinkModel,
}

impl ModelController {
    /// A controller for a connection whose path MTU is `current_mtu` bytes, started at `now`.
    pub fn new(config: Arc<ModelConfig>, now: Instant, current_mtu: u16) -> Self {
        let model = LinkModel::new(
            now,
            config.initial_window,
            u64::from(current_mtu),
            config.channels.flows(),
        );
        Self { config, model }
    }

    /// The state machine, as of the last ack or loss.
    pub fn model(&self) -> &LinkModel {
        &self.model
    }

    fn flows(&self) -> u64 {
        self.config.channels.flows()
    }

    fn acked(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool) {
        let flows = self.flows();
        self.model.on_ack(now, sent, bytes, app_limited, flows);
    }

    /// Logs a change of state at debug level: how the link reads its path is the first thing
    /// to know when its share or rate surprises.
    fn log_transition(&self, before: State) {
        let after = self.model.state();
        if after != before {
            let flows = self.flows();
            tracing::debug!(
                ?before,
                ?after,
                flows,
                window = self.model.window(flows),
                bandwidth = self.model.bandwidth(),
                min_rtt_us = self.model.min_rtt().map(|rtt| rtt.as_micros()),
                inflight_hi = self.model.inflight_hi(),
                random_loss = self.model.random_loss(),
                "link congestion state"
            );
        }
    }
}

impl Controller for ModelController {
    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &RttEstimator,
    ) {
        // The RTT sample is `now - sent` of the batch's newest packet, taken by the model:
        // quinn's estimator keeps its latest sample private and smooths the rest.
        self.acked(now, sent, bytes, app_limited);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        _app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        let flows = self.flows();
        let before = self.model.state();
        self.model.on_end_acks(now, in_flight, flows);
        self.log_transition(before);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        let flows = self.flows();
        let before = self.model.state();
        self.model
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes, flows);
        self.log_transition(before);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        let flows = self.flows();
        self.model.on_mtu_update(u64::from(new_mtu), flows);
    }

    fn window(&self) -> u64 {
        self.model.window(self.flows())
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = ControllerMetrics::default();
        metrics.congestion_window = self.window();
        // quinn paces from the window and the RTT; this rate is the model's, for qlog.
        metrics.pacing_rate = self.model.pacing_rate_bps();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.config.initial_window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Builds a [`ModelController`] for each connection of a transport configuration; each reads
/// N from the same [`ChannelCount`], so give each link its own configuration.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    initial_window: u64,
    channels: ChannelCount,
}

impl ModelConfig {
    /// Controllers reading N from `channels`, starting from RFC 9002's initial window.
    pub fn new(channels: ChannelCount) -> Self {
        Self {
            initial_window: DEFAULT_INITIAL_WINDOW,
            channels,
        }
    }

    /// Sets the initial window in bytes; the floor of one segment per channel still applies.
    pub fn initial_window(&mut self, bytes: u64) -> &mut Self {
        self.initial_window = bytes;
        self
    }

    /// The count the controllers read N from.
    pub fn channels(&self) -> &ChannelCount {
        &self.channels
    }
}

impl ControllerFactory for ModelConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(ModelController::new(self, now, current_mtu))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MSS: u64 = 1200;

    #[test]
    fn the_factory_builds_model_controllers_that_share_the_count() {
        let channels = ChannelCount::new();
        let mut config = ModelConfig::new(channels.clone());
        config.initial_window(3 * MSS);
        let config = Arc::new(config);
        let now = Instant::now();
        let first = config.clone().build(now, 1200);
        let second = config.build(now, 1200);
        assert_eq!(first.initial_window(), 3 * MSS);
        assert_eq!((first.window(), second.window()), (3 * MSS, 3 * MSS));
        let guards: Vec<_> = (0..7).map(|_| channels.open_channel()).collect();
        assert_eq!((first.window(), second.window()), (7 * MSS, 7 * MSS));
        drop(guards);
        assert_eq!(first.window(), 3 * MSS, "the floor follows N down");
        assert!(first.into_any().downcast::<ModelController>().is_ok());
    }

    #[test]
    fn a_transport_config_takes_the_model_factory() {
        let mut transport = quinn_proto::TransportConfig::default();
        transport.congestion_controller_factory(Arc::new(ModelConfig::new(ChannelCount::new())));
    }

    #[test]
    fn the_adapter_feeds_acks_losses_and_mtu_to_the_model() {
        let channels = ChannelCount::new();
        let _guards: Vec<_> = (0..4).map(|_| channels.open_channel()).collect();
        let start = Instant::now();
        let mut link = ModelController::new(Arc::new(ModelConfig::new(channels)), start, 1200);
        let at = |ms| start + Duration::from_millis(ms);
        // Slow start: a round trip of acks doubles the window.
        let before = link.window();
        link.acked(at(50), at(0), before, false);
        link.on_end_acks(at(50), 0, false, None);
        assert_eq!(link.window(), 2 * before);
        assert_eq!(link.model().state(), State::Startup);
        assert!(link.metrics().pacing_rate.is_some_and(|rate| rate > 0));
        link.on_mtu_update(1400);
        assert_eq!(link.model().mss(), 1400);
        // Persistent congestion collapses the window to the floor of four segments.
        link.on_congestion_event(at(60), at(55), true, 10 * 1400);
        assert_eq!(link.window(), 4 * 1400);
    }
}
