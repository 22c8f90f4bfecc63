//! Shared pieces of the gateway's integration tests: real origin servers on loopback that
//! count what they see, the real `causeway` binary as a child process, a Site YAML builder, a
//! small load generator and a percentile helper.
//!
//! Everything listens on 127.0.0.1 on ports the kernel hands out, so test binaries and the
//! tests inside them run in parallel without clashing; every wait is bounded in time.
#![allow(dead_code, clippy::unwrap_used)]

pub mod lab;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A boxed error, for bodies and results.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type every test client sends.
pub type TestBody = BoxBody<Bytes, BoxError>;
/// An HTTP client for talking to the gateway.
pub type TestClient = Client<HttpConnector, TestBody>;

/// The longest any single request made by a helper may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Bodies and clients

/// An empty request body.
pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body holding `data`.
pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body of `total` bytes made on the fly in 64 KiB chunks, never held in memory
/// at once.
pub fn generated(total: u64) -> TestBody {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(chunk.len() as u64);
            let frame = Frame::data(chunk.slice(..n as usize));
            Some((Ok::<_, BoxError>(frame), left - n))
        }
    });
    StreamBody::new(stream).boxed()
}

/// A keep-alive HTTP/1.1 client.
pub fn client() -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// A GET request for `path` with `Host: host`, aimed at `addr`.
pub fn get_request(addr: SocketAddr, host: &str, path: &str) -> Request<TestBody> {
    Request::get(format!("http://{addr}{path}"))
        .header(http::header::HOST, host)
        .body(empty())
        .expect("a valid request")
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` and reads the whole answer, within [`REQUEST_TIMEOUT`].
pub async fn send(client: &TestClient, request: Request<TestBody>) -> Result<Answer, String> {
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (head, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        Ok(Answer {
            status: head.status,
            headers: head.headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// GET `path` on `addr` with `Host: host`.
pub async fn get(client: &TestClient, addr: SocketAddr, host: &str, path: &str) -> Answer {
    send(client, get_request(addr, host, path))
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Origin servers

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

// ---------------------------------------------------------------------------------------------
// Site manifests

/// Builds a Site manifest.
pub struct SiteYaml {
    name: String,
    hostnames: Vec<String>,
    origins: Vec<String>,
    spec: String,
}

impl SiteYaml {
    /// A Site named `name` serving `hostname`.
    pub fn new(name: &str, hostname: &str) -> Self {
        Self {
            name: name.to_owned(),
            hostnames: vec![hostname.to_owned()],
            origins: Vec::new(),
            spec: String::new(),
        }
    }

    /// Adds an origin; `fields` are more flow-mapping entries, like `maxInFlight: 4`.
    pub fn origin(mut self, origin: &Origin, fields: &str) -> Self {
        let extra = if fields.is_empty() {
            String::new()
        } else {
            format!(", {fields}")
        };
        self.origins.push(format!(
            "    - {{ name: {}, url: \"{}\"{extra} }}",
            origin.name,
            origin.url()
        ));
        self
    }

    /// Adds every origin of `origins` with the same `fields`.
    pub fn origins(mut self, origins: &[Origin], fields: &str) -> Self {
        for origin in origins {
            self = self.origin(origin, fields);
        }
        self
    }

    /// Appends raw YAML under `spec:` (written at two-space indentation, as if top level).
    pub fn spec(mut self, yaml: &str) -> Self {
        for line in yaml.lines() {
            self.spec.push_str("  ");
            self.spec.push_str(line);
            self.spec.push('\n');
        }
        self
    }

    /// The manifest text.
    pub fn render(&self) -> String {
        format!(
            "apiVersion: causeway.dev/v1alpha1\nkind: Site\nmetadata:\n  name: {}\nspec:\n  hostnames: [{}]\n  origins:\n{}\n{}",
            self.name,
            self.hostnames.join(", "),
            self.origins.join("\n"),
            self.spec
        )
    }
}

/// Several Sites in one multi-document manifest.
pub fn manifest(sites: &[SiteYaml]) -> String {
    sites
        .iter()
        .map(SiteYaml::render)
        .collect::<Vec<_>>()
        .join("---\n")
}

// ---------------------------------------------------------------------------------------------
// The gateway process

fn scratch_path(what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "causeway-it-{}-{n}-{nanos}-{what}",
        std::process::id()
    ))
}

/// The `causeway` binary: `$CAUSEWAY_BIN` when set; else the workspace's debug build of
/// package `causeway`, (re)built once per test process so that a test never runs stale code
/// (the binary is its own crate, so Cargo does not build it for the gateway's tests).
pub fn causeway_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("CAUSEWAY_BIN").filter(|p| !p.is_empty()) {
                return PathBuf::from(path);
            }
            let root = workspace_root();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--quiet", "-p", "causeway", "--bin", "causeway"])
                .status()
                .expect("run cargo build for the causeway binary");
            assert!(status.success(), "cargo build -p causeway failed: {status}");
            std::env::var_os("CARGO_TARGET_DIR")
                .filter(|p| !p.is_empty())
                .map_or_else(|| root.join("target"), PathBuf::from)
                .join("debug")
                .join("causeway")
        })
        .clone()
}

/// The workspace root: the nearest directory above this crate holding `Cargo.lock`.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// A loopback address no one listened on a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address")
}

/// Writes `text` to a fresh scratch file and returns its path.
pub fn write_scratch(what: &str, text: &str) -> PathBuf {
    let path = scratch_path(what);
    std::fs::write(&path, text).expect("write scratch file");
    path
}

/// The real `causeway gateway` as a child process, killed when dropped.
pub struct Gateway {
    child: Child,
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    log: PathBuf,
    site_file: PathBuf,
    admin_client: TestClient,
    command: (String, String, Vec<String>),
}

/// How a run of the `causeway` binary ended.
#[derive(Debug)]
pub struct Exit {
    /// Exit code, if it exited on its own.
    pub code: Option<i32>,
    /// What it wrote to stderr and stdout.
    pub output: String,
}

/// Runs `causeway ARGS` to completion within `limit`; it is killed if it takes longer.
pub fn run_causeway(args: &[&str], limit: Duration) -> Exit {
    let log = scratch_path("run.log");
    let file = std::fs::File::create(&log).expect("create log file");
    let mut child = Command::new(causeway_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log handle"))
        .stderr(file)
        .spawn()
        .expect("start causeway");
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("poll causeway") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    Exit { code, output }
}

impl Gateway {
    /// Starts a gateway serving `manifest`, and waits until its admin `/readyz` answers 200.
    pub async fn start(manifest: &str) -> Self {
        Self::start_with(manifest, &[]).await
    }

    /// Like [`Gateway::start`] with extra command-line arguments.
    pub async fn start_with(manifest: &str, extra_args: &[&str]) -> Self {
        Self::launch("gateway", "--listen", manifest, extra_args).await
    }

    /// Starts `causeway MODE` on free ports: `listen_flag` names the flag of its main
    /// listener (`--listen`, or `--link-listen` for a back-end, whose address is then UDP).
    pub async fn launch(
        mode: &str,
        listen_flag: &str,
        manifest: &str,
        extra_args: &[&str],
    ) -> Self {
        let site_file = write_scratch("site.yaml", manifest);
        let mut last_log = String::new();
        // Another process may grab a port between our probe and the gateway's bind: retry.
        for _ in 0..5 {
            let addr = free_addr();
            let admin = free_addr();
            match Self::spawn(mode, listen_flag, addr, admin, &site_file, extra_args).await {
                Ok(gateway) => return gateway,
                Err(log) if log.contains("cannot listen") || log.contains("in use") => {
                    last_log = log
                }
                Err(log) => panic!("causeway {mode} did not become ready:\n{log}"),
            }
        }
        panic!("causeway {mode} could not bind free ports after five tries:\n{last_log}");
    }

    /// Starts `causeway MODE` on the given addresses; the log when it does not become ready.
    pub async fn spawn(
        mode: &str,
        listen_flag: &str,
        addr: SocketAddr,
        admin: SocketAddr,
        site_file: &Path,
        extra_args: &[&str],
    ) -> Result<Self, String> {
        let log = scratch_path(&format!("{mode}.log"));
        let file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(causeway_bin())
            .arg(mode)
            .arg(listen_flag)
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .args(extra_args)
            .arg(site_file)
            .env(
                "RUST_LOG",
                std::env::var("CAUSEWAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .expect("start causeway");
        let mut gateway = Self {
            child,
            addr,
            admin,
            log,
            site_file: site_file.to_owned(),
            admin_client: client(),
            command: (
                mode.to_owned(),
                listen_flag.to_owned(),
                extra_args.iter().map(|a| (*a).to_owned()).collect(),
            ),
        };
        gateway.wait_ready().await?;
        Ok(gateway)
    }

    /// Kills the process (SIGKILL: no goodbye to peers) and starts it again on the same
    /// addresses with the same arguments.
    pub async fn restart(&mut self) {
        self.kill();
        let (mode, flag, args) = self.command.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = scratch_path(&format!("{mode}.log"));
        let file = std::fs::File::create(&log).expect("create log file");
        self.child = Command::new(causeway_bin())
            .arg(&mode)
            .arg(&flag)
            .arg(self.addr.to_string())
            .arg("--admin-listen")
            .arg(self.admin.to_string())
            .args(&args)
            .arg(&self.site_file)
            .env(
                "RUST_LOG",
                std::env::var("CAUSEWAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .expect("restart causeway");
        let _ = std::fs::remove_file(&self.log);
        self.log = log;
        if let Err(log) = self.wait_ready().await {
            panic!("causeway {mode} did not come back:\n{log}");
        }
    }

    /// Kills the process with SIGKILL (no goodbye to peers) and reaps it; [`Gateway::restart`]
    /// brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.log_text()));
            }
            let probe = tokio::time::timeout(
                Duration::from_secs(1),
                self.admin_client
                    .request(get_request(self.admin, "admin", "/readyz")),
            )
            .await;
            if let Ok(Ok(response)) = probe
                && response.status() == StatusCode::OK
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("not ready within 20 s\n{}", self.log_text()))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> String {
        let answer = send(&self.admin_client, get_request(self.admin, "admin", path))
            .await
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
        assert_eq!(answer.status, StatusCode::OK, "admin GET {path}");
        answer.text()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin_get("/status").await).expect("/status is JSON")
    }

    /// Whether `/status` shows `origin` of `site` in rotation.
    pub async fn in_rotation(&self, site: &str, origin: &str) -> bool {
        let status = self.status().await;
        status["sites"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["site"] == site)
            .flat_map(|s| s["origins"].as_array().into_iter().flatten())
            .find(|o| o["name"] == origin)
            .and_then(|o| o["in_rotation"].as_bool())
            .unwrap_or_else(|| panic!("no origin {origin} of site {site} in {status}"))
    }

    /// Resident memory of the gateway process, in bytes (from `/proc/PID/status`).
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid()).expect("VmRSS in /proc/PID/status")
    }

    /// Sends SIGTERM (through `kill(1)`, to keep the tests free of unsafe code).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends SIGHUP: read the Site files again.
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Replaces the Site file the process was started with (read again on SIGHUP).
    pub fn rewrite_sites(&self, manifest: &str) {
        // Written aside and renamed, as a config map update is, so a reload never reads a
        // half-written file.
        let aside = self.site_file.with_extension("next");
        std::fs::write(&aside, manifest).expect("write the new Site file");
        std::fs::rename(&aside, &self.site_file).expect("replace the Site file");
    }

    /// Waits up to `limit` for `causeway_config_generation` to reach `generation`.
    pub async fn wait_generation(&self, generation: u64, limit: Duration) -> bool {
        eventually(limit, || async {
            metric(&self.metrics().await, "causeway_config_generation", &[]) >= generation as f64
        })
        .await
    }

    /// Waits up to `limit` for `causeway_queue_depth` of `site` to be `depth`.
    pub async fn wait_queue_depth(&self, site: &str, depth: usize, limit: Duration) -> bool {
        eventually(limit, || async {
            metric(
                &self.metrics().await,
                "causeway_queue_depth",
                &[("site", site)],
            ) == depth as f64
        })
        .await
    }

    /// Waits up to `limit` for the process to exit; its exit code if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last gateway log lines ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.site_file);
    }
}

/// Mutual-TLS files for TMP links: one CA, a back-end and a front-end certificate.
pub struct LinkPki {
    dir: PathBuf,
}

impl LinkPki {
    /// Makes a CA and issues both certificates into a scratch directory.
    pub fn new() -> Self {
        let dir = scratch_path("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let authority = causeway_pki::LinkAuthority::generate("test link CA").expect("CA");
        for (role, name) in [
            ("backend", "causeway-backend"),
            ("frontend", "causeway-frontend"),
        ] {
            let issued = authority.issue_pem(&[name]).expect("issue");
            std::fs::write(dir.join(format!("{role}.pem")), issued.cert).expect("write cert");
            std::fs::write(dir.join(format!("{role}.key")), issued.key).expect("write key");
        }
        std::fs::write(dir.join("ca.pem"), authority.ca_pem()).expect("write CA");
        Self { dir }
    }

    /// The link credentials of one role (`backend` or `frontend`), for a tier run in the
    /// test process.
    pub fn credentials(&self, role: &str) -> causeway_link::LinkCredentials {
        causeway_link::LinkCredentials::from_pem_files(
            &self.dir.join("ca.pem"),
            &self.dir.join(format!("{role}.pem")),
            &self.dir.join(format!("{role}.key")),
        )
        .expect("link credentials")
    }

    /// The `--link-*` arguments for one role (`backend` or `frontend`).
    pub fn args(&self, role: &str) -> Vec<String> {
        let path = |name: String| self.dir.join(name).display().to_string();
        vec![
            "--link-ca".into(),
            path("ca.pem".into()),
            "--link-cert".into(),
            path(format!("{role}.pem")),
            "--link-key".into(),
            path(format!("{role}.key")),
        ]
    }
}

impl LinkPki {
    /// The command line of a tier started by hand: `ROLE` (`backend` or `frontend`), its main
    /// listener on `listen` (`--link-listen` for a back-end, UDP; `--listen` for a front-end),
    /// the admin listener on `admin`, `--name NAME`, `extra`, this PKI's credentials for the
    /// role, and the Site file last.
    pub fn tier_args(
        &self,
        role: &str,
        listen: SocketAddr,
        admin: &str,
        name: &str,
        extra: &[String],
        site_file: &Path,
    ) -> Vec<String> {
        let listen_flag = if role == "backend" {
            "--link-listen"
        } else {
            "--listen"
        };
        let mut args: Vec<String> = [role, listen_flag, &listen.to_string()]
            .into_iter()
            .chain(["--admin-listen", admin, "--name", name])
            .map(str::to_owned)
            .collect();
        args.extend(extra.iter().cloned());
        args.extend(self.args(role));
        args.push(site_file.display().to_string());
        args
    }
}

impl Default for LinkPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LinkPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A two-tier deployment: back-ends, and a front-end linked to all of them.
pub struct TwoTier {
    /// The front-end (its `addr` takes client HTTP).
    pub frontend: Gateway,
    /// The back-ends (their `addr` is the UDP link address).
    pub backends: Vec<Gateway>,
    pki: LinkPki,
    manifest: String,
    frontend_args: Vec<String>,
}

impl TwoTier {
    /// Starts `backends` back-ends and one front-end serving `manifest`, and waits until the
    /// front-end's links are all up.
    pub async fn start(manifest: &str, backends: usize, frontend_args: &[&str]) -> Self {
        let pki = LinkPki::new();
        let backend_args = pki.args("backend");
        let mut started = Vec::new();
        for i in 0..backends {
            let mut args: Vec<&str> = backend_args.iter().map(String::as_str).collect();
            let name = format!("be-{i}");
            args.extend(["--name", name.as_str(), "--qos-interval", "200ms"]);
            started.push(Gateway::launch("backend", "--link-listen", manifest, &args).await);
        }
        let frontend_args: Vec<String> = frontend_args.iter().map(|a| (*a).to_owned()).collect();
        let frontend =
            Self::launch_frontend(&pki, &started, manifest, &frontend_args, "fe-0").await;
        let tiers = Self {
            frontend,
            backends: started,
            pki,
            manifest: manifest.to_owned(),
            frontend_args,
        };
        tiers.wait_links(backends, Duration::from_secs(10)).await;
        tiers
    }

    /// Starts one more front-end named `name`, linked to the same back-ends with the same
    /// arguments, and waits until it serves.
    pub async fn another_frontend(&self, name: &str) -> Gateway {
        Self::launch_frontend(
            &self.pki,
            &self.backends,
            &self.manifest,
            &self.frontend_args,
            name,
        )
        .await
    }

    async fn launch_frontend(
        pki: &LinkPki,
        backends: &[Gateway],
        manifest: &str,
        extra_args: &[String],
        name: &str,
    ) -> Gateway {
        let mut args: Vec<String> = pki.args("frontend");
        args.extend([
            "--name".into(),
            name.into(),
            "--qos-interval".into(),
            "200ms".into(),
        ]);
        args.extend(["--link-idle-timeout".into(), "3s".into()]);
        for backend in backends {
            args.push("--backend".into());
            args.push(backend.addr.to_string());
        }
        args.extend(extra_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Gateway::launch("frontend", "--listen", manifest, &args).await
    }

    /// Waits until the front-end reports `count` links up.
    pub async fn wait_links(&self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let qos: serde_json::Value =
                serde_json::from_str(&self.frontend.admin_get("/qos").await).expect("/qos JSON");
            let up = qos["links"].as_array().map_or(0, Vec::len);
            if up >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {up} of {count} links up: {qos}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Resident memory of process `pid`, in bytes, from `/proc/PID/status`; `None` once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
}

/// The value of a metric sample whose labels include every `labels` pair; summed over the
/// samples that match.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Raw sockets

/// Writes `bytes` on a fresh connection to `addr` and reads until the peer closes, 5 s pass,
/// or a complete head has arrived and nothing more comes for 300 ms. Returns what was read.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    // The peer may close before taking everything (an oversized head): that is an answer too.
    let _ = stream.write_all(bytes);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => read.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if read.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&read).into_owned()
}

/// The status code of the first response in `raw`, if any.
pub fn raw_status(raw: &str) -> Option<u16> {
    raw.strip_prefix("HTTP/1.1 ")
        .or_else(|| raw.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// Load

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Latency of every completed exchange (any status).
    pub latencies: Vec<Duration>,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Exchanges that failed without an answer.
    pub errors: Vec<String>,
    /// Answers by `x-origin`.
    pub by_origin: BTreeMap<String, usize>,
    /// Status and body of every answer that was not 2xx.
    pub refusals: Vec<(u16, String)>,
}

impl LoadReport {
    /// Answers with `status`.
    pub fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Exchanges that were not answered 2xx.
    pub fn failures(&self) -> usize {
        self.errors.len()
            + self
                .statuses
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(_, n)| n)
                .sum::<usize>()
    }

    /// Every exchange.
    pub fn total(&self) -> usize {
        self.errors.len() + self.statuses.values().sum::<usize>()
    }

    /// The `p`-th percentile latency (0 < p ≤ 100).
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// Nearest-rank percentile of `samples`; zero for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `concurrency` workers for `duration`, each sending `make(n)` in a closed loop
/// (the next request when the previous answer has been read).
pub async fn load<F>(
    client: &TestClient,
    concurrency: usize,
    duration: Duration,
    make: F,
) -> LoadReport
where
    F: Fn(u64) -> Request<TestBody> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let make = make.clone();
        let counter = counter.clone();
        workers.spawn(async move {
            let mut report = LoadReport::default();
            while Instant::now() < deadline {
                let request = make(counter.fetch_add(1, Ordering::SeqCst));
                let started = Instant::now();
                match send(&client, request).await {
                    Ok(answer) => {
                        report.latencies.push(started.elapsed());
                        *report.statuses.entry(answer.status.as_u16()).or_default() += 1;
                        if !answer.status.is_success() {
                            report
                                .refusals
                                .push((answer.status.as_u16(), answer.text()));
                        }
                        if let Some(origin) =
                            answer.headers.get("x-origin").and_then(|v| v.to_str().ok())
                        {
                            *report.by_origin.entry(origin.to_owned()).or_default() += 1;
                        }
                    }
                    Err(error) => report.errors.push(error),
                }
            }
            report
        });
    }
    let mut total = LoadReport::default();
    while let Some(report) = workers.join_next().await {
        let report = report.expect("load worker");
        total.latencies.extend(report.latencies);
        total.errors.extend(report.errors);
        total.refusals.extend(report.refusals);
        for (status, n) in report.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        for (origin, n) in report.by_origin {
            *total.by_origin.entry(origin).or_default() += n;
        }
    }
    total
}

/// Polls `check` every 50 ms until it holds or `limit` passes; whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
