//! MulTCP (Crowcroft and Oechslin, 1998): the window of N Reno flows kept as one.
//!
//! A TMP link multiplexes many client connections (channels) over one QUIC connection. Had
//! each client reached the origin over its own TCP connection, a shared bottleneck would have
//! seen N Reno flows and given them N shares; a link that backs off like one Reno flow gets
//! one share and starves its N channels. MulTCP makes the link behave like N flows: in
//! congestion avoidance the window grows by N segments per round trip, a loss takes 1/(2N) of
//! the window away (one of N virtual flows halves its part) instead of half of it, and "a TMP
//! should not go down to a window size of less than the number of TCP connections that it is
//! hosting": the window never drops below N segments.
//!
//! The arithmetic is [`MulTcpWindow`], plain data tested without clock or socket;
//! [`MulTcpState`] adds recovery periods (plain data too); [`MulTcp`] adapts them to quinn's
//! controller trait and [`MulTcpConfig`] is its factory. Links run the model-based controller
//! ([`super::ModelController`]), which hands its window to a [`MulTcpState`] while the path
//! is shared with loss-based flows that keep a queue standing; [`MulTcp`] stays as the
//! loss-only reference the model is measured against (and a Reno flow in the simulations).
//!
//! MulTCP equals N flows when losses fall on packets at random, so that a flow's chance of
//! seeing a loss grows with its share of the packets. Under perfectly synchronised losses,
//! where every flow backs off at every congestion event, a 1/(2N) back-off earns about N²
//! shares instead of N; the tests model both.

use std::any::Any;
use std::sync::Arc;
// quinn's `Instant` is std's on every target but the browser, where no gateway runs.
use std::time::Instant;

use quinn_proto::RttEstimator;
use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics};

use super::{ChannelCount, DEFAULT_INITIAL_WINDOW, MINIMUM_SEGMENTS};

/// The window of N Reno flows kept as one: slow start, growth of N segments per round trip,
/// back-off by 1/(2N), and a floor of N segments.
///
/// Every step takes the current N, so a change in the number of channels takes effect at the
/// next ack or loss. The caller decides which acks and losses count (recovery periods,
/// app-limited acks); [`MulTcp`] does that for quinn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulTcpWindow {
    mss: u64,
    window: u64,
    ssthresh: u64,
    /// The window when the current congestion-avoidance round began. A round ends once that
    /// many bytes are acked, about one round trip, and has earned N segments by then: measuring
    /// against the window as it grows inside the round would earn fewer, by a quarter when the
    /// window sits at its floor of N segments.
    round_window: u64,
    /// Bytes acked in the current round.
    round_acked: u64,
    /// Growth earned and not yet granted: each acked byte earns N, each `round_window` earned
    /// grants a segment.
    credit: u64,
}

impl MulTcpWindow {
    /// A window of `initial_window` bytes (at least the floor for `flows`) in slow start, for
    /// segments of `mss` bytes.
    pub fn new(initial_window: u64, mss: u64, flows: u64) -> Self {
        let mut model = Self {
            mss: mss.max(1),
            window: initial_window,
            ssthresh: u64::MAX,
            round_window: 0,
            round_acked: 0,
            credit: 0,
        };
        model.lift_to_floor(flows);
        model.start_round();
        model
    }

    /// A window of `window` bytes (at least the floor for `flows`) already in congestion
    /// avoidance, as when the model-based controller hands its window over.
    pub fn avoiding(window: u64, mss: u64, flows: u64) -> Self {
        let mut model = Self::new(window, mss, flows);
        model.ssthresh = model.window;
        model
    }

    /// `acked_bytes` newly acknowledged while the link hosts `flows` channels: slow start adds
    /// the acked bytes; congestion avoidance adds `flows` segments per window acked.
    pub fn on_ack(&mut self, acked_bytes: u64, flows: u64) {
        self.lift_to_floor(flows);
        if self.in_slow_start() {
            self.window = self.window.saturating_add(acked_bytes);
            if !self.in_slow_start() {
                self.start_round();
            }
            return;
        }
        let flows = flows.max(1);
        self.credit = self
            .credit
            .saturating_add(acked_bytes.saturating_mul(flows));
        let segments = self.credit.checked_div(self.round_window).unwrap_or(0);
        self.credit -= segments.saturating_mul(self.round_window);
        self.window = self
            .window
            .saturating_add(segments.saturating_mul(self.mss));
        self.round_acked = self.round_acked.saturating_add(acked_bytes);
        if self.round_acked >= self.round_window {
            self.start_round();
        }
    }

    /// A congestion event while the link hosts `flows` channels: one of the virtual flows
    /// halves its share, so the window loses 1/(2 × `flows`), and slow start ends there.
    pub fn on_loss(&mut self, flows: u64) {
        self.on_losses(flows, 1);
    }

    /// A congestion event in which `lost` segments were lost: each loss halves one virtual
    /// flow, as `lost` of N real connections would each have seen one — at most all `flows`
    /// of them. A single random loss costs 1/(2N); a drop-tail queue overflowing, which every
    /// real connection through it would feel, costs up to a half, so the link takes N flows'
    /// share and no more when losses come in bursts.
    pub fn on_losses(&mut self, flows: u64, lost: u64) {
        self.lift_to_floor(flows);
        let flows = flows.max(1);
        let halved = lost.clamp(1, flows);
        let cut = (u128::from(self.window) * u128::from(halved)
            / u128::from(flows.saturating_mul(2))) as u64;
        self.window = (self.window - cut).max(self.minimum_window(flows));
        self.ssthresh = self.window;
        self.credit = 0;
        self.start_round();
    }

    /// Persistent congestion (RFC 9002 §7.6.2): the window falls to the minimum for `flows`
    /// and slow-starts back towards the threshold the loss left. Apply the loss with
    /// [`Self::on_loss`] first when it opens a new recovery period.
    pub fn on_persistent_congestion(&mut self, flows: u64) {
        self.window = self.minimum_window(flows);
        self.credit = 0;
        self.start_round();
    }

    /// The path's segment size changed to `mss` bytes; the floor follows it.
    pub fn on_mtu_update(&mut self, mss: u64, flows: u64) {
        self.mss = mss.max(1);
        self.lift_to_floor(flows);
    }

    /// Bytes that may be in flight, as of the last step.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Bytes that may be in flight with `flows` channels now: the window, lifted to the floor
    /// if channels opened since the last step.
    pub fn window_for(&self, flows: u64) -> u64 {
        self.window.max(self.minimum_window(flows))
    }

    /// The slow-start threshold in bytes; `u64::MAX` until the first loss.
    pub fn ssthresh(&self) -> u64 {
        self.ssthresh
    }

    /// The segment size in bytes.
    pub fn mss(&self) -> u64 {
        self.mss
    }

    /// Whether the window still grows by the bytes acked.
    pub fn in_slow_start(&self) -> bool {
        self.window < self.ssthresh
    }

    /// The floor for `flows` channels: one segment each, and never fewer than the two
    /// segments quinn keeps for a single flow.
    pub fn minimum_window(&self, flows: u64) -> u64 {
        flows.max(MINIMUM_SEGMENTS).saturating_mul(self.mss)
    }

    /// Raises the window to the floor for `flows`; a raised window starts a new round, as the
    /// round trip under way was measured against a smaller one.
    fn lift_to_floor(&mut self, flows: u64) {
        let floor = self.minimum_window(flows);
        if self.window < floor {
            self.window = floor;
            self.start_round();
        }
    }

    fn start_round(&mut self) {
        self.round_window = self.window;
        self.round_acked = 0;
    }
}

/// [`MulTcpWindow`] with RFC 9002 recovery periods: which acks grow the window and which
/// losses belong to a congestion event already answered. Plain data; N is an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulTcpState {
    model: MulTcpWindow,
    /// When the current recovery period began. As in quinn's NewReno, losses and acks of
    /// packets sent before then belong to the congestion event already answered.
    recovery_start: Option<Instant>,
    /// Virtual flows already halved in the current recovery period.
    halved_in_recovery: u64,
}

impl MulTcpState {
    /// Recovery bookkeeping around `model`, outside any recovery period.
    pub fn new(model: MulTcpWindow) -> Self {
        Self {
            model,
            recovery_start: None,
            halved_in_recovery: 0,
        }
    }

    /// The window arithmetic, as of the last ack or loss.
    pub fn model(&self) -> &MulTcpWindow {
        &self.model
    }

    /// Bytes that may be in flight with `flows` channels now.
    pub fn window(&self, flows: u64) -> u64 {
        self.model.window_for(flows)
    }

    fn sent_before_recovery(&self, sent: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent <= start)
    }

    /// An ack grows the window unless the sender was short of data (the ack says nothing about
    /// the path's capacity) or the packet predates the current recovery period.
    pub fn acked(&mut self, sent: Instant, bytes: u64, app_limited: bool, flows: u64) {
        if app_limited || self.sent_before_recovery(sent) {
            return;
        }
        self.model.on_ack(bytes, flows);
    }

    /// Packets sent at or before `sent` were lost (`lost_bytes` of them), found at `now`.
    pub fn congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
        flows: u64,
    ) {
        let lost = lost_bytes.div_ceil(self.model.mss()).max(1);
        if !self.sent_before_recovery(sent) {
            self.recovery_start = Some(now);
            self.halved_in_recovery = lost.min(flows);
            self.model.on_losses(flows, lost);
        } else if self.halved_in_recovery < flows {
            // More of the same overflow, detected later: more virtual flows saw a loss in
            // this round trip, up to all of them, each halving once.
            let more = lost.min(flows - self.halved_in_recovery);
            self.halved_in_recovery += more;
            self.model.on_losses(flows, more);
        }
        if is_persistent_congestion {
            self.model.on_persistent_congestion(flows);
        }
    }

    /// The path's segment size changed to `mss` bytes.
    pub fn on_mtu_update(&mut self, mss: u64, flows: u64) {
        self.model.on_mtu_update(mss, flows);
    }
}

/// The loss-only quinn congestion controller: [`MulTcpState`] fed by quinn's acks and losses,
/// with N read from the link's [`ChannelCount`] at every decision.
#[derive(Debug, Clone)]
pub struct MulTcp {
    config: Arc<MulTcpConfig>,
    state: MulTcpState,
}

impl MulTcp {
    /// A controller for a connection whose path MTU is `current_mtu` bytes.
    pub fn new(config: Arc<MulTcpConfig>, current_mtu: u16) -> Self {
        let model = MulTcpWindow::new(
            config.initial_window,
            u64::from(current_mtu),
            config.channels.flows(),
        );
        Self {
            config,
            state: MulTcpState::new(model),
        }
    }

    /// The window arithmetic, as of the last ack or loss.
    pub fn model(&self) -> &MulTcpWindow {
        self.state.model()
    }

    fn flows(&self) -> u64 {
        self.config.channels.flows()
    }

    fn acked(&mut self, sent: Instant, bytes: u64, app_limited: bool) {
        let flows = self.flows();
        self.state.acked(sent, bytes, app_limited, flows);
    }

    fn congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        let flows = self.flows();
        self.state
            .congestion_event(now, sent, is_persistent_congestion, lost_bytes, flows);
    }
}

impl Controller for MulTcp {
    fn on_ack(
        &mut self,
        _now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &RttEstimator,
    ) {
        self.acked(sent, bytes, app_limited);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        let flows = self.flows();
        self.state.on_mtu_update(u64::from(new_mtu), flows);
    }

    fn window(&self) -> u64 {
        self.state.window(self.flows())
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = ControllerMetrics::default();
        metrics.congestion_window = self.window();
        metrics.ssthresh = Some(self.model().ssthresh());
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

/// Builds a [`MulTcp`] for each connection of a transport configuration; each reads N from
/// the same [`ChannelCount`], so give each link its own configuration.
#[derive(Debug, Clone)]
pub struct MulTcpConfig {
    initial_window: u64,
    channels: ChannelCount,
}

impl MulTcpConfig {
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

impl ControllerFactory for MulTcpConfig {
    fn build(self: Arc<Self>, _now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(MulTcp::new(self, current_mtu))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_burst_of_losses_halves_as_many_virtual_flows() {
        let mss = 1200;
        let mut one = MulTcpWindow::new(1000 * mss, mss, 10);
        one.on_losses(10, 1);
        assert_eq!(one.window(), 950 * mss, "one loss: 1/(2N)");
        let mut burst = MulTcpWindow::new(1000 * mss, mss, 10);
        burst.on_losses(10, 4);
        assert_eq!(
            burst.window(),
            800 * mss,
            "four losses: four of ten flows halve"
        );
        let mut overflow = MulTcpWindow::new(1000 * mss, mss, 10);
        overflow.on_losses(10, 500);
        assert_eq!(
            overflow.window(),
            500 * mss,
            "never more than every flow halving"
        );
    }

    use std::time::Duration;

    use super::*;
    use crate::congestion::ChannelGuard;

    const MSS: u64 = 1200;

    /// A window in congestion avoidance at about `segments` segments for `flows` channels:
    /// slow start up to there, then a loss.
    fn avoiding(segments: u64, flows: u64) -> MulTcpWindow {
        let mut model = MulTcpWindow::new(DEFAULT_INITIAL_WINDOW, MSS, flows);
        while model.window() < segments * MSS {
            model.on_ack(MSS, flows);
        }
        model.on_loss(flows);
        model
    }

    /// One round trip: the window's bytes acked one segment at a time.
    fn round_trip(model: &mut MulTcpWindow, flows: u64) {
        let mut left = model.window();
        while left > 0 {
            let acked = left.min(MSS);
            model.on_ack(acked, flows);
            left -= acked;
        }
    }

    fn controller(channels: &ChannelCount) -> MulTcp {
        MulTcp::new(Arc::new(MulTcpConfig::new(channels.clone())), 1200)
    }

    fn open(channels: &ChannelCount, count: usize) -> Vec<ChannelGuard> {
        (0..count).map(|_| channels.open_channel()).collect()
    }

    #[test]
    fn guards_count_open_channels_and_flows_are_at_least_one() {
        let channels = ChannelCount::new();
        assert_eq!((channels.open(), channels.flows()), (0, 1));
        let first = channels.open_channel();
        let mut more = open(&channels, 2);
        assert_eq!((channels.open(), channels.flows()), (3, 3));
        more.pop();
        assert_eq!(channels.open(), 2);
        drop(more);
        drop(first);
        assert_eq!((channels.open(), channels.flows()), (0, 1));
    }

    #[test]
    fn slow_start_doubles_per_round_trip_until_the_first_loss() {
        for flows in [1, 10, 100] {
            let mut model = MulTcpWindow::new(200 * MSS, MSS, flows);
            for _ in 0..5 {
                let before = model.window();
                round_trip(&mut model, flows);
                assert_eq!(model.window(), 2 * before, "N = {flows}");
            }
            model.on_loss(flows);
            assert!(!model.in_slow_start());
            assert_eq!(model.ssthresh(), model.window());
        }
    }

    #[test]
    fn avoidance_grows_n_segments_per_round_trip() {
        for flows in [1, 10, 100] {
            // Start at the floor too: that is where per-ack growth against the moving window
            // would fall short.
            for segments in [flows, 1000] {
                let mut model = avoiding(segments, flows);
                for _ in 0..20 {
                    let before = model.window();
                    round_trip(&mut model, flows);
                    assert_eq!(model.window() - before, flows * MSS, "N = {flows}");
                }
            }
        }
    }

    #[test]
    fn avoidance_growth_does_not_depend_on_ack_size() {
        let mut coarse = avoiding(500, 10);
        let mut fine = coarse.clone();
        for _ in 0..10 {
            coarse.on_ack(coarse.window(), 10);
            round_trip(&mut fine, 10);
        }
        assert_eq!(coarse.window(), fine.window());
    }

    #[test]
    fn a_loss_takes_one_over_2n_of_the_window() {
        for (flows, factor) in [(1, 0.5), (10, 0.95), (100, 0.995)] {
            let mut model = avoiding(2000, flows);
            for _ in 0..3 {
                round_trip(&mut model, flows);
            }
            let before = model.window() as f64;
            model.on_loss(flows);
            let ratio = model.window() as f64 / before;
            assert!((ratio - factor).abs() < 1e-3, "N = {flows}: ×{ratio}");
            assert_eq!(model.ssthresh(), model.window());
        }
    }

    #[test]
    fn losses_never_take_the_window_below_n_segments() {
        for (flows, floor) in [(1, 2 * MSS), (10, 10 * MSS), (100, 100 * MSS)] {
            let mut model = avoiding(5000, flows);
            for _ in 0..10_000 {
                model.on_loss(flows);
                assert!(model.window() >= floor, "N = {flows}");
            }
            assert_eq!(model.window(), floor, "N = {flows}");
        }
    }

    #[test]
    fn the_floor_rises_as_soon_as_channels_open() {
        let channels = ChannelCount::new();
        let mut link = controller(&channels);
        assert_eq!(link.window(), DEFAULT_INITIAL_WINDOW);
        let _guards = open(&channels, 50);
        assert_eq!(link.window(), 50 * MSS);
        link.acked(Instant::now(), MSS, false);
        assert_eq!(link.model().window(), 51 * MSS, "slow start from the floor");
    }

    #[test]
    fn losses_in_one_recovery_period_halve_each_virtual_flow_at_most_once() {
        let channels = ChannelCount::new();
        let _guards = open(&channels, 10);
        let mut link = controller(&channels);
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        while link.window() < 1000 * MSS {
            link.acked(at(0), MSS, false);
        }
        let before = link.window();

        link.congestion_event(at(100), at(10), false, MSS);
        assert_eq!(
            link.window(),
            before - before / 20,
            "one loss: one of ten flows halves"
        );
        // More losses of packets sent before the cut, found later: other virtual flows of the
        // same round trip, each halving once — nine more at most, however many are lost.
        link.congestion_event(at(110), at(50), false, 5 * MSS);
        link.congestion_event(at(120), at(100), false, 50 * MSS);
        let cut = link.window();
        let mut expected = before - before / 20;
        expected -= (u128::from(expected) * 5 / 20) as u64;
        expected -= (u128::from(expected) * 4 / 20) as u64;
        assert_eq!(cut, expected);
        link.congestion_event(at(130), at(100), false, MSS);
        assert_eq!(link.window(), cut, "every virtual flow has halved already");
        // Their acks do not grow the window either.
        link.acked(at(90), 100 * MSS, false);
        assert_eq!(link.window(), cut);
        // A packet sent after the cut and lost: a new event.
        link.congestion_event(at(200), at(101), false, 1);
        assert_eq!(link.window(), cut - cut / 20);
    }

    #[test]
    fn fewer_channels_make_the_link_gentler() {
        let channels = ChannelCount::new();
        let mut guards = open(&channels, 100);
        let mut link = controller(&channels);
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        while link.window() < 4000 * MSS {
            link.acked(at(0), MSS, false);
        }

        let before = link.window();
        link.congestion_event(at(10), at(5), false, 1);
        assert_eq!(link.window(), before - before / 200);
        // In avoidance, a round trip of acks grows the window by 100 segments.
        let before = link.window();
        link.acked(at(20), before, false);
        assert_eq!(link.window() - before, 100 * MSS);

        guards.truncate(1);
        let before = link.window();
        link.acked(at(30), before, false);
        assert_eq!(link.window() - before, MSS, "one segment per round trip");
        let before = link.window();
        link.congestion_event(at(40), at(35), false, 1);
        assert_eq!(link.window(), before - before / 2, "halves like Reno");

        // The floor follows N down as well.
        drop(guards);
        link.congestion_event(at(50), at(45), true, 1);
        assert_eq!(link.window(), 2 * MSS);
    }

    #[test]
    fn app_limited_acks_do_not_grow_the_window() {
        let channels = ChannelCount::new();
        let _guards = open(&channels, 10);
        let mut link = controller(&channels);
        let now = Instant::now();
        let before = link.window();
        for _ in 0..1000 {
            link.acked(now, MSS, true);
        }
        assert_eq!(link.window(), before);
        link.acked(now, MSS, false);
        assert_eq!(link.window(), before + MSS);
    }

    #[test]
    fn persistent_congestion_falls_to_the_minimum() {
        for (open_channels, minimum) in [(0, 2 * MSS), (1, 2 * MSS), (10, 10 * MSS)] {
            let channels = ChannelCount::new();
            let _guards = open(&channels, open_channels);
            let mut config = MulTcpConfig::new(channels.clone());
            config.initial_window(500 * MSS);
            let mut link = Arc::new(config).build(Instant::now(), 1200);
            let start = Instant::now();
            let at = |ms| start + Duration::from_millis(ms);
            link.on_congestion_event(at(10), at(5), true, 10 * MSS);
            assert_eq!(link.window(), minimum);
            let metrics = link.metrics();
            assert_eq!(metrics.congestion_window, minimum);
            // Ten segments lost: every virtual flow (at most ten here) halves once.
            let cut = 250 * MSS;
            assert_eq!(metrics.ssthresh, Some(cut), "slow start back up to the cut");
            // Persistent congestion declared again inside the same recovery period still
            // collapses the window, without cutting the threshold twice.
            link.on_congestion_event(at(20), at(6), true, 10 * MSS);
            assert_eq!(link.metrics().ssthresh, Some(cut));
        }
    }

    #[test]
    fn mtu_updates_change_the_segment_and_the_floor() {
        let channels = ChannelCount::new();
        let _guards = open(&channels, 10);
        let mut link = controller(&channels);
        let start = Instant::now();
        link.congestion_event(start, start, true, 1);
        assert_eq!(link.window(), 10 * 1200);
        link.on_mtu_update(1400);
        assert_eq!(link.window(), 10 * 1400);
        assert_eq!(link.model().mss(), 1400);
        // In avoidance now: a round trip of acks adds ten of the new segments.
        link.acked(start + Duration::from_millis(1), 10 * 1400, false);
        assert_eq!(link.window(), 20 * 1400);
    }

    #[test]
    fn the_factory_builds_controllers_that_share_the_count() {
        let channels = ChannelCount::new();
        let mut config = MulTcpConfig::new(channels.clone());
        config.initial_window(3 * MSS);
        let config = Arc::new(config);
        let first = config.clone().build(Instant::now(), 1200);
        let second = config.build(Instant::now(), 1200);
        assert_eq!(first.initial_window(), 3 * MSS);
        assert_eq!((first.window(), second.window()), (3 * MSS, 3 * MSS));
        let _guards = open(&channels, 7);
        assert_eq!((first.window(), second.window()), (7 * MSS, 7 * MSS));
        assert!(first.into_any().downcast::<MulTcp>().is_ok());
    }

    #[test]
    fn a_transport_config_takes_the_factory() {
        let mut transport = quinn_proto::TransportConfig::default();
        transport.congestion_controller_factory(Arc::new(MulTcpConfig::new(ChannelCount::new())));
    }

    /// splitmix64: a seeded, dependency-free source of choices for the bottleneck model.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % bound.max(1)
        }
    }

    /// How packets are lost when the flows' windows together overflow the bottleneck.
    #[derive(Clone, Copy)]
    enum Drops {
        /// The dropped packet is any of the packets in flight, so a flow sees the loss with a
        /// chance equal to its share of the window.
        RandomPacket,
        /// Every flow sees a loss.
        Synchronised,
    }

    /// Flows with the given N share a bottleneck of `capacity` segments, one round trip per
    /// step; returns each flow's mean window in segments after a warm-up.
    fn share_bottleneck(flows: &[u64], capacity: u64, drops: Drops) -> Vec<f64> {
        const WARM_UP: usize = 2_000;
        const ROUNDS: usize = 60_000;
        let mut models: Vec<MulTcpWindow> = flows
            .iter()
            .map(|&n| MulTcpWindow::new(DEFAULT_INITIAL_WINDOW, MSS, n))
            .collect();
        let mut sums = vec![0.0; flows.len()];
        let mut rng = Rng(0x5eed);
        for round in 0..WARM_UP + ROUNDS {
            for (model, &n) in models.iter_mut().zip(flows) {
                model.on_ack(model.window(), n);
            }
            let total: u64 = models.iter().map(MulTcpWindow::window).sum();
            if total > capacity * MSS {
                match drops {
                    Drops::RandomPacket => {
                        let mut packet = rng.below(total);
                        for (model, &n) in models.iter_mut().zip(flows) {
                            if packet < model.window() {
                                model.on_loss(n);
                                break;
                            }
                            packet -= model.window();
                        }
                    }
                    Drops::Synchronised => {
                        for (model, &n) in models.iter_mut().zip(flows) {
                            model.on_loss(n);
                        }
                    }
                }
            }
            if round >= WARM_UP {
                for (sum, model) in sums.iter_mut().zip(&models) {
                    *sum += model.window() as f64 / MSS as f64;
                }
            }
        }
        sums.iter().map(|sum| sum / ROUNDS as f64).collect()
    }

    #[test]
    fn n_channels_take_about_n_shares_of_a_bottleneck() {
        let means = share_bottleneck(&[4, 1], 400, Drops::RandomPacket);
        let ratio = means[0] / means[1];
        assert!(
            (0.8 * 4.0..=1.25 * 4.0).contains(&ratio),
            "{means:?}: {ratio}"
        );
    }

    #[test]
    fn one_link_of_n_channels_matches_n_reno_flows() {
        let means = share_bottleneck(&[4, 1, 1, 1, 1], 400, Drops::RandomPacket);
        let reno: f64 = means[1..].iter().sum();
        let ratio = means[0] / reno;
        assert!((0.8..=1.25).contains(&ratio), "{means:?}: {ratio}");
    }

    #[test]
    fn synchronised_losses_give_n_squared_shares() {
        // Every flow backs off at every event, so between events each regains what it lost:
        // N segments a round against 1/(2N) of its peak, so peaks go as 2N², 16:1 here. The
        // sawtooth of N = 4 sags by 1/32 of its peak on average, that of N = 1 by a quarter,
        // so the means go as 16 × (31/32) / (3/4) ≈ 20. MulTCP's equivalence needs random drops.
        let means = share_bottleneck(&[4, 1], 400, Drops::Synchronised);
        let ratio = means[0] / means[1];
        assert!(
            (0.8 * 20.0..=1.25 * 20.0).contains(&ratio),
            "{means:?}: {ratio}"
        );
    }
}
