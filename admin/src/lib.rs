//! The admin HTTP server every Causeway process runs (gateways, operator, DNS redirector):
//! `/metrics` (the Prometheus text of a registry), `/healthz` (the process runs), `/readyz`
//! (its readiness checks pass), JSON routes, and the process's own routes (a gateway's
//! `POST /cache/purge`). HTTP/1.1 and h2c; on shutdown it stops accepting and gives
//! requests in progress a short drain. Bind it to loopback or a pod-internal address: it
//! has no authentication of its own (a route that needs one checks it itself).
//!
//! ```no_run
//! # async fn run(registry: prometheus::Registry) -> Result<(), causeway_admin::AdminError> {
//! use std::sync::Arc;
//! let listener = causeway_admin::bind("127.0.0.1:9090".parse().expect("address")).await?;
//! let admin = causeway_admin::Admin::new(registry)
//!     .readiness(|| None)
//!     .json("/status", || serde_json::json!({ "sites": [] }));
//! Arc::new(admin).serve(listener, std::future::pending()).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The body of every admin answer.
pub type ResponseBody = Full<Bytes>;

/// An admin answer.
pub type Reply = Response<ResponseBody>;

/// Any error a request body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why reading a request body failed (the client went away, a malformed chunk).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BodyError(BoxError);

/// The body of a request as a route's handler receives it.
pub type RequestBody = UnsyncBoxBody<Bytes, BodyError>;

/// The future a route's handler returns.
pub type RouteFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// How long requests in progress may go on once shutdown is asked for: admin requests are
/// short, and a scrape cut off is simply retried.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(1);

/// Connections served at once; more are closed at once rather than queued, so a flood of
/// idle connections cannot hold the process's file descriptors.
const MAX_CONNECTIONS: usize = 1024;

/// How long a client may take to send a request's headers (slow-header clients).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Concurrent HTTP/2 streams per connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("cannot listen on the admin address {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the admin address (address reuse on, so a restarted process rebinds at once).
///
/// # Errors
/// [`AdminError::Bind`] when the address cannot be bound.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, AdminError> {
    let bound = || -> std::io::Result<TcpListener> {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(1024)
    };
    bound().map_err(|source| AdminError::Bind { address, source })
}

/// Says why the process cannot take traffic yet, or `None` when it can.
type ReadinessCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// A route's answer.
enum Route {
    /// A JSON document made on demand.
    Json(Arc<dyn Fn() -> Result<Vec<u8>, serde_json::Error> + Send + Sync>),
    /// The process's own handling.
    Handler(Arc<dyn Fn(Request<RequestBody>) -> RouteFuture + Send + Sync>),
}

/// The admin server's routes; build it, then [`Admin::serve`] it.
pub struct Admin {
    registry: Registry,
    before_scrape: Option<Arc<dyn Fn() + Send + Sync>>,
    readiness: Vec<ReadinessCheck>,
    routes: Vec<(&'static str, Route)>,
    drain: Duration,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field(
                "routes",
                &self.routes.iter().map(|(path, _)| path).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Serves `registry` at `/metrics`, `/healthz`, and `/readyz` (ready until a
    /// [`readiness`](Self::readiness) check says otherwise).
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            before_scrape: None,
            readiness: Vec::new(),
            routes: Vec::new(),
            drain: DEFAULT_DRAIN,
        }
    }

    /// Runs `hook` before each `/metrics` answer (to bring gauges kept elsewhere up to date).
    #[must_use]
    pub fn before_scrape(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.before_scrape = Some(Arc::new(hook));
        self
    }

    /// Adds a readiness check: `/readyz` answers 503 with the first reason a check gives,
    /// checks being asked in the order they were added.
    #[must_use]
    pub fn readiness(mut self, check: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        self.readiness.push(Arc::new(check));
        self
    }

    /// Answers `path` (any method) with the JSON of what `source` makes at each request.
    #[must_use]
    pub fn json<T, F>(mut self, path: &'static str, source: F) -> Self
    where
        T: Serialize,
        F: Fn() -> T + Send + Sync + 'static,
    {
        let make = move || serde_json::to_vec(&source());
        self.routes.push((path, Route::Json(Arc::new(make))));
        self
    }

    /// Answers `path` with `handler`, which sees the whole request (method, headers, body)
    /// and checks whatever the route needs (method, credentials, body size) itself.
    #[must_use]
    pub fn route<F, Fut>(mut self, path: &'static str, handler: F) -> Self
    where
        F: Fn(Request<RequestBody>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let boxed = move |request| -> RouteFuture { Box::pin(handler(request)) };
        self.routes.push((path, Route::Handler(Arc::new(boxed))));
        self
    }

    /// How long requests in progress may go on after shutdown ([`DEFAULT_DRAIN`] unless set).
    #[must_use]
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Why `/readyz` says no, if it does.
    fn not_ready(&self) -> Option<String> {
        self.readiness.iter().find_map(|check| check())
    }

    /// The answer to `request`, without a socket (what each connection calls; tests too).
    pub async fn respond<B>(&self, request: Request<B>) -> Reply
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match request.uri().path() {
            "/metrics" => {
                if let Some(hook) = &self.before_scrape {
                    hook();
                }
                return reply(StatusCode::OK, PROMETHEUS_TEXT, render(&self.registry));
            }
            "/healthz" => return reply(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" => {
                return match self.not_ready() {
                    None => reply(StatusCode::OK, "text/plain", "ready\n"),
                    Some(reason) => reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("not ready: {reason}\n"),
                    ),
                };
            }
            _ => {}
        }
        let path = request.uri().path();
        match self.routes.iter().find(|(p, _)| *p == path) {
            Some((_, Route::Json(make))) => match make() {
                Ok(json) => reply(StatusCode::OK, "application/json", json),
                Err(error) => {
                    tracing::warn!(path, %error, "admin JSON document did not serialize");
                    reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        format!("cannot write {path}: {error}\n"),
                    )
                }
            },
            Some((_, Route::Handler(handler))) => {
                let request =
                    request.map(|body| body.map_err(|e| BodyError(e.into())).boxed_unsync());
                handler(request).await
            }
            None => reply(StatusCode::NOT_FOUND, "text/plain", self.not_found_hint()),
        }
    }

    fn not_found_hint(&self) -> String {
        let mut paths = vec!["/metrics", "/healthz", "/readyz"];
        paths.extend(self.routes.iter().map(|(path, _)| *path));
        format!("not found; try {}\n", paths.join(", "))
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting and lets the
    /// requests in progress finish within the drain (see [`Admin::drain`]).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, usually: give the ones in use a moment to close
                    // rather than spinning on accept.
                    tracing::debug!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                continue;
            };
            let admin = Arc::clone(&self);
            let service = service_fn(move |request: Request<Incoming>| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.respond(request).await) }
            });
            let connection = graceful.watch(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
            tokio::spawn(async move {
                // A client that goes away mid-request is its own business.
                let _ = connection.await;
                drop(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(self.drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::debug!("admin connections still open after the drain; closing them");
        }
    }
}

/// The Prometheus text exposition of every family in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    // Encoding into a Vec fails only for a family with an invalid name, which registration
    // already refused.
    if TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buffer).unwrap_or_default()
}

/// An answer with `status`, `content_type` and `body`.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .body(Full::new(Bytes::new()))
            .expect("request")
    }

    async fn text(reply: Reply) -> (StatusCode, String) {
        let status = reply.status();
        let bytes = reply
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn metrics_health_and_json_routes() {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("admin_test_total", "A test counter.")
            .expect("valid counter");
        registry
            .register(Box::new(counter.clone()))
            .expect("registers");
        counter.inc_by(3);
        let scrapes = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&scrapes);
        let admin = Admin::new(registry)
            .before_scrape(move || {
                seen.fetch_add(1, Ordering::Relaxed);
            })
            .json("/status", || serde_json::json!({ "sites": ["a"] }));

        let metrics = admin.respond(get("/metrics")).await;
        assert_eq!(
            metrics.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static(PROMETHEUS_TEXT))
        );
        let (status, body) = text(metrics).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("admin_test_total 3"), "{body}");
        assert_eq!(scrapes.load(Ordering::Relaxed), 1, "the hook ran first");

        assert_eq!(
            text(admin.respond(get("/healthz")).await).await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(
            text(admin.respond(get("/readyz")).await).await,
            (StatusCode::OK, "ready\n".into())
        );
        let status = admin.respond(get("/status")).await;
        assert_eq!(
            status.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static("application/json"))
        );
        let (code, body) = text(status).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).expect("JSON"),
            serde_json::json!({ "sites": ["a"] })
        );
        let (code, body) = text(admin.respond(get("/nope")).await).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            "not found; try /metrics, /healthz, /readyz, /status\n"
        );
    }

    #[tokio::test]
    async fn readiness_gives_the_first_reason() {
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let admin = Admin::new(Registry::new())
            .readiness(move || flag.load(Ordering::Relaxed).then(|| "stopping".to_owned()))
            .readiness(|| Some("no link".to_owned()));
        assert_eq!(
            text(admin.respond(get("/readyz")).await).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no link\n".into()
            )
        );
        stopping.store(true, Ordering::Relaxed);
        assert_eq!(
            text(admin.respond(get("/readyz")).await).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: stopping\n".into()
            )
        );
    }

    #[tokio::test]
    async fn a_route_sees_the_whole_request() {
        let admin = Admin::new(Registry::new()).route(
            "/echo",
            |request: Request<RequestBody>| async move {
                let method = request.method().clone();
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                reply(
                    StatusCode::OK,
                    "text/plain",
                    format!("{method} {}", String::from_utf8_lossy(&body)),
                )
            },
        );
        let request = Request::post("/echo")
            .body(Full::new(Bytes::from_static(b"hello")))
            .expect("request");
        assert_eq!(
            text(admin.respond(request).await).await,
            (StatusCode::OK, "POST hello".into())
        );
    }
}
