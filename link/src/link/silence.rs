//! How long a link's peer has left this end's packets unanswered.
//!
//! A path that dies without a reset (a cut cable, a black-holing firewall) shows nothing to
//! QUIC until its idle timeout, seconds later; everything sent over the link meanwhile is lost
//! with it, and a POST lost that way cannot be replayed. The first sign comes much sooner:
//! this end keeps sending ack-eliciting frames and no ACK comes back. A healthy peer ACKs
//! within an RTT plus its ACK delay, so a link unanswered for several RTTs is stalled and the
//! front-end stops choosing it (see `link_choice`) while QUIC keeps probing it.

use std::time::{Duration, Instant};

/// Counters of one link sampled at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Ack-eliciting frames this end has sent (stream data, pings), retransmissions included.
    pub eliciting_sent: u64,
    /// ACK frames received from the peer.
    pub acks_received: u64,
}

impl Exchange {
    /// The counters of a QUIC connection's statistics.
    pub(crate) fn of(stats: &quinn::ConnectionStats) -> Self {
        Self {
            eliciting_sent: stats.frame_tx.stream
                + stats.frame_tx.ping
                + stats.frame_tx.reset_stream
                + stats.frame_tx.stop_sending
                + stats.frame_tx.max_data
                + stats.frame_tx.max_stream_data,
            acks_received: stats.frame_rx.acks,
        }
    }
}

/// Tracks the peer's silence across samples.
///
/// The silence is measured from the first sample that saw something sent after the last ACK,
/// not from the send itself: sampling late can only shorten it, so an idle link is never taken
/// for a stalled one.
#[derive(Debug, Default)]
pub struct Silence {
    last: Option<Exchange>,
    /// Ack-eliciting frames sent as of the last time an ACK arrived.
    sent_at_last_ack: u64,
    unanswered_since: Option<Instant>,
}

impl Silence {
    /// Takes a sample at `now` and answers how long the peer has left frames unanswered
    /// (zero when nothing sent since its last ACK is waiting).
    pub fn observe(&mut self, sample: Exchange, now: Instant) -> Duration {
        let acked = self
            .last
            .is_none_or(|last| sample.acks_received != last.acks_received);
        self.last = Some(sample);
        if acked {
            self.sent_at_last_ack = sample.eliciting_sent;
            self.unanswered_since = None;
            return Duration::ZERO;
        }
        if sample.eliciting_sent > self.sent_at_last_ack {
            let since = *self.unanswered_since.get_or_insert(now);
            return now.saturating_duration_since(since);
        }
        Duration::ZERO
    }
}

/// How long a link may leave frames unanswered before it counts as stalled: several RTTs
/// (a peer ACKs within one RTT plus at most 25 ms of ACK delay, and a lost ACK is repeated
/// by the next), and never less than a quarter second, so that a busy host's scheduling
/// pauses do not move traffic.
pub fn stall_after(rtt: Duration) -> Duration {
    (rtt * 4).max(Duration::from_millis(250))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(eliciting_sent: u64, acks_received: u64) -> Exchange {
        Exchange {
            eliciting_sent,
            acks_received,
        }
    }

    #[test]
    fn an_answered_link_is_never_silent() {
        let start = Instant::now();
        let mut silence = Silence::default();
        for step in 0..10u64 {
            let at = start + Duration::from_millis(100 * step);
            assert_eq!(
                silence.observe(exchange(step * 5, step), at),
                Duration::ZERO
            );
        }
    }

    #[test]
    fn an_idle_link_is_never_silent() {
        let start = Instant::now();
        let mut silence = Silence::default();
        silence.observe(exchange(7, 3), start);
        let later = start + Duration::from_secs(30);
        assert_eq!(silence.observe(exchange(7, 3), later), Duration::ZERO);
    }

    #[test]
    fn silence_counts_from_the_first_sample_that_saw_a_send_go_unanswered() {
        let start = Instant::now();
        let mut silence = Silence::default();
        silence.observe(exchange(10, 4), start);
        // Sent more, no ACK yet: the clock starts at this sample, not at the send.
        let first = start + Duration::from_secs(5);
        assert_eq!(silence.observe(exchange(12, 4), first), Duration::ZERO);
        let later = first + Duration::from_millis(300);
        assert_eq!(
            silence.observe(exchange(15, 4), later),
            Duration::from_millis(300)
        );
        // One ACK ends the silence.
        let acked = later + Duration::from_millis(10);
        assert_eq!(silence.observe(exchange(15, 5), acked), Duration::ZERO);
        let after = acked + Duration::from_secs(1);
        assert_eq!(silence.observe(exchange(15, 5), after), Duration::ZERO);
    }

    #[test]
    fn the_stall_threshold_scales_with_rtt_above_a_floor() {
        assert_eq!(
            stall_after(Duration::from_millis(10)),
            Duration::from_millis(250)
        );
        assert_eq!(
            stall_after(Duration::from_millis(200)),
            Duration::from_millis(800)
        );
    }
}
