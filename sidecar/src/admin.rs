//! The admin endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`, `/status` (JSON
//! picture of every site's origins or links), on front- and back-ends `/qos` (every TMP
//! link's quality as both ends see it), and on caching tiers `POST /cache/purge`
//! ([`crate::caching::purge`]). Bind it to loopback or a pod-internal address.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::caching::purge::{MAX_PURGE_BODY, Purger};
use crate::metrics::Metrics;
use crate::server::{ConnectionInfo, Handler};
use crate::sites::Router;

/// Produces a JSON document on demand (`/status`, `/qos`).
pub type JsonSource = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Says why the process cannot take traffic yet, or `None` when it can.
pub type ReadinessCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The admin request handler.
pub struct Admin {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    readiness: Option<ReadinessCheck>,
    status: JsonSource,
    qos: Option<JsonSource>,
    purger: Option<Purger>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// Serves `metrics` and `status`; `/readyz` follows `ready`.
    pub fn new(metrics: Metrics, ready: Arc<AtomicBool>, status: JsonSource) -> Self {
        Self {
            metrics,
            ready,
            readiness: None,
            status,
            qos: None,
            purger: None,
        }
    }

    /// Adds `POST /cache/purge`, and settles the caches' byte counts before each scrape.
    pub fn with_purge(mut self, purger: Purger) -> Self {
        self.purger = Some(purger);
        self
    }

    /// Makes `/readyz` also wait for `check` (a front-end waits for a TMP link).
    pub fn with_readiness(mut self, check: ReadinessCheck) -> Self {
        self.readiness = Some(check);
        self
    }

    /// Why `/readyz` says no, if it does.
    fn not_ready(&self) -> Option<String> {
        if !self.ready.load(Ordering::Relaxed) {
            return Some("stopping".to_owned());
        }
        self.readiness.as_ref().and_then(|check| check())
    }

    /// Adds `/qos`.
    pub fn with_qos(mut self, qos: JsonSource) -> Self {
        self.qos = Some(qos);
        self
    }
}

impl Admin {
    /// Serves the admin endpoint on `listener` until `shutdown` (a second's drain: admin
    /// requests are short).
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        crate::server::serve(
            listener,
            self,
            None,
            crate::server::ConnectionLimits::default(),
            Arc::new(crate::server::ListenerStats::default()),
            shutdown,
            std::time::Duration::from_secs(1),
        )
    }
}

/// `/status` of a gateway or back-end: every site's origins.
pub fn origin_status(router: Arc<Router>) -> JsonSource {
    Arc::new(move || {
        let sites: Vec<_> = router
            .sites()
            .iter()
            .map(|site| serde_json::json!({ "site": site.name, "origins": site.balancer.status() }))
            .collect();
        serde_json::json!({ "sites": sites })
    })
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl Handler for Admin {
    type Body = Full<Bytes>;

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        _connection: ConnectionInfo,
    ) -> Response<Full<Bytes>> {
        if request.uri().path() == "/cache/purge" {
            return self.purge(request).await;
        }
        self.answer(request.uri().path())
    }
}

impl Admin {
    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/metrics" => {
                if let Some(purger) = &self.purger {
                    purger.settle();
                }
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" => match self.not_ready() {
                None => reply(StatusCode::OK, "text/plain", "ready\n"),
                Some(reason) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {reason}\n"),
                ),
            },
            "/status" => reply(
                StatusCode::OK,
                "application/json",
                (self.status)().to_string(),
            ),
            "/qos" if self.qos.is_some() => reply(
                StatusCode::OK,
                "application/json",
                self.qos
                    .as_ref()
                    .map_or(String::new(), |qos| qos().to_string()),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found; try /metrics, /healthz, /readyz, /status, /qos or POST /cache/purge\n",
            ),
        }
    }

    async fn purge(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(purger) = &self.purger else {
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "this tier keeps no cache\n",
            );
        };
        if request.method() != http::Method::POST {
            let mut response = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "POST a JSON body: {\"url\": ...} or {\"prefix\": ...}\n",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let (parts, body) = request.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_PURGE_BODY);
        let bytes = match http_body_util::BodyExt::collect(limited).await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    format!("purge request body: {error} (at most {MAX_PURGE_BODY} bytes)\n"),
                );
            }
        };
        let (status, json) = purger.handle(parts.headers.get(header::AUTHORIZATION), &bytes);
        let mut response = reply(status, "application/json", json);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"causeway-admin\""),
            );
        }
        response
    }
}
