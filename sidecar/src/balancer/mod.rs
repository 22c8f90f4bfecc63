//! The balancer of one site: which origin takes each request (FIG. 6/7 of the patent).
//!
//! The decisions are pure and live in their own modules — [`selection`] picks an origin,
//! [`queue`] orders waiting requests, [`health`] flips origins in and out of rotation,
//! [`peak_ewma`] measures latency and [`retry_budget`] bounds retries. This module holds the
//! mutable state of a site's origins behind one lock and hands out [`Lease`]s: a lease is one
//! request's slot on one origin, counted against the origin's high-water mark until dropped.

pub mod health;
pub mod peak_ewma;
pub mod queue;
pub mod retry_budget;
pub mod selection;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use causeway_api::site::Policy;
use tokio::sync::oneshot;

use self::health::{ActiveHealth, CheckThresholds, Outlier, OutlierEvent, OutlierSettings};
use self::peak_ewma::PeakEwma;
use self::queue::ReleaseQueue;
use self::retry_budget::RetryBudget;
use self::selection::{Choice, OriginView, RoundRobin, choose};
use crate::classify::RequestProfile;
use crate::metrics::SiteMetrics;

/// The most origins a site may have: origin sets are 64-bit masks.
pub const MAX_ORIGINS: usize = 64;

/// The latency assumed for an origin before its first answer.
const NEUTRAL_LATENCY: Duration = Duration::from_millis(5);

/// What the balancer knows of an origin that does not change while it runs.
#[derive(Clone, Debug)]
pub struct OriginInfo {
    /// Name from the Site, used in metrics and logs.
    pub name: String,
    /// Where to connect, as `host:port`.
    pub authority: http::uri::Authority,
    /// High-water mark: most requests in flight at once.
    pub max_in_flight: u32,
    /// Holds the freshest copy.
    pub primary: bool,
    /// Relative capacity.
    pub weight: u32,
    /// Above this latency a primary overflows to the mirrors.
    pub latency_goal: Option<Duration>,
    /// Indexes of the request types it serves, as a bit set.
    pub serves: u64,
}

/// How a site's balancer behaves.
#[derive(Clone, Debug)]
pub struct BalancerConfig {
    /// Selection policy.
    pub policy: Policy,
    /// Latency average decay.
    pub ewma_decay: Duration,
    /// Latency recorded for a failed attempt.
    pub failure_penalty: Duration,
    /// Release queue capacity.
    pub queue_capacity: usize,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
    /// Aging interval of the queue.
    pub aging_interval: Duration,
    /// Passive ejection settings.
    pub outlier: OutlierSettings,
    /// Most origins ejected at once, in percent.
    pub max_ejected_percent: u32,
    /// Active check thresholds, when checks run.
    pub check_thresholds: Option<CheckThresholds>,
    /// Retries as a fraction of requests.
    pub retry_ratio: f64,
    /// Retries always allowed per second.
    pub min_retries_per_second: u32,
}

/// A set of origins by index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginSet(u64);

impl OriginSet {
    /// How many origins are in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Adds an origin.
    pub fn insert(&mut self, origin: usize) {
        self.0 |= 1 << origin;
    }

    /// Whether the set holds the origin.
    pub fn contains(self, origin: usize) -> bool {
        self.0 & (1 << origin) != 0
    }
}

/// Why no slot was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// No origin serves this request type.
    #[error("no origin can serve this request")]
    Unavailable,
    /// Every capable origin is at its mark and the queue is full.
    #[error("every capable origin is at its high-water mark and the queue is full")]
    QueueFull,
    /// The request waited in the queue for the whole queue timeout.
    #[error("no origin freed a slot within the queue timeout")]
    QueueTimeout,
}

/// A read-only picture of one origin, for status and logs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OriginStatus {
    /// Origin name.
    pub name: String,
    /// Requests in flight.
    pub in_flight: u32,
    /// Latency estimate in seconds.
    pub latency_seconds: f64,
    /// Whether it is in rotation.
    pub in_rotation: bool,
}

#[derive(Debug)]
struct OriginState {
    in_flight: u32,
    in_flight_cost: u32,
    /// Last time the origin was seen making progress: became busy or finished a request.
    progress_at: Instant,
    ewma: PeakEwma,
    active: ActiveHealth,
    outlier: Outlier,
}

impl OriginState {
    /// Starts the latency estimate afresh. Used when an origin comes back into rotation: its
    /// old figures (failure penalties above all) describe the incident, not the origin now,
    /// and would keep the QoS policy from sending it anything for a long while.
    fn forget_latency(&mut self, decay: Duration, now: Instant) {
        self.ewma = PeakEwma::new(NEUTRAL_LATENCY, decay, now);
    }
}

struct Waiter {
    profile: RequestProfile,
    exclude: OriginSet,
    enqueued: Instant,
    reply: oneshot::Sender<Lease>,
}

struct State {
    origins: Vec<OriginState>,
    queue: ReleaseQueue<Waiter>,
    round_robin: RoundRobin,
    rng: fastrand::Rng,
    budget: RetryBudget,
    views: Vec<OriginView>,
}

struct Shared {
    origins: Vec<OriginInfo>,
    config: BalancerConfig,
    metrics: SiteMetrics,
    state: Mutex<State>,
}

/// The balancer of one site; cheap to clone.
#[derive(Clone)]
pub struct Balancer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("origins", &self.shared.origins)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// A balancer over `origins` (at most [`MAX_ORIGINS`]); `seed` makes choices repeatable.
    pub fn new(
        origins: Vec<OriginInfo>,
        config: BalancerConfig,
        metrics: SiteMetrics,
        seed: u64,
    ) -> Self {
        let now = Instant::now();
        let states = origins
            .iter()
            .map(|_| OriginState {
                in_flight: 0,
                in_flight_cost: 0,
                progress_at: now,
                ewma: PeakEwma::new(NEUTRAL_LATENCY, config.ewma_decay, now),
                active: ActiveHealth::default(),
                outlier: Outlier::default(),
            })
            .collect();
        for m in &metrics.origins {
            m.healthy.set(1);
            m.latency.set(NEUTRAL_LATENCY.as_secs_f64());
        }
        let state = State {
            origins: states,
            queue: ReleaseQueue::new(config.queue_capacity, config.aging_interval),
            round_robin: RoundRobin::default(),
            rng: fastrand::Rng::with_seed(seed),
            budget: RetryBudget::new(config.retry_ratio, config.min_retries_per_second, now),
            views: Vec::with_capacity(origins.len()),
        };
        Self {
            shared: Arc::new(Shared {
                origins,
                config,
                metrics,
                state: Mutex::new(state),
            }),
        }
    }

    /// The origins, in the Site's order.
    pub fn origins(&self) -> &[OriginInfo] {
        &self.shared.origins
    }

    /// The site's metric handles.
    pub fn metrics(&self) -> &SiteMetrics {
        &self.shared.metrics
    }

    /// Gets a slot for one request on the best origin, waiting in the release queue when
    /// every capable origin is at its mark. `exclude` lists origins already tried; they are
    /// avoided while another capable origin exists.
    pub async fn acquire(
        &self,
        profile: RequestProfile,
        exclude: OriginSet,
    ) -> Result<Lease, AcquireError> {
        let now = Instant::now();
        let (id, mut reply) = {
            let mut state = self.shared.lock();
            match state.choose(&self.shared, now, profile, exclude) {
                Choice::Origin(origin) => {
                    state.place(&self.shared, origin, profile.cost, now);
                    return Ok(Lease::new(
                        self.shared.clone(),
                        origin,
                        profile.cost,
                        Duration::ZERO,
                    ));
                }
                Choice::Unavailable => return Err(AcquireError::Unavailable),
                Choice::Wait => {}
            }
            let (tx, rx) = oneshot::channel();
            let waiter = Waiter {
                profile,
                exclude,
                enqueued: now,
                reply: tx,
            };
            match state.queue.push(profile.class, now, waiter) {
                Ok(id) => {
                    self.shared
                        .metrics
                        .queue_depth
                        .set(state.queue.len() as i64);
                    (id, rx)
                }
                Err(_) => {
                    self.shared.metrics.queue_full.inc();
                    return Err(AcquireError::QueueFull);
                }
            }
        };
        let mut guard = QueueGuard {
            shared: &self.shared,
            id,
            waiting: true,
        };
        // From here the entry leaves the queue by release, timeout or the guard's drop.
        let result = tokio::time::timeout(self.shared.config.queue_timeout, &mut reply).await;
        guard.waiting = false;
        match result {
            Ok(Ok(lease)) => Ok(lease),
            // The sender is only dropped after a successful send or a removal, so a closed
            // channel means the entry was removed: treat it as a timeout.
            Ok(Err(_)) => Err(AcquireError::QueueTimeout),
            Err(_) => {
                let mut state = self.shared.lock();
                if let Some(entry) = state.queue.remove(id) {
                    self.shared
                        .metrics
                        .queue_depth
                        .set(state.queue.len() as i64);
                    self.shared.metrics.queue_timeout.inc();
                    drop(entry);
                    Err(AcquireError::QueueTimeout)
                } else {
                    // Released at the very moment the timer fired: the lease is in the channel,
                    // sent under the lock just taken.
                    drop(state);
                    reply.try_recv().map_err(|_| AcquireError::QueueTimeout)
                }
            }
        }
    }

    /// Notes one original client request, which funds the retry budget.
    pub fn record_request(&self) {
        self.shared.lock().budget.record_request(Instant::now());
    }

    /// Takes one retry from the budget; false when spent.
    pub fn try_retry(&self) -> bool {
        let granted = self.shared.lock().budget.try_withdraw(Instant::now());
        if granted {
            self.shared.metrics.retries.inc();
        }
        granted
    }

    /// Folds in one active health check result.
    pub fn record_check(&self, origin: usize, passed: bool) {
        let Some(thresholds) = self.shared.config.check_thresholds else {
            return;
        };
        let now = Instant::now();
        let mut state = self.shared.lock();
        let Some(o) = state.origins.get_mut(origin) else {
            return;
        };
        if let Some(healthy) = o.active.record(passed, thresholds) {
            let name = &self.shared.origins[origin].name;
            if healthy {
                o.forget_latency(self.shared.config.ewma_decay, now);
                tracing::info!(origin = %name, "origin passed its health checks; back in rotation");
            } else {
                tracing::warn!(origin = %name, "origin failed its health checks; out of rotation");
            }
            let in_rotation = o.active.is_healthy() && !o.outlier.is_ejected(now);
            self.shared.metrics.origins[origin]
                .healthy
                .set(i64::from(in_rotation));
        }
    }

    /// Requests in flight on all origins, and requests waiting in the release queue.
    pub fn load(&self) -> (u64, u64) {
        let state = self.shared.lock();
        let in_flight = state.origins.iter().map(|o| u64::from(o.in_flight)).sum();
        (in_flight, state.queue.len() as u64)
    }

    /// The current picture of every origin.
    pub fn status(&self) -> Vec<OriginStatus> {
        let now = Instant::now();
        let state = self.shared.lock();
        self.shared
            .origins
            .iter()
            .zip(&state.origins)
            .map(|(info, o)| OriginStatus {
                name: info.name.clone(),
                in_flight: o.in_flight,
                latency_seconds: o.ewma.estimate(now).as_secs_f64(),
                in_rotation: o.active.is_healthy() && !o.outlier.is_ejected(now),
            })
            .collect()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still consistent enough to
        // keep serving; poisoning would turn one bug into an outage.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Origins serving `request_type`, in rotation, and not excluded — unless excluding
    /// leaves none, when the excluded ones are allowed again.
    fn capable(&self, in_rotation: u64, request_type: usize, exclude: OriginSet) -> u64 {
        let serving = self.origins.iter().enumerate().fold(0u64, |mask, (i, o)| {
            if o.serves & (1 << request_type) != 0 {
                mask | (1 << i)
            } else {
                mask
            }
        });
        // No origin of this type in rotation at all: route to all of them rather than none
        // (panic routing), since a wrong verdict is likelier than every origin being down.
        let rotation = if serving & in_rotation == 0 {
            serving
        } else {
            serving & in_rotation
        };
        let preferred = rotation & !exclude.0;
        if preferred == 0 { rotation } else { preferred }
    }

    fn max_ejected(&self) -> usize {
        let n = self.origins.len();
        if n < 2 {
            return 0;
        }
        (n * self.config.max_ejected_percent as usize / 100).max(1)
    }
}

impl State {
    /// Readmits origins whose ejection ran out; returns the set in rotation and the set below
    /// their high-water mark.
    fn masks(&mut self, shared: &Shared, now: Instant) -> (u64, u64) {
        let mut rotation = 0u64;
        let mut room = 0u64;
        for (i, (o, info)) in self.origins.iter_mut().zip(&shared.origins).enumerate() {
            if o.outlier.is_due_for_readmission(now) && o.outlier.readmit(now) {
                o.forget_latency(shared.config.ewma_decay, now);
                tracing::info!(origin = %info.name, "ejection over; origin back in rotation");
                shared.metrics.origins[i]
                    .healthy
                    .set(i64::from(o.active.is_healthy()));
            }
            if o.active.is_healthy() && !o.outlier.is_ejected(now) {
                rotation |= 1 << i;
            }
            if o.in_flight < info.max_in_flight {
                room |= 1 << i;
            }
        }
        (rotation, room)
    }

    fn choose(
        &mut self,
        shared: &Shared,
        now: Instant,
        profile: RequestProfile,
        exclude: OriginSet,
    ) -> Choice {
        let (rotation, room) = self.masks(shared, now);
        let capable = shared.capable(rotation, profile.request_type, exclude);
        self.views.clear();
        for (i, (o, info)) in self.origins.iter().zip(&shared.origins).enumerate() {
            let mut latency = o.ewma.estimate(now);
            if o.in_flight > 0 {
                // A request outstanding for longer than the estimate is evidence the origin
                // has slowed down, long before its answer (if any) arrives.
                latency = latency.max(now.saturating_duration_since(o.progress_at));
            }
            self.views.push(OriginView {
                capable: capable & (1 << i) != 0,
                has_room: room & (1 << i) != 0,
                primary: info.primary,
                within_goal: info.latency_goal.is_none_or(|goal| latency <= goal),
                in_flight_cost: o.in_flight_cost,
                latency,
                weight: info.weight,
            });
        }
        choose(
            shared.config.policy,
            &self.views,
            &mut self.rng,
            &mut self.round_robin,
        )
    }

    fn place(&mut self, shared: &Shared, origin: usize, cost: u32, now: Instant) {
        let o = &mut self.origins[origin];
        if o.in_flight == 0 {
            o.progress_at = now;
        }
        o.in_flight += 1;
        o.in_flight_cost += cost;
        shared.metrics.origins[origin]
            .in_flight
            .set(i64::from(o.in_flight));
    }

    fn unplace(&mut self, shared: &Shared, origin: usize, cost: u32, now: Instant) {
        let o = &mut self.origins[origin];
        o.in_flight = o.in_flight.saturating_sub(1);
        o.in_flight_cost = o.in_flight_cost.saturating_sub(cost);
        o.progress_at = now;
        shared.metrics.origins[origin]
            .in_flight
            .set(i64::from(o.in_flight));
    }

    /// Hands freed slots to waiting requests, best first, while any can be placed.
    fn release_waiters(&mut self, shared: &Arc<Shared>, now: Instant) {
        while !self.queue.is_empty() {
            let (rotation, room) = self.masks(shared, now);
            let placeable = |w: &Waiter| {
                shared.capable(rotation, w.profile.request_type, w.exclude) & room != 0
            };
            let Some(entry) = self.queue.pop_next(now, placeable) else {
                break;
            };
            shared.metrics.queue_depth.set(self.queue.len() as i64);
            let waiter = entry.payload;
            let Choice::Origin(origin) = self.choose(shared, now, waiter.profile, waiter.exclude)
            else {
                // Placeable by the masks means choose finds an origin; if it ever does not,
                // refusing this one request beats looping.
                continue;
            };
            self.place(shared, origin, waiter.profile.cost, now);
            let waited = now.saturating_duration_since(waiter.enqueued);
            let lease = Lease::new(shared.clone(), origin, waiter.profile.cost, waited);
            match waiter.reply.send(lease) {
                Ok(()) => {
                    shared.metrics.queue_wait[usize::from(entry.class.min(4))]
                        .observe(waited.as_secs_f64());
                }
                Err(mut lease) => {
                    // The requester gave up (client gone) between its timeout and now.
                    lease.armed = false;
                    self.unplace(shared, origin, waiter.profile.cost, now);
                }
            }
        }
    }
}

/// Removes a queue entry whose requester stopped waiting (client went away).
struct QueueGuard<'a> {
    shared: &'a Arc<Shared>,
    id: u64,
    waiting: bool,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        if self.waiting {
            let mut state = self.shared.lock();
            if state.queue.remove(self.id).is_some() {
                self.shared
                    .metrics
                    .queue_depth
                    .set(state.queue.len() as i64);
            }
        }
    }
}

/// One request's slot on one origin, counted against the origin's high-water mark until
/// dropped — which, for a proxied response, is when its body has been sent.
pub struct Lease {
    shared: Arc<Shared>,
    origin: usize,
    cost: u32,
    waited: Duration,
    placed: Instant,
    recorded: AtomicBool,
    armed: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("origin", &self.origin)
            .field("waited", &self.waited)
            .finish()
    }
}

impl Lease {
    fn new(shared: Arc<Shared>, origin: usize, cost: u32, waited: Duration) -> Self {
        Self {
            shared,
            origin,
            cost,
            waited,
            placed: Instant::now(),
            recorded: AtomicBool::new(false),
            armed: true,
        }
    }

    /// Index of the origin.
    pub fn origin(&self) -> usize {
        self.origin
    }

    /// The origin.
    pub fn info(&self) -> &OriginInfo {
        &self.shared.origins[self.origin]
    }

    /// Time spent in the release queue.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Records how the attempt went: its latency feeds the QoS estimate, its result the
    /// passive health of the origin.
    pub fn record(&self, latency: Duration, succeeded: bool) {
        self.recorded.store(true, Ordering::Relaxed);
        let shared = &*self.shared;
        let metrics = &shared.metrics.origins[self.origin];
        let now = Instant::now();
        let sample = if succeeded {
            latency
        } else {
            latency.max(shared.config.failure_penalty)
        };
        let mut state = shared.lock();
        let ejected_now = state
            .origins
            .iter()
            .filter(|o| o.outlier.is_ejected(now))
            .count();
        let may_eject = ejected_now < shared.max_ejected();
        let o = &mut state.origins[self.origin];
        o.ewma.observe(sample, now);
        metrics.latency.set(o.ewma.estimate(now).as_secs_f64());
        if succeeded {
            metrics.successes.inc();
        } else {
            metrics.failures.inc();
        }
        if let OutlierEvent::Ejected(until) =
            o.outlier
                .record(succeeded, now, shared.config.outlier, may_eject)
        {
            metrics.ejections.inc();
            metrics.healthy.set(0);
            tracing::warn!(
                origin = %shared.origins[self.origin].name,
                for_seconds = until.saturating_duration_since(now).as_secs_f64(),
                "origin ejected after consecutive failures"
            );
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let now = Instant::now();
        let mut state = self.shared.lock();
        if !self.recorded.load(Ordering::Relaxed) {
            // Given up before an answer came (the client left or timed out): the origin took
            // at least this long, which is worth knowing — otherwise an origin too slow to
            // ever answer in time would never look slow.
            let origin = &mut state.origins[self.origin];
            origin
                .ewma
                .observe(now.saturating_duration_since(self.placed), now);
            self.shared.metrics.origins[self.origin]
                .latency
                .set(origin.ewma.estimate(now).as_secs_f64());
        }
        state.unplace(&self.shared, self.origin, self.cost, now);
        state.release_waiters(&self.shared, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn balancer(marks: &[u32], queue_capacity: usize) -> Balancer {
        balancer_ejecting_for(marks, queue_capacity, Duration::from_secs(10))
    }

    fn balancer_ejecting_for(marks: &[u32], queue_capacity: usize, ejection: Duration) -> Balancer {
        let origins = marks
            .iter()
            .enumerate()
            .map(|(i, &mark)| OriginInfo {
                name: format!("o{i}"),
                authority: http::uri::Authority::from_static("127.0.0.1:1"),
                max_in_flight: mark,
                primary: false,
                weight: 100,
                latency_goal: None,
                serves: u64::MAX,
            })
            .collect::<Vec<_>>();
        let names: Vec<String> = origins.iter().map(|o| o.name.clone()).collect();
        let config = BalancerConfig {
            policy: Policy::Qos,
            ewma_decay: Duration::from_secs(10),
            failure_penalty: Duration::from_secs(1),
            queue_capacity,
            queue_timeout: Duration::from_secs(5),
            aging_interval: Duration::from_secs(60),
            outlier: OutlierSettings {
                consecutive_failures: 3,
                base_ejection: ejection,
                max_ejection: Duration::from_secs(60),
            },
            max_ejected_percent: 50,
            check_thresholds: None,
            retry_ratio: 0.2,
            min_retries_per_second: 10,
        };
        let metrics = Metrics::new().expect("metrics").site("test", &names);
        Balancer::new(origins, config, metrics, 1)
    }

    fn profile(class: u8) -> RequestProfile {
        RequestProfile {
            class,
            request_type: 0,
            cost: 1,
        }
    }

    #[tokio::test]
    async fn marks_are_never_exceeded_and_freed_slots_go_to_waiters() {
        let b = balancer(&[1, 1], 8);
        let first = b
            .acquire(profile(2), OriginSet::default())
            .await
            .expect("slot");
        let second = b
            .acquire(profile(2), OriginSet::default())
            .await
            .expect("slot");
        assert_ne!(first.origin(), second.origin());
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(profile(2), OriginSet::default()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "both origins are at their mark");
        let freed = first.origin();
        drop(first);
        let third = waiting.await.expect("task").expect("released");
        assert_eq!(third.origin(), freed);
        assert!(b.status().iter().all(|o| o.in_flight <= 1));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let b = balancer(&[1], 1);
        let _busy = b
            .acquire(profile(2), OriginSet::default())
            .await
            .expect("slot");
        let queued = tokio::spawn({
            let b = b.clone();
            async move {
                b.acquire(profile(2), OriginSet::default())
                    .await
                    .map(|l| l.origin())
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = b.acquire(profile(0), OriginSet::default()).await;
        assert_eq!(refused.map(|l| l.origin()), Err(AcquireError::QueueFull));
        queued.abort();
    }

    #[tokio::test]
    async fn waiters_are_released_by_class() {
        let b = balancer(&[1], 8);
        let busy = b
            .acquire(profile(2), OriginSet::default())
            .await
            .expect("slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for class in [4u8, 3, 0, 1] {
            let (b, tx) = (b.clone(), tx.clone());
            tokio::spawn(async move {
                let lease = b
                    .acquire(profile(class), OriginSet::default())
                    .await
                    .expect("released");
                let _ = tx.send(class);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(lease);
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(busy);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(rx.recv().await.expect("a release"));
        }
        assert_eq!(order, [0, 1, 3, 4]);
    }

    #[tokio::test]
    async fn an_abandoned_attempt_counts_as_at_least_its_age() {
        let b = balancer(&[4], 8);
        let lease = b
            .acquire(profile(2), OriginSet::default())
            .await
            .expect("slot");
        tokio::time::sleep(Duration::from_millis(60)).await;
        drop(lease);
        assert!(b.status()[0].latency_seconds >= 0.06, "{:?}", b.status());
    }

    #[tokio::test]
    async fn consecutive_failures_eject_within_the_cap() {
        let b = balancer(&[10, 10], 8);
        let fail = |avoid: usize| {
            let b = b.clone();
            async move {
                let mut exclude = OriginSet::default();
                exclude.insert(avoid);
                let lease = b.acquire(profile(2), exclude).await.expect("slot");
                lease.record(Duration::from_millis(1), false);
                lease.origin()
            }
        };
        for _ in 0..3 {
            assert_eq!(fail(1).await, 0);
        }
        let rotation = |b: &Balancer| b.status().iter().map(|o| o.in_rotation).collect::<Vec<_>>();
        assert_eq!(rotation(&b), [false, true], "three failures eject origin 0");
        for _ in 0..5 {
            assert_eq!(fail(0).await, 1);
        }
        assert_eq!(
            rotation(&b),
            [false, true],
            "50% of two origins: the second stays in"
        );
    }

    #[tokio::test]
    async fn a_readmitted_origin_starts_with_a_fresh_latency_estimate() {
        let b = balancer_ejecting_for(&[10, 10], 8, Duration::from_millis(50));
        let mut avoid_second = OriginSet::default();
        avoid_second.insert(1);
        for _ in 0..3 {
            let lease = b.acquire(profile(2), avoid_second).await.expect("slot");
            assert_eq!(lease.origin(), 0);
            lease.record(Duration::from_millis(1), false);
        }
        let status = b.status();
        assert!(
            !status[0].in_rotation && status[0].latency_seconds > 0.9,
            "{status:?}"
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Any choice notices the ejection is over.
        drop(
            b.acquire(profile(2), OriginSet::default())
                .await
                .expect("slot"),
        );
        let status = b.status();
        assert!(status[0].in_rotation, "{status:?}");
        assert!(
            status[0].latency_seconds < 0.1,
            "the failure penalty is forgotten: {status:?}"
        );
    }
}
