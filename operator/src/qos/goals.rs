//! Whether a Site keeps its QoS goals, from the per-pod figures in its status: which goal is
//! missed, by how much, where (the back-ends, i.e. origin-side trouble, or the front-ends'
//! links, i.e. client-side trouble), and whether everything is met with room to spare.

use std::fmt;

use causeway_api::conditions::DegradedReason;
use causeway_api::site::QosSpec;
use causeway_api::status::{PodQos, PodRole};

/// A goal is met "with room to spare" below this share of it: between it and the goal the
/// loop neither adds nor gives back, so a figure hovering at the goal cannot make it flap.
pub const HEADROOM: f64 = 0.8;

/// The goals of `QosSpec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// `latencyP99`.
    LatencyP99,
    /// `maxQueueWait`.
    QueueWait,
    /// `maxLoss`.
    LinkLoss,
    /// `maxLinkRtt`.
    LinkRtt,
}

impl Goal {
    /// The tier whose pods are added when this goal is missed.
    pub fn remedy(self) -> PodRole {
        match self {
            Self::LatencyP99 | Self::QueueWait => PodRole::Backend,
            Self::LinkLoss | Self::LinkRtt => PodRole::Frontend,
        }
    }

    /// The Degraded condition reason naming it.
    pub fn reason(self) -> DegradedReason {
        match self {
            Self::LatencyP99 => DegradedReason::LatencyGoalMissed,
            Self::QueueWait => DegradedReason::QueueWaitGoalMissed,
            Self::LinkLoss => DegradedReason::LinkLossGoalMissed,
            Self::LinkRtt => DegradedReason::LinkRttGoalMissed,
        }
    }
}

/// One missed goal and the figure that missed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Miss {
    /// The goal.
    pub goal: Goal,
    /// The pod with the worst figure.
    pub pod: String,
    /// Its figure (milliseconds, or a loss fraction).
    pub figure: f64,
    /// The goal's limit, in the same unit.
    pub limit: f64,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.goal {
            Goal::LatencyP99 => write!(
                f,
                "p99 {:.0}ms over the goal of {:.0}ms (pod {})",
                self.figure, self.limit, self.pod
            ),
            Goal::QueueWait => write!(
                f,
                "queue wait p99 {:.0}ms over the goal of {:.0}ms (pod {})",
                self.figure, self.limit, self.pod
            ),
            Goal::LinkLoss => write!(
                f,
                "link loss {:.2}% over the goal of {:.2}% (pod {})",
                self.figure * 100.0,
                self.limit * 100.0,
                self.pod
            ),
            Goal::LinkRtt => write!(
                f,
                "link RTT {:.0}ms over the goal of {:.0}ms (pod {})",
                self.figure, self.limit, self.pod
            ),
        }
    }
}

/// How a Site stands against its goals.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Verdict {
    /// No goals, or no figures to judge by: nothing to do either way.
    #[default]
    Unknown,
    /// Every goal met with room to spare.
    Met,
    /// Every goal met, but some figure is close to its goal.
    Near,
    /// Goals missed, worst first.
    Missed(Vec<Miss>),
}

/// Reads the figure one goal judges from a pod's entry, `None` when it has none to judge.
type FigureOf = fn(&PodQos) -> Option<f64>;

/// Judges the per-pod `qos` figures against `goals`. Latency and queue wait count only pods
/// that served requests in the interval (an idle pod's empty histogram says nothing).
pub fn assess(goals: &QosSpec, qos: &[PodQos]) -> Verdict {
    let ms = |d: Option<causeway_api::Duration>| d.map(|d| d.get().as_secs_f64() * 1000.0);
    let checks: [(Goal, Option<f64>, FigureOf); 4] = [
        (Goal::LatencyP99, ms(goals.latency_p99), |p| {
            (p.request_rate > 0.0).then_some(p.p99_ms)
        }),
        (Goal::QueueWait, ms(goals.max_queue_wait), |p| {
            (p.role == PodRole::Backend && p.request_rate > 0.0).then_some(p.queue_wait_p99_ms)
        }),
        (Goal::LinkLoss, goals.max_loss, |p| {
            (p.role == PodRole::Frontend && !p.links.is_empty()).then_some(p.loss)
        }),
        (Goal::LinkRtt, ms(goals.max_link_rtt), |p| {
            (p.role == PodRole::Frontend && !p.links.is_empty()).then_some(p.rtt_ms)
        }),
    ];
    let mut judged = false;
    let mut near = false;
    let mut misses = Vec::new();
    for (goal, limit, figure) in checks {
        let Some(limit) = limit else { continue };
        let worst = qos
            .iter()
            .filter_map(|pod| figure(pod).map(|f| (pod, f)))
            .filter(|(_, f)| f.is_finite())
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((pod, figure)) = worst else { continue };
        judged = true;
        if figure > limit {
            misses.push(Miss {
                goal,
                pod: pod.pod.clone(),
                figure,
                limit,
            });
        } else if figure > limit * HEADROOM {
            near = true;
        }
    }
    // Worst first: by how far over its goal each figure is.
    misses.sort_by(|a, b| (b.figure / b.limit).total_cmp(&(a.figure / a.limit)));
    match (judged, misses.is_empty(), near) {
        (false, _, _) => Verdict::Unknown,
        (true, false, _) => Verdict::Missed(misses),
        (true, true, true) => Verdict::Near,
        (true, true, false) => Verdict::Met,
    }
}

/// The link goals a Frontend's pods are held to: the strictest among the Sites it serves
/// (their loss and RTT goals), with the shortest scale-up window and the longest cool-down.
pub fn frontend_goals<'a>(sites: impl IntoIterator<Item = &'a QosSpec>) -> QosSpec {
    let mut merged = QosSpec::default();
    let stricter = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    for goals in sites {
        merged.max_loss = stricter(merged.max_loss, goals.max_loss);
        merged.max_link_rtt = match (merged.max_link_rtt, goals.max_link_rtt) {
            (Some(a), Some(b)) => Some(if a.get() <= b.get() { a } else { b }),
            (a, b) => a.or(b),
        };
        merged.scale_up_window = match (merged.scale_up_window, goals.scale_up_window) {
            (Some(a), Some(b)) => Some(if a.get() <= b.get() { a } else { b }),
            (a, b) => a.or(b),
        };
        merged.cool_down = match (merged.cool_down, goals.cool_down) {
            (Some(a), Some(b)) => Some(if a.get() >= b.get() { a } else { b }),
            (a, b) => a.or(b),
        };
    }
    merged
}

/// The verdict for one tier: only the misses that tier's pods can remedy count as missed.
pub fn for_tier(verdict: &Verdict, tier: PodRole) -> Verdict {
    match verdict {
        Verdict::Missed(misses) => {
            let own: Vec<Miss> = misses
                .iter()
                .filter(|m| m.goal.remedy() == tier)
                .cloned()
                .collect();
            if own.is_empty() {
                // Another tier's trouble: this one is not to be grown, nor shrunk meanwhile.
                Verdict::Near
            } else {
                Verdict::Missed(own)
            }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_api::status::LinkQos;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pod(name: &str, role: PodRole, p99_ms: f64, loss: f64) -> PodQos {
        PodQos {
            pod: name.into(),
            role,
            rtt_ms: 20.0,
            loss,
            p50_ms: 1.0,
            p99_ms,
            request_rate: 10.0,
            error_rate: 0.0,
            in_flight: 0,
            queued: 0,
            queue_wait_p99_ms: 0.0,
            links: vec![LinkQos {
                peer: "b".into(),
                rtt_ms: 20.0,
                loss,
            }],
            origins: Vec::new(),
            updated: Time(Timestamp::UNIX_EPOCH),
        }
    }

    fn goals(p99_ms: u64, loss: f64) -> QosSpec {
        QosSpec {
            latency_p99: Some(causeway_api::Duration::from_millis(p99_ms)),
            max_loss: Some(loss),
            ..QosSpec::default()
        }
    }

    #[test]
    fn a_slow_backend_misses_the_latency_goal_and_names_the_pod() {
        let qos = [
            pod("be-0", PodRole::Backend, 400.0, 0.0),
            pod("fe-0", PodRole::Frontend, 150.0, 0.0),
        ];
        let Verdict::Missed(misses) = assess(&goals(250, 0.02), &qos) else {
            panic!("missed");
        };
        assert_eq!(misses[0].goal, Goal::LatencyP99);
        assert_eq!(misses[0].pod, "be-0");
        assert!(
            misses[0]
                .to_string()
                .contains("p99 400ms over the goal of 250ms")
        );
        assert!(matches!(
            for_tier(&Verdict::Missed(misses.clone()), PodRole::Backend),
            Verdict::Missed(_)
        ));
        assert_eq!(
            for_tier(&Verdict::Missed(misses), PodRole::Frontend),
            Verdict::Near
        );
    }

    #[test]
    fn link_loss_is_the_front_ends_trouble() {
        let qos = [pod("fe-0", PodRole::Frontend, 10.0, 0.05)];
        let verdict = assess(&goals(250, 0.02), &qos);
        let Verdict::Missed(misses) = &verdict else {
            panic!("missed");
        };
        assert_eq!(misses[0].goal.remedy(), PodRole::Frontend);
    }

    #[test]
    fn a_band_below_each_goal_holds_between_met_and_missed() {
        let healthy = [pod("be-0", PodRole::Backend, 100.0, 0.0)];
        assert_eq!(assess(&goals(250, 0.02), &healthy), Verdict::Met);
        let close = [pod("be-0", PodRole::Backend, 230.0, 0.0)];
        assert_eq!(assess(&goals(250, 0.02), &close), Verdict::Near);
        assert_eq!(assess(&QosSpec::default(), &close), Verdict::Unknown);
        assert_eq!(assess(&goals(250, 0.02), &[]), Verdict::Unknown);
    }

    #[test]
    fn a_frontend_takes_the_strictest_link_goals_of_its_sites() {
        let ms = causeway_api::Duration::from_millis;
        let a = QosSpec {
            max_loss: Some(0.05),
            max_link_rtt: Some(ms(100)),
            ..QosSpec::default()
        };
        let b = QosSpec {
            max_loss: Some(0.01),
            latency_p99: Some(ms(10)),
            ..QosSpec::default()
        };
        let merged = frontend_goals([&a, &b]);
        assert_eq!(merged.max_loss, Some(0.01));
        assert_eq!(merged.max_link_rtt, Some(ms(100)));
        assert_eq!(
            merged.latency_p99, None,
            "latency is the back-ends' business"
        );
    }

    #[test]
    fn idle_pods_do_not_judge_latency() {
        let mut idle = pod("be-0", PodRole::Backend, 0.0, 0.0);
        idle.request_rate = 0.0;
        let only_latency = QosSpec {
            latency_p99: Some(causeway_api::Duration::from_millis(250)),
            ..QosSpec::default()
        };
        assert_eq!(assess(&only_latency, &[idle]), Verdict::Unknown);
    }
}
