//! The release queue of claim 19: requests that find every capable origin at its high-water
//! mark wait here, and are released as slots free — by priority class, then age. A request
//! gains one class for each aging interval it waits, so a low class is never starved by the
//! classes above it — up to class 1 only: class 0 is what overload protection is for, and a
//! fresh class-0 request goes before any aged one (under sustained overload every waiting
//! request ages, and, being older, aged requests would otherwise always go first).
//!
//! A queue that absorbs a burst empties again; one that has not emptied for
//! `standing_after` is standing — the origins are overloaded — and then a request waits at
//! most `standing_wait` ([`ReleaseQueue::shed_stale`]), as CoDel does for packets. Under
//! sustained overload, requests that cannot be served are refused at once instead of each
//! waiting the whole timeout first, the ones served have waited little, and when the load
//! drops the backlog ahead of new requests is short, so service is back to normal at once.
//! The newest request always stays, so a slot never idles for want of one to release.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use causeway_api::site::PRIORITY_CLASSES;

const CLASSES: usize = PRIORITY_CLASSES as usize;

/// One waiting request.
#[derive(Debug)]
pub struct Queued<T> {
    /// Identifies the entry for [`ReleaseQueue::remove`].
    pub id: u64,
    /// Priority class it arrived with.
    pub class: u8,
    /// When it started waiting.
    pub enqueued: Instant,
    /// What the caller needs to hand the request its slot.
    pub payload: T,
}

/// The best class aging lifts a request to: aging never makes a request compete as class 0.
pub const AGING_CEILING: u8 = 1;

/// The class a request competes with after waiting `waited`: one better per aging interval,
/// up to [`AGING_CEILING`].
pub fn effective_class(class: u8, waited: Duration, aging_interval: Duration) -> u8 {
    let steps = waited.as_nanos() / aging_interval.as_nanos().max(1);
    let aged = class.saturating_sub(u8::try_from(steps).unwrap_or(u8::MAX));
    aged.max(class.min(AGING_CEILING))
}

/// How long requests wait: aging, and the bound on waits while the queue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueTiming {
    /// Each interval waited raises a request one class, up to [`AGING_CEILING`].
    pub aging_interval: Duration,
    /// A queue not empty for this long is standing.
    pub standing_after: Duration,
    /// The longest wait while the queue stands.
    pub standing_wait: Duration,
}

/// A request taken into the queue.
#[derive(Debug)]
pub struct Admitted<T> {
    /// Its id, for [`ReleaseQueue::remove`].
    pub id: u64,
    /// The request that made room for it in a full queue, to be refused.
    pub displaced: Option<Queued<T>>,
}

/// A bounded queue ordered by effective class, then arrival.
#[derive(Debug)]
pub struct ReleaseQueue<T> {
    by_class: [VecDeque<Queued<T>>; CLASSES],
    len: usize,
    capacity: usize,
    timing: QueueTiming,
    next_id: u64,
    /// When the queue last went from empty to not empty; `None` while empty.
    nonempty_since: Option<Instant>,
}

impl<T> ReleaseQueue<T> {
    /// An empty queue holding at most `capacity` requests.
    pub fn new(capacity: usize, timing: QueueTiming) -> Self {
        Self {
            by_class: std::array::from_fn(|_| VecDeque::new()),
            len: 0,
            capacity,
            timing,
            next_id: 0,
            nonempty_since: None,
        }
    }

    /// Counts one request out.
    fn left(&mut self) {
        self.len -= 1;
        if self.len == 0 {
            self.nonempty_since = None;
        }
    }

    /// Whether the queue has not been empty for `standing_after` by `now`.
    pub fn is_standing(&self, now: Instant) -> bool {
        self.nonempty_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.timing.standing_after)
    }

    /// While the queue stands, takes out every request that has waited longer than
    /// `standing_wait`, oldest first, but never the last one left: they are to be refused.
    pub fn shed_stale(&mut self, now: Instant) -> Vec<Queued<T>> {
        let mut shed = Vec::new();
        if !self.is_standing(now) {
            return shed;
        }
        let limit = self.timing.standing_wait;
        while self.len > 1 {
            // Each class is in arrival order, so the oldest entry is at one of the fronts.
            let oldest = self
                .by_class
                .iter()
                .enumerate()
                .filter_map(|(class, queue)| queue.front().map(|q| (q.enqueued, class)))
                .min();
            let Some((enqueued, class)) = oldest else {
                break;
            };
            if now.saturating_duration_since(enqueued) <= limit {
                break;
            }
            if let Some(entry) = self.by_class[class].pop_front() {
                self.left();
                shed.push(entry);
            }
        }
        shed
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a request. A full queue gives the payload back — unless the arrival's class is
    /// better than some waiting request's: then the newest request of the worst class takes
    /// its place out, given back in [`Admitted::displaced`] to be refused. Under overload
    /// the queue thus fills with the best classes, and a class-0 request is never refused
    /// while a class-4 one waits.
    pub fn push(&mut self, class: u8, now: Instant, payload: T) -> Result<Admitted<T>, T> {
        let class = class.min(PRIORITY_CLASSES - 1);
        let mut displaced = None;
        if self.len >= self.capacity {
            // The newest of the worst class below the arrival's: it has waited least.
            let worst = self
                .by_class
                .iter()
                .enumerate()
                .skip(usize::from(class) + 1)
                .rev()
                .find(|(_, queue)| !queue.is_empty())
                .map(|(worst, _)| worst);
            let Some(worst) = worst else {
                return Err(payload);
            };
            displaced = self.by_class[worst].pop_back();
            // Not `left()`: the arrival takes its place at once, the queue never empties.
            self.len -= 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.by_class[usize::from(class)].push_back(Queued {
            id,
            class,
            enqueued: now,
            payload,
        });
        self.len += 1;
        self.nonempty_since.get_or_insert(now);
        Ok(Admitted { id, displaced })
    }

    /// Takes a request out (its wait ended another way); `None` when it already left.
    pub fn remove(&mut self, id: u64) -> Option<Queued<T>> {
        for queue in &mut self.by_class {
            // Entries are in id order within a class, so a binary search finds it.
            if let Ok(at) = queue.binary_search_by_key(&id, |q| q.id) {
                let entry = queue.remove(at);
                self.left();
                return entry;
            }
        }
        None
    }

    /// Moves every waiting request into `successor` (a reload's new queue), each keeping its
    /// id, class and arrival time, so its order and any later [`ReleaseQueue::remove`] by id
    /// still hold there. `map` rewrites payloads for the successor. Ids go on from this
    /// queue's, so an id is never reused along a chain of successors. The successor may end
    /// up above its capacity: these requests were admitted already.
    pub fn hand_over<U>(&mut self, successor: &mut ReleaseQueue<U>, mut map: impl FnMut(T) -> U) {
        successor.next_id = successor.next_id.max(self.next_id);
        // The overload goes on across a reload: the successor's queue stands as long as ours.
        successor.nonempty_since = match (successor.nonempty_since, self.nonempty_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (class, queue) in self.by_class.iter_mut().enumerate() {
            let target = &mut successor.by_class[class];
            for entry in queue.drain(..) {
                // Kept sorted by id, which `remove` relies on: a fresh successor holds only
                // ids below ours, and ours arrive in order.
                let at = target.partition_point(|q| q.id < entry.id);
                target.insert(
                    at,
                    Queued {
                        id: entry.id,
                        class: entry.class,
                        enqueued: entry.enqueued,
                        payload: map(entry.payload),
                    },
                );
                successor.len += 1;
            }
        }
        self.len = 0;
        self.nonempty_since = None;
    }

    /// Takes the request to release next among those `can_place` accepts: the lowest
    /// effective class, and within it the longest waiting.
    ///
    /// Within one class the first placeable entry is the oldest placeable one, and age only
    /// improves the effective class, so the best entry of each class is found by a scan from
    /// its front that stops at the first placeable entry; the winner is the best of those.
    pub fn pop_next(
        &mut self,
        now: Instant,
        mut can_place: impl FnMut(&T) -> bool,
    ) -> Option<Queued<T>> {
        let mut best: Option<(u8, Instant, usize, usize)> = None;
        for (class, queue) in self.by_class.iter().enumerate() {
            let Some(at) = queue.iter().position(|q| can_place(&q.payload)) else {
                continue;
            };
            let entry = &queue[at];
            let key = (
                effective_class(
                    entry.class,
                    now.saturating_duration_since(entry.enqueued),
                    self.timing.aging_interval,
                ),
                entry.enqueued,
            );
            if best.is_none_or(|(c, t, _, _)| key < (c, t)) {
                best = Some((key.0, key.1, class, at));
            }
        }
        let (_, _, class, at) = best?;
        let entry = self.by_class[class].remove(at);
        self.left();
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// Aging every `interval`; the queue never counts as standing.
    fn aging(interval: Duration) -> QueueTiming {
        QueueTiming {
            aging_interval: interval,
            standing_after: Duration::MAX,
            standing_wait: Duration::MAX,
        }
    }

    /// Standing after 500 ms; then at most 100 ms of waiting.
    fn standing() -> QueueTiming {
        QueueTiming {
            aging_interval: SEC * 100,
            standing_after: MS * 500,
            standing_wait: MS * 100,
        }
    }

    fn payloads(entries: Vec<Queued<&'static str>>) -> Vec<&'static str> {
        entries.into_iter().map(|q| q.payload).collect()
    }

    #[test]
    fn a_burst_waits_the_whole_timeout_a_standing_queue_does_not() {
        let t0 = Instant::now();
        let mut queue = ReleaseQueue::new(10, standing());
        queue.push(2, t0, "a").expect("room");
        queue.push(2, t0 + MS * 100, "b").expect("room");
        queue.push(4, t0 + MS * 300, "c").expect("room");
        // 400 ms in: "a" waited 400 ms, but the queue is young — a burst being absorbed.
        assert!(!queue.is_standing(t0 + MS * 400));
        assert!(queue.shed_stale(t0 + MS * 400).is_empty());
        // 500 ms in it stands: whatever waited over 100 ms goes, oldest first, whatever its class.
        queue.push(0, t0 + MS * 450, "d").expect("room");
        assert_eq!(payloads(queue.shed_stale(t0 + MS * 500)), ["a", "b", "c"]);
        assert_eq!(drain(&mut queue, t0 + MS * 500), ["d"]);
    }

    #[test]
    fn a_standing_queue_keeps_its_newest_request() {
        let t0 = Instant::now();
        let mut queue = ReleaseQueue::new(10, standing());
        queue.push(2, t0, "old").expect("room");
        queue.push(2, t0 + MS * 10, "newest").expect("room");
        // Both waited too long; shedding the last would leave the next free slot idle.
        assert_eq!(payloads(queue.shed_stale(t0 + SEC)), ["old"]);
        assert_eq!(queue.len(), 1);
        assert!(queue.shed_stale(t0 + SEC * 2).is_empty());
    }

    #[test]
    fn an_emptied_queue_stands_again_only_after_the_full_time() {
        let t0 = Instant::now();
        let mut queue = ReleaseQueue::new(10, standing());
        queue.push(2, t0, "a").expect("room");
        assert!(queue.is_standing(t0 + MS * 600));
        assert_eq!(drain(&mut queue, t0 + MS * 600), ["a"]);
        assert!(!queue.is_standing(t0 + MS * 600));
        let b = queue.push(2, t0 + MS * 700, "b").expect("room").id;
        queue.push(2, t0 + MS * 710, "c").expect("room");
        assert!(
            queue.shed_stale(t0 + MS * 1100).is_empty(),
            "standing for 400 ms only"
        );
        assert_eq!(queue.remove(b).map(|q| q.payload), Some("b"));
        assert!(queue.is_standing(t0 + MS * 1200), "not empty since 700 ms");
    }

    fn drain(queue: &mut ReleaseQueue<&'static str>, now: Instant) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop_next(now, |_| true).map(|q| q.payload)).collect()
    }

    #[test]
    fn releases_by_class_then_age() {
        let t0 = Instant::now();
        let mut queue = ReleaseQueue::new(10, aging(Duration::from_secs(100)));
        queue.push(4, t0, "low-1").expect("room");
        queue.push(0, t0 + SEC, "top-1").expect("room");
        queue.push(2, t0 + SEC, "mid-1").expect("room");
        queue.push(0, t0 + SEC * 2, "top-2").expect("room");
        queue.push(4, t0 + SEC * 2, "low-2").expect("room");
        assert_eq!(
            drain(&mut queue, t0 + SEC * 3),
            ["top-1", "top-2", "mid-1", "low-1", "low-2"]
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn waiting_raises_a_low_class_so_it_is_not_starved() {
        let t0 = Instant::now();
        let mut queue = ReleaseQueue::new(10, aging(SEC));
        queue.push(4, t0, "old-low").expect("room");
        queue.push(1, t0 + SEC * 3, "new-high").expect("room");
        // After 4 s the class-4 request competes as class 1 and wins on age.
        assert_eq!(drain(&mut queue, t0 + SEC * 4), ["old-low", "new-high"]);
        assert_eq!(effective_class(4, SEC * 2, SEC), 2);
        assert_eq!(effective_class(4, SEC * 90, SEC), 1);
        assert_eq!(effective_class(1, SEC * 90, SEC), 1);
        assert_eq!(effective_class(0, SEC * 90, SEC), 0);
    }

    #[test]
    fn a_fresh_class_0_request_goes_before_any_aged_one() {
        let t0 = Instant::now();
        let mut queue = ReleaseQueue::new(10, aging(SEC));
        let ms = Duration::from_millis(1);
        queue.push(2, t0, "old-api").expect("room");
        queue.push(4, t0 + ms, "old-catalogue").expect("room");
        queue.push(1, t0 + ms * 2, "old-urgent").expect("room");
        queue.push(0, t0 + SEC * 4, "checkout").expect("room");
        // All three waited long enough to reach class 0 were there no ceiling; they are
        // equal at class 1 and leave in arrival order after the checkout.
        assert_eq!(
            drain(&mut queue, t0 + SEC * 4),
            ["checkout", "old-api", "old-catalogue", "old-urgent"]
        );
    }

    #[test]
    fn a_full_queue_refuses_and_a_removed_entry_frees_room() {
        let t0 = Instant::now();
        let mut queue = ReleaseQueue::new(2, aging(SEC));
        let a = queue.push(1, t0, "a").expect("room").id;
        queue.push(1, t0, "b").expect("room");
        assert!(matches!(queue.push(1, t0, "c"), Err("c")), "same class");
        assert!(matches!(queue.push(3, t0, "d"), Err("d")), "worse class");
        assert_eq!(queue.remove(a).map(|q| q.payload), Some("a"));
        assert_eq!(queue.remove(a).map(|q| q.payload), None);
        let admitted = queue.push(1, t0, "c").expect("room");
        assert!(admitted.displaced.is_none());
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn a_better_class_takes_the_place_of_the_newest_of_the_worst() {
        let t0 = Instant::now();
        let mut queue = ReleaseQueue::new(3, aging(Duration::from_secs(100)));
        queue.push(2, t0, "mid").expect("room");
        queue.push(4, t0, "low-old").expect("room");
        queue.push(4, t0 + SEC, "low-new").expect("room");
        let admitted = queue.push(0, t0 + SEC * 2, "top").expect("displaces");
        assert_eq!(admitted.displaced.map(|q| q.payload), Some("low-new"));
        assert_eq!(queue.len(), 3);
        let admitted = queue.push(3, t0 + SEC * 2, "low-ish").expect("displaces");
        assert_eq!(admitted.displaced.map(|q| q.payload), Some("low-old"));
        assert!(
            matches!(queue.push(4, t0, "none-worse"), Err("none-worse")),
            "nothing worse than class 4 waits"
        );
        assert_eq!(drain(&mut queue, t0 + SEC * 3), ["top", "mid", "low-ish"]);
    }

    #[test]
    fn a_hand_over_keeps_ids_order_and_numbering() {
        let t0 = Instant::now();
        let mut old = ReleaseQueue::new(10, aging(Duration::from_secs(100)));
        let low = old.push(4, t0, "low").expect("room").id;
        old.push(0, t0 + SEC, "top").expect("room");
        let mut new = ReleaseQueue::new(1, aging(Duration::from_secs(100)));
        old.hand_over(&mut new, |p| p);
        assert!(old.is_empty());
        assert_eq!(
            new.len(),
            2,
            "admitted requests are kept even above capacity"
        );
        let next = new.push(4, t0, "later");
        assert!(
            matches!(next, Err("later")),
            "the new capacity holds for new arrivals"
        );
        assert_eq!(new.remove(low).map(|q| q.payload), Some("low"));
        let mut bigger = ReleaseQueue::new(10, aging(Duration::from_secs(100)));
        new.hand_over(&mut bigger, |p| p);
        let id = bigger.push(1, t0, "fresh").expect("room").id;
        assert!(id > low, "ids are not reused along the chain");
        assert_eq!(drain(&mut bigger, t0 + SEC), ["top", "fresh"]);
    }

    #[test]
    fn unplaceable_requests_are_skipped_not_dropped() {
        let t0 = Instant::now();
        let mut queue = ReleaseQueue::new(10, aging(Duration::from_secs(100)));
        queue.push(0, t0, "media").expect("room");
        queue.push(0, t0 + SEC, "static").expect("room");
        queue.push(3, t0, "static-low").expect("room");
        let next = queue
            .pop_next(t0 + SEC, |p| p.starts_with("static"))
            .map(|q| q.payload);
        assert_eq!(next, Some("static"));
        assert_eq!(drain(&mut queue, t0 + SEC), ["media", "static-low"]);
    }
}
