//! Peak-EWMA latency: an average that jumps up at once on a slow answer and comes down
//! gradually, so an origin that turns slow is avoided at the first sign of it.

use std::time::{Duration, Instant};

/// A peak-sensitive, time-decayed average of response latency.
#[derive(Clone, Debug)]
pub struct PeakEwma {
    estimate_ns: f64,
    neutral_ns: f64,
    decay_ns: f64,
    updated: Instant,
}

impl PeakEwma {
    /// Starts at `neutral`, the latency assumed for an origin nothing is known about.
    pub fn new(neutral: Duration, decay: Duration, now: Instant) -> Self {
        let neutral_ns = neutral.as_nanos() as f64;
        Self {
            estimate_ns: neutral_ns,
            neutral_ns,
            decay_ns: (decay.as_nanos() as f64).max(1.0),
            updated: now,
        }
    }

    /// Folds in one observed latency. A sample above the estimate replaces it (the peak);
    /// a lower one pulls it down by a weight that grows with the time since the last sample,
    /// so the average forgets at the same pace whatever the request rate.
    pub fn observe(&mut self, latency: Duration, now: Instant) {
        let sample = latency.as_nanos() as f64;
        if sample > self.estimate_ns {
            self.estimate_ns = sample;
        } else {
            let elapsed = now.saturating_duration_since(self.updated).as_nanos() as f64;
            let keep = (-elapsed / self.decay_ns).exp();
            self.estimate_ns = self.estimate_ns * keep + sample * (1.0 - keep);
        }
        self.updated = now;
    }

    /// Changes how fast the average forgets, keeping what it knows (a reload that changed
    /// the Site's decay should not throw away the origin's measured latency).
    pub fn set_decay(&mut self, decay: Duration) {
        self.decay_ns = (decay.as_nanos() as f64).max(1.0);
    }

    /// The current estimate. Without fresh samples a high estimate drifts back toward the
    /// neutral value, so an origin that was slow once is tried again after a while instead of
    /// being shunned forever.
    pub fn estimate(&self, now: Instant) -> Duration {
        let mut ns = self.estimate_ns;
        if ns > self.neutral_ns {
            let elapsed = now.saturating_duration_since(self.updated).as_nanos() as f64;
            ns = self.neutral_ns + (ns - self.neutral_ns) * (-elapsed / self.decay_ns).exp();
        }
        Duration::from_nanos(ns as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slow_sample_is_taken_at_once() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(MS, Duration::from_secs(10), t0);
        ewma.observe(MS * 500, t0 + MS);
        assert_eq!(ewma.estimate(t0 + MS), MS * 500);
    }

    #[test]
    fn fast_samples_pull_the_estimate_down_over_the_decay_time() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(MS, Duration::from_secs(1), t0);
        ewma.observe(MS * 100, t0);
        // One fast sample after one decay period keeps e^-1 of the old estimate.
        ewma.observe(MS * 10, t0 + Duration::from_secs(1));
        let expected = 100.0 * (-1.0f64).exp() + 10.0 * (1.0 - (-1.0f64).exp());
        let got = ewma.estimate(t0 + Duration::from_secs(1)).as_secs_f64() * 1000.0;
        assert!((got - expected).abs() < 0.01, "{got} vs {expected}");
    }

    #[test]
    fn many_samples_at_a_high_rate_move_it_no_faster_than_few() {
        let t0 = Instant::now();
        let mut burst = PeakEwma::new(MS, Duration::from_secs(1), t0);
        let mut single = burst.clone();
        burst.observe(MS * 100, t0);
        single.observe(MS * 100, t0);
        for i in 1..=1000 {
            burst.observe(MS, t0 + Duration::from_millis(i));
        }
        single.observe(MS, t0 + Duration::from_secs(1));
        let at = t0 + Duration::from_secs(1);
        let (b, s) = (
            burst.estimate(at).as_secs_f64(),
            single.estimate(at).as_secs_f64(),
        );
        assert!((b - s).abs() / s < 0.05, "burst {b} single {s}");
    }

    #[test]
    fn an_idle_high_estimate_drifts_back_to_neutral() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(MS, Duration::from_secs(1), t0);
        ewma.observe(Duration::from_secs(2), t0);
        assert!(ewma.estimate(t0 + Duration::from_secs(1)) > MS * 500);
        assert!(ewma.estimate(t0 + Duration::from_secs(30)) < MS * 2);
    }
}
