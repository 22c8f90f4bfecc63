//! A one-shot timer with microsecond precision for tokio, built on Linux's timerfd.
//!
//! tokio's own timer ticks every millisecond and rounds deadlines up, which would add about a
//! millisecond of error to every emulated delay; a timerfd is a high-resolution kernel timer
//! that the runtime waits on like any other file descriptor.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Lets tokio's `AsyncFd` watch the timerfd (it wants `AsRawFd`, nix gives `AsFd`).
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A re-armable one-shot timer; must be created inside a tokio runtime.
pub struct PreciseTimer {
    fd: AsyncFd<Fd>,
}

impl PreciseTimer {
    /// A disarmed timer on the monotonic clock (the clock behind [`Instant`]).
    ///
    /// # Errors
    /// If the timerfd cannot be created or registered with the runtime.
    pub fn new() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // `AsyncFd::new` is deprecated because a `T` could hand out a descriptor it does not own
        // and close it early; `Fd` owns its timerfd for as long as the `AsyncFd` lives, so the
        // safe constructor is sound here and keeps this crate free of `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::new(Fd(fd))?;
        Ok(Self { fd })
    }

    /// Arms the timer to fire at `deadline`, replacing any earlier setting.
    ///
    /// A deadline already past fires at once.
    ///
    /// # Errors
    /// If the kernel refuses the setting.
    pub fn arm(&self, deadline: Instant) -> io::Result<()> {
        // A zero expiration would disarm the timer, so fire a nanosecond from now instead.
        let after = deadline
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_nanos(1));
        self.fd.get_ref().0.set(
            Expiration::OneShot(TimeSpec::from_duration(after)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(())
    }

    /// Waits until the armed timer fires (forever if it is not armed). Cancel-safe.
    ///
    /// # Errors
    /// If reading the timerfd fails.
    pub async fn fired(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn fires_close_to_the_deadline() {
        let timer = PreciseTimer::new().expect("timerfd");
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let deadline = Instant::now() + Duration::from_micros(1500);
            timer.arm(deadline).expect("arm");
            timer.fired().await.expect("fired");
            let now = Instant::now();
            assert!(now >= deadline);
            worst = worst.max(now - deadline);
        }
        // tokio's timer would be up to 1 ms late; allow scheduling noise on a busy machine.
        assert!(worst < Duration::from_millis(5), "worst lateness {worst:?}");
    }

    #[tokio::test]
    async fn rearming_replaces_the_deadline_and_past_deadlines_fire() {
        let timer = PreciseTimer::new().expect("timerfd");
        timer
            .arm(Instant::now() + Duration::from_secs(60))
            .expect("arm");
        let start = Instant::now();
        timer.arm(start).expect("re-arm");
        timer.fired().await.expect("fired");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
