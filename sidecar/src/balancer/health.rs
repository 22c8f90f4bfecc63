//! Origin health, as two state machines: active checks flip an origin only after N
//! consecutive results the same way, and passive outlier detection ejects an origin after N
//! consecutive failed requests, for a time that doubles while ejections keep coming.

use std::time::{Duration, Instant};

/// Thresholds of the active health check.
#[derive(Clone, Copy, Debug)]
pub struct CheckThresholds {
    /// Consecutive successes that make an unhealthy origin healthy.
    pub healthy: u32,
    /// Consecutive failures that make a healthy origin unhealthy.
    pub unhealthy: u32,
}

/// The result of active health checks on one origin.
#[derive(Clone, Copy, Debug)]
pub struct ActiveHealth {
    healthy: bool,
    streak: u32,
}

impl Default for ActiveHealth {
    /// Origins start healthy so traffic flows before the first check completes.
    fn default() -> Self {
        Self {
            healthy: true,
            streak: 0,
        }
    }
}

impl ActiveHealth {
    /// Whether the checks say the origin can take traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Folds in one check result; returns the new state when it flipped.
    #[must_use]
    pub fn record(&mut self, passed: bool, thresholds: CheckThresholds) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if passed {
            thresholds.healthy
        } else {
            thresholds.unhealthy
        };
        if self.streak >= needed.max(1) {
            self.healthy = passed;
            self.streak = 0;
            Some(passed)
        } else {
            None
        }
    }
}

/// Settings of passive outlier detection.
#[derive(Clone, Copy, Debug)]
pub struct OutlierSettings {
    /// Consecutive failures that eject; 0 disables ejection.
    pub consecutive_failures: u32,
    /// Ejection time of a first ejection.
    pub base_ejection: Duration,
    /// Longest ejection time.
    pub max_ejection: Duration,
}

/// What a recorded request result did to an origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutlierEvent {
    /// Nothing changed.
    None,
    /// The origin is out of rotation until the given time.
    Ejected(Instant),
}

/// Passive outlier state of one origin.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outlier {
    failures: u32,
    ejected_until: Option<Instant>,
    last_ejection: Option<Instant>,
    streak: u32,
}

impl Outlier {
    /// Whether the origin is out of rotation at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Whether an ejection has run out but not yet been noted by [`Outlier::readmit`].
    pub fn is_due_for_readmission(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now >= until)
    }

    /// Puts an origin whose ejection ran out back into rotation; true when it did.
    pub fn readmit(&mut self, now: Instant) -> bool {
        if self.is_due_for_readmission(now) {
            self.ejected_until = None;
            self.failures = 0;
            true
        } else {
            false
        }
    }

    /// Folds in one request result. `may_eject` is false when ejecting this origin would put
    /// more of the site's origins out of rotation than allowed.
    #[must_use]
    pub fn record(
        &mut self,
        succeeded: bool,
        now: Instant,
        settings: OutlierSettings,
        may_eject: bool,
    ) -> OutlierEvent {
        if succeeded {
            self.failures = 0;
            return OutlierEvent::None;
        }
        self.failures = self.failures.saturating_add(1);
        if settings.consecutive_failures == 0
            || self.failures < settings.consecutive_failures
            || self.is_ejected(now)
            || !may_eject
        {
            return OutlierEvent::None;
        }
        // Ejections that follow each other closely double the time out; after a quiet spell
        // as long as the longest ejection, the next one starts from the base again.
        let recent = self
            .last_ejection
            .is_some_and(|last| now.saturating_duration_since(last) <= settings.max_ejection);
        self.streak = if recent {
            self.streak.saturating_add(1)
        } else {
            1
        };
        let factor = 1u32 << (self.streak - 1).min(16);
        let time_out = settings
            .base_ejection
            .saturating_mul(factor)
            .min(settings.max_ejection);
        let until = now + time_out;
        self.ejected_until = Some(until);
        self.last_ejection = Some(now);
        self.failures = 0;
        OutlierEvent::Ejected(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: CheckThresholds = CheckThresholds {
        healthy: 2,
        unhealthy: 3,
    };

    #[test]
    fn active_health_flips_only_after_consecutive_results() {
        let mut health = ActiveHealth::default();
        assert_eq!(health.record(false, T), None);
        assert_eq!(health.record(false, T), None);
        assert_eq!(
            health.record(true, T),
            None,
            "a success breaks the failure streak"
        );
        assert_eq!(health.record(false, T), None);
        assert_eq!(health.record(false, T), None);
        assert_eq!(health.record(false, T), Some(false));
        assert!(!health.is_healthy());
        assert_eq!(health.record(true, T), None);
        assert_eq!(health.record(true, T), Some(true));
        assert!(health.is_healthy());
    }

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
        }
    }

    #[test]
    fn consecutive_failures_eject_and_time_readmits() {
        let t0 = Instant::now();
        let mut outlier = Outlier::default();
        assert_eq!(
            outlier.record(false, t0, settings(), true),
            OutlierEvent::None
        );
        assert_eq!(
            outlier.record(true, t0, settings(), true),
            OutlierEvent::None
        );
        assert_eq!(
            outlier.record(false, t0, settings(), true),
            OutlierEvent::None
        );
        assert_eq!(
            outlier.record(false, t0, settings(), true),
            OutlierEvent::None
        );
        let until = t0 + Duration::from_secs(10);
        assert_eq!(
            outlier.record(false, t0, settings(), true),
            OutlierEvent::Ejected(until)
        );
        assert!(outlier.is_ejected(t0 + Duration::from_secs(9)));
        assert!(!outlier.readmit(t0 + Duration::from_secs(9)));
        assert!(outlier.readmit(until));
        assert!(!outlier.is_ejected(until));
    }

    #[test]
    fn repeated_ejections_double_up_to_the_max_and_reset_after_quiet() {
        let mut now = Instant::now();
        let mut outlier = Outlier::default();
        let mut times = Vec::new();
        for _ in 0..5 {
            let mut event = OutlierEvent::None;
            for _ in 0..3 {
                event = outlier.record(false, now, settings(), true);
            }
            let OutlierEvent::Ejected(until) = event else {
                panic!("expected an ejection")
            };
            times.push(until - now);
            now = until;
            assert!(outlier.readmit(now));
        }
        let secs: Vec<_> = times.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [10, 20, 40, 60, 60]);
        now += Duration::from_secs(61 + 60);
        for _ in 0..2 {
            let _ = outlier.record(false, now, settings(), true);
        }
        assert_eq!(
            outlier.record(false, now, settings(), true),
            OutlierEvent::Ejected(now + Duration::from_secs(10))
        );
    }

    #[test]
    fn the_ejection_cap_is_respected() {
        let t0 = Instant::now();
        let mut outlier = Outlier::default();
        for _ in 0..10 {
            assert_eq!(
                outlier.record(false, t0, settings(), false),
                OutlierEvent::None
            );
        }
        assert!(!outlier.is_ejected(t0));
    }
}
