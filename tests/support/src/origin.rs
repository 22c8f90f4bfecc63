//! Real HTTP/1.1 origin servers on loopback that count what they see and can be slowed,
//! failed, killed and restarted; and the bodies they answer ([`pattern`], [`echo_body`] with
//! its [`BodyDigest`]), so that a client can check an answer is exactly its own.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::wait::eventually;

/// What an origin saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Request headers as received.
    pub headers: HeaderMap,
    /// When it arrived.
    pub at: Instant,
}

impl Seen {
    /// The one value of header `name` the origin saw, failing on none or several.
    pub fn only(&self, name: &str) -> String {
        let all: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(all.len(), 1, "{name}: {all:?} in {:?}", self.headers);
        all[0].to_owned()
    }
}

/// Counters and knobs of one origin, shared with its connection tasks.
#[derive(Debug, Default)]
pub struct OriginState {
    /// Requests received (health checks excluded).
    pub requests: AtomicU64,
    /// Requests being answered right now.
    pub in_flight: AtomicUsize,
    /// The most requests ever being answered at once.
    pub max_in_flight: AtomicUsize,
    /// Delay added to every answer, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Status of ordinary answers (0 means 200).
    pub status: AtomicU16,
    /// Status of `/health` answers (0 means 200).
    pub health_status: AtomicU16,
    /// Health checks received.
    pub health_checks: AtomicU64,
    /// Request body bytes received.
    pub bytes_received: AtomicU64,
    /// When N > 0, every Nth ordinary request is answered 503 whatever `status` says (at
    /// N = 2, an origin failing half the time).
    pub fail_every: AtomicU64,
    /// Answers `fail_every` turned into 503, by method.
    pub injected_failures: Mutex<BTreeMap<String, u64>>,
    /// Every request, in arrival order.
    pub log: Mutex<Vec<Seen>>,
}

impl OriginState {
    /// Waits up to `limit` for exactly `count` requests to be in flight at the origin.
    pub async fn wait_in_flight(&self, count: usize, limit: Duration) -> bool {
        eventually(limit, || async {
            self.in_flight.load(Ordering::SeqCst) == count
        })
        .await
    }

    /// Makes answers slower by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the status of ordinary answers.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Sets the status of `/health` answers.
    pub fn set_health_status(&self, status: u16) {
        self.health_status.store(status, Ordering::SeqCst);
    }

    /// Answers every `n`th ordinary request 503 (0 stops it).
    pub fn set_fail_every(&self, n: u64) {
        self.fail_every.store(n, Ordering::SeqCst);
    }

    /// Answers turned into 503 by [`OriginState::set_fail_every`] for requests of `method`.
    pub fn injected_failures(&self, method: &Method) -> u64 {
        self.injected_failures
            .lock()
            .expect("origin failure lock")
            .get(method.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The largest number of requests seen in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// A copy of the request log.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().expect("origin log lock").clone()
    }
}

/// A real HTTP/1.1 origin on a loopback port.
///
/// Paths: `/health` answers with the health status; `/download?bytes=N` streams N generated
/// bytes (`&chunk_delay=MS` between 64 KiB chunks, `&length=1` with a Content-Length, else
/// chunked); a body sent with any method is read and counted; `?sleep=MS` adds a per-request
/// delay; everything else answers the origin's name with the configured status after the
/// configured delay. `/echo?id=N[&pad=P]` answers [`echo_body`]: the id and the digest of the
/// request body, so a client can tell its own answer from anyone else's. Every answer carries `x-origin: NAME`, and `Cache-Control: max-age=N`
/// when the query has `max_age=N`.
pub struct Origin {
    /// Name, as in the Site.
    pub name: String,
    /// Where it listens (kept across restarts).
    pub addr: SocketAddr,
    /// Counters and knobs.
    pub state: Arc<OriginState>,
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

fn reusable_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Origin {
    /// Starts an origin on a fresh loopback port.
    pub async fn start(name: &str) -> Self {
        let listener = reusable_listener(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind an origin on loopback");
        let addr = listener.local_addr().expect("origin address");
        let mut origin = Self {
            name: name.to_owned(),
            addr,
            state: Arc::new(OriginState::default()),
            running: None,
        };
        origin.serve(listener);
        origin
    }

    /// Starts `count` origins named `prefix0`, `prefix1`, ….
    pub async fn start_many(prefix: &str, count: usize) -> Vec<Self> {
        let mut origins = Vec::with_capacity(count);
        for i in 0..count {
            origins.push(Self::start(&format!("{prefix}{i}")).await);
        }
        origins
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (kill, mut killed) = watch::channel(false);
        let state = self.state.clone();
        let name = self.name.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = killed.changed() => break,
                };
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let name = name.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(state.clone(), name.clone(), request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
            // Killed: close the listener, then drop every open connection mid-request.
            drop(listener);
            connections.shutdown().await;
        });
        self.running = Some((kill, task));
    }

    /// Closes the listener and drops every connection, in-flight requests included.
    pub async fn kill(&mut self) {
        if let Some((kill, task)) = self.running.take() {
            let _ = kill.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Listens again on the same port (after [`Origin::kill`]).
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "restart of a running origin");
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match reusable_listener(self.addr) {
                Ok(listener) => break listener,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot listen on {} again: {error}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some((kill, task)) = self.running.take() {
            let _ = kill.send(true);
            task.abort();
        }
    }
}

struct InFlight(Arc<OriginState>);

impl InFlight {
    fn begin(state: Arc<OriginState>) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn query_number(query: Option<&str>, key: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

type OriginBody = BoxBody<Bytes, Infallible>;

/// The body `/pattern?bytes=N` answers: deterministic, not trivially repetitive (so a
/// truncated, reordered or corrupted copy is caught), yet compressible like text.
pub fn pattern(bytes: u64) -> Bytes {
    let mut out = Vec::with_capacity(bytes as usize);
    let mut line = 0u64;
    while (out.len() as u64) < bytes {
        out.extend_from_slice(
            format!(
                "{{\"line\":{line},\"check\":{}}}\n",
                line.wrapping_mul(2_654_435_761) % 1_000_003
            )
            .as_bytes(),
        );
        line += 1;
    }
    out.truncate(bytes as usize);
    Bytes::from(out)
}

/// FNV-1a digest and length of a request body, folded in as it streams: what `/echo`
/// answers, and what a client computes to check that an answer is its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyDigest {
    /// FNV-1a 64 of the bytes.
    pub sum: u64,
    /// Bytes folded in.
    pub len: u64,
}

impl BodyDigest {
    /// The digest of no bytes.
    pub const EMPTY: Self = Self {
        sum: 0xcbf2_9ce4_8422_2325,
        len: 0,
    };

    /// Folds `data` in.
    pub fn update(&mut self, data: &[u8]) {
        for byte in data {
            self.sum = (self.sum ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.len += data.len() as u64;
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut digest = Self::EMPTY;
        digest.update(data);
        digest
    }
}

/// The answer to `/echo?id=ID&pad=PAD` for a request body with `digest`: one line naming
/// both, then `pad` bytes of lines made from the id.
pub fn echo_body(id: u64, digest: BodyDigest, pad: u64) -> Bytes {
    let mut out = format!("id={id} sum={:016x} len={}\n", digest.sum, digest.len).into_bytes();
    let line = format!("{id:020}\n");
    let head = out.len();
    while out.len() < head + pad as usize {
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(head + pad as usize);
    Bytes::from(out)
}

fn generated_download(total: u64, chunk_delay: Duration) -> OriginBody {
    let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
    let stream = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            if !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            let n = left.min(chunk.len() as u64);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                left - n,
            ))
        }
    });
    BoxBody::new(StreamBody::new(stream))
}

async fn answer(
    state: Arc<OriginState>,
    name: String,
    request: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    let max_age = query_number(request.uri().query(), "max_age");
    let reply = |status: u16, body: OriginBody| {
        let status =
            StatusCode::from_u16(if status == 0 { 200 } else { status }).unwrap_or(StatusCode::OK);
        let mut response = Response::new(body);
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(&name) {
            response.headers_mut().insert("x-origin", value);
        }
        if let Some(seconds) = max_age
            && let Ok(value) = http::HeaderValue::from_str(&format!("max-age={seconds}"))
        {
            response.headers_mut().insert("cache-control", value);
        }
        Ok(response)
    };
    let text = |s: String| BoxBody::new(Full::new(Bytes::from(s)));
    if request.uri().path() == "/health" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        return reply(
            state.health_status.load(Ordering::SeqCst),
            text("health\n".into()),
        );
    }
    let in_flight = InFlight::begin(state.clone());
    let sequence = state.requests.fetch_add(1, Ordering::SeqCst);
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |pq| pq.as_str().to_owned());
    state.log.lock().expect("origin log lock").push(Seen {
        method: request.method().clone(),
        path: path.clone(),
        headers: request.headers().clone(),
        at: Instant::now(),
    });
    let query = request.uri().query().map(str::to_owned);
    let sleep = state.delay_ms.load(Ordering::SeqCst)
        + query_number(query.as_deref(), "sleep").unwrap_or(0);

    // Read any request body frame by frame, counting and discarding.
    let mut body = request.into_body();
    let mut received = 0u64;
    let mut digest = BodyDigest::EMPTY;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                    digest.update(data);
                    state
                        .bytes_received
                        .fetch_add(data.len() as u64, Ordering::SeqCst);
                }
            }
            Err(_) => break,
        }
    }
    if sleep > 0 {
        // The work goes on when the caller hangs up, as in a real application server: the
        // request stays counted in flight until it is done.
        let work = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(sleep)).await;
            drop(in_flight);
        });
        let _ = work.await;
    } else {
        drop(in_flight);
    }
    let mut status = state.status.load(Ordering::SeqCst);
    let every = state.fail_every.load(Ordering::SeqCst);
    if every > 0 && sequence % every == every - 1 {
        status = 503;
        *state
            .injected_failures
            .lock()
            .expect("origin failure lock")
            .entry(method.as_str().to_owned())
            .or_default() += 1;
    }
    if path.starts_with("/echo") {
        let id = query_number(query.as_deref(), "id").unwrap_or(0);
        let pad = query_number(query.as_deref(), "pad").unwrap_or(0);
        return reply(status, BoxBody::new(Full::new(echo_body(id, digest, pad))));
    }
    if path.starts_with("/pattern") {
        let bytes = query_number(query.as_deref(), "bytes").unwrap_or(0);
        let mut response = reply(status, BoxBody::new(Full::new(pattern(bytes))))?;
        let content_type = if path.contains("json") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        return Ok(response);
    }
    if path.starts_with("/download") {
        let bytes = query_number(query.as_deref(), "bytes").unwrap_or(0);
        let chunk_delay =
            Duration::from_millis(query_number(query.as_deref(), "chunk_delay").unwrap_or(0));
        let mut response = reply(status, generated_download(bytes, chunk_delay))?;
        if query_number(query.as_deref(), "length") == Some(1) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, bytes.into());
        }
        return Ok(response);
    }
    if received > 0 {
        return reply(status, text(format!("received {received}\n")));
    }
    reply(status, text(format!("{name}\n")))
}
