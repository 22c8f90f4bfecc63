//! Refresh-ahead: a hot entry is fetched again shortly before it expires, so clients of hot
//! content never meet a stale copy or a miss. A pure policy; the proxy runs the fetch.

use std::time::Duration;

/// When an entry is due for a background refresh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshAhead {
    /// Hits since it was stored (or last validated) that make an entry hot.
    pub min_hits: u64,
    /// The last fraction of its lifetime in which a hot entry is refreshed (0.1: the last 10%).
    pub before_expiry: f64,
}

impl Default for RefreshAhead {
    fn default() -> Self {
        Self {
            min_hits: 10,
            before_expiry: 0.1,
        }
    }
}

/// Whether an entry with `hits`, of this `lifetime` and `age`, should be refreshed now: hot,
/// still fresh, and within the last `before_expiry` of its lifetime. An entry with no lifetime
/// is never refreshed ahead (it is validated on every use anyway).
#[must_use]
pub fn should_refresh_ahead(
    policy: &RefreshAhead,
    hits: u64,
    lifetime: Duration,
    age: Duration,
) -> bool {
    if hits < policy.min_hits || lifetime.is_zero() || age >= lifetime {
        return false;
    }
    let window = lifetime.mul_f64(policy.before_expiry.clamp(0.0, 1.0));
    lifetime - age <= window
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn hot_and_near_expiry_only() {
        let policy = RefreshAhead {
            min_hits: 5,
            before_expiry: 0.1,
        };
        assert!(should_refresh_ahead(&policy, 5, S(100), S(95)));
        assert!(should_refresh_ahead(&policy, 50, S(100), S(90)));
        assert!(!should_refresh_ahead(&policy, 4, S(100), S(95)), "not hot");
        assert!(
            !should_refresh_ahead(&policy, 50, S(100), S(80)),
            "not near expiry"
        );
        assert!(
            !should_refresh_ahead(&policy, 50, S(100), S(100)),
            "already stale"
        );
        assert!(
            !should_refresh_ahead(&policy, 50, S(0), S(0)),
            "no lifetime"
        );
    }

    #[test]
    fn silly_fractions_are_clamped() {
        let all = RefreshAhead {
            min_hits: 1,
            before_expiry: 7.0,
        };
        assert!(should_refresh_ahead(&all, 1, S(100), S(0)));
        let none = RefreshAhead {
            min_hits: 1,
            before_expiry: -1.0,
        };
        assert!(!should_refresh_ahead(&none, 1, S(100), S(99)));
    }
}
