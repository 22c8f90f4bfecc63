//! The I/O side: moves packets between TUN devices at the times the model decides.
//!
//! Each direction of each link is one task: it reads packets from the source TUN, asks its
//! [`LinkModel`] what to do, and keeps accepted packets in a FIFO (the model never reorders,
//! so delivery times are already sorted) that one precise timer drains into the destination TUN.
//! All tasks of a lab share one thread running a single-threaded tokio runtime.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tun_rs::{AsyncDevice, SyncDevice};

use crate::error::Error;
use crate::impairment::Impairment;
use crate::model::{DropReason, LinkModel, Verdict};
use crate::timer::PreciseTimer;

/// Largest packet read from a TUN (its MTU is 1500; this leaves room for a larger one).
const MAX_PACKET: usize = 65_536;
/// Packets read in one go before the task yields to the timer.
const READ_BATCH: usize = 64;
/// Packets due this soon are released with the ones due now, saving a timer round trip.
const RELEASE_SLACK: Duration = Duration::from_micros(20);
/// Timer slack of the forwarder thread: how late the kernel may fire its timers (default 50 µs).
const THREAD_TIMER_SLACK_NS: u64 = 10_000;

/// Counters of one direction of a link, updated by the forwarder.
#[derive(Debug, Default)]
pub struct Counters {
    forwarded_packets: AtomicU64,
    forwarded_bytes: AtomicU64,
    lost: AtomicU64,
    queue_full: AtomicU64,
    write_errors: AtomicU64,
}

/// A snapshot of one direction's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    /// Packets written to the far end.
    pub forwarded_packets: u64,
    /// Bytes (IP packets) written to the far end.
    pub forwarded_bytes: u64,
    /// Packets dropped by random loss.
    pub lost: u64,
    /// Packets dropped because the rate limiter's queue was full.
    pub queue_full: u64,
    /// Packets the far end's TUN refused.
    pub write_errors: u64,
}

impl Counters {
    /// The current values.
    pub fn snapshot(&self) -> LinkStats {
        LinkStats {
            forwarded_packets: self.forwarded_packets.load(Ordering::Relaxed),
            forwarded_bytes: self.forwarded_bytes.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One direction of one link, as handed to the forwarder thread.
pub struct DirectionPlan {
    /// Index of the source TUN in the device list.
    pub src: usize,
    /// Index of the destination TUN in the device list.
    pub dst: usize,
    /// Live settings; the task picks up changes before the next packet.
    pub settings: watch::Receiver<Impairment>,
    /// Where the task counts what it did.
    pub counters: Arc<Counters>,
    /// Seed of the direction's loss and jitter RNG.
    pub seed: u64,
}

/// The running forwarder thread of one lab; stops it and closes the TUNs on drop.
pub struct Forwarder {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts a thread forwarding between `devices` as `directions` say.
    ///
    /// Returns once every device is registered with the thread's runtime.
    ///
    /// # Errors
    /// [`Error::Io`] if the thread, its runtime or a device registration fails.
    pub fn start(
        name: String,
        devices: Vec<SyncDevice>,
        directions: Vec<DirectionPlan>,
    ) -> Result<Self, Error> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(devices, directions, &ready_tx, shutdown_rx))
            .map_err(|e| Error::io("spawn the forwarder thread", e))?;
        let started = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("forwarder thread exited during start")));
        let forwarder = Self {
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        };
        started.map_err(|e| Error::io("start the forwarder", e))?;
        Ok(forwarder)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    devices: Vec<SyncDevice>,
    directions: Vec<DirectionPlan>,
    ready: &std::sync::mpsc::Sender<io::Result<()>>,
    shutdown: oneshot::Receiver<()>,
) {
    // Best effort: a coarser slack only makes delays a little less exact.
    let _ = nix::sys::prctl::set_timerslack(THREAD_TIMER_SLACK_NS);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let devices: io::Result<Vec<Arc<AsyncDevice>>> = devices
            .into_iter()
            .map(|d| AsyncDevice::new(d).map(Arc::new))
            .collect();
        let devices = match devices {
            Ok(d) => d,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let epoch = Instant::now();
        for dir in directions {
            let (src, dst) = (devices[dir.src].clone(), devices[dir.dst].clone());
            tokio::spawn(pump(src, dst, dir, epoch));
        }
        let _ = ready.send(Ok(()));
        // Either a shutdown message or the lab being dropped ends the forwarder.
        let _ = shutdown.await;
    });
    // Dropping the runtime cancels the tasks and closes the TUNs, which deletes them.
}

/// Forwards one direction until the source TUN fails (it is closed at shutdown).
async fn pump(
    src: Arc<AsyncDevice>,
    dst: Arc<AsyncDevice>,
    mut dir: DirectionPlan,
    epoch: Instant,
) {
    let timer = match PreciseTimer::new() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "no timer; direction stops");
            return;
        }
    };
    let mut model = LinkModel::new(*dir.settings.borrow_and_update(), dir.seed);
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; MAX_PACKET];
    let mut armed_for = None;
    loop {
        if let Some(&(due, _)) = queue.front()
            && armed_for != Some(due)
        {
            if let Err(e) = timer.arm(due) {
                tracing::error!(error = %e, "cannot arm the timer; direction stops");
                return;
            }
            armed_for = Some(due);
        }
        tokio::select! {
            biased;
            fired = timer.fired(), if armed_for.is_some() => {
                if let Err(e) = fired {
                    tracing::error!(error = %e, "timer failed; direction stops");
                    return;
                }
                armed_for = None;
                release_due(&mut queue, &dst, &dir.counters);
            }
            first = src.recv(&mut buf) => {
                let len = match first {
                    Ok(len) => len,
                    Err(e) => {
                        tracing::debug!(error = %e, "TUN read failed; direction stops");
                        return;
                    }
                };
                if dir.settings.has_changed().unwrap_or(false) {
                    model.set_settings(*dir.settings.borrow_and_update());
                }
                admit(&mut model, &mut queue, &buf[..len], epoch, &dir.counters);
                for _ in 1..READ_BATCH {
                    match src.try_recv(&mut buf) {
                        Ok(len) => admit(&mut model, &mut queue, &buf[..len], epoch, &dir.counters),
                        Err(_) => break,
                    }
                }
                // Packets without delay leave at once instead of waiting for the timer.
                release_due(&mut queue, &dst, &dir.counters);
            }
        }
    }
}

fn admit(
    model: &mut LinkModel,
    queue: &mut VecDeque<(Instant, Vec<u8>)>,
    packet: &[u8],
    epoch: Instant,
    counters: &Counters,
) {
    match model.offer(epoch.elapsed(), packet.len()) {
        Verdict::Deliver(at) => queue.push_back((epoch + at, packet.to_vec())),
        Verdict::Drop(DropReason::Loss) => Counters::add(&counters.lost, 1),
        Verdict::Drop(DropReason::QueueFull) => Counters::add(&counters.queue_full, 1),
    }
}

fn release_due(queue: &mut VecDeque<(Instant, Vec<u8>)>, dst: &AsyncDevice, counters: &Counters) {
    let horizon = Instant::now() + RELEASE_SLACK;
    while let Some((due, _)) = queue.front() {
        if *due > horizon {
            break;
        }
        let Some((_, packet)) = queue.pop_front() else {
            break;
        };
        match dst.try_send(&packet) {
            Ok(_) => {
                Counters::add(&counters.forwarded_packets, 1);
                Counters::add(&counters.forwarded_bytes, packet.len() as u64);
            }
            Err(e) => {
                tracing::debug!(error = %e, "TUN write failed; packet dropped");
                Counters::add(&counters.write_errors, 1);
            }
        }
    }
}
