//! Prometheus metrics of the data plane: one registry per process, families registered once,
//! and per-site and per-origin handles resolved up front so the request path does no lookup
//! it can avoid. Labels are bounded: site, class, origin, code — never a client address.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use causeway_api::contract::qos::{
    self, Bucket, ClassHistogram, CodeCount, OriginReport, RequestCount, SiteReport,
};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder, core::Collector,
};

/// Latency buckets in seconds, from sub-millisecond to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Every metric family of the data plane.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    origin_in_flight: IntGaugeVec,
    origin_latency: prometheus::GaugeVec,
    origin_healthy: IntGaugeVec,
    origin_ejections: IntCounterVec,
    origin_responses: IntCounterVec,
    retries: IntCounterVec,
    queue_depth: IntGaugeVec,
    queue_wait: HistogramVec,
    queue_rejections: IntCounterVec,
    config_reloads: IntCounterVec,
    config_generation: IntGauge,
    /// Client connections open now.
    pub connections_open: IntGauge,
    /// Client connections accepted since start.
    pub connections_accepted: IntCounter,
    /// Client connections closed on a protocol error.
    pub protocol_errors: IntCounter,
    /// Client connections closed at once by the per-client connection limit.
    pub refused_per_ip: IntCounter,
    /// The `causeway_cache_*` families of the Sites' caches (front-ends and gateways).
    pub cache: causeway_cache::metrics::CacheMetrics,
}

/// Why registering the metric families failed (a name registered twice: a bug).
#[derive(Debug, thiserror::Error)]
#[error("registering metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, MetricsError> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

impl Metrics {
    /// The registry, for components that register their own families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers every family in a fresh registry.
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let latency = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
        };
        let metrics = Self {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "causeway_requests_total",
                        "Client requests answered, by site, class and status code.",
                    ),
                    &["site", "class", "code"],
                )?,
            )?,
            request_duration: register(
                &r,
                latency(
                    "causeway_request_duration_seconds",
                    "Time from a client request's arrival to the end of its response.",
                    &["site", "class"],
                )?,
            )?,
            origin_in_flight: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "causeway_origin_in_flight",
                        "Requests in flight to an origin.",
                    ),
                    &["site", "origin"],
                )?,
            )?,
            origin_latency: register(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "causeway_origin_latency_ewma_seconds",
                        "Peak-EWMA response latency of an origin.",
                    ),
                    &["site", "origin"],
                )?,
            )?,
            origin_healthy: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "causeway_origin_healthy",
                        "1 when an origin is in rotation, 0 when unhealthy or ejected.",
                    ),
                    &["site", "origin"],
                )?,
            )?,
            origin_ejections: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "causeway_origin_ejections_total",
                        "Passive ejections of an origin after consecutive failures.",
                    ),
                    &["site", "origin"],
                )?,
            )?,
            origin_responses: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "causeway_origin_responses_total",
                        "Attempts sent to an origin, by result: success, failure, or closed (a kept-alive connection the origin closed as the request went out; sent again).",
                    ),
                    &["site", "origin", "result"],
                )?,
            )?,
            retries: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "causeway_retries_total",
                        "Requests retried on another origin.",
                    ),
                    &["site"],
                )?,
            )?,
            queue_depth: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "causeway_queue_depth",
                        "Requests waiting in a site's release queue.",
                    ),
                    &["site"],
                )?,
            )?,
            queue_wait: register(
                &r,
                latency(
                    "causeway_queue_wait_seconds",
                    "Time requests waited in the release queue before an origin took them.",
                    &["site", "class"],
                )?,
            )?,
            queue_rejections: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "causeway_queue_rejections_total",
                        "Requests answered 503 by the queue, by reason.",
                    ),
                    &["site", "reason"],
                )?,
            )?,
            config_reloads: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "causeway_config_reloads_total",
                        "Configuration reloads, by result: applied, or refused (the running configuration stays).",
                    ),
                    &["result"],
                )?,
            )?,
            config_generation: register(
                &r,
                IntGauge::new(
                    "causeway_config_generation",
                    "Generation of the configuration in force: 1 at start, one more per applied reload.",
                )?,
            )?,
            connections_open: register(
                &r,
                IntGauge::new("causeway_client_connections", "Client connections open.")?,
            )?,
            connections_accepted: register(
                &r,
                IntCounter::new(
                    "causeway_client_connections_total",
                    "Client connections accepted.",
                )?,
            )?,
            protocol_errors: register(
                &r,
                IntCounter::new(
                    "causeway_client_protocol_errors_total",
                    "Client connections closed on a protocol error (malformed or oversized request).",
                )?,
            )?,
            refused_per_ip: register(
                &r,
                IntCounter::new(
                    "causeway_client_connections_refused_total",
                    "Client connections closed at once because their address had too many open.",
                )?,
            )?,
            cache: causeway_cache::metrics::CacheMetrics::register(&r)?,
            registry: r,
        };
        // Both results exist from the start, so `increase()` over them answers 0 rather
        // than nothing before the first reload.
        for result in ["applied", "refused"] {
            metrics.config_reloads.with_label_values(&[result]);
        }
        Ok(metrics)
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Handles for one site's balancer.
    pub fn site(&self, site: &str, origins: &[String]) -> SiteMetrics {
        SiteMetrics {
            origins: origins
                .iter()
                .map(|origin| {
                    let labels = [site, origin.as_str()];
                    OriginMetrics {
                        in_flight: self.origin_in_flight.with_label_values(&labels),
                        latency: self.origin_latency.with_label_values(&labels),
                        healthy: self.origin_healthy.with_label_values(&labels),
                        ejections: self.origin_ejections.with_label_values(&labels),
                        successes: self
                            .origin_responses
                            .with_label_values(&[site, origin, "success"]),
                        failures: self
                            .origin_responses
                            .with_label_values(&[site, origin, "failure"]),
                        closed_connections: self
                            .origin_responses
                            .with_label_values(&[site, origin, "closed"]),
                        unsent: self
                            .origin_responses
                            .with_label_values(&[site, origin, "unsent"]),
                    }
                })
                .collect(),
            retries: self.retries.with_label_values(&[site]),
            queue_depth: self.queue_depth.with_label_values(&[site]),
            queue_wait: std::array::from_fn(|class| {
                self.queue_wait
                    .with_label_values(&[site, CLASS_LABELS[class]])
            }),
            queue_full: self.queue_rejections.with_label_values(&[site, "full"]),
            queue_timeout: self.queue_rejections.with_label_values(&[site, "timeout"]),
            queue_shed: self.queue_rejections.with_label_values(&[site, "standing"]),
            durations: std::array::from_fn(|class| {
                self.request_duration
                    .with_label_values(&[site, CLASS_LABELS[class]])
            }),
            requests: Arc::new(RequestCounters::new(self.requests.clone(), site)),
            site: site.to_owned(),
        }
    }

    /// Counts one reload: applied (and now in force as `generation`) or refused.
    pub fn record_reload(&self, applied: Option<u64>) {
        let result = if applied.is_some() {
            "applied"
        } else {
            "refused"
        };
        self.config_reloads.with_label_values(&[result]).inc();
        if let Some(generation) = applied {
            self.record_generation(generation);
        }
    }

    /// Shows `generation` as the configuration in force.
    pub fn record_generation(&self, generation: u64) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Drops every series of an origin a reload removed, so no gauge goes on showing a
    /// value nobody updates.
    pub fn remove_origin(&self, site: &str, origin: &str) {
        let labels = [site, origin];
        // A series that was never written is not there to remove: not an error.
        let _ = self.origin_in_flight.remove_label_values(&labels);
        let _ = self.origin_latency.remove_label_values(&labels);
        let _ = self.origin_healthy.remove_label_values(&labels);
        let _ = self.origin_ejections.remove_label_values(&labels);
        for result in ["success", "failure", "closed", "unsent"] {
            let _ = self
                .origin_responses
                .remove_label_values(&[site, origin, result]);
        }
    }

    /// Drops the gauges of a Site a reload removed (its origins go by
    /// [`Metrics::remove_origin`]); its counters stay, as counters of a finished past.
    pub fn remove_site(&self, site: &str) {
        let _ = self.queue_depth.remove_label_values(&[site]);
        self.cache.remove_site(site);
    }

    /// Counts a request that never reached a site (unknown host, malformed request).
    pub fn record_unrouted(&self, code: u16) {
        self.requests
            .with_label_values(&["", "", code_label(code).as_ref()])
            .inc();
    }

    /// The Sites' part of the pod's QoS report, read from the live families (the same
    /// series `/metrics` shows): every Site with a series, and the unrouted requests.
    pub fn qos_sites(&self) -> (Vec<SiteReport>, Vec<CodeCount>) {
        let mut sites: BTreeMap<String, SiteReport> = BTreeMap::new();
        let mut unrouted = Vec::new();
        for metric in series(&self.requests) {
            let count = whole(metric.get_counter().get_value());
            let (Some(name), Some(code)) = (label(&metric, "site"), label(&metric, "code")) else {
                continue;
            };
            let Ok(code) = code.parse::<u16>() else {
                continue;
            };
            if name.is_empty() {
                unrouted.push(CodeCount { code, count });
                continue;
            }
            let Some(class) = label(&metric, "class").and_then(|c| c.parse::<u8>().ok()) else {
                continue;
            };
            site_entry(&mut sites, name)
                .requests
                .push(RequestCount { class, code, count });
        }
        for (family, duration) in [(&self.request_duration, true), (&self.queue_wait, false)] {
            for metric in series(family) {
                let (Some(name), Some(class)) = (
                    label(&metric, "site"),
                    label(&metric, "class").and_then(|c| c.parse::<u8>().ok()),
                ) else {
                    continue;
                };
                let histogram = ClassHistogram {
                    class,
                    histogram: histogram(metric.get_histogram()),
                };
                let report = site_entry(&mut sites, name);
                if duration {
                    report.duration.push(histogram);
                } else {
                    report.queue_wait.push(histogram);
                }
            }
        }
        for metric in series(&self.queue_depth) {
            if let Some(name) = label(&metric, "site") {
                site_entry(&mut sites, name).queue_depth = whole(metric.get_gauge().get_value());
            }
        }
        let in_flight = by_origin(&self.origin_in_flight);
        let latency = by_origin(&self.origin_latency);
        // The healthy gauge names the origins, as in `/metrics`: an origin a reload removed
        // has no series left.
        for ((name, origin), healthy) in by_origin(&self.origin_healthy) {
            let key = (name, origin);
            let latency_seconds = latency.get(&key).copied().unwrap_or(0.0);
            let in_flight = in_flight.get(&key).copied().unwrap_or(0.0);
            let (name, origin) = key;
            site_entry(&mut sites, &name).origins.push(OriginReport {
                name: origin,
                healthy: healthy >= 1.0,
                latency_ewma_ms: finite(latency_seconds * 1000.0),
                in_flight: whole(in_flight),
            });
        }
        (sites.into_values().collect(), unrouted)
    }
}

/// The report of Site `name`, made empty the first time.
fn site_entry<'s>(sites: &'s mut BTreeMap<String, SiteReport>, name: &str) -> &'s mut SiteReport {
    sites.entry(name.to_owned()).or_insert_with(|| SiteReport {
        site: name.to_owned(),
        ..SiteReport::default()
    })
}

/// Every series of a family, as the registry would gather it.
fn series(family: &impl Collector) -> Vec<prometheus::proto::Metric> {
    family
        .collect()
        .into_iter()
        .flat_map(|mut family| family.take_metric())
        .collect()
}

/// The value of one label of a series.
fn label<'m>(metric: &'m prometheus::proto::Metric, name: &str) -> Option<&'m str> {
    metric
        .get_label()
        .iter()
        .find(|pair| pair.name() == name)
        .map(|pair| pair.value())
}

/// A per-origin gauge family's values, by site and origin.
fn by_origin(family: &impl Collector) -> BTreeMap<(String, String), f64> {
    series(family)
        .iter()
        .filter_map(|metric| {
            let key = (
                label(metric, "site")?.to_owned(),
                label(metric, "origin")?.to_owned(),
            );
            Some((key, metric.get_gauge().get_value()))
        })
        .collect()
}

/// A histogram's buckets as the report carries them: finite bounds only.
fn histogram(histogram: &prometheus::proto::Histogram) -> qos::Histogram {
    qos::Histogram {
        buckets: histogram
            .get_bucket()
            .iter()
            .filter(|bucket| bucket.upper_bound().is_finite())
            .map(|bucket| Bucket {
                le: bucket.upper_bound(),
                count: bucket.cumulative_count(),
            })
            .collect(),
        count: histogram.get_sample_count(),
        sum: finite(histogram.get_sample_sum()),
    }
}

/// JSON has no infinity or NaN: such a figure would make the whole report unreadable.
fn finite(value: f64) -> f64 {
    if value.is_finite() { value } else { 0.0 }
}

/// An integer counter's or gauge's value: the client library hands them out as f64.
fn whole(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value as u64
    } else {
        0
    }
}

const CLASS_LABELS: [&str; 5] = ["0", "1", "2", "3", "4"];

fn code_label(code: u16) -> std::borrow::Cow<'static, str> {
    match code {
        200 => "200".into(),
        404 => "404".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Per-origin handles.
#[derive(Clone)]
pub struct OriginMetrics {
    /// Requests in flight.
    pub in_flight: IntGauge,
    /// Peak-EWMA latency.
    pub latency: Gauge,
    /// In rotation or not.
    pub healthy: IntGauge,
    /// Passive ejections.
    pub ejections: IntCounter,
    /// Attempts that succeeded.
    pub successes: IntCounter,
    /// Attempts that failed.
    pub failures: IntCounter,
    /// Attempts lost to a kept-alive connection the origin closed as they went out, and sent
    /// again: neither a success nor the origin's failure.
    pub closed_connections: IntCounter,
    /// Attempts whose pooled connection never wrote them within the connect timeout, sent
    /// again on a new connection: nothing reached the origin.
    pub unsent: IntCounter,
}

/// Per-site handles.
#[derive(Clone)]
pub struct SiteMetrics {
    site: String,
    /// Handles of each origin, in the Site's order.
    pub origins: Vec<OriginMetrics>,
    /// Retries.
    pub retries: IntCounter,
    /// Queue depth.
    pub queue_depth: IntGauge,
    /// Queue wait by arrival class.
    pub queue_wait: [Histogram; 5],
    /// Rejections of a full queue.
    pub queue_full: IntCounter,
    /// Rejections of a queue timeout.
    pub queue_timeout: IntCounter,
    /// Requests shed by a standing queue (overload) after its shorter wait.
    pub queue_shed: IntCounter,
    durations: [Histogram; 5],
    requests: Arc<RequestCounters>,
}

/// A Site's `causeway_requests_total` series by class and status, each looked up in the
/// family once, on first use, so that counting a request is two indexes and an increment
/// rather than a hash of three labels under the family's lock. Rows of a hundred codes are
/// allocated when a code of theirs is first seen, so an idle Site costs a few words.
struct RequestCounters {
    family: IntCounterVec,
    site: String,
    /// By class, then by the status code's hundred (1xx..5xx), then by its last two digits.
    by_class: [[CodeRow; 5]; 5],
}

/// The counters of a hundred status codes, allocated on first use.
type CodeRow = OnceLock<Box<[OnceLock<IntCounter>]>>;

impl RequestCounters {
    fn new(family: IntCounterVec, site: &str) -> Self {
        Self {
            family,
            site: site.to_owned(),
            by_class: Default::default(),
        }
    }

    fn inc(&self, class: usize, code: u16) {
        // hyper gives every answer a code in 100..=599; anything else goes to the family.
        let Some(row) = usize::from(code / 100)
            .checked_sub(1)
            .and_then(|hundred| self.by_class[class].get(hundred))
        else {
            self.lookup(class, code).inc();
            return;
        };
        let row = row.get_or_init(|| (0..100).map(|_| OnceLock::new()).collect());
        row[usize::from(code % 100)]
            .get_or_init(|| self.lookup(class, code))
            .inc();
    }

    fn lookup(&self, class: usize, code: u16) -> IntCounter {
        self.family.with_label_values(&[
            self.site.as_str(),
            CLASS_LABELS[class],
            code_label(code).as_ref(),
        ])
    }
}

impl std::fmt::Debug for SiteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteMetrics")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

impl SiteMetrics {
    /// Records one answered client request.
    pub fn record_request(&self, class: u8, code: u16, seconds: f64) {
        let class = usize::from(class.min(4));
        self.durations[class].observe(seconds);
        self.requests.inc(class, code);
    }
}

// The class labels cover every priority class.
const _: () = assert!(CLASS_LABELS.len() == causeway_api::site::PRIORITY_CLASSES as usize);
