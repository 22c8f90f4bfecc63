//! The balancer of one site: which origin takes each request (FIG. 6/7 of the patent).
//!
//! The decisions are pure and live in their own modules — [`selection`] picks an origin,
//! [`queue`] orders waiting requests, [`health`] flips origins in and out of rotation,
//! [`peak_ewma`] measures latency and [`retry_budget`] bounds retries. This module holds the
//! mutable state of a site's origins behind one lock and hands out [`Lease`]s: a lease is one
//! request's slot on one origin, counted against the origin's high-water mark until dropped.
//!
//! A reload does not start a Site's balancer afresh: [`Balancer::succeed`] builds the new one
//! from the old one's state ([`handover`] says which old origin is which new one) and leaves
//! the old one pointing at it. From then on the old balancer holds nothing of its own: a lease
//! it gave frees its slot on the successor, its waiters wait in the successor's queue, and an
//! `acquire` on it is served by the successor. So a kept origin's high-water mark holds across
//! a reload, counting requests sent before it and after it alike.

pub mod handover;
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

use self::handover::IndexMap;
use self::health::{ActiveHealth, CheckThresholds, Outlier, OutlierEvent, OutlierSettings};
use self::peak_ewma::PeakEwma;
use self::queue::{QueueTiming, Queued, ReleaseQueue};
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
    /// Aging and the standing-queue bound of the queue.
    pub queue_timing: QueueTiming,
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
    /// The queue stood (sustained overload) and the request waited its standing wait.
    #[error("the origins are overloaded: the queue has not emptied and newer requests wait")]
    QueueShed,
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

#[derive(Clone, Debug)]
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
    /// A lease, or why there will be none; dropped unsent only with the balancer.
    reply: oneshot::Sender<Result<Lease, AcquireError>>,
}

struct State {
    origins: Vec<OriginState>,
    queue: ReleaseQueue<Waiter>,
    round_robin: RoundRobin,
    rng: fastrand::Rng,
    budget: RetryBudget,
    views: Vec<OriginView>,
    /// Set when a reload handed this balancer over; everything after goes there.
    successor: Option<Successor>,
}

/// The balancer that took over from a retired one, and how to read old indexes there.
struct Successor {
    shared: Arc<Shared>,
    map: IndexMap,
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
            .map(|_| OriginState::fresh(config.ewma_decay, now))
            .collect();
        let state = State::new(states, &config, seed, now);
        Self::from_parts(origins, config, metrics, state)
    }

    fn from_parts(
        origins: Vec<OriginInfo>,
        config: BalancerConfig,
        metrics: SiteMetrics,
        state: State,
    ) -> Self {
        let now = Instant::now();
        // The series may be shared with the balancer this one succeeds: they now say what
        // this one knows.
        for (m, o) in metrics.origins.iter().zip(&state.origins) {
            m.in_flight.set(i64::from(o.in_flight));
            m.latency.set(o.ewma.estimate(now).as_secs_f64());
            m.healthy.set(i64::from(o.in_rotation(now)));
        }
        metrics.queue_depth.set(state.queue.len() as i64);
        Self {
            shared: Arc::new(Shared {
                origins,
                config,
                metrics,
                state: Mutex::new(state),
            }),
        }
    }

    /// The balancer of a reloaded Site, taking over from this one: an origin kept by the
    /// reload (same name, same address) keeps its requests in flight, latency estimate, and
    /// active and passive health; requests waiting in this balancer's queue move to the new
    /// one in their order; the retry budget keeps its window. `type_names` and
    /// `default_type` are the new Site's request types, against which `old_types` (this
    /// Site's) are matched by name.
    ///
    /// This balancer is retired by the call: every lease it gave, every waiter and every
    /// later call on it is served by the successor, so a kept origin's mark counts requests
    /// from both sides of the reload. Called on a balancer that is already retired, it hands
    /// over from the one in force at the end of the chain.
    pub fn succeed(
        &self,
        origins: Vec<OriginInfo>,
        config: BalancerConfig,
        metrics: SiteMetrics,
        seed: u64,
        types: TypeNames<'_>,
    ) -> Balancer {
        self.shared.with_state(None, |old_shared, old, _| {
            let now = Instant::now();
            let map = IndexMap::new(
                &old_shared.origins,
                &origins,
                types.old,
                types.new,
                types.new_default,
            );
            let mut states: Vec<OriginState> = origins
                .iter()
                .map(|_| OriginState::fresh(config.ewma_decay, now))
                .collect();
            for (i, mapped) in map.origins.iter().enumerate() {
                let Some(j) = *mapped else { continue };
                let mut carried = old.origins[i].clone();
                carried.ewma.set_decay(config.ewma_decay);
                if config.check_thresholds.is_none() {
                    // No checks will run to bring it back: a verdict of the old checks
                    // would keep the origin out for good.
                    carried.active = ActiveHealth::default();
                }
                states[j] = carried;
            }
            let mut state = State::new(states, &config, seed, now);
            state.budget = old.budget.clone();
            state
                .budget
                .reconfigure(config.retry_ratio, config.min_retries_per_second);
            old.queue.hand_over(&mut state.queue, |waiter| Waiter {
                profile: map.profile(waiter.profile),
                exclude: map.set(waiter.exclude),
                ..waiter
            });
            let successor = Self::from_parts(origins, config, metrics, state);
            {
                // Nobody else can reach the successor yet; its lock is taken after ours here
                // and never the other way round (hops release a lock before taking the next).
                let mut state = successor.shared.lock();
                state.release_waiters(&successor.shared, now);
            }
            old.successor = Some(Successor {
                shared: successor.shared.clone(),
                map,
            });
            successor
        })
    }

    /// Whether a reload has handed this balancer over to a successor.
    pub fn is_retired(&self) -> bool {
        self.shared.lock().successor.is_some()
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
        let mut shared = self.shared.clone();
        let (mut profile, mut exclude) = (profile, exclude);
        let (id, mut reply) = loop {
            let mut state = shared.lock();
            if let Some(successor) = &state.successor {
                // Retired by a reload: the successor serves, with our indexes translated.
                // Checked under the same lock that places or queues, so nothing lands here
                // after the handover.
                profile = successor.map.profile(profile);
                exclude = successor.map.set(exclude);
                let next = successor.shared.clone();
                drop(state);
                shared = next;
                continue;
            }
            match state.choose(&shared, now, profile, exclude) {
                Choice::Origin(origin) => {
                    state.place(&shared, origin, profile.cost, now);
                    drop(state);
                    return Ok(Lease::new(
                        shared,
                        origin,
                        profile.cost,
                        exclude,
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
                Ok(admitted) => {
                    if let Some(displaced) = admitted.displaced {
                        // Its wait ends at once with a 503 and Retry-After, as if the queue
                        // had been full for it.
                        shared.metrics.queue_full.inc();
                        refuse(displaced, AcquireError::QueueFull);
                    }
                    state.shed_stale(&shared, now);
                    shared.metrics.queue_depth.set(state.queue.len() as i64);
                    break (admitted.id, rx);
                }
                Err(_) => {
                    shared.metrics.queue_full.inc();
                    return Err(AcquireError::QueueFull);
                }
            }
        };
        let mut guard = QueueGuard {
            shared: &shared,
            id,
            waiting: true,
        };
        // From here the entry leaves the queue by release, timeout or the guard's drop.
        let result = tokio::time::timeout(shared.config.queue_timeout, &mut reply).await;
        guard.waiting = false;
        match result {
            Ok(Ok(answer)) => answer,
            // Every way out of the queue sends an answer; the sender drops unsent only with
            // the whole balancer, whose requests have nowhere left to go.
            Ok(Err(_)) => Err(AcquireError::Unavailable),
            Err(_) => {
                if shared.remove_waiter(id, true) {
                    Err(AcquireError::QueueTimeout)
                } else {
                    // Released or refused at the very moment the timer fired: the answer is
                    // in the channel, sent under the lock `remove_waiter` took.
                    reply.try_recv().unwrap_or(Err(AcquireError::QueueTimeout))
                }
            }
        }
    }

    /// Notes one original client request, which funds the retry budget.
    pub fn record_request(&self) {
        self.shared.with_state(None, |_, state, _| {
            state.budget.record_request(Instant::now())
        });
    }

    /// Whether a request of `request_type` that `tried` origins have failed has another
    /// origin to go to: one that serves the type and is in rotation (or, with none in
    /// rotation, any that serves it). A retry never goes back to an origin that failed it —
    /// the same origin again only multiplies the load on it. A retired balancer says yes and
    /// leaves the choice to its successor, whose origins it does not know.
    pub fn has_untried(&self, request_type: usize, tried: OriginSet) -> bool {
        let mut state = self.shared.lock();
        if state.successor.is_some() {
            return true;
        }
        let (rotation, _) = state.masks(&self.shared, Instant::now());
        self.shared.capable(rotation, request_type, tried) & !tried.0 != 0
    }

    /// Takes one retry from the budget; false when spent.
    pub fn try_retry(&self) -> bool {
        self.shared.with_state(None, |shared, state, _| {
            let granted = state.budget.try_withdraw(Instant::now());
            if granted {
                shared.metrics.retries.inc();
            }
            granted
        })
    }

    /// Folds in one active health check result.
    pub fn record_check(&self, origin: usize, passed: bool) {
        if origin >= self.shared.origins.len() {
            return;
        }
        self.shared
            .with_state(Some(origin), |shared, state, origin| {
                let Some(origin) = origin.filter(|_| state.successor.is_none()) else {
                    // The reload removed the origin: its verdicts no longer matter.
                    return;
                };
                let Some(thresholds) = shared.config.check_thresholds else {
                    return;
                };
                let now = Instant::now();
                let o = &mut state.origins[origin];
                if let Some(healthy) = o.active.record(passed, thresholds) {
                    let name = &shared.origins[origin].name;
                    if healthy {
                        o.forget_latency(shared.config.ewma_decay, now);
                        tracing::info!(origin = %name, "origin passed its health checks; back in rotation");
                    } else {
                        tracing::warn!(origin = %name, "origin failed its health checks; out of rotation");
                    }
                    shared.metrics.origins[origin]
                        .healthy
                        .set(i64::from(o.in_rotation(now)));
                }
            });
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
                in_rotation: o.in_rotation(now),
            })
            .collect()
    }
}

/// The request types of both sides of a reload, for [`Balancer::succeed`].
#[derive(Clone, Copy, Debug)]
pub struct TypeNames<'a> {
    /// The old Site's type names, by index.
    pub old: &'a [String],
    /// The new Site's type names, by index.
    pub new: &'a [String],
    /// The new Site's default type.
    pub new_default: usize,
}

impl OriginState {
    fn fresh(decay: Duration, now: Instant) -> Self {
        Self {
            in_flight: 0,
            in_flight_cost: 0,
            progress_at: now,
            ewma: PeakEwma::new(NEUTRAL_LATENCY, decay, now),
            active: ActiveHealth::default(),
            outlier: Outlier::default(),
        }
    }

    fn in_rotation(&self, now: Instant) -> bool {
        self.active.is_healthy() && !self.outlier.is_ejected(now)
    }
}

impl Shared {
    /// Runs `f` on the balancer in force for this one's `origin` (or for the Site, with
    /// `None`), locked: this balancer, or — after reloads — the last successor that still
    /// has the origin, the origin index translated. An origin a reload removed stays where
    /// it was last, on a retired balancer (`state.successor` is set there). One lock is held
    /// at a time, so hops cannot deadlock with a handover.
    fn with_state<R>(
        self: &Arc<Self>,
        origin: Option<usize>,
        f: impl FnOnce(&Arc<Shared>, &mut State, Option<usize>) -> R,
    ) -> R {
        let mut state = self.lock();
        let next = state.successor.as_ref().and_then(|s| match origin {
            None => Some((s.shared.clone(), None)),
            Some(old) => s.map.origin(old).map(|new| (s.shared.clone(), Some(new))),
        });
        match next {
            None => f(self, &mut state, origin),
            Some((successor, origin)) => {
                drop(state);
                successor.with_state(origin, f)
            }
        }
    }

    /// Takes waiter `id` out of the queue it is in now (a handover moves waiters along the
    /// chain with their ids); true when it was still waiting.
    fn remove_waiter(self: &Arc<Self>, id: u64, timed_out: bool) -> bool {
        self.with_state(None, |shared, state, _| {
            let removed = state.queue.remove(id).is_some();
            if removed {
                shared.metrics.queue_depth.set(state.queue.len() as i64);
                if timed_out {
                    shared.metrics.queue_timeout.inc();
                }
            }
            removed
        })
    }

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
    fn new(origins: Vec<OriginState>, config: &BalancerConfig, seed: u64, now: Instant) -> Self {
        let views = Vec::with_capacity(origins.len());
        Self {
            origins,
            queue: ReleaseQueue::new(config.queue_capacity, config.queue_timing),
            round_robin: RoundRobin::default(),
            rng: fastrand::Rng::with_seed(seed),
            budget: RetryBudget::new(config.retry_ratio, config.min_retries_per_second, now),
            views,
            successor: None,
        }
    }

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
            if o.in_rotation(now) {
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

    /// Whether this balancer is still the one in force: a retired one must not write the
    /// metric series its successor now owns (a removed origin's name may be reused).
    fn is_live(&self) -> bool {
        self.successor.is_none()
    }

    fn unplace(&mut self, shared: &Shared, origin: usize, cost: u32, now: Instant) {
        let o = &mut self.origins[origin];
        o.in_flight = o.in_flight.saturating_sub(1);
        o.in_flight_cost = o.in_flight_cost.saturating_sub(cost);
        o.progress_at = now;
        let in_flight = o.in_flight;
        if self.is_live() {
            shared.metrics.origins[origin]
                .in_flight
                .set(i64::from(in_flight));
        }
    }

    /// Refuses the requests a standing queue holds too long (see [`ReleaseQueue::shed_stale`]).
    fn shed_stale(&mut self, shared: &Shared, now: Instant) {
        for entry in self.queue.shed_stale(now) {
            shared.metrics.queue_shed.inc();
            refuse(entry, AcquireError::QueueShed);
        }
    }

    /// Hands freed slots to waiting requests, best first, while any can be placed.
    fn release_waiters(&mut self, shared: &Arc<Shared>, now: Instant) {
        self.shed_stale(shared, now);
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
            let lease = Lease::new(
                shared.clone(),
                origin,
                waiter.profile.cost,
                waiter.exclude,
                waited,
            );
            match waiter.reply.send(Ok(lease)) {
                Ok(()) => {
                    shared.metrics.queue_wait[usize::from(entry.class.min(4))]
                        .observe(waited.as_secs_f64());
                }
                Err(Err(_)) => {}
                Err(Ok(mut lease)) => {
                    // The requester gave up (client gone) between its timeout and now.
                    lease.armed = false;
                    self.unplace(shared, origin, waiter.profile.cost, now);
                }
            }
        }
    }
}

/// Ends a queued request's wait with `why` (if it still waits: its client may have left).
fn refuse(entry: Queued<Waiter>, why: AcquireError) {
    let _gone = entry.payload.reply.send(Err(why));
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
            self.shared.remove_waiter(self.id, false);
        }
    }
}

/// Why an attempt that says nothing about its origin is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resent {
    /// A kept-alive connection the origin had closed failed under it, before any answer byte.
    ClosedConnection,
    /// The pooled connection it was handed never wrote it: not one byte left for the origin.
    NeverWritten,
}

/// One request's slot on one origin, counted against the origin's high-water mark until
/// dropped — which, for a proxied response, is when its body has been sent.
pub struct Lease {
    shared: Arc<Shared>,
    origin: usize,
    cost: u32,
    /// The origins the request had tried before, in this lease's balancer's indexes.
    excluded: OriginSet,
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
    fn new(
        shared: Arc<Shared>,
        origin: usize,
        cost: u32,
        excluded: OriginSet,
        waited: Duration,
    ) -> Self {
        Self {
            shared,
            origin,
            cost,
            excluded,
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

    /// The balancer that gave this lease — the Site's, or its successor's when a reload
    /// happened while the request waited. A retry asks it, with [`Lease::tried`].
    pub fn balancer(&self) -> Balancer {
        Balancer {
            shared: self.shared.clone(),
        }
    }

    /// The origins tried so far, this one included, in the indexes of
    /// [`Lease::balancer`]: the `exclude` of a retry.
    pub fn tried(&self) -> OriginSet {
        let mut tried = self.excluded;
        tried.insert(self.origin);
        tried
    }

    /// Time spent in the release queue.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Records that the attempt says nothing about the origin and is sent again, so neither
    /// its latency nor a failure is counted.
    pub fn record_resent(&self, why: Resent) {
        self.recorded.store(true, Ordering::Relaxed);
        self.shared
            .with_state(Some(self.origin), |shared, _, origin| {
                if let Some(origin) = origin {
                    let metrics = &shared.metrics.origins[origin];
                    match why {
                        Resent::ClosedConnection => metrics.closed_connections.inc(),
                        Resent::NeverWritten => metrics.unsent.inc(),
                    }
                }
            });
    }

    /// Records how the attempt went: its latency feeds the QoS estimate, its result the
    /// passive health of the origin.
    pub fn record(&self, latency: Duration, succeeded: bool) {
        self.recorded.store(true, Ordering::Relaxed);
        let now = Instant::now();
        self.shared
            .with_state(Some(self.origin), |shared, state, origin| {
                let Some(origin) = origin.filter(|_| state.is_live()) else {
                    // The reload removed the origin: what it did no longer matters.
                    return;
                };
                let metrics = &shared.metrics.origins[origin];
                let sample = if succeeded {
                    latency
                } else {
                    latency.max(shared.config.failure_penalty)
                };
                let ejected_now = state
                    .origins
                    .iter()
                    .filter(|o| o.outlier.is_ejected(now))
                    .count();
                let may_eject = ejected_now < shared.max_ejected();
                let o = &mut state.origins[origin];
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
                        origin = %shared.origins[origin].name,
                        for_seconds = until.saturating_duration_since(now).as_secs_f64(),
                        "origin ejected after consecutive failures"
                    );
                }
            });
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let now = Instant::now();
        let (placed, recorded, cost) = (
            self.placed,
            self.recorded.load(Ordering::Relaxed),
            self.cost,
        );
        // The slot is counted wherever the origin is now: on a successor when a reload kept
        // it, where it was when a reload removed it.
        self.shared
            .with_state(Some(self.origin), |shared, state, origin| {
                let Some(origin) = origin else { return };
                if !recorded && state.is_live() {
                    // Given up before an answer came (the client left or timed out): the
                    // origin took at least this long, which is worth knowing — otherwise an
                    // origin too slow to ever answer in time would never look slow.
                    let o = &mut state.origins[origin];
                    o.ewma.observe(now.saturating_duration_since(placed), now);
                    shared.metrics.origins[origin]
                        .latency
                        .set(o.ewma.estimate(now).as_secs_f64());
                }
                state.unplace(shared, origin, cost, now);
                if state.is_live() {
                    state.release_waiters(shared, now);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn balancer(marks: &[u32], queue_capacity: usize) -> Balancer {
        balancer_ejecting_for(marks, queue_capacity, Duration::from_secs(10))
    }

    fn origins(marks: &[(&str, u32)]) -> Vec<OriginInfo> {
        marks
            .iter()
            .map(|&(name, mark)| OriginInfo {
                name: name.to_owned(),
                authority: http::uri::Authority::from_static("127.0.0.1:1"),
                max_in_flight: mark,
                primary: false,
                weight: 100,
                latency_goal: None,
                serves: u64::MAX,
            })
            .collect()
    }

    fn site_metrics(origins: &[OriginInfo]) -> SiteMetrics {
        let names: Vec<String> = origins.iter().map(|o| o.name.clone()).collect();
        Metrics::new().expect("metrics").site("test", &names)
    }

    fn config(queue_capacity: usize, ejection: Duration) -> BalancerConfig {
        BalancerConfig {
            policy: Policy::Qos,
            ewma_decay: Duration::from_secs(10),
            failure_penalty: Duration::from_secs(1),
            queue_capacity,
            queue_timeout: Duration::from_secs(5),
            queue_timing: QueueTiming {
                aging_interval: Duration::from_secs(60),
                standing_after: Duration::MAX,
                standing_wait: Duration::MAX,
            },
            outlier: OutlierSettings {
                consecutive_failures: 3,
                base_ejection: ejection,
                max_ejection: Duration::from_secs(60),
            },
            max_ejected_percent: 50,
            check_thresholds: None,
            retry_ratio: 0.2,
            min_retries_per_second: 10,
        }
    }

    fn balancer_ejecting_for(marks: &[u32], queue_capacity: usize, ejection: Duration) -> Balancer {
        let names: Vec<String> = (0..marks.len()).map(|i| format!("o{i}")).collect();
        let marks: Vec<(&str, u32)> = names
            .iter()
            .map(String::as_str)
            .zip(marks.iter().copied())
            .collect();
        let origins = origins(&marks);
        let metrics = site_metrics(&origins);
        Balancer::new(origins, config(queue_capacity, ejection), metrics, 1)
    }

    /// A balancer over named origins with the given marks.
    fn named(marks: &[(&str, u32)]) -> Balancer {
        let origins = origins(marks);
        let metrics = site_metrics(&origins);
        Balancer::new(origins, config(64, Duration::from_secs(10)), metrics, 1)
    }

    const ONE_TYPE: &[String] = &[];

    /// `old`'s successor over named origins with the given marks (one request type).
    fn succeed(old: &Balancer, marks: &[(&str, u32)]) -> Balancer {
        let origins = origins(marks);
        let metrics = site_metrics(&origins);
        let types = TypeNames {
            old: ONE_TYPE,
            new: ONE_TYPE,
            new_default: 0,
        };
        old.succeed(
            origins,
            config(64, Duration::from_secs(10)),
            metrics,
            2,
            types,
        )
    }

    fn in_flight(b: &Balancer) -> Vec<(String, u32)> {
        b.status()
            .into_iter()
            .map(|o| (o.name, o.in_flight))
            .collect()
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
        let refused = b.acquire(profile(2), OriginSet::default()).await;
        assert_eq!(refused.map(|l| l.origin()), Err(AcquireError::QueueFull));
        queued.abort();
    }

    #[tokio::test]
    async fn in_a_full_queue_a_better_class_displaces_a_worse_one() {
        let b = balancer(&[1], 1);
        let busy = b
            .acquire(profile(2), OriginSet::default())
            .await
            .expect("slot");
        let low = tokio::spawn({
            let b = b.clone();
            async move {
                b.acquire(profile(4), OriginSet::default())
                    .await
                    .map(|l| l.origin())
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let top = tokio::spawn({
            let b = b.clone();
            async move {
                b.acquire(profile(0), OriginSet::default())
                    .await
                    .map(|l| l.origin())
            }
        });
        let refused = tokio::time::timeout(Duration::from_secs(1), low)
            .await
            .expect("the displaced request is answered at once")
            .expect("task");
        assert_eq!(refused, Err(AcquireError::QueueFull));
        drop(busy);
        assert!(top.await.expect("task").is_ok(), "class 0 gets the slot");
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

    #[test]
    fn a_retry_has_somewhere_to_go_only_while_an_origin_is_untried() {
        let lone = balancer(&[4], 8);
        let mut tried = OriginSet::default();
        assert!(lone.has_untried(0, tried));
        tried.insert(0);
        assert!(!lone.has_untried(0, tried), "the only origin failed it");

        let pair = balancer(&[4, 4], 8);
        let mut tried = OriginSet::default();
        tried.insert(1);
        assert!(pair.has_untried(0, tried));
        tried.insert(0);
        assert!(!pair.has_untried(0, tried), "both origins failed it");
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

    fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|&(n, c)| (n.to_owned(), c)).collect()
    }

    async fn slot(b: &Balancer) -> Lease {
        b.acquire(profile(2), OriginSet::default())
            .await
            .expect("slot")
    }

    /// A request that waits in `b`'s queue (once this returns).
    async fn queued(b: &Balancer) -> tokio::task::JoinHandle<Result<Lease, AcquireError>> {
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(profile(2), OriginSet::default()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "every origin is at its mark");
        waiting
    }

    #[tokio::test]
    async fn a_handover_carries_in_flight_counts_of_kept_origins_only() {
        let old = named(&[("a", 4), ("b", 4)]);
        let mut leases = Vec::new();
        for _ in 0..5 {
            leases.push(
                old.acquire(profile(2), OriginSet::default())
                    .await
                    .expect("slot"),
            );
        }
        let on_a = leases.iter().filter(|l| l.info().name == "a").count() as u32;
        let new = succeed(&old, &[("c", 4), ("a", 4)]);
        assert!(old.is_retired() && !new.is_retired());
        assert_eq!(in_flight(&new), pairs(&[("c", 0), ("a", on_a)]));
        // A removed origin's requests finish where they are; nothing of them reaches the
        // successor, and no new request goes there.
        leases.retain(|l| l.info().name == "a");
        assert_eq!(in_flight(&new), pairs(&[("c", 0), ("a", on_a)]));
        drop(leases);
        assert_eq!(in_flight(&new), pairs(&[("c", 0), ("a", 0)]));
    }

    #[tokio::test]
    async fn an_old_lease_frees_its_slot_on_the_successor_and_releases_its_waiters() {
        let old = named(&[("a", 1)]);
        let busy = slot(&old).await;
        let new = succeed(&old, &[("a", 1)]);
        // The carried request holds the mark.
        let waiting = queued(&new).await;
        drop(busy);
        let lease = waiting.await.expect("task").expect("released");
        assert_eq!(lease.info().name, "a");
        assert_eq!(in_flight(&new), pairs(&[("a", 1)]));
    }

    #[tokio::test]
    async fn waiters_move_to_the_successor_in_their_order() {
        let old = named(&[("a", 1)]);
        let busy = slot(&old).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for class in [3u8, 1] {
            let (old, tx) = (old.clone(), tx.clone());
            tokio::spawn(async move {
                let lease = old.acquire(profile(class), OriginSet::default()).await;
                let _ = tx.send((class, lease));
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let new = succeed(&old, &[("a", 1)]);
        drop(busy);
        let (first, lease) = rx.recv().await.expect("a release");
        let lease = lease.expect("released by the successor");
        assert_eq!(first, 1, "class order holds across the handover");
        assert!(
            !lease.balancer().is_retired(),
            "the lease comes from the successor"
        );
        assert_eq!(in_flight(&new), pairs(&[("a", 1)]));
        drop(lease);
        let (second, lease) = rx.recv().await.expect("a release");
        assert_eq!(second, 3);
        drop(lease);
        assert_eq!(in_flight(&new), pairs(&[("a", 0)]));
    }

    #[tokio::test]
    async fn a_waiter_moved_to_a_successor_with_room_is_released_at_once() {
        let old = named(&[("a", 1)]);
        let _busy = slot(&old).await;
        let waiting = queued(&old).await;
        let new = succeed(&old, &[("a", 1), ("b", 1)]);
        let lease = waiting.await.expect("task").expect("released");
        assert_eq!(lease.info().name, "b");
        assert_eq!(in_flight(&new), pairs(&[("a", 1), ("b", 1)]));
    }

    #[tokio::test]
    async fn a_retired_balancer_delegates_and_translates_what_was_tried() {
        let old = named(&[("a", 4), ("b", 4)]);
        let new = succeed(&old, &[("b", 4), ("a", 4)]);
        let mut tried = OriginSet::default();
        tried.insert(0); // "a" in the old indexes
        let lease = old.acquire(profile(2), tried).await.expect("slot");
        assert_eq!(lease.info().name, "b", "a was tried: the other one");
        let mut expected = OriginSet::default();
        expected.insert(0);
        expected.insert(1);
        assert_eq!(lease.tried(), expected, "in the successor's indexes");
        assert_eq!(in_flight(&new), pairs(&[("b", 1), ("a", 0)]));
    }

    #[tokio::test]
    async fn health_and_latency_of_a_kept_origin_carry_over() {
        let old = named(&[("a", 4), ("b", 4)]);
        let mut avoid_b = OriginSet::default();
        avoid_b.insert(1);
        for _ in 0..3 {
            let lease = old.acquire(profile(2), avoid_b).await.expect("slot");
            lease.record(Duration::from_millis(1), false);
        }
        let new = succeed(&old, &[("a", 4), ("b", 4)]);
        let status = new.status();
        assert!(
            !status[0].in_rotation,
            "the ejection carries over: {status:?}"
        );
        assert!(status[0].latency_seconds > 0.9, "{status:?}");
    }

    /// Many requests hold slots while the Site is reloaded again and again, marks going up
    /// and down: no origin ever has more requests than the highest mark it was given, and
    /// counts return to zero.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn marks_hold_across_repeated_handovers_under_load() {
        use std::sync::atomic::AtomicU32;
        let concurrent: Arc<[AtomicU32; 2]> = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let peak: Arc<[AtomicU32; 2]> = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let current = Arc::new(Mutex::new(named(&[("a", 3), ("b", 2)])));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..24u64 {
            let (concurrent, peak, current, stop) = (
                concurrent.clone(),
                peak.clone(),
                current.clone(),
                stop.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut served = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let balancer = current.lock().expect("lock").clone();
                    let Ok(lease) = balancer
                        .acquire(profile((i % 5) as u8), OriginSet::default())
                        .await
                    else {
                        continue;
                    };
                    let at = usize::from(lease.info().name == "b");
                    let now = concurrent[at].fetch_add(1, Ordering::SeqCst) + 1;
                    peak[at].fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1 + i % 3)).await;
                    concurrent[at].fetch_sub(1, Ordering::SeqCst);
                    drop(lease);
                    served += 1;
                }
                served
            }));
        }
        for marks in [
            [("a", 2), ("b", 3)],
            [("a", 3), ("b", 1)],
            [("a", 1), ("b", 2)],
        ] {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(15)).await;
                let mut slot = current.lock().expect("lock");
                let next = succeed(&slot, &marks);
                *slot = next;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut served = 0;
        for worker in workers {
            served += worker.await.expect("worker");
        }
        assert!(served > 100, "the load ran: {served} requests");
        assert!(peak[0].load(Ordering::SeqCst) <= 3, "a: {peak:?}");
        assert!(peak[1].load(Ordering::SeqCst) <= 3, "b: {peak:?}");
        let last = current.lock().expect("lock").clone();
        assert_eq!(in_flight(&last), pairs(&[("a", 0), ("b", 0)]));
        assert_eq!(last.load(), (0, 0));
    }
}
