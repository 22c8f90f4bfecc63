//! One pod's quality-of-service figures for one Site (or all its Sites), from two successive
//! QoS reports of the pod ([`PodReport`]): rates and percentiles over the interval between
//! them, gauges as they are now. Pure: the collector fetches the reports.

use causeway_api::contract::qos::{ClassHistogram, PodReport, SiteReport};
use causeway_api::status::{LinkQos, OriginQos, PodQos, PodRole};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Which of a pod's Sites the figures are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One Site, by the name the gateway labels it with (`namespace/name`).
    Site(&'a str),
    /// Every Site the pod serves, together (and the requests that reached none).
    Pod,
}

impl Scope<'_> {
    /// The Sites of `report` in scope.
    fn sites(self, report: &PodReport) -> impl Iterator<Item = &SiteReport> {
        report.sites.iter().filter(move |site| match self {
            Self::Site(name) => site.site == name,
            Self::Pod => true,
        })
    }
}

/// Two reports of one pod and the seconds between them.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a> {
    /// The earlier report, if there is one yet.
    pub before: Option<&'a PodReport>,
    /// The latest report.
    pub now: &'a PodReport,
    /// Seconds between the two.
    pub seconds: f64,
}

/// Which histogram of a Site.
#[derive(Clone, Copy)]
enum Family {
    Duration,
    QueueWait,
}

impl Family {
    fn of(self, site: &SiteReport) -> &[ClassHistogram] {
        match self {
            Self::Duration => &site.duration,
            Self::QueueWait => &site.queue_wait,
        }
    }
}

/// The figures of `pod` for `scope` over `interval`, taken at `at`.
pub fn pod_qos(
    pod: &str,
    role: PodRole,
    scope: Scope<'_>,
    interval: Interval<'_>,
    at: Time,
) -> PodQos {
    // `code_class` is the hundreds digit of the codes counted (5 for 5xx), or every code.
    let counter = |report: &PodReport, code_class: Option<u16>| {
        let matches = |code: u16| code_class.is_none_or(|class| code / 100 == class);
        let routed: u64 = scope
            .sites(report)
            .flat_map(|site| &site.requests)
            .filter(|r| matches(r.code))
            .map(|r| r.count)
            .sum();
        let unrouted: u64 = match scope {
            Scope::Pod => report
                .unrouted
                .iter()
                .filter(|r| matches(r.code))
                .map(|r| r.count)
                .sum(),
            Scope::Site(_) => 0,
        };
        // Counts fit an f64 exactly far beyond any pod's lifetime.
        (routed + unrouted) as f64
    };
    let rate = |code_class: Option<u16>| match interval.before {
        Some(before) if interval.seconds > 0.0 => {
            increase(
                counter(before, code_class),
                counter(interval.now, code_class),
            ) / interval.seconds
        }
        _ => 0.0,
    };
    let percentile = |family: Family, q: f64| {
        let now = buckets(interval.now, family, scope);
        let before = interval
            .before
            .map(|b| buckets(b, family, scope))
            .unwrap_or_default();
        let delta: Vec<(f64, f64)> = now
            .iter()
            .map(|(le, count)| {
                let old = before
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |(_, c)| *c);
                (*le, increase(old, *count))
            })
            .collect();
        quantile(q, &delta).map_or(0.0, |seconds| seconds * 1000.0)
    };
    let links = links(interval.now);
    let origins = match (role, scope) {
        (PodRole::Backend, Scope::Site(_)) => origins(interval.now, scope),
        _ => Vec::new(),
    };
    let in_flight: u64 = match role {
        PodRole::Backend => scope
            .sites(interval.now)
            .flat_map(|site| &site.origins)
            .map(|origin| origin.in_flight)
            .sum(),
        // A front-end's load is the channels it has open on its links: its own end's count.
        PodRole::Frontend => interval
            .now
            .links
            .iter()
            .filter_map(|link| link.frontend.as_ref())
            .map(|end| end.channels)
            .sum(),
    };
    let queued: u64 = scope.sites(interval.now).map(|site| site.queue_depth).sum();
    PodQos {
        pod: pod.to_owned(),
        role,
        rtt_ms: links.iter().map(|l| l.rtt_ms).fold(0.0, f64::max),
        loss: links.iter().map(|l| l.loss).fold(0.0, f64::max),
        p50_ms: round(percentile(Family::Duration, 0.5)),
        p99_ms: round(percentile(Family::Duration, 0.99)),
        request_rate: round(rate(None)),
        error_rate: round(rate(Some(5))),
        in_flight: whole(in_flight),
        queued: whole(queued),
        queue_wait_p99_ms: round(percentile(Family::QueueWait, 0.99)),
        links,
        origins,
        updated: at,
    }
}

/// A counter's increase, counting a restart (a drop) as starting from zero.
fn increase(before: f64, now: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// The cumulative buckets of one histogram of the Sites in scope, summed over Sites and
/// classes, by bound; the open-ended bucket (every observation) last, at infinity.
fn buckets(report: &PodReport, family: Family, scope: Scope<'_>) -> Vec<(f64, f64)> {
    let mut by_bound: Vec<(f64, f64)> = Vec::new();
    let mut add = |le: f64, count: u64| {
        // Counts fit an f64 exactly far beyond any pod's lifetime.
        let count = count as f64;
        match by_bound.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, total)) => *total += count,
            None => by_bound.push((le, count)),
        }
    };
    for class in scope.sites(report).flat_map(|site| family.of(site)) {
        for bucket in &class.histogram.buckets {
            add(bucket.le, bucket.count);
        }
        add(f64::INFINITY, class.histogram.count);
    }
    by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_bound
}

/// The `q` quantile of cumulative `buckets` (sorted by bound), interpolated within its bucket
/// as Prometheus' `histogram_quantile` does; `None` without observations. A quantile in the
/// open-ended bucket reads as the highest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower_bound);
            }
            let in_bucket = count - lower_count;
            let fraction = if in_bucket > 0.0 {
                (rank - lower_count) / in_bucket
            } else {
                1.0
            };
            return Some(lower_bound + (bound - lower_bound) * fraction);
        }
        lower_bound = bound;
        lower_count = count;
    }
    Some(lower_bound)
}

/// Every TMP link of the pod, the worse of its two ends' figures (and of its links to the
/// same peer, should there be two for a moment).
fn links(report: &PodReport) -> Vec<LinkQos> {
    let mut links: Vec<LinkQos> = Vec::new();
    for link in &report.links {
        let index = match links.iter().position(|l| l.peer == link.peer) {
            Some(index) => index,
            None => {
                links.push(LinkQos {
                    peer: link.peer.clone(),
                    rtt_ms: 0.0,
                    loss: 0.0,
                });
                links.len() - 1
            }
        };
        for end in [&link.frontend, &link.backend].into_iter().flatten() {
            links[index].rtt_ms = round(links[index].rtt_ms.max(end.rtt_ms));
            links[index].loss = round4(links[index].loss.max(end.loss));
        }
    }
    links.sort_by(|a, b| a.peer.cmp(&b.peer));
    links
}

/// The Site's origins as the back-end sees them.
fn origins(report: &PodReport, scope: Scope<'_>) -> Vec<OriginQos> {
    let mut origins: Vec<OriginQos> = scope
        .sites(report)
        .flat_map(|site| &site.origins)
        .map(|origin| OriginQos {
            name: origin.name.clone(),
            healthy: origin.healthy,
            latency_ms: round(origin.latency_ewma_ms),
            in_flight: whole(origin.in_flight),
        })
        .collect();
    origins.sort_by(|a, b| a.name.cmp(&b.name));
    origins
}

/// Rounded to 0.1: status figures that jitter in the last digits would make every report a
/// change.
fn round(value: f64) -> f64 {
    if value.is_finite() {
        (value * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn round4(value: f64) -> f64 {
    if value.is_finite() {
        (value * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}

/// A count as the status carries it, saturating on absurd values.
fn whole(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_api::contract::qos::{
        Bucket, Histogram, LinkEnd, LinkReport, OriginReport, REPORT_VERSION, RequestCount,
    };
    use k8s_openapi::jiff::Timestamp;

    fn requests(class: u8, code: u16, count: f64) -> RequestCount {
        RequestCount {
            class,
            code,
            count: count as u64,
        }
    }

    /// A back-end's report: `ns/shop` with the given counts, `ns/other` busy, one link.
    fn report(requests_200: f64, requests_503: f64, fast: f64, slow: f64) -> PodReport {
        let bucket = |le: f64, count: f64| Bucket {
            le,
            count: count as u64,
        };
        PodReport {
            version: REPORT_VERSION,
            unrouted: Vec::new(),
            sites: vec![
                SiteReport {
                    site: "ns/shop".into(),
                    requests: vec![
                        requests(2, 200, requests_200),
                        requests(2, 503, requests_503),
                    ],
                    duration: vec![ClassHistogram {
                        class: 2,
                        histogram: Histogram {
                            buckets: vec![
                                bucket(0.01, fast),
                                bucket(0.1, fast),
                                bucket(1.0, fast + slow),
                            ],
                            count: (fast + slow) as u64,
                            sum: 0.0,
                        },
                    }],
                    queue_wait: Vec::new(),
                    queue_depth: 2,
                    origins: vec![
                        OriginReport {
                            name: "a".into(),
                            healthy: true,
                            latency_ewma_ms: 12.3,
                            in_flight: 3,
                        },
                        OriginReport {
                            name: "b".into(),
                            healthy: false,
                            latency_ewma_ms: 0.0,
                            in_flight: 0,
                        },
                    ],
                },
                SiteReport {
                    site: "ns/other".into(),
                    requests: vec![requests(2, 200, 1000.0)],
                    ..SiteReport::default()
                },
            ],
            links: vec![LinkReport {
                peer: "10.0.0.9:4433".into(),
                frontend: Some(LinkEnd {
                    rtt_ms: 20.0,
                    loss: 0.01,
                    channels: 5,
                }),
                backend: Some(LinkEnd {
                    rtt_ms: 25.0,
                    loss: 0.0,
                    channels: 5,
                }),
            }],
        }
    }

    #[test]
    fn rates_and_percentiles_come_from_the_interval() {
        let before = report(100.0, 0.0, 100.0, 0.0);
        // 10 s later: 190 more OK answers and 10 errors; 100 fast and 100 slow (0.1–1 s).
        let now = report(290.0, 10.0, 200.0, 100.0);
        let interval = Interval {
            before: Some(&before),
            now: &now,
            seconds: 10.0,
        };
        let qos = pod_qos(
            "backend-0",
            PodRole::Backend,
            Scope::Site("ns/shop"),
            interval,
            Time(Timestamp::UNIX_EPOCH),
        );
        assert_eq!(qos.request_rate, 20.0);
        assert_eq!(qos.error_rate, 1.0);
        assert_eq!(
            qos.p50_ms, 10.0,
            "half the interval's answers were fast (under 10 ms)"
        );
        assert!(qos.p99_ms > 900.0 && qos.p99_ms <= 1000.0, "{}", qos.p99_ms);
        assert_eq!((qos.in_flight, qos.queued), (3, 2));
        assert_eq!(qos.rtt_ms, 25.0, "the worse end of the link");
        assert_eq!(qos.loss, 0.01);
        assert_eq!(qos.origins.len(), 2);
        assert!(qos.origins[0].healthy && !qos.origins[1].healthy);
        assert_eq!(qos.origins[0].latency_ms, 12.3);
    }

    #[test]
    fn a_first_scrape_has_no_rates_and_a_restart_counts_from_zero() {
        let now = report(50.0, 0.0, 50.0, 0.0);
        let first = Interval {
            before: None,
            now: &now,
            seconds: 0.0,
        };
        let qos = pod_qos(
            "p",
            PodRole::Frontend,
            Scope::Pod,
            first,
            Time(Timestamp::UNIX_EPOCH),
        );
        assert_eq!(qos.request_rate, 0.0);
        assert!(qos.origins.is_empty(), "front-ends report no origins");
        assert_eq!(increase(500.0, 20.0), 20.0);
    }

    #[test]
    fn a_pod_scope_counts_every_site_and_unrouted_requests() {
        let mut before = report(100.0, 0.0, 100.0, 0.0);
        let mut now = report(200.0, 0.0, 100.0, 0.0);
        before.unrouted = vec![causeway_api::contract::qos::CodeCount {
            code: 404,
            count: 0,
        }];
        now.unrouted = vec![causeway_api::contract::qos::CodeCount {
            code: 404,
            count: 10,
        }];
        if let Some(other) = now.sites.get_mut(1) {
            other.requests = vec![requests(2, 200, 1100.0), requests(1, 502, 40.0)];
        }
        let interval = Interval {
            before: Some(&before),
            now: &now,
            seconds: 10.0,
        };
        let qos = pod_qos(
            "frontend-0",
            PodRole::Frontend,
            Scope::Pod,
            interval,
            Time(Timestamp::UNIX_EPOCH),
        );
        // 100 more on ns/shop, 140 on ns/other (40 of them 502), 10 unrouted: 250 in 10 s.
        assert_eq!(qos.request_rate, 25.0);
        assert_eq!(qos.error_rate, 4.0);
        assert_eq!(qos.queued, 2);
        assert_eq!(qos.in_flight, 5, "the front-end's own channels");
        assert_eq!(qos.links.len(), 1);
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let buckets = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.1));
        assert!((quantile(0.75, &buckets).unwrap_or(0.0) - 0.15).abs() < 1e-9);
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 100.0)]),
            Some(0.1)
        );
    }
}
