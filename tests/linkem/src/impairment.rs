//! What one direction of an emulated link does to packets: delay, jitter, loss, rate and queue.

use std::time::Duration;

use crate::error::Error;

/// Default drop-tail queue in front of a rate-limited link: 100 full-size packets.
pub const DEFAULT_QUEUE_LIMIT_BYTES: u64 = 150_000;

/// Impairment of one direction of a link.
///
/// Packets are first subject to random loss, then to the rate limit (a serialization link
/// with a drop-tail queue of `queue_limit_bytes`), then to `delay` plus a uniform jitter of
/// ±`jitter`, without ever being reordered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// One-way propagation delay added to every packet.
    pub delay: Duration,
    /// Half-width of the uniform jitter added to `delay` (never reorders packets).
    pub jitter: Duration,
    /// Probability in `0.0..=1.0` that a packet is lost, independently of the others.
    pub loss: f64,
    /// Link rate in bits per second; `None` means unlimited (and no queue).
    pub rate_bits_per_sec: Option<u64>,
    /// Bytes that may wait to be serialized before arriving packets are dropped.
    pub queue_limit_bytes: u64,
}

impl Default for Impairment {
    fn default() -> Self {
        Self::NONE
    }
}

impl Impairment {
    /// A perfect link: no delay, no loss, no rate limit.
    pub const NONE: Impairment = Impairment {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        rate_bits_per_sec: None,
        queue_limit_bytes: DEFAULT_QUEUE_LIMIT_BYTES,
    };

    /// A link that only delays packets by `delay`.
    #[must_use]
    pub fn delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::NONE
        }
    }

    /// This impairment with `jitter` as the half-width of the uniform jitter.
    #[must_use]
    pub fn with_jitter(self, jitter: Duration) -> Self {
        Self { jitter, ..self }
    }

    /// This impairment with the loss probability `loss` (`0.0..=1.0`).
    #[must_use]
    pub fn with_loss(self, loss: f64) -> Self {
        Self { loss, ..self }
    }

    /// This impairment with a rate limit of `bits_per_sec`.
    #[must_use]
    pub fn with_rate(self, bits_per_sec: u64) -> Self {
        Self {
            rate_bits_per_sec: Some(bits_per_sec),
            ..self
        }
    }

    /// This impairment with a drop-tail queue of `bytes` in front of the rate limit.
    #[must_use]
    pub fn with_queue_limit(self, bytes: u64) -> Self {
        Self {
            queue_limit_bytes: bytes,
            ..self
        }
    }

    /// Checks that the loss is a probability and the rate is positive.
    ///
    /// # Errors
    /// [`Error::InvalidImpairment`] naming the offending field.
    pub fn validate(&self) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(Error::InvalidImpairment(format!(
                "loss {} is not a probability in 0..=1",
                self.loss
            )));
        }
        if self.rate_bits_per_sec == Some(0) {
            return Err(Error::InvalidImpairment(
                "rate must be positive (omit it for an unlimited link)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_one_field_each() {
        let i = Impairment::delay(Duration::from_millis(20))
            .with_jitter(Duration::from_millis(2))
            .with_loss(0.1)
            .with_rate(20_000_000)
            .with_queue_limit(64_000);
        assert_eq!(i.delay, Duration::from_millis(20));
        assert_eq!(i.jitter, Duration::from_millis(2));
        assert_eq!(i.loss, 0.1);
        assert_eq!(i.rate_bits_per_sec, Some(20_000_000));
        assert_eq!(i.queue_limit_bytes, 64_000);
        assert!(i.validate().is_ok());
    }

    #[test]
    fn rejects_bad_loss_and_zero_rate() {
        assert!(Impairment::NONE.with_loss(1.5).validate().is_err());
        assert!(Impairment::NONE.with_loss(f64::NAN).validate().is_err());
        assert!(Impairment::NONE.with_rate(0).validate().is_err());
    }
}
