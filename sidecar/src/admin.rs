//! The admin endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz` and `/status`
//! (JSON picture of every site's origins). Bind it to loopback or a pod-internal address.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::metrics::Metrics;
use crate::server::{ConnectionInfo, Handler};
use crate::sites::Router;

/// The admin request handler.
#[derive(Debug)]
pub struct Admin {
    metrics: Metrics,
    router: Arc<Router>,
    ready: Arc<AtomicBool>,
}

impl Admin {
    /// Serves `metrics` and the status of `router`'s sites; `/readyz` follows `ready`.
    pub fn new(metrics: Metrics, router: Arc<Router>, ready: Arc<AtomicBool>) -> Self {
        Self {
            metrics,
            router,
            ready,
        }
    }

    fn status_json(&self) -> String {
        let sites: Vec<_> = self
            .router
            .sites()
            .iter()
            .map(|site| serde_json::json!({ "site": site.name, "origins": site.balancer.status() }))
            .collect();
        serde_json::json!({ "sites": sites }).to_string()
    }
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

    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        _connection: ConnectionInfo,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send + 'static {
        let response = match request.uri().path() {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" if self.ready.load(Ordering::Relaxed) => {
                reply(StatusCode::OK, "text/plain", "ready\n")
            }
            "/readyz" => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n"),
            "/status" => reply(StatusCode::OK, "application/json", self.status_json()),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found; try /metrics, /healthz, /readyz or /status\n",
            ),
        };
        std::future::ready(response)
    }
}
