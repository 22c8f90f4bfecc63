//! Which TMP link a front-end sends a request over: a pure function of each link's state.
//!
//! Links whose quality breaks the Site's limits (RTT, loss), and links whose peer has stopped
//! answering (a path that died silently, seconds before QUIC's idle timeout would close it),
//! are left out while any other link is good — traffic moves off a degraded link — but are
//! still used when nothing better is up. Among the candidates, two are drawn at random and the cheaper taken (power of two
//! choices), the cost being RTT inflated by loss and by the load on that back-end, so both
//! links carry traffic when both are good and the faster, emptier one carries more.

use std::time::Duration;

/// What a front-end knows of one link at the moment of choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkState {
    /// The link is up.
    pub up: bool,
    /// Smoothed RTT.
    pub rtt: Duration,
    /// Smoothed loss fraction.
    pub loss: f64,
    /// Channels this front-end has open on the link.
    pub channels: u64,
    /// Requests the back-end reports in flight.
    pub backend_in_flight: u64,
    /// Requests the back-end reports queued.
    pub backend_queued: u64,
    /// The peer has left this end's packets unanswered for several RTTs.
    pub stalled: bool,
}

/// A Site's limits on link quality.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkLimits {
    /// Longest acceptable RTT.
    pub max_rtt: Option<Duration>,
    /// Largest acceptable loss fraction.
    pub max_loss: Option<f64>,
}

impl LinkLimits {
    /// True when the link meets every limit.
    pub fn accepts(&self, link: &LinkState) -> bool {
        self.max_rtt.is_none_or(|max| link.rtt <= max)
            && self.max_loss.is_none_or(|max| link.loss <= max)
    }
}

/// The cost of sending one more request over a link.
fn cost(link: &LinkState) -> f64 {
    // A request waits about one RTT plus its share of the work queued ahead of it; loss
    // costs retransmission rounds. Queued requests weigh more than running ones: they wait
    // for a slot and then run.
    let rtt_ms = link.rtt.as_secs_f64() * 1000.0 + 0.1;
    let load = link.channels.max(link.backend_in_flight) as f64 + 4.0 * link.backend_queued as f64;
    rtt_ms * (1.0 + 20.0 * link.loss) * (1.0 + load)
}

/// Picks a link index, or `None` when no link is up. `excluded` is a bit set of links already
/// tried for this request (used again only if nothing else is up); `draws` are two uniform
/// random numbers.
pub fn choose(
    links: &[LinkState],
    limits: &LinkLimits,
    excluded: u64,
    draws: [u64; 2],
) -> Option<usize> {
    let up = |i: usize| links[i].up && i < 64;
    let fresh: Vec<usize> = (0..links.len())
        .filter(|&i| up(i) && excluded & (1 << i) == 0)
        .collect();
    let pool = if fresh.is_empty() {
        (0..links.len()).filter(|&i| up(i)).collect()
    } else {
        fresh
    };
    let good: Vec<usize> = pool
        .iter()
        .copied()
        .filter(|&i| !links[i].stalled && limits.accepts(&links[i]))
        .collect();
    let pool = if good.is_empty() { pool } else { good };
    match pool.len() {
        0 => None,
        1 => Some(pool[0]),
        n => {
            let first = (draws[0] % n as u64) as usize;
            let mut second = (draws[1] % (n as u64 - 1)) as usize;
            if second >= first {
                second += 1;
            }
            let (a, b) = (pool[first], pool[second]);
            Some(if cost(&links[b]) < cost(&links[a]) {
                b
            } else {
                a
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(rtt_ms: u64, loss: f64) -> LinkState {
        LinkState {
            up: true,
            rtt: Duration::from_millis(rtt_ms),
            loss,
            channels: 0,
            backend_in_flight: 0,
            backend_queued: 0,
            stalled: false,
        }
    }

    fn shares(links: &[LinkState], limits: &LinkLimits) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut counts = vec![0; links.len()];
        for _ in 0..10_000 {
            let i = choose(links, limits, 0, [rng.u64(..), rng.u64(..)]).expect("a link");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn two_good_links_both_carry_traffic_under_load() {
        let mut a = link(20, 0.0);
        let mut b = link(25, 0.0);
        a.channels = 30;
        b.channels = 10;
        let counts = shares(&[a, b], &LinkLimits::default());
        assert!(
            counts[1] > counts[0],
            "the emptier link should get more: {counts:?}"
        );
        // With only two links, P2C compares both every time: the cheaper wins each draw.
        assert_eq!(counts[0], 0);
    }

    #[test]
    fn a_link_breaking_the_limits_is_left_while_another_is_good() {
        let limits = LinkLimits {
            max_rtt: Some(Duration::from_millis(100)),
            max_loss: Some(0.02),
        };
        let lossy = link(10, 0.05);
        let slow = link(150, 0.0);
        let good = link(60, 0.0);
        assert_eq!(shares(&[lossy, slow, good], &limits), vec![0, 0, 10_000]);
        // With nothing good, the least bad is still used rather than failing requests.
        let counts = shares(&[lossy, slow], &limits);
        assert_eq!(counts.iter().sum::<usize>(), 10_000);
    }

    #[test]
    fn links_that_are_down_or_tried_are_skipped() {
        let mut down = link(5, 0.0);
        down.up = false;
        let links = [down, link(50, 0.0), link(60, 0.0)];
        assert_eq!(
            choose(&links, &LinkLimits::default(), 0b010, [0, 0]),
            Some(2)
        );
        // Everything up was tried: try again rather than give up.
        assert!(choose(&links, &LinkLimits::default(), 0b110, [0, 0]).is_some());
        assert_eq!(choose(&[down], &LinkLimits::default(), 0, [0, 0]), None);
        assert_eq!(choose(&[], &LinkLimits::default(), 0, [0, 0]), None);
    }

    #[test]
    fn a_stalled_link_is_left_while_another_answers() {
        let mut stalled = link(5, 0.0);
        stalled.stalled = true;
        let answering = link(80, 0.0);
        let limits = LinkLimits::default();
        assert_eq!(shares(&[stalled, answering], &limits), vec![0, 10_000]);
        // A stalled link is still better than none: QUIC may yet get through.
        assert_eq!(shares(&[stalled], &limits), vec![10_000]);
    }

    #[test]
    fn back_end_queues_push_traffic_away() {
        let mut busy = link(10, 0.0);
        busy.backend_queued = 50;
        let idle = link(30, 0.0);
        let counts = shares(&[busy, idle], &LinkLimits::default());
        assert!(counts[1] > 9_000, "{counts:?}");
    }
}
