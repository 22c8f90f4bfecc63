//! The blender's schedule as a pure function of what is waiting: weighted fair queueing over
//! the five priority classes (start-time fair queueing on a virtual clock), first-come order
//! (so round-robin) among the channels of a class.
//!
//! Each class carries a virtual finish time that advances by `bytes / weight` with every turn
//! it gets; the waiting class whose next turn would start earliest goes next. A busy link's
//! bytes therefore leave in the proportions of the weights — also when a class's only channel
//! is momentarily busy sending and asks again a moment later, which plain deficit round-robin
//! mistakes for idleness. A class that was idle restarts at the current virtual time, so it
//! banks no credit and cannot burst; every waiting class's start time is eventually the
//! earliest, so none starves.

use std::collections::VecDeque;

/// The number of priority classes.
pub const CLASSES: usize = 5;

/// The patent's default blend: each class twice as urgent as the next.
pub const DEFAULT_WEIGHTS: [u32; CLASSES] = [16, 8, 4, 2, 1];

/// The default sub-packet: the most bytes one channel sends in one turn.
pub const DEFAULT_SUB_PACKET: usize = 16 * 1024;

/// Why blender settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    /// A class weight is zero, which would starve it.
    #[error("class {0} has weight 0; every class needs a positive weight so none starves")]
    Zero(usize),
    /// The sub-packet size is outside 1 KiB..=1 MiB.
    #[error("sub-packet of {0} bytes is outside 1024..=1048576")]
    SubPacket(usize),
}

/// Validated class weights and sub-packet size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlendSettings {
    weights: [u32; CLASSES],
    sub_packet: usize,
}

impl Default for BlendSettings {
    fn default() -> Self {
        Self {
            weights: DEFAULT_WEIGHTS,
            sub_packet: DEFAULT_SUB_PACKET,
        }
    }
}

impl BlendSettings {
    /// Checks and builds settings.
    pub fn new(weights: [u32; CLASSES], sub_packet: usize) -> Result<Self, WeightsError> {
        if let Some(class) = weights.iter().position(|w| *w == 0) {
            return Err(WeightsError::Zero(class));
        }
        if !(1024..=1024 * 1024).contains(&sub_packet) {
            return Err(WeightsError::SubPacket(sub_packet));
        }
        Ok(Self {
            weights,
            sub_packet,
        })
    }

    /// The class weights, class 0 first.
    pub fn weights(&self) -> [u32; CLASSES] {
        self.weights
    }

    /// The most bytes one turn sends.
    pub fn sub_packet(&self) -> usize {
        self.sub_packet
    }

    /// Each class's share of a link on which every class is waiting.
    pub fn shares(&self) -> [f64; CLASSES] {
        let total: f64 = self.weights.iter().map(|w| f64::from(*w)).sum();
        self.weights.map(|w| f64::from(w) / total)
    }
}

/// One waiting send: a channel's next piece of at most one sub-packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// Who is waiting (the caller's identifier).
    pub ticket: u64,
    /// The channel's class.
    pub class: u8,
    /// Bytes to send, at most one sub-packet.
    pub bytes: usize,
}

/// Deficit round-robin state over the waiting sends.
#[derive(Debug, Clone)]
pub struct BlendSchedule {
    settings: BlendSettings,
    waiting: [VecDeque<Turn>; CLASSES],
    /// Virtual time at which each class's last turn finished.
    finish: [u128; CLASSES],
    /// Virtual start time of the turn granted last.
    now: u128,
}

/// Virtual time units per byte at weight 1: large enough that `bytes / weight` stays exact
/// for any weight a person would give.
const VIRTUAL_SCALE: u128 = 1 << 20;

impl BlendSchedule {
    /// An empty schedule.
    pub fn new(settings: BlendSettings) -> Self {
        Self {
            settings,
            waiting: Default::default(),
            finish: [0; CLASSES],
            now: 0,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> BlendSettings {
        self.settings
    }

    /// Queues a send; pieces larger than a sub-packet are clipped to one (the caller sends
    /// the rest in later turns). Classes above 4 count as 4.
    pub fn push(&mut self, mut turn: Turn) {
        turn.bytes = turn.bytes.clamp(1, self.settings.sub_packet);
        turn.class = turn.class.min(CLASSES as u8 - 1);
        self.waiting[usize::from(turn.class)].push_back(turn);
    }

    /// How many sends wait in each class (the patent's nReady).
    pub fn ready(&self) -> [usize; CLASSES] {
        std::array::from_fn(|class| self.waiting[class].len())
    }

    /// Bytes waiting in each class (the patent's nBytes).
    pub fn queued_bytes(&self) -> [usize; CLASSES] {
        std::array::from_fn(|class| self.waiting[class].iter().map(|t| t.bytes).sum())
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.iter().all(VecDeque::is_empty)
    }

    /// Removes a waiting send whose owner gave up; true when it was there.
    pub fn cancel(&mut self, ticket: u64) -> bool {
        for queue in &mut self.waiting {
            if let Some(at) = queue.iter().position(|t| t.ticket == ticket) {
                queue.remove(at);
                return true;
            }
        }
        false
    }

    /// The next send to let onto the link, or `None` when nothing waits.
    pub fn next_turn(&mut self) -> Option<Turn> {
        let (class, start) = (0..CLASSES)
            .filter(|&class| !self.waiting[class].is_empty())
            .map(|class| (class, self.finish[class].max(self.now)))
            // Earliest start first; on a tie the more urgent class.
            .min_by_key(|&(class, start)| (start, class))?;
        let turn = self.waiting[class].pop_front()?;
        let weight = u128::from(self.settings.weights[class].max(1));
        self.now = start;
        self.finish[class] = start + turn.bytes as u128 * VIRTUAL_SCALE / weight;
        Some(turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps every class backlogged with `channels` channels each and returns bytes sent per
    /// class over `turns` grants.
    fn saturated(settings: BlendSettings, channels: u64, piece: usize, turns: usize) -> [u64; 5] {
        let mut schedule = BlendSchedule::new(settings);
        let mut ticket = 0;
        for class in 0..5u8 {
            for _ in 0..channels {
                ticket += 1;
                schedule.push(Turn {
                    ticket,
                    class,
                    bytes: piece,
                });
            }
        }
        let mut sent = [0u64; 5];
        for _ in 0..turns {
            let turn = schedule.next_turn().expect("backlogged");
            sent[usize::from(turn.class)] += turn.bytes as u64;
            // The channel has more to send: it queues again behind its class-mates.
            schedule.push(turn);
        }
        sent
    }

    fn assert_shares(sent: [u64; 5], settings: BlendSettings, tolerance: f64) {
        let total: u64 = sent.iter().sum();
        for (class, share) in settings.shares().iter().enumerate() {
            let measured = sent[class] as f64 / total as f64;
            assert!(
                (measured - share).abs() <= share * tolerance,
                "class {class}: measured {measured:.4}, want {share:.4} (sent {sent:?})"
            );
        }
    }

    #[test]
    fn a_saturated_link_blends_in_the_default_proportions() {
        let settings = BlendSettings::default();
        assert_shares(saturated(settings, 3, 16 * 1024, 31 * 40), settings, 0.01);
    }

    #[test]
    fn proportions_hold_for_pieces_smaller_than_a_sub_packet() {
        let settings = BlendSettings::default();
        assert_shares(saturated(settings, 2, 1500, 31 * 400), settings, 0.02);
    }

    #[test]
    fn custom_weights_are_followed() {
        let settings = BlendSettings::new([1, 1, 1, 1, 4], 4096).expect("valid");
        assert_shares(saturated(settings, 1, 4096, 8 * 50), settings, 0.01);
    }

    /// One channel per class, the blender's turns out at once, each channel asking again only
    /// when its turn is done — how the link really runs. A class is then often empty for a
    /// moment.
    #[test]
    fn shares_hold_when_each_class_has_one_channel_in_service_at_a_time() {
        let settings = BlendSettings::default();
        let mut schedule = BlendSchedule::new(settings);
        for class in 0..5u8 {
            schedule.push(Turn {
                ticket: u64::from(class),
                class,
                bytes: 16 * 1024,
            });
        }
        let mut in_service = std::collections::VecDeque::new();
        let mut sent = [0u64; 5];
        for _ in 0..10_000 {
            while in_service.len() < super::super::TURNS_OUT {
                let turn = schedule.next_turn().expect("waiting");
                in_service.push_back(turn);
            }
            // The oldest send completes; its channel asks for its next turn.
            let done = in_service.pop_front().expect("in service");
            sent[usize::from(done.class)] += done.bytes as u64;
            schedule.push(done);
        }
        assert_shares(sent, settings, 0.01);
    }

    #[test]
    fn channels_of_one_class_take_turns() {
        let mut schedule = BlendSchedule::new(BlendSettings::default());
        for ticket in 1..=3 {
            schedule.push(Turn {
                ticket,
                class: 2,
                bytes: 16 * 1024,
            });
        }
        let mut order = Vec::new();
        for _ in 0..6 {
            let turn = schedule.next_turn().expect("waiting");
            order.push(turn.ticket);
            schedule.push(turn);
        }
        assert_eq!(order, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn the_lowest_class_is_served_every_round() {
        let mut schedule = BlendSchedule::new(BlendSettings::default());
        schedule.push(Turn {
            ticket: 1,
            class: 0,
            bytes: 16 * 1024,
        });
        schedule.push(Turn {
            ticket: 2,
            class: 4,
            bytes: 16 * 1024,
        });
        let mut since_class4 = 0;
        for _ in 0..1000 {
            let turn = schedule.next_turn().expect("waiting");
            if turn.class == 4 {
                since_class4 = 0;
            } else {
                since_class4 += 1;
                assert!(since_class4 <= 16, "class 4 starved");
            }
            schedule.push(turn);
        }
    }

    #[test]
    fn a_lone_class_takes_the_whole_link() {
        let mut schedule = BlendSchedule::new(BlendSettings::default());
        schedule.push(Turn {
            ticket: 1,
            class: 4,
            bytes: 100,
        });
        for _ in 0..100 {
            let turn = schedule.next_turn().expect("work-conserving");
            assert_eq!(turn.ticket, 1);
            schedule.push(turn);
        }
    }

    #[test]
    fn an_idle_class_banks_no_credit() {
        let mut schedule = BlendSchedule::new(BlendSettings::default());
        schedule.push(Turn {
            ticket: 1,
            class: 3,
            bytes: 16 * 1024,
        });
        for _ in 0..50 {
            let turn = schedule.next_turn().expect("waiting");
            schedule.push(turn);
        }
        // Class 0 wakes: over the next rounds it gets its share, not a burst of old credit.
        let settings = BlendSettings::default();
        let mut sent = [0u64; 5];
        schedule.push(Turn {
            ticket: 2,
            class: 0,
            bytes: 16 * 1024,
        });
        for _ in 0..18 * 20 {
            let turn = schedule.next_turn().expect("waiting");
            sent[usize::from(turn.class)] += turn.bytes as u64;
            schedule.push(turn);
        }
        let ratio = sent[0] as f64 / sent[3] as f64;
        let want = f64::from(settings.weights()[0]) / f64::from(settings.weights()[3]);
        assert!((ratio - want).abs() / want < 0.05, "ratio {ratio}");
    }

    #[test]
    fn oversized_pieces_are_clipped_and_cancelled_turns_removed() {
        let mut schedule = BlendSchedule::new(BlendSettings::default());
        schedule.push(Turn {
            ticket: 1,
            class: 1,
            bytes: 1 << 30,
        });
        schedule.push(Turn {
            ticket: 2,
            class: 1,
            bytes: 10,
        });
        assert_eq!(schedule.queued_bytes()[1], 16 * 1024 + 10);
        assert!(schedule.cancel(1));
        assert!(!schedule.cancel(1));
        assert_eq!(schedule.ready(), [0, 1, 0, 0, 0]);
        assert_eq!(schedule.next_turn().map(|t| t.ticket), Some(2));
        assert_eq!(schedule.next_turn(), None);
    }

    #[test]
    fn settings_refuse_starving_weights() {
        assert_eq!(
            BlendSettings::new([16, 8, 0, 2, 1], 16384),
            Err(WeightsError::Zero(2))
        );
        assert_eq!(
            BlendSettings::new(DEFAULT_WEIGHTS, 10),
            Err(WeightsError::SubPacket(10))
        );
    }
}
