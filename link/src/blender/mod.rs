//! The blender: decides whose bytes enter a link next when the link is busy.
//!
//! Every channel asks for a turn before handing one sub-packet to QUIC. Only a few turns are
//! out at once, and the link's send window is kept near its congestion window (see
//! `link`), so a send blocks while the link is full; turns are then handed out in the order
//! of [`schedule::BlendSchedule`], which makes the bytes on the wire follow the class weights.
//! A channel whose send stalls for its own reason (its reader is slow) gives its turn back
//! after a short wait, so one slow client never holds up the link.

pub mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use self::schedule::{BlendSchedule, Turn};
pub use self::schedule::{BlendSettings, CLASSES, DEFAULT_WEIGHTS, WeightsError};

/// How many turns may be out at once. One: then the order in which bytes enter QUIC is
/// exactly the schedule's, and a class whose only channel is busy sending cannot lose its
/// share to the classes waiting beside it. A send blocked on its own stream gives its turn
/// back after a while (see `channel`), so one slow reader cannot hold the link.
pub(crate) const TURNS_OUT: usize = 1;

/// The blender of one link.
#[derive(Debug)]
pub struct Blender {
    state: Mutex<GateState>,
    next_ticket: AtomicU64,
    sent: [AtomicU64; CLASSES],
}

#[derive(Debug)]
struct GateState {
    schedule: BlendSchedule,
    out: usize,
    waiters: HashMap<u64, oneshot::Sender<()>>,
}

/// Permission to send one piece; dropping it gives the turn back.
#[derive(Debug)]
#[must_use = "the turn lasts as long as the permit"]
pub struct Permit {
    blender: Option<Arc<Blender>>,
    bytes: usize,
}

impl Permit {
    /// Bytes this turn may send (at most one sub-packet).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives the turn back before the send finishes (the send is stalled on its own stream).
    pub fn release(&mut self) {
        if let Some(blender) = self.blender.take() {
            blender.finish_turn();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.release();
    }
}

impl Blender {
    /// A blender with the given weights.
    pub fn new(settings: BlendSettings) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(GateState {
                schedule: BlendSchedule::new(settings),
                out: 0,
                waiters: HashMap::new(),
            }),
            next_ticket: AtomicU64::new(1),
            sent: Default::default(),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> BlendSettings {
        self.lock().schedule.settings()
    }

    /// Bytes let through per class since the link opened.
    pub fn sent_bytes(&self) -> [u64; CLASSES] {
        std::array::from_fn(|class| self.sent[class].load(Ordering::Relaxed))
    }

    /// Bytes waiting for a turn per class (the patent's nBytes).
    pub fn queued_bytes(&self) -> [usize; CLASSES] {
        self.lock().schedule.queued_bytes()
    }

    /// Channels waiting for a turn per class (the patent's nReady).
    pub fn ready(&self) -> [usize; CLASSES] {
        self.lock().schedule.ready()
    }

    /// Waits for a turn to send up to `wanted` bytes of a class-`class` channel.
    pub async fn turn(self: &Arc<Self>, class: u8, wanted: usize) -> Permit {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (bytes, receiver) = {
            let mut state = self.lock();
            let bytes = wanted.clamp(1, state.schedule.settings().sub_packet());
            // Fast path: an idle link needs no scheduling.
            if state.schedule.is_empty() && state.out < TURNS_OUT {
                state.out += 1;
                drop(state);
                return self.granted(class, bytes);
            }
            let (sender, receiver) = oneshot::channel();
            state.waiters.insert(ticket, sender);
            state.schedule.push(Turn {
                ticket,
                class,
                bytes,
            });
            self.dispatch(&mut state);
            (bytes, receiver)
        };
        let mut cancel = CancelOnDrop {
            blender: self,
            ticket: Some(ticket),
        };
        // The sender is only dropped after a send, or when the blender itself goes away.
        let _ = receiver.await;
        cancel.ticket = None;
        self.granted(class, bytes)
    }

    fn granted(self: &Arc<Self>, class: u8, bytes: usize) -> Permit {
        let class = usize::from(class).min(CLASSES - 1);
        self.sent[class].fetch_add(bytes as u64, Ordering::Relaxed);
        Permit {
            blender: Some(self.clone()),
            bytes,
        }
    }

    fn finish_turn(&self) {
        let mut state = self.lock();
        state.out = state.out.saturating_sub(1);
        self.dispatch(&mut state);
    }

    fn dispatch(&self, state: &mut GateState) {
        while state.out < TURNS_OUT {
            let Some(turn) = state.schedule.next_turn() else {
                return;
            };
            if let Some(waiter) = state.waiters.remove(&turn.ticket)
                && waiter.send(()).is_ok()
            {
                state.out += 1;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state stays consistent across a panic in a holder (no invariant spans an
        // await), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Takes a waiting turn out of the schedule when its owner stops waiting.
struct CancelOnDrop<'a> {
    blender: &'a Blender,
    ticket: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            let mut state = self.blender.lock();
            state.waiters.remove(&ticket);
            if !state.schedule.cancel(ticket) {
                // It was granted as we gave up: the turn is ours to give back.
                state.out = state.out.saturating_sub(1);
                self.blender.dispatch(&mut state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_idle_link_grants_at_once() {
        let blender = Blender::new(BlendSettings::default());
        let permit = blender.turn(3, 100_000).await;
        assert_eq!(permit.bytes(), 16 * 1024);
        assert_eq!(blender.sent_bytes()[3], 16 * 1024);
    }

    #[tokio::test]
    async fn waiting_turns_follow_the_schedule_and_cancellation_frees_the_turn() {
        let blender = Blender::new(BlendSettings::default());
        let first = blender.turn(4, 1000).await;
        // The turn is out: the next waiter must wait.
        let waiting = tokio::time::timeout(Duration::from_millis(20), blender.turn(0, 1000)).await;
        assert!(
            waiting.is_err(),
            "a second turn was granted while one was out"
        );
        assert_eq!(
            blender.ready(),
            [0, 0, 0, 0, 0],
            "a cancelled wait left a turn behind"
        );
        let blender2 = blender.clone();
        let urgent = tokio::spawn(async move { blender2.turn(0, 1000).await.bytes() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        assert_eq!(urgent.await.expect("joined"), 1000);
    }
}
