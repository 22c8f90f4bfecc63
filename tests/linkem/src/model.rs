//! The pure impairment decision: for each packet of one direction, drop it or say when it arrives.
//!
//! Time is a [`Duration`] since an arbitrary epoch chosen by the caller and randomness comes
//! from a seeded RNG, so the model is deterministic and tested without sockets or clocks.

use std::time::Duration;

use crate::impairment::Impairment;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Random loss.
    Loss,
    /// The rate limiter's drop-tail queue was full.
    QueueFull,
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// The packet is dropped.
    Drop(DropReason),
    /// The packet arrives at the far end at this time (same epoch as the arrival time).
    Deliver(Duration),
}

/// The state of one direction of an emulated link.
///
/// Delivery times returned for successive packets never decrease, so a caller can keep the
/// packets in a FIFO and release them in order.
#[derive(Debug, Clone)]
pub struct LinkModel {
    settings: Impairment,
    rng: fastrand::Rng,
    /// When the serializer finishes the last accepted packet.
    busy_until: Duration,
    /// Delivery time of the last delivered packet.
    last_delivery: Duration,
}

impl LinkModel {
    /// A model with these settings, drawing loss and jitter from an RNG seeded with `seed`.
    pub fn new(settings: Impairment, seed: u64) -> Self {
        Self {
            settings,
            rng: fastrand::Rng::with_seed(seed),
            busy_until: Duration::ZERO,
            last_delivery: Duration::ZERO,
        }
    }

    /// The current settings.
    pub fn settings(&self) -> &Impairment {
        &self.settings
    }

    /// Changes the settings; packets already accepted keep their delivery times.
    pub fn set_settings(&mut self, settings: Impairment) {
        self.settings = settings;
    }

    /// Bytes waiting to be serialized at `now` (zero without a rate limit).
    pub fn queued_bytes(&self, now: Duration) -> u64 {
        match self.settings.rate_bits_per_sec {
            Some(rate) => bytes_in(self.busy_until.saturating_sub(now), rate),
            None => 0,
        }
    }

    /// Decides the fate of a packet of `len` bytes arriving at `now`.
    ///
    /// `now` should not go backwards between calls; if it does, the packet is treated as
    /// arriving at the latest time seen, which keeps deliveries in order.
    pub fn offer(&mut self, now: Duration, len: usize) -> Verdict {
        let s = self.settings;
        if s.loss > 0.0 && self.rng.f64() < s.loss {
            return Verdict::Drop(DropReason::Loss);
        }
        let departure = match s.rate_bits_per_sec {
            Some(rate) => {
                let backlog = self.queued_bytes(now);
                // An idle link always takes a packet, whatever the queue limit.
                if backlog > 0 && backlog.saturating_add(len as u64) > s.queue_limit_bytes {
                    return Verdict::Drop(DropReason::QueueFull);
                }
                let start = now.max(self.busy_until);
                self.busy_until = start + serialization_time(len, rate);
                self.busy_until
            }
            None => now,
        };
        let delivery = (departure + self.sample_delay()).max(self.last_delivery);
        self.last_delivery = delivery;
        Verdict::Deliver(delivery)
    }

    /// `delay` plus a uniform sample of ±`jitter`, never negative.
    fn sample_delay(&mut self) -> Duration {
        let s = &self.settings;
        let jitter = nanos(s.jitter);
        if jitter == 0 {
            return s.delay;
        }
        let offset = self.rng.i64(-jitter..=jitter);
        let total = nanos(s.delay).saturating_add(offset).max(0);
        Duration::from_nanos(total.unsigned_abs())
    }
}

/// Time to put `len` bytes on a link of `rate` bits per second.
pub fn serialization_time(len: usize, rate: u64) -> Duration {
    let nanos = (len as u128 * 8 * 1_000_000_000) / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Bytes a link of `rate` bits per second serializes in `time`.
fn bytes_in(time: Duration, rate: u64) -> u64 {
    let bytes = time.as_nanos() * u128::from(rate) / 8 / 1_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `count` packets of `len` bytes, one every `gap`, and returns (arrival, verdict).
    fn run(
        model: &mut LinkModel,
        count: usize,
        len: usize,
        gap: Duration,
    ) -> Vec<(Duration, Verdict)> {
        (0..count)
            .map(|i| {
                let now = gap * i as u32;
                (now, model.offer(now, len))
            })
            .collect()
    }

    fn delivered(results: &[(Duration, Verdict)]) -> Vec<(Duration, Duration)> {
        results
            .iter()
            .filter_map(|&(now, v)| match v {
                Verdict::Deliver(at) => Some((now, at)),
                Verdict::Drop(_) => None,
            })
            .collect()
    }

    #[test]
    fn perfect_link_delivers_at_once() {
        let mut m = LinkModel::new(Impairment::NONE, 1);
        assert_eq!(m.offer(5 * MS, 1500), Verdict::Deliver(5 * MS));
    }

    #[test]
    fn fixed_delay_is_exact() {
        let mut m = LinkModel::new(Impairment::delay(20 * MS), 1);
        for (now, at) in delivered(&run(&mut m, 1000, 100, MS)) {
            assert_eq!(at - now, 20 * MS);
        }
    }

    #[test]
    fn jitter_mean_is_the_delay_and_stays_in_bounds() {
        let settings = Impairment::delay(20 * MS).with_jitter(5 * MS);
        let mut m = LinkModel::new(settings, 7);
        // Packets 20 ms apart cannot be held back by their predecessor (max swing 10 ms).
        let d = delivered(&run(&mut m, 100_000, 100, 20 * MS));
        let delays: Vec<f64> = d
            .iter()
            .map(|(now, at)| (*at - *now).as_secs_f64())
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((mean - 0.020).abs() < 0.000_05, "mean delay {mean}");
        let min = delays.iter().copied().fold(f64::MAX, f64::min);
        let max = delays.iter().copied().fold(0.0, f64::max);
        assert!((0.015..0.0151).contains(&min), "min {min}");
        assert!(max <= 0.025 && max > 0.0249, "max {max}");
        // Uniform: the standard deviation of U(-j, j) is j / sqrt(3).
        let var = delays.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / delays.len() as f64;
        let expected = 0.005 / 3f64.sqrt();
        assert!(
            (var.sqrt() - expected).abs() < expected * 0.02,
            "sd {}",
            var.sqrt()
        );
    }

    #[test]
    fn jitter_never_reorders() {
        let settings = Impairment::delay(10 * MS).with_jitter(8 * MS);
        let mut m = LinkModel::new(settings, 3);
        let d = delivered(&run(&mut m, 10_000, 100, Duration::from_micros(100)));
        assert!(d.windows(2).all(|w| w[0].1 <= w[1].1));
        // Clamping only ever delays a packet; it never arrives before delay - jitter.
        assert!(d.iter().all(|(now, at)| *at - *now >= 2 * MS));
    }

    #[test]
    fn jitter_larger_than_delay_never_goes_negative() {
        let settings = Impairment::delay(MS).with_jitter(10 * MS);
        let mut m = LinkModel::new(settings, 3);
        for (now, at) in delivered(&run(&mut m, 10_000, 100, 50 * MS)) {
            assert!(at >= now);
        }
    }

    #[test]
    fn loss_fraction_matches() {
        let mut m = LinkModel::new(Impairment::NONE.with_loss(0.1), 42);
        let results = run(&mut m, 200_000, 100, MS);
        let lost = results
            .iter()
            .filter(|(_, v)| *v == Verdict::Drop(DropReason::Loss))
            .count();
        let fraction = lost as f64 / results.len() as f64;
        assert!((fraction - 0.1).abs() < 0.003, "loss {fraction}");
    }

    #[test]
    fn full_and_no_loss_are_absolute() {
        let mut all = LinkModel::new(Impairment::NONE.with_loss(1.0), 1);
        let mut none = LinkModel::new(Impairment::NONE.with_loss(0.0), 1);
        for i in 0..1000 {
            assert_eq!(all.offer(i * MS, 10), Verdict::Drop(DropReason::Loss));
            assert!(matches!(none.offer(i * MS, 10), Verdict::Deliver(_)));
        }
    }

    #[test]
    fn same_seed_same_verdicts() {
        let settings = Impairment::delay(5 * MS).with_jitter(MS).with_loss(0.3);
        let a = run(&mut LinkModel::new(settings, 9), 1000, 100, MS);
        let b = run(&mut LinkModel::new(settings, 9), 1000, 100, MS);
        assert_eq!(a, b);
    }

    #[test]
    fn serialization_time_is_len_times_8_over_rate() {
        assert_eq!(serialization_time(1500, 12_000_000), MS);
        assert_eq!(serialization_time(125, 1_000_000), MS);
    }

    #[test]
    fn under_rate_adds_only_serialization_and_delay() {
        // 12 Mbit/s: a 1500-byte packet takes 1 ms; one every 2 ms never queues.
        let settings = Impairment::delay(10 * MS).with_rate(12_000_000);
        let mut m = LinkModel::new(settings, 1);
        let results = run(&mut m, 1000, 1500, 2 * MS);
        for (now, at) in delivered(&results) {
            assert_eq!(at - now, 11 * MS);
        }
        assert_eq!(delivered(&results).len(), 1000);
    }

    #[test]
    fn overload_throughput_equals_rate_and_queue_is_bounded() {
        let rate = 20_000_000;
        let limit = 60_000;
        let settings = Impairment::delay(5 * MS)
            .with_rate(rate)
            .with_queue_limit(limit);
        let mut m = LinkModel::new(settings, 1);
        // Offer 40 Mbit/s: a 1500-byte packet every 300 us, for 10 s.
        let gap = Duration::from_micros(300);
        let results = run(&mut m, 33_334, 1500, gap);
        let d = delivered(&results);
        let first = d[0].1;
        let last = d[d.len() - 1].1;
        // Everything delivered after the first packet was serialized back to back.
        let bits = (d.len() - 1) as f64 * 1500.0 * 8.0;
        let throughput = bits / (last - first).as_secs_f64();
        assert!(
            (throughput / rate as f64 - 1.0).abs() < 0.001,
            "throughput {throughput}"
        );
        let dropped = results.len() - d.len();
        let expected_drop = 0.5 * results.len() as f64;
        assert!(
            (dropped as f64 - expected_drop).abs() < 0.01 * expected_drop,
            "dropped {dropped}"
        );
        // Queueing delay never exceeds what the queue limit allows.
        let worst = 5 * MS + serialization_time(limit as usize + 1500, rate);
        assert!(d.iter().all(|(now, at)| *at - *now <= worst));
    }

    #[test]
    fn burst_fills_queue_to_the_byte_limit() {
        let settings = Impairment::NONE
            .with_rate(8_000_000)
            .with_queue_limit(10_000);
        let mut m = LinkModel::new(settings, 1);
        let verdicts: Vec<Verdict> = (0..20).map(|_| m.offer(Duration::ZERO, 1000)).collect();
        // The first packet goes to the serializer; it and 9 more make 10 000 queued bytes.
        let accepted = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Deliver(_)))
            .count();
        assert_eq!(accepted, 10);
        assert_eq!(m.queued_bytes(Duration::ZERO), 10_000);
        // 1 ms later one packet has been serialized, so exactly one more fits.
        assert!(matches!(m.offer(MS, 1000), Verdict::Deliver(_)));
        assert_eq!(m.offer(MS, 1000), Verdict::Drop(DropReason::QueueFull));
    }

    #[test]
    fn idle_link_takes_a_packet_larger_than_the_queue() {
        let settings = Impairment::NONE.with_rate(8_000_000).with_queue_limit(100);
        let mut m = LinkModel::new(settings, 1);
        assert_eq!(
            m.offer(Duration::ZERO, 1500),
            Verdict::Deliver(Duration::from_micros(1500))
        );
        assert_eq!(
            m.offer(Duration::ZERO, 1500),
            Verdict::Drop(DropReason::QueueFull)
        );
    }

    #[test]
    fn changing_settings_keeps_order() {
        let mut m = LinkModel::new(Impairment::delay(50 * MS), 1);
        let Verdict::Deliver(first) = m.offer(Duration::ZERO, 100) else {
            panic!("dropped")
        };
        m.set_settings(Impairment::NONE);
        let Verdict::Deliver(second) = m.offer(MS, 100) else {
            panic!("dropped")
        };
        assert_eq!(first, 50 * MS);
        assert_eq!(second, 50 * MS);
        assert_eq!(m.offer(60 * MS, 100), Verdict::Deliver(60 * MS));
    }
}
