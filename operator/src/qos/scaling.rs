//! The QoS loop's scaling decision (claim 10: a server is added when QoS falls below the
//! preselected level, and given back when congestion subsides), as a pure function of the
//! verdict, the replica count, its bounds, the time and the loop's memory.
//!
//! Hysteresis, so it cannot flap: a goal must be missed for a whole window before a pod is
//! added, and another window must pass before the next; every goal must be met with room to
//! spare (below [`super::goals::HEADROOM`] of it) for a whole cool-down before a pod is given
//! back, and another cool-down before the next. A figure between the two bands resets both
//! clocks.

use std::time::Duration;

use causeway_api::status::ScalingStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::goals::Verdict;

/// The bounds and clocks of one tier's scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The fewest pods.
    pub min: i32,
    /// The most pods.
    pub max: i32,
    /// How long a miss lasts before a pod is added.
    pub window: Duration,
    /// How long goals are met before a pod is given back.
    pub cool_down: Duration,
}

/// A change the loop made, for the event and the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Pods before.
    pub from: i32,
    /// Pods after.
    pub to: i32,
    /// Why, with the figures.
    pub reason: String,
}

/// The loop's next state.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The replica count to run.
    pub replicas: i32,
    /// The memory to keep.
    pub memory: ScalingStatus,
    /// The change made now, if any.
    pub change: Option<Change>,
}

fn seconds_since(then: Option<&Time>, now: &Time) -> Option<Duration> {
    let then = then?;
    let elapsed = now.0.duration_since(then.0);
    Some(Duration::from_secs_f64(elapsed.as_secs_f64().max(0.0)))
}

/// Decides the replica count from `current` given `verdict` at `now`.
pub fn decide(
    verdict: &Verdict,
    current: i32,
    policy: Policy,
    memory: &ScalingStatus,
    now: &Time,
) -> Decision {
    let (min, max) = (policy.min, policy.max.max(policy.min));
    let clamped = current.clamp(min, max);
    let mut memory = memory.clone();
    let since_change = seconds_since(memory.last_change.as_ref(), now);
    let mut change = None;
    match verdict {
        Verdict::Unknown => {}
        Verdict::Near => {
            memory.missed_since = None;
            memory.met_since = None;
        }
        Verdict::Missed(misses) => {
            memory.met_since = None;
            let since = memory
                .missed_since
                .get_or_insert_with(|| now.clone())
                .clone();
            let missed_for = seconds_since(Some(&since), now).unwrap_or_default();
            let rested = since_change.is_none_or(|d| d >= policy.window);
            let worst = misses.first().map(ToString::to_string).unwrap_or_default();
            if missed_for >= policy.window && rested && clamped < max {
                change = Some(Change {
                    from: clamped,
                    to: clamped + 1,
                    reason: format!(
                        "{worst} for {}s: added a pod ({} → {})",
                        missed_for.as_secs(),
                        clamped,
                        clamped + 1
                    ),
                });
                // The next step needs a whole window of its own.
                memory.missed_since = Some(now.clone());
            } else if missed_for >= policy.window && clamped >= max {
                memory.last_decision = format!("{worst}: already at the maximum of {max} pods");
            }
        }
        Verdict::Met => {
            memory.missed_since = None;
            let since = memory.met_since.get_or_insert_with(|| now.clone()).clone();
            let met_for = seconds_since(Some(&since), now).unwrap_or_default();
            let rested = since_change.is_none_or(|d| d >= policy.cool_down);
            if met_for >= policy.cool_down && rested && clamped > min {
                change = Some(Change {
                    from: clamped,
                    to: clamped - 1,
                    reason: format!(
                        "every goal met for {}s: gave a pod back ({} → {})",
                        met_for.as_secs(),
                        clamped,
                        clamped - 1
                    ),
                });
                memory.met_since = Some(now.clone());
            }
        }
    }
    let replicas = match &change {
        Some(change) => {
            memory.last_change = Some(now.clone());
            memory.last_decision = change.reason.clone();
            change.to
        }
        None => clamped,
    };
    Decision {
        replicas,
        memory,
        change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qos::goals::{Goal, Miss};
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    const POLICY: Policy = Policy {
        min: 2,
        max: 4,
        window: Duration::from_secs(30),
        cool_down: Duration::from_secs(120),
    };

    fn missed() -> Verdict {
        Verdict::Missed(vec![Miss {
            goal: Goal::LatencyP99,
            pod: "be-0".into(),
            figure: 400.0,
            limit: 250.0,
        }])
    }

    /// Runs the loop every 10 s over `verdicts`, returning the replica count after each.
    fn run(verdicts: &[Verdict]) -> Vec<i32> {
        let mut memory = ScalingStatus::default();
        let mut replicas = 2;
        let mut counts = Vec::new();
        for (i, verdict) in verdicts.iter().enumerate() {
            let decision = decide(verdict, replicas, POLICY, &memory, &at(i as i64 * 10));
            replicas = decision.replicas;
            memory = decision.memory;
            counts.push(replicas);
        }
        counts
    }

    #[test]
    fn a_miss_adds_one_pod_per_window_up_to_the_maximum() {
        let counts = run(&vec![missed(); 12]);
        // Missed since t=0: the first pod at t=30, the next a window later, then the cap.
        assert_eq!(counts, vec![2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4]);
    }

    #[test]
    fn met_goals_give_pods_back_after_the_cool_down_only() {
        let mut verdicts = vec![missed(); 7];
        verdicts.extend(vec![Verdict::Met; 40]);
        let counts = run(&verdicts);
        assert_eq!(counts[6], 4);
        // Met from t=70: the first pod goes back at t=190, the next at t=310.
        assert_eq!(counts[18], 4);
        assert_eq!(counts[19], 3);
        assert_eq!(counts[30], 3);
        assert_eq!(counts[31], 2);
        assert_eq!(*counts.last().unwrap_or(&0), 2, "never below the minimum");
    }

    #[test]
    fn a_figure_in_the_band_resets_both_clocks_so_nothing_flaps() {
        // Alternating miss / near never accumulates a window.
        let verdicts: Vec<Verdict> = (0..20)
            .map(|i| if i % 2 == 0 { missed() } else { Verdict::Near })
            .collect();
        assert!(run(&verdicts).iter().all(|&n| n == 2));
        let unknown = run(&vec![Verdict::Unknown; 20]);
        assert!(unknown.iter().all(|&n| n == 2));
    }

    #[test]
    fn counts_outside_the_bounds_are_brought_inside() {
        let decision = decide(
            &Verdict::Unknown,
            9,
            POLICY,
            &ScalingStatus::default(),
            &at(0),
        );
        assert_eq!(decision.replicas, 4);
        assert!(decision.change.is_none());
    }
}
