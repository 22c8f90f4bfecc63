//! The gateway's admin endpoint, on the shared admin server ([`causeway_admin`]): `/metrics`
//! (Prometheus text), `/healthz`, `/readyz`, `/status` (JSON picture of every site's origins
//! or links), `/qos/pod` (the pod's QoS report for the operator,
//! [`causeway_api::contract::qos`]), on front- and back-ends `/qos` (every TMP link's quality
//! as both ends see it), and on caching tiers `POST /cache/purge`
//! ([`crate::caching::purge`]). Bind it to loopback or a pod-internal address.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use causeway_admin::{Reply, RequestBody, reply};
use causeway_api::contract::qos::{PodReport, REPORT_PATH, REPORT_VERSION};
use http::{HeaderValue, Request, StatusCode, header};

use crate::caching::purge::{MAX_PURGE_BODY, Purger};
use crate::link_metrics::LinkSource;
use crate::metrics::Metrics;
use crate::sites::Router;

/// Produces a JSON document on demand (`/status`, `/qos`).
pub type JsonSource = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Says why the process cannot take traffic yet, or `None` when it can.
pub type ReadinessCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The gateway's admin routes.
pub struct Admin {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    readiness: Option<ReadinessCheck>,
    status: JsonSource,
    qos: Option<JsonSource>,
    links: Option<Arc<dyn LinkSource>>,
    purger: Option<Arc<Purger>>,
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
            links: None,
            purger: None,
        }
    }

    /// Adds `POST /cache/purge`, and settles the caches' byte counts before each scrape.
    pub fn with_purge(mut self, purger: Purger) -> Self {
        self.purger = Some(Arc::new(purger));
        self
    }

    /// Makes `/readyz` also wait for `check` (a front-end waits for a TMP link).
    pub fn with_readiness(mut self, check: ReadinessCheck) -> Self {
        self.readiness = Some(check);
        self
    }

    /// Adds `/qos`.
    pub fn with_qos(mut self, qos: JsonSource) -> Self {
        self.qos = Some(qos);
        self
    }

    /// Puts `links` (a tier's live TMP links) in the `/qos/pod` report.
    pub fn with_links(mut self, links: Arc<dyn LinkSource>) -> Self {
        self.links = Some(links);
        self
    }

    /// The pod's QoS report now, read from the live metric families and links.
    pub fn pod_report(&self) -> PodReport {
        let (sites, unrouted) = self.metrics.qos_sites();
        PodReport {
            version: REPORT_VERSION,
            unrouted,
            sites,
            links: self
                .links
                .as_deref()
                .map(crate::link_metrics::qos_links)
                .unwrap_or_default(),
        }
    }

    /// The routes on the shared admin server.
    fn routes(self: Arc<Self>) -> causeway_admin::Admin {
        let mut admin = causeway_admin::Admin::new(self.metrics.registry().clone());
        if let Some(purger) = &self.purger {
            let purger = Arc::clone(purger);
            admin = admin.before_scrape(move || purger.settle());
        }
        let ready = Arc::clone(&self.ready);
        admin = admin
            .readiness(move || (!ready.load(Ordering::Relaxed)).then(|| "stopping".to_owned()));
        if let Some(check) = self.readiness.clone() {
            admin = admin.readiness(move || check());
        }
        let status = Arc::clone(&self.status);
        admin = admin.json("/status", move || status());
        if let Some(qos) = self.qos.clone() {
            admin = admin.json("/qos", move || qos());
        }
        let reporter = Arc::clone(&self);
        admin = admin.json(REPORT_PATH, move || reporter.pod_report());
        let purger = self.purger.clone();
        admin.route("/cache/purge", move |request| {
            let purger = purger.clone();
            async move { purge(purger.as_deref(), request).await }
        })
    }

    /// Serves the admin endpoint on `listener` until `shutdown` (a second's drain: admin
    /// requests are short).
    pub fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let routes = Arc::new(self.routes());
        async move {
            routes
                .serve(listener, async move {
                    crate::shutdown::requested(&mut shutdown).await;
                })
                .await;
        }
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

async fn purge(purger: Option<&Purger>, request: Request<RequestBody>) -> Reply {
    let Some(purger) = purger else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    fn admin(metrics: &Metrics) -> Arc<Admin> {
        Arc::new(Admin::new(
            metrics.clone(),
            Arc::new(AtomicBool::new(true)),
            Arc::new(|| serde_json::json!({ "sites": [] })),
        ))
    }

    async fn get(routes: &causeway_admin::Admin, path: &str) -> (StatusCode, Bytes) {
        let request = Request::get(path)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let answer = routes.respond(request).await;
        let status = answer.status();
        let body = answer
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn the_pod_report_is_read_from_the_live_families() {
        let metrics = Metrics::new().expect("metrics register");
        let site = metrics.site("web/shop", &["main".to_owned(), "spare".to_owned()]);
        site.record_request(2, 200, 0.004);
        site.record_request(2, 200, 0.3);
        site.record_request(0, 503, 0.02);
        site.queue_depth.set(3);
        site.queue_wait[0].observe(0.01);
        site.origins[0].in_flight.set(2);
        site.origins[0].healthy.set(1);
        site.origins[0].latency.set(0.0125);
        site.origins[1].healthy.set(0);
        metrics.record_unrouted(404);

        let routes = admin(&metrics).routes();
        let (status, body) = get(&routes, REPORT_PATH).await;
        assert_eq!(status, StatusCode::OK);
        let report = PodReport::from_json(&body).expect("a valid report");
        assert_eq!(report.version, REPORT_VERSION);
        assert!(report.links.is_empty(), "a gateway without links");
        assert_eq!(report.unrouted.len(), 1);
        assert_eq!(
            (report.unrouted[0].code, report.unrouted[0].count),
            (404, 1)
        );
        let [shop] = report.sites.as_slice() else {
            panic!("one site: {report:?}");
        };
        assert_eq!(shop.site, "web/shop");
        let count = |class, code| {
            shop.requests
                .iter()
                .filter(|r| r.class == class && r.code == code)
                .map(|r| r.count)
                .sum::<u64>()
        };
        assert_eq!((count(2, 200), count(0, 503)), (2, 1));
        let class2 = shop
            .duration
            .iter()
            .find(|h| h.class == 2)
            .expect("class 2 durations");
        assert_eq!(class2.histogram.count, 2);
        let at_5ms = class2
            .histogram
            .buckets
            .iter()
            .find(|b| b.le == 0.005)
            .expect("a 5 ms bucket");
        assert_eq!(at_5ms.count, 1, "one answer within 5 ms");
        assert!(class2.histogram.buckets.iter().all(|b| b.le.is_finite()));
        assert_eq!(shop.queue_depth, 3);
        let waited: u64 = shop.queue_wait.iter().map(|h| h.histogram.count).sum();
        assert_eq!(waited, 1);
        assert_eq!(shop.origins.len(), 2);
        let main = &shop.origins[0];
        assert_eq!(main.name, "main");
        assert!(main.healthy && !shop.origins[1].healthy);
        assert_eq!(main.in_flight, 2);
        assert!((main.latency_ewma_ms - 12.5).abs() < 1e-9);
    }

    #[tokio::test]
    async fn existing_paths_answer_as_before() {
        let metrics = Metrics::new().expect("metrics register");
        let ready = Arc::new(AtomicBool::new(true));
        let admin = Arc::new(
            Admin::new(
                metrics,
                Arc::clone(&ready),
                Arc::new(|| serde_json::json!({ "sites": [] })),
            )
            .with_readiness(Arc::new(|| None)),
        );
        let routes = admin.routes();
        assert_eq!(get(&routes, "/metrics").await.0, StatusCode::OK);
        assert_eq!(get(&routes, "/healthz").await.0, StatusCode::OK);
        assert_eq!(get(&routes, "/readyz").await.0, StatusCode::OK);
        let (status, body) = get(&routes, "/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, Bytes::from_static(br#"{"sites":[]}"#));
        assert_eq!(
            get(&routes, "/qos").await.0,
            StatusCode::NOT_FOUND,
            "/qos only on tiers with links"
        );
        let (status, body) = get(&routes, "/cache/purge").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, Bytes::from_static(b"this tier keeps no cache\n"));
        ready.store(false, Ordering::Relaxed);
        let (status, body) = get(&routes, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, Bytes::from_static(b"not ready: stopping\n"));
    }
}
