//! The balancer's choice, as a pure function of what it knows about each origin: capability,
//! room under the high-water mark, primary preference, then the site's policy — power of two
//! choices over a QoS score, least request, or smooth weighted round-robin.

use std::time::Duration;

use causeway_api::site::Policy;

/// What the choice needs to know about one origin, for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OriginView {
    /// Serves the request's type, is in rotation and not excluded for this request.
    pub capable: bool,
    /// Below its high-water mark.
    pub has_room: bool,
    /// Marked as holding the freshest copy.
    pub primary: bool,
    /// Latency estimate within the origin's latency goal (true when it has none).
    pub within_goal: bool,
    /// Cost units in flight.
    pub in_flight_cost: u32,
    /// Latency estimate (peak-EWMA, or the age of a stalled request when larger).
    pub latency: Duration,
    /// Relative capacity.
    pub weight: u32,
}

/// The outcome of a choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Send the request to this origin.
    Origin(usize),
    /// Capable origins exist but all are at their mark: wait in the release queue.
    Wait,
    /// No origin can serve this request.
    Unavailable,
}

/// Running state of smooth weighted round-robin (one counter per origin).
#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    current: Vec<i64>,
}

/// The QoS score: expected latency of one more request, per unit of capacity. Lower is better.
pub fn qos_score(view: &OriginView) -> f64 {
    // The +1 makes an idle origin's score its latency, so a fast idle origin beats a slow
    // idle one; dividing by weight lets a bigger origin carry proportionally more.
    view.latency.as_secs_f64() * f64::from(view.in_flight_cost + 1) / f64::from(view.weight.max(1))
}

fn least_request_score(view: &OriginView) -> f64 {
    f64::from(view.in_flight_cost + 1) / f64::from(view.weight.max(1))
}

/// Chooses the origin for one request.
pub fn choose(
    policy: Policy,
    origins: &[OriginView],
    rng: &mut fastrand::Rng,
    round_robin: &mut RoundRobin,
) -> Choice {
    if !origins.iter().any(|o| o.capable) {
        return Choice::Unavailable;
    }
    let open = |o: &OriginView| o.capable && o.has_room;
    if !origins.iter().any(open) {
        return Choice::Wait;
    }
    if let Some(primary) = origins
        .iter()
        .position(|o| open(o) && o.primary && o.within_goal)
    {
        return Choice::Origin(primary);
    }
    // The primary is full or over its goal: the mirrors take the overflow, and the primary
    // only when no mirror has room.
    let mirrors_open = origins.iter().any(|o| open(o) && !o.primary);
    let eligible = |o: &OriginView| open(o) && (!o.primary || !mirrors_open);
    let pick = match policy {
        Policy::Qos => power_of_two(origins, eligible, rng),
        Policy::LeastRequest => least(origins, eligible, least_request_score, rng),
        Policy::RoundRobin => round_robin.next(origins, eligible),
    };
    pick.map_or(Choice::Wait, Choice::Origin)
}

/// Power of two choices: two distinct eligible origins at random, the lower score wins.
fn power_of_two(
    origins: &[OriginView],
    eligible: impl Fn(&OriginView) -> bool,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let count = origins.iter().filter(|o| eligible(o)).count();
    let nth = |n: usize| {
        origins
            .iter()
            .enumerate()
            .filter(|(_, o)| eligible(o))
            .nth(n)
            .map(|(i, _)| i)
    };
    match count {
        0 => None,
        1 => nth(0),
        _ => {
            let a = rng.usize(..count);
            let b = (a + 1 + rng.usize(..count - 1)) % count;
            let (a, b) = (nth(a)?, nth(b)?);
            Some(if qos_score(&origins[b]) < qos_score(&origins[a]) {
                b
            } else {
                a
            })
        }
    }
}

/// The lowest score, ties broken from a random starting point so no origin is favoured.
fn least(
    origins: &[OriginView],
    eligible: impl Fn(&OriginView) -> bool,
    score: impl Fn(&OriginView) -> f64,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let start = rng.usize(..origins.len().max(1));
    (0..origins.len())
        .map(|k| (start + k) % origins.len())
        .filter(|&i| eligible(&origins[i]))
        .min_by(|&a, &b| score(&origins[a]).total_cmp(&score(&origins[b])))
}

impl RoundRobin {
    /// Smooth weighted round-robin (as in nginx): each eligible origin gains its weight, the
    /// richest is chosen and pays back the total. Origins appear in proportion to weight,
    /// evenly spread.
    fn next(
        &mut self,
        origins: &[OriginView],
        eligible: impl Fn(&OriginView) -> bool,
    ) -> Option<usize> {
        self.current.resize(origins.len(), 0);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, origin) in origins.iter().enumerate() {
            if !eligible(origin) {
                continue;
            }
            let weight = i64::from(origin.weight.max(1));
            self.current[i] += weight;
            total += weight;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.current[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn view(latency_ms: u64, in_flight: u32) -> OriginView {
        OriginView {
            capable: true,
            has_room: true,
            primary: false,
            within_goal: true,
            in_flight_cost: in_flight,
            latency: MS * latency_ms as u32,
            weight: 100,
        }
    }

    fn pick(policy: Policy, origins: &[OriginView], seed: u64) -> Choice {
        choose(
            policy,
            origins,
            &mut fastrand::Rng::with_seed(seed),
            &mut RoundRobin::default(),
        )
    }

    #[test]
    fn qos_never_picks_the_slow_origin_when_any_pair_includes_a_fast_one() {
        let origins = [view(1, 0), view(1, 0), view(2000, 0)];
        for seed in 0..500 {
            assert_ne!(
                pick(Policy::Qos, &origins, seed),
                Choice::Origin(2),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn power_of_two_compares_two_distinct_origins() {
        // With two origins, distinct picks mean the better one always wins.
        let origins = [view(5, 0), view(1, 0)];
        for seed in 0..200 {
            assert_eq!(
                pick(Policy::Qos, &origins, seed),
                Choice::Origin(1),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn qos_spreads_over_equal_origins() {
        let origins = [view(1, 0), view(1, 0), view(1, 0), view(1, 0)];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0; 4];
        for _ in 0..4000 {
            if let Choice::Origin(i) =
                choose(Policy::Qos, &origins, &mut rng, &mut RoundRobin::default())
            {
                counts[i] += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
    }

    #[test]
    fn in_flight_load_counts_against_latency() {
        let origins = [view(10, 9), view(20, 0)];
        assert_eq!(pick(Policy::Qos, &origins, 1), Choice::Origin(1));
    }

    #[test]
    fn an_origin_at_its_mark_or_incapable_is_never_chosen() {
        let mut full = view(1, 0);
        full.has_room = false;
        let mut incapable = view(1, 0);
        incapable.capable = false;
        let origins = [full, incapable, view(500, 3)];
        for policy in [Policy::Qos, Policy::LeastRequest, Policy::RoundRobin] {
            for seed in 0..50 {
                assert_eq!(pick(policy, &origins, seed), Choice::Origin(2));
            }
        }
    }

    #[test]
    fn all_full_means_wait_and_none_capable_means_unavailable() {
        let mut full = view(1, 0);
        full.has_room = false;
        assert_eq!(pick(Policy::Qos, &[full, full], 0), Choice::Wait);
        let mut incapable = view(1, 0);
        incapable.capable = false;
        assert_eq!(pick(Policy::Qos, &[incapable, full], 0), Choice::Wait);
        assert_eq!(
            pick(Policy::Qos, &[incapable, incapable], 0),
            Choice::Unavailable
        );
    }

    #[test]
    fn the_primary_takes_traffic_until_full_or_over_its_goal() {
        let mut primary = view(50, 10);
        primary.primary = true;
        let origins = [view(1, 0), primary, view(1, 0)];
        for policy in [Policy::Qos, Policy::LeastRequest, Policy::RoundRobin] {
            assert_eq!(pick(policy, &origins, 3), Choice::Origin(1));
        }
        let mut full = origins;
        full[1].has_room = false;
        assert!(matches!(pick(Policy::Qos, &full, 3), Choice::Origin(0 | 2)));
        let mut slow = origins;
        slow[1].within_goal = false;
        assert!(matches!(pick(Policy::Qos, &slow, 3), Choice::Origin(0 | 2)));
        // Over its goal but the only one with room: still better than waiting.
        let mut only = slow;
        only[0].has_room = false;
        only[2].has_room = false;
        assert_eq!(pick(Policy::Qos, &only, 3), Choice::Origin(1));
    }

    #[test]
    fn least_request_picks_the_least_loaded_per_weight() {
        let mut big = view(1, 3);
        big.weight = 400;
        let origins = [view(1, 1), big, view(1, 2)];
        assert_eq!(pick(Policy::LeastRequest, &origins, 9), Choice::Origin(1));
    }

    #[test]
    fn round_robin_follows_weights_evenly() {
        let mut heavy = view(1, 0);
        heavy.weight = 300;
        let origins = [heavy, view(1, 0)];
        let mut rr = RoundRobin::default();
        let mut rng = fastrand::Rng::with_seed(0);
        let order: Vec<_> = (0..8)
            .map(
                |_| match choose(Policy::RoundRobin, &origins, &mut rng, &mut rr) {
                    Choice::Origin(i) => i,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(order, [0, 0, 1, 0, 0, 0, 1, 0]);
    }
}
