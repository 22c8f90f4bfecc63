//! The retry budget: retries may add at most a fixed fraction to recent traffic (plus a small
//! floor), so retries help through a blip but never multiply load on an origin in trouble.

use std::time::{Duration, Instant};

/// Counts of one time bucket.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    requests: u64,
    retries: u64,
}

/// A sliding-window budget of retries.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    window: Duration,
    current_start: Instant,
    current: Bucket,
    previous: Bucket,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per request plus `min_per_second`, over a 10 s window.
    pub fn new(ratio: f64, min_per_second: u32, now: Instant) -> Self {
        Self {
            ratio,
            min_per_second: f64::from(min_per_second),
            window: Duration::from_secs(10),
            current_start: now,
            current: Bucket::default(),
            previous: Bucket::default(),
        }
    }

    /// Takes new settings, keeping the window's counts: a reload must not hand a fresh
    /// budget to retries that were being held back.
    pub fn reconfigure(&mut self, ratio: f64, min_per_second: u32) {
        self.ratio = ratio;
        self.min_per_second = f64::from(min_per_second);
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.current_start);
        if elapsed >= self.window * 2 {
            self.previous = Bucket::default();
            self.current = Bucket::default();
            self.current_start = now;
        } else if elapsed >= self.window {
            self.previous = self.current;
            self.current = Bucket::default();
            self.current_start += self.window;
        }
    }

    /// Counts of the last window, the previous bucket weighted by how much of it still overlaps.
    fn recent(&self, now: Instant) -> (f64, f64) {
        let into = now
            .saturating_duration_since(self.current_start)
            .as_secs_f64()
            / self.window.as_secs_f64();
        let overlap = (1.0 - into).clamp(0.0, 1.0);
        (
            self.previous.requests as f64 * overlap + self.current.requests as f64,
            self.previous.retries as f64 * overlap + self.current.retries as f64,
        )
    }

    /// Notes one original request (not a retry).
    pub fn record_request(&mut self, now: Instant) {
        self.roll(now);
        self.current.requests += 1;
    }

    /// Takes one retry from the budget; false when the budget is spent.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.roll(now);
        let (requests, retries) = self.recent(now);
        let allowed = self.min_per_second * self.window.as_secs_f64() + self.ratio * requests;
        if retries + 1.0 <= allowed {
            self.current.retries += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_allows_some_retries_without_traffic() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.0, 1, t0);
        let granted = (0..20).filter(|_| budget.try_withdraw(t0)).count();
        assert_eq!(granted, 10, "1 per second over a 10 s window");
    }

    #[test]
    fn retries_are_bounded_by_the_ratio_of_requests() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.2, 0, t0);
        for _ in 0..1000 {
            budget.record_request(t0);
        }
        let granted = (0..1000).filter(|_| budget.try_withdraw(t0)).count();
        assert_eq!(granted, 200);
    }

    #[test]
    fn the_budget_refills_as_the_window_slides() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(0.0, 1, t0);
        while budget.try_withdraw(t0) {}
        assert!(!budget.try_withdraw(t0 + Duration::from_secs(5)));
        assert!(budget.try_withdraw(t0 + Duration::from_secs(25)));
    }
}
