//! A bottleneck simulated packet by packet, for the controllers' tests: one FIFO drop-tail
//! queue served at a fixed packet rate, a fixed propagation delay, optional random loss after
//! the queue, and senders that send whenever their window allows. Time is synthetic (slots of
//! one packet's service time from a fixed `Instant`); the randomness is seeded.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use super::DEFAULT_INITIAL_WINDOW;
use super::model::LinkModel;
use super::multcp::{MulTcpState, MulTcpWindow};

/// Segment size in the simulations.
pub const MSS: u64 = 1200;

/// A congestion controller as the simulation drives it.
pub trait Sender {
    /// Bytes that may be in flight now.
    fn window(&self) -> u64;
    /// One packet sent at `sent` was acked at `now`.
    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64);
    /// The acks of this instant are in.
    fn on_end_acks(&mut self, now: Instant, in_flight: u64);
    /// One packet sent at `sent` was found lost at `now`.
    fn on_loss(&mut self, now: Instant, sent: Instant, bytes: u64);
    /// The sender now stands for `flows` flows.
    fn set_flows(&mut self, flows: u64);
    /// The sender's N.
    fn flows(&self) -> u64;
    /// Where a model-based sender's state machine is, for failure messages.
    fn describe(&self) -> String {
        String::new()
    }
    /// The link's state machine, when the sender is one.
    fn link(&self) -> Option<&LinkModel> {
        None
    }
}

/// The link's model with its N, which a test may change while it runs.
pub struct Link {
    pub model: LinkModel,
    pub flows: u64,
}

impl Link {
    pub fn new(start: Instant, flows: u64) -> Self {
        Self {
            model: LinkModel::new(start, DEFAULT_INITIAL_WINDOW, MSS, flows),
            flows,
        }
    }
}

impl Sender for Link {
    fn window(&self) -> u64 {
        self.model.window(self.flows)
    }
    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64) {
        self.model.on_ack(now, sent, bytes, false, self.flows);
    }
    fn on_end_acks(&mut self, now: Instant, in_flight: u64) {
        self.model.on_end_acks(now, in_flight, self.flows);
    }
    fn on_loss(&mut self, now: Instant, sent: Instant, bytes: u64) {
        self.model
            .on_congestion_event(now, sent, false, bytes, self.flows);
    }
    fn set_flows(&mut self, flows: u64) {
        self.flows = flows;
    }
    fn flows(&self) -> u64 {
        self.flows
    }
    fn link(&self) -> Option<&LinkModel> {
        Some(&self.model)
    }
    fn describe(&self) -> String {
        format!(
            "{:?} bw {} B/s min_rtt {:?} inflight_hi {:?} random_loss {:.4}",
            self.model.state(),
            self.model.bandwidth(),
            self.model.min_rtt(),
            self.model.inflight_hi(),
            self.model.random_loss()
        )
    }
}

/// A loss-based flow of N virtual Reno flows (N = 1: NewReno).
pub struct Reno {
    pub state: MulTcpState,
    pub flows: u64,
}

impl Reno {
    pub fn new(flows: u64) -> Self {
        Self {
            state: MulTcpState::new(MulTcpWindow::new(DEFAULT_INITIAL_WINDOW, MSS, flows)),
            flows,
        }
    }
}

impl Sender for Reno {
    fn window(&self) -> u64 {
        // No flow: the competitor has stopped.
        if self.flows == 0 {
            0
        } else {
            self.state.window(self.flows)
        }
    }
    fn on_ack(&mut self, _now: Instant, sent: Instant, bytes: u64) {
        self.state.acked(sent, bytes, false, self.flows);
    }
    fn on_end_acks(&mut self, _now: Instant, _in_flight: u64) {}
    fn on_loss(&mut self, now: Instant, sent: Instant, bytes: u64) {
        self.state
            .congestion_event(now, sent, false, bytes, self.flows);
    }
    fn set_flows(&mut self, flows: u64) {
        self.flows = flows;
    }
    fn flows(&self) -> u64 {
        self.flows
    }
}

/// A sender that ignores loss and keeps a fixed window of `per_flow` bytes for each of its
/// `flows` (none until a test sets them): the crudest flow that does not back off on loss,
/// as BBRv1 keeps twice its BDP in flight whatever it loses.
pub struct Fixed {
    pub per_flow: u64,
    pub flows: u64,
}

impl Sender for Fixed {
    fn window(&self) -> u64 {
        self.per_flow * self.flows
    }
    fn on_ack(&mut self, _now: Instant, _sent: Instant, _bytes: u64) {}
    fn on_end_acks(&mut self, _now: Instant, _in_flight: u64) {}
    fn on_loss(&mut self, _now: Instant, _sent: Instant, _bytes: u64) {}
    fn set_flows(&mut self, flows: u64) {
        self.flows = flows;
    }
    fn flows(&self) -> u64 {
        self.flows
    }
}

/// The bottleneck.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    /// Packets served per second.
    pub rate_pps: u64,
    /// Round-trip propagation delay.
    pub base_rtt: Duration,
    /// Drop-tail queue, packets.
    pub buffer: usize,
    /// Chance that a served packet is lost all the same (not congestion).
    pub random_loss: f64,
}

impl Path {
    /// The bandwidth-delay product in packets.
    pub fn bdp_packets(&self) -> u64 {
        (self.rate_pps as f64 * self.base_rtt.as_secs_f64()) as u64
    }
}

/// splitmix64: a seeded, dependency-free source of chances.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An ack or loss reaching its sender: (due ns, order, flow, lost, sent ns).
type Event = Reverse<(u64, u64, usize, bool, u64)>;

/// The simulation: senders, the queue, and what reaches the senders when.
pub struct Sim {
    path: Path,
    pub start: Instant,
    slot_ns: u64,
    slot: u64,
    queue: VecDeque<(usize, u64)>,
    events: BinaryHeap<Event>,
    order: u64,
    rng: Rng,
    pub senders: Vec<Box<dyn Sender>>,
    in_flight: Vec<u64>,
    /// Bytes each sender got delivered.
    pub delivered: Vec<u64>,
    /// Sum of the queue's length over slots, for its mean.
    pub queue_slots: u64,
}

impl Sim {
    pub fn new(path: Path, start: Instant, senders: Vec<Box<dyn Sender>>, seed: u64) -> Self {
        let count = senders.len();
        Self {
            path,
            start,
            slot_ns: 1_000_000_000 / path.rate_pps.max(1),
            slot: 0,
            queue: VecDeque::new(),
            events: BinaryHeap::new(),
            order: 0,
            rng: Rng(seed),
            senders,
            in_flight: vec![0; count],
            delivered: vec![0; count],
            queue_slots: 0,
        }
    }

    /// The simulated time now.
    pub fn now(&self) -> Instant {
        self.start + Duration::from_nanos(self.slot * self.slot_ns)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.slot * self.slot_ns)
    }

    /// Runs until `until` after the start, calling `each` after every slot.
    pub fn run_until(&mut self, until: Duration, mut each: impl FnMut(&mut Sim)) {
        while self.elapsed() < until {
            self.step();
            each(self);
        }
    }

    fn schedule(&mut self, due_ns: u64, flow: usize, lost: bool, sent_ns: u64) {
        self.order += 1;
        self.events
            .push(Reverse((due_ns, self.order, flow, lost, sent_ns)));
    }

    fn at(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }

    /// One packet's service time: acks and losses due, sends, one packet served.
    pub fn step(&mut self) {
        let now_ns = self.slot * self.slot_ns;
        let now = self.at(now_ns);
        let mut touched = vec![false; self.senders.len()];
        while let Some(Reverse((due, _, flow, lost, sent_ns))) = self.events.peek().copied() {
            if due > now_ns {
                break;
            }
            self.events.pop();
            self.in_flight[flow] -= MSS;
            let sent = self.at(sent_ns);
            if lost {
                self.senders[flow].on_loss(now, sent, MSS);
            } else {
                self.delivered[flow] += MSS;
                self.senders[flow].on_ack(now, sent, MSS);
            }
            touched[flow] = true;
        }
        for (flow, touched) in touched.iter().enumerate() {
            if *touched {
                let in_flight = self.in_flight[flow];
                self.senders[flow].on_end_acks(now, in_flight);
            }
        }
        let base_ns = self.path.base_rtt.as_nanos() as u64;
        let count = self.senders.len();
        // Take turns starting with a different sender each slot, so none is always first
        // at a nearly full queue.
        for turn in 0..count {
            let flow = (turn + self.slot as usize) % count;
            while self.in_flight[flow] + MSS <= self.senders[flow].window() {
                self.in_flight[flow] += MSS;
                if self.queue.len() < self.path.buffer {
                    self.queue.push_back((flow, now_ns));
                } else {
                    // Found lost once the packets behind it are acked, three later.
                    let due = now_ns + (self.queue.len() as u64 + 3) * self.slot_ns + base_ns;
                    self.schedule(due, flow, true, now_ns);
                }
            }
        }
        if let Some((flow, sent_ns)) = self.queue.pop_front() {
            let lost = self.rng.unit() < self.path.random_loss;
            let due = now_ns + base_ns + if lost { 3 * self.slot_ns } else { 0 };
            self.schedule(due, flow, lost, sent_ns);
        }
        self.queue_slots += self.queue.len() as u64;
        self.slot += 1;
    }
}
