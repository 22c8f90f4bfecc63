//! The steady load every case runs: many clients, each on its own keep-alive connection, in a
//! closed loop of GETs (idempotent) and POSTs (non-idempotent) to the origins' `/echo`. Every
//! request carries a unique id; the answer must be exactly the one only that request can get
//! back (its id and its body's digest, see [`causeway_test_support::origin::echo_body`]), so an answer
//! holding another request's body is counted, never missed.
//!
//! With several targets (front doors), a client does what a browser with several addresses
//! does: a GET that got no answer is sent again to the next target, a POST only when its
//! connection was refused (it never left); afterwards the client stays on that target.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use causeway_test_support::origin::{BodyDigest, echo_body};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

/// Whether a request may be sent twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// GET.
    Idempotent,
    /// POST with a body.
    NonIdempotent,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Self::Idempotent => 0,
            Self::NonIdempotent => 1,
        }
    }
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx with exactly the expected body.
    Answered,
    /// No answer, or an answer that was not 2xx: why.
    Failed(String),
    /// 2xx with a body that is not this request's: what came.
    WrongBody(String),
}

/// One request, as the load saw it.
#[derive(Clone, Debug)]
pub struct Record {
    /// Its id.
    pub id: u64,
    /// GET or POST.
    pub kind: Kind,
    /// The target of its last attempt (index into [`LoadSpec::targets`]).
    pub target: usize,
    /// When it was sent.
    pub started: Instant,
    /// When it ended.
    pub finished: Instant,
    /// How it ended.
    pub outcome: Outcome,
    /// The origin that answered (`x-origin`), if any did.
    pub served_by: Option<String>,
}

/// What load to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where clients send requests (front doors); clients start spread over them.
    pub targets: Vec<SocketAddr>,
    /// The `Host` header.
    pub host: String,
    /// Concurrent clients.
    pub clients: usize,
    /// One request in this many is a POST.
    pub post_every: u64,
    /// Bytes of padding in each answer.
    pub pad: u64,
    /// Longest a request may take before it counts as failed.
    pub timeout: Duration,
    /// Pause of each client between requests (the machine has two shared cores).
    pub pace: Duration,
}

impl LoadSpec {
    /// 16 clients on `target` for `host`, one POST in three, 512-byte pads, 30 s timeout.
    pub fn new(target: SocketAddr, host: &str) -> Self {
        Self {
            targets: vec![target],
            host: host.to_owned(),
            clients: 16,
            post_every: 3,
            pad: 512,
            timeout: Duration::from_secs(30),
            pace: Duration::from_millis(10),
        }
    }

    /// Sends to every one of `targets` instead.
    pub fn targets(mut self, targets: Vec<SocketAddr>) -> Self {
        self.targets = targets;
        self
    }
}

/// The body of POST `id`: a few hundred bytes only that request sends.
pub fn post_body(id: u64) -> Bytes {
    Bytes::from(format!("payload {id:016x};").repeat(12))
}

/// The one answer body request `id` of `kind` must get.
pub fn expected_body(id: u64, kind: Kind, pad: u64) -> Bytes {
    let digest = match kind {
        Kind::Idempotent => BodyDigest::EMPTY,
        Kind::NonIdempotent => BodyDigest::of(&post_body(id)),
    };
    echo_body(id, digest, pad)
}

struct Shared {
    spec: LoadSpec,
    next_id: AtomicU64,
    stop: AtomicBool,
    // Per target, per kind.
    in_flight: Vec<[AtomicUsize; 2]>,
    records: Mutex<Vec<Record>>,
}

/// A running load; [`Load::stop`] ends it and hands over every record.
pub struct Load {
    shared: Arc<Shared>,
    workers: JoinSet<()>,
    /// When it started.
    pub started: Instant,
}

type EchoClient = Client<HttpConnector, Full<Bytes>>;

enum SendError {
    Connect(String),
    Other(String),
}

impl Load {
    /// Starts `spec.clients` clients on the current runtime (sockets belong to the network
    /// namespace of the runtime's threads).
    pub fn start(spec: LoadSpec) -> Self {
        assert!(!spec.targets.is_empty(), "a load needs a target");
        let shared = Arc::new(Shared {
            in_flight: spec
                .targets
                .iter()
                .map(|_| [AtomicUsize::new(0), AtomicUsize::new(0)])
                .collect(),
            next_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            records: Mutex::new(Vec::new()),
            spec,
        });
        let mut workers = JoinSet::new();
        for client in 0..shared.spec.clients {
            let shared = shared.clone();
            workers.spawn(async move { run_client(shared, client).await });
        }
        Self {
            shared,
            workers,
            started: Instant::now(),
        }
    }

    /// Requests of `kind` in flight now, on every target.
    pub fn in_flight(&self, kind: Kind) -> usize {
        (0..self.shared.in_flight.len())
            .map(|t| self.in_flight_at(t, kind))
            .sum()
    }

    /// Requests of `kind` in flight now on target `target`.
    pub fn in_flight_at(&self, target: usize, kind: Kind) -> usize {
        self.shared.in_flight[target][kind.index()].load(Ordering::SeqCst)
    }

    /// Requests that ended so far, and how many of them did not end [`Outcome::Answered`].
    pub fn progress(&self) -> (usize, usize) {
        let records = self.shared.records.lock().expect("records lock");
        let bad = records
            .iter()
            .filter(|r| r.outcome != Outcome::Answered)
            .count();
        (records.len(), bad)
    }

    /// Requests answered correctly that were sent after `since`.
    pub fn answered_since(&self, since: Instant) -> usize {
        let records = self.shared.records.lock().expect("records lock");
        records
            .iter()
            .filter(|r| r.started >= since && r.outcome == Outcome::Answered)
            .count()
    }

    /// When an origin whose name starts with `origin` first answered correctly a request
    /// sent after `since`.
    pub fn first_served_by(&self, origin: &str, since: Instant) -> Option<Instant> {
        let records = self.shared.records.lock().expect("records lock");
        records
            .iter()
            .filter(|r| r.started >= since && r.outcome == Outcome::Answered)
            .filter(|r| {
                r.served_by
                    .as_deref()
                    .is_some_and(|o| o.starts_with(origin))
            })
            .map(|r| r.finished)
            .min()
    }

    /// Waits up to `limit` until an origin whose name starts with `origin` answers a request
    /// sent after `since`; when.
    pub async fn wait_served_by(
        &self,
        origin: &str,
        since: Instant,
        limit: Duration,
    ) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.first_served_by(origin, since) {
                return Some(at);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `count` requests sent after now were answered correctly; false when
    /// `limit` passes first.
    pub async fn wait_answered(&self, count: usize, limit: Duration) -> bool {
        let since = Instant::now();
        let deadline = since + limit;
        while Instant::now() < deadline {
            if self.answered_since(since) >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Stops the clients (each finishes the request it is on) and returns every record.
    pub async fn stop(mut self) -> Outcomes {
        self.shared.stop.store(true, Ordering::SeqCst);
        let grace = self.shared.spec.timeout * (self.shared.spec.targets.len() as u32)
            + Duration::from_secs(5);
        let joined = tokio::time::timeout(grace, async {
            while self.workers.join_next().await.is_some() {}
        })
        .await;
        assert!(joined.is_ok(), "load clients did not stop within {grace:?}");
        let records = std::mem::take(&mut *self.shared.records.lock().expect("records lock"));
        Outcomes {
            records,
            started: self.started,
        }
    }
}

async fn run_client(shared: Arc<Shared>, client: usize) {
    let spec = &shared.spec;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let http: EchoClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector);
    let mut target = client % spec.targets.len();
    while !shared.stop.load(Ordering::SeqCst) {
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let kind = if id % spec.post_every == spec.post_every - 1 {
            Kind::NonIdempotent
        } else {
            Kind::Idempotent
        };
        let started = Instant::now();
        let mut outcome = Outcome::Failed("never sent".to_owned());
        let mut served_by = None;
        for _ in 0..spec.targets.len() {
            let counter = &shared.in_flight[target][kind.index()];
            counter.fetch_add(1, Ordering::SeqCst);
            let result = exchange(&http, spec, spec.targets[target], id, kind).await;
            counter.fetch_sub(1, Ordering::SeqCst);
            let retry = match result {
                Ok((checked, origin)) => {
                    outcome = checked;
                    served_by = origin;
                    false
                }
                Err(SendError::Connect(why)) => {
                    outcome = Outcome::Failed(why);
                    true
                }
                Err(SendError::Other(why)) => {
                    outcome = Outcome::Failed(why);
                    kind == Kind::Idempotent
                }
            };
            if !retry || spec.targets.len() == 1 {
                break;
            }
            target = (target + 1) % spec.targets.len();
        }
        shared.records.lock().expect("records lock").push(Record {
            id,
            kind,
            target,
            started,
            finished: Instant::now(),
            outcome,
            served_by,
        });
        tokio::time::sleep(spec.pace).await;
    }
}

async fn exchange(
    http: &EchoClient,
    spec: &LoadSpec,
    target: SocketAddr,
    id: u64,
    kind: Kind,
) -> Result<(Outcome, Option<String>), SendError> {
    let (method, body) = match kind {
        Kind::Idempotent => (Method::GET, Bytes::new()),
        Kind::NonIdempotent => (Method::POST, post_body(id)),
    };
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{target}/echo?id={id}&pad={}", spec.pad))
        .header(http::header::HOST, &spec.host)
        .header("x-fault-id", id)
        .body(Full::new(body))
        .map_err(|e| SendError::Other(format!("request: {e}")))?;
    let answer = async {
        let response = http.request(request).await.map_err(|e| {
            if e.is_connect() {
                SendError::Connect(format!("connect {target}: {e:?}"))
            } else {
                SendError::Other(format!("send to {target}: {e:?}"))
            }
        })?;
        let status = response.status();
        let origin = response
            .headers()
            .get("x-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| SendError::Other(format!("body from {target}: {e:?}")))?
            .to_bytes();
        Ok::<_, SendError>((status, origin, body))
    };
    let (status, origin, body) =
        tokio::time::timeout(spec.timeout, answer)
            .await
            .map_err(|_| {
                SendError::Other(format!("no answer from {target} in {:?}", spec.timeout))
            })??;
    Ok((check(id, kind, spec.pad, status, &body), origin))
}

fn check(id: u64, kind: Kind, pad: u64, status: StatusCode, body: &[u8]) -> Outcome {
    let text = || String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
    if !status.is_success() {
        return Outcome::Failed(format!("{status}: {}", text()));
    }
    if body == expected_body(id, kind, pad) {
        Outcome::Answered
    } else {
        Outcome::WrongBody(format!("request {id} got {} bytes: {}", body.len(), text()))
    }
}

/// Every request of a finished load.
#[derive(Debug)]
pub struct Outcomes {
    /// One record per request, in the order they ended.
    pub records: Vec<Record>,
    /// When the load started.
    pub started: Instant,
}

/// How long after a kill a request may still be written onto the dead process's kept-alive
/// connections: SIGKILL and the kernel's teardown of the sockets take a few milliseconds, and
/// a client connection that has not yet read its reset still sends.
pub const DEATH_SEEN_WITHIN: Duration = Duration::from_millis(50);

impl Outcomes {
    /// Requests of `kind` (to `target`, or any) that were open on a component that died at
    /// `fault_at` before its death could be seen: sent before the first failure after
    /// `fault_at` ended (or within [`DEATH_SEEN_WITHIN`] of the fault, whichever is later),
    /// and not finished at `fault_at`. Until a client or the tier in front learns of the
    /// death (a reset, a link's idle timeout), what it sends there is lost with it; a
    /// snapshot taken just before the fault misses those. Each kept-alive client connection
    /// learns on its own, so one connection's failure does not mean another's POST, written
    /// in the same moment, was not lost too.
    pub fn open_until_seen(&self, kind: Kind, target: Option<usize>, fault_at: Instant) -> usize {
        let on_target = |r: &&Record| target.is_none_or(|t| r.target == t);
        let seen = self
            .records
            .iter()
            .filter(on_target)
            .filter(|r| r.outcome != Outcome::Answered && r.finished >= fault_at)
            .map(|r| r.finished)
            .min()
            .unwrap_or(fault_at)
            .max(fault_at + DEATH_SEEN_WITHIN);
        self.records
            .iter()
            .filter(on_target)
            .filter(|r| r.kind == kind && r.started <= seen && r.finished >= fault_at)
            .count()
    }

    /// Requests of `kind` that were open at `fault_at` or started within `unseen` after it:
    /// those a tier may have sent onto a component that failed silently at `fault_at`, before
    /// the failure could show (a link's stall detection, say). Both targets count: the load
    /// cannot tell which link a request took.
    pub fn open_or_sent_within(&self, kind: Kind, fault_at: Instant, unseen: Duration) -> usize {
        self.records
            .iter()
            .filter(|r| r.kind == kind && r.finished >= fault_at && r.started <= fault_at + unseen)
            .count()
    }

    /// Requests of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.records.iter().filter(|r| r.kind == kind).count()
    }

    /// Requests of `kind` that failed.
    pub fn failed(&self, kind: Kind) -> usize {
        self.records
            .iter()
            .filter(|r| r.kind == kind && matches!(r.outcome, Outcome::Failed(_)))
            .count()
    }

    /// Answers that held another body than their request's.
    pub fn wrong_bodies(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::WrongBody(_)))
            .count()
    }

    /// When the last request that did not end [`Outcome::Answered`] ended.
    pub fn last_bad(&self) -> Option<Instant> {
        self.records
            .iter()
            .filter(|r| r.outcome != Outcome::Answered)
            .map(|r| r.finished)
            .max()
    }

    /// Up to `n` of the bad outcomes, with their time since the start, for failure messages.
    pub fn samples(&self, n: usize) -> String {
        self.records
            .iter()
            .filter(|r| r.outcome != Outcome::Answered)
            .take(n)
            .map(|r| {
                format!(
                    "  t={:.2}s..{:.2}s {:?} #{} target {}: {:?}\n",
                    (r.started - self.started).as_secs_f64(),
                    (r.finished - self.started).as_secs_f64(),
                    r.kind,
                    r.id,
                    r.target,
                    r.outcome
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_own_body_passes_the_check() {
        let own = expected_body(7, Kind::NonIdempotent, 64);
        assert_eq!(
            check(7, Kind::NonIdempotent, 64, StatusCode::OK, &own),
            Outcome::Answered
        );
        let other = expected_body(8, Kind::NonIdempotent, 64);
        assert!(matches!(
            check(7, Kind::NonIdempotent, 64, StatusCode::OK, &other),
            Outcome::WrongBody(_)
        ));
        // Same id, but the body of a GET: the POST's payload never reached the origin.
        let unsent = expected_body(7, Kind::Idempotent, 64);
        assert!(matches!(
            check(7, Kind::NonIdempotent, 64, StatusCode::OK, &unsent),
            Outcome::WrongBody(_)
        ));
        assert!(matches!(
            check(7, Kind::NonIdempotent, 64, StatusCode::BAD_GATEWAY, &own),
            Outcome::Failed(_)
        ));
    }
}
