//! One pod's quality-of-service figures for one Site (or all its Sites), from two successive
//! scrapes of its `/metrics`: rates and percentiles over the interval between them, gauges as
//! they are now. Pure: the collector does the scraping.

use causeway_api::status::{LinkQos, OriginQos, PodQos, PodRole};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::exposition::Scrape;

/// Request counter, by site, class and code.
const REQUESTS: &str = "causeway_requests_total";
/// Response-time histogram, by site and class.
const DURATION_BUCKETS: &str = "causeway_request_duration_seconds_bucket";
/// Release-queue wait histogram, by site and class.
const QUEUE_WAIT_BUCKETS: &str = "causeway_queue_wait_seconds_bucket";

/// Which of a pod's Sites the figures are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One Site, by the name the gateway labels it with (`namespace/name`).
    Site(&'a str),
    /// Every Site the pod serves, together.
    Pod,
}

impl<'a> Scope<'a> {
    fn matching(self) -> Vec<(&'static str, &'a str)> {
        match self {
            Self::Site(site) => vec![("site", site)],
            Self::Pod => Vec::new(),
        }
    }
}

/// Two scrapes of one pod and the seconds between them.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a> {
    /// The earlier scrape, if there is one yet.
    pub before: Option<&'a Scrape>,
    /// The latest scrape.
    pub now: &'a Scrape,
    /// Seconds between the two.
    pub seconds: f64,
}

/// The figures of `pod` for `scope` over `interval`, taken at `at`.
pub fn pod_qos(
    pod: &str,
    role: PodRole,
    scope: Scope<'_>,
    interval: Interval<'_>,
    at: Time,
) -> PodQos {
    let matching = scope.matching();
    let counter = |scrape: &Scrape, code_class: Option<char>| {
        scrape
            .samples(REQUESTS, &matching)
            .filter(|(labels, _)| {
                code_class.is_none_or(|first| {
                    labels
                        .get("code")
                        .is_some_and(|code| code.starts_with(first))
                })
            })
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let rate = |code_class: Option<char>| match interval.before {
        Some(before) if interval.seconds > 0.0 => {
            increase(
                counter(before, code_class),
                counter(interval.now, code_class),
            ) / interval.seconds
        }
        _ => 0.0,
    };
    let percentile = |family: &str, q: f64| {
        let now = buckets(interval.now, family, &matching);
        let before = interval
            .before
            .map(|b| buckets(b, family, &matching))
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
        (PodRole::Backend, Scope::Site(_)) => origins(interval.now, &matching),
        _ => Vec::new(),
    };
    let in_flight = match role {
        PodRole::Backend => interval.now.sum("causeway_origin_in_flight", &matching),
        PodRole::Frontend => interval
            .now
            .sum("causeway_link_channels", &[("end", "local")]),
    };
    PodQos {
        pod: pod.to_owned(),
        role,
        rtt_ms: links.iter().map(|l| l.rtt_ms).fold(0.0, f64::max),
        loss: links.iter().map(|l| l.loss).fold(0.0, f64::max),
        p50_ms: round(percentile(DURATION_BUCKETS, 0.5)),
        p99_ms: round(percentile(DURATION_BUCKETS, 0.99)),
        request_rate: round(rate(None)),
        error_rate: round(rate(Some('5'))),
        in_flight: whole(in_flight),
        queued: whole(interval.now.sum("causeway_queue_depth", &matching)),
        queue_wait_p99_ms: round(percentile(QUEUE_WAIT_BUCKETS, 0.99)),
        links,
        origins,
        updated: at,
    }
}

/// A counter's increase, counting a restart (a drop) as starting from zero.
fn increase(before: f64, now: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// The cumulative buckets of a histogram family, summed over the other labels, by `le`.
fn buckets(scrape: &Scrape, family: &str, matching: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut by_bound: Vec<(f64, f64)> = Vec::new();
    for (labels, count) in scrape.samples(family, matching) {
        let Some(le) = labels.get("le").and_then(|le| parse_bound(le)) else {
            continue;
        };
        match by_bound.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, total)) => *total += count,
            None => by_bound.push((le, count)),
        }
    }
    by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_bound
}

fn parse_bound(le: &str) -> Option<f64> {
    if le == "+Inf" {
        Some(f64::INFINITY)
    } else {
        le.parse().ok()
    }
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

/// Every TMP link of the pod, the worse of its two ends' figures.
fn links(scrape: &Scrape) -> Vec<LinkQos> {
    let mut links: Vec<LinkQos> = Vec::new();
    let mut entry = |peer: &str| -> usize {
        if let Some(index) = links.iter().position(|l| l.peer == peer) {
            return index;
        }
        links.push(LinkQos {
            peer: peer.to_owned(),
            rtt_ms: 0.0,
            loss: 0.0,
        });
        links.len() - 1
    };
    let mut rtts = Vec::new();
    for (labels, seconds) in scrape.samples("causeway_link_rtt_seconds", &[]) {
        if let Some(peer) = labels.get("peer") {
            rtts.push((entry(peer), seconds * 1000.0));
        }
    }
    let mut losses = Vec::new();
    for (labels, loss) in scrape.samples("causeway_link_loss_ratio", &[]) {
        if let Some(peer) = labels.get("peer") {
            losses.push((entry(peer), loss));
        }
    }
    for (index, ms) in rtts {
        links[index].rtt_ms = round(links[index].rtt_ms.max(ms));
    }
    for (index, loss) in losses {
        links[index].loss = round4(links[index].loss.max(loss));
    }
    links.sort_by(|a, b| a.peer.cmp(&b.peer));
    links
}

/// The Site's origins as the back-end sees them.
fn origins(scrape: &Scrape, matching: &[(&str, &str)]) -> Vec<OriginQos> {
    let mut origins: Vec<OriginQos> = scrape
        .samples("causeway_origin_healthy", matching)
        .filter_map(|(labels, healthy)| {
            let name = labels.get("origin")?;
            let mut own: Vec<(&str, &str)> = matching.to_vec();
            own.push(("origin", name));
            Some(OriginQos {
                name: name.clone(),
                healthy: healthy >= 1.0,
                latency_ms: round(
                    scrape.sum("causeway_origin_latency_ewma_seconds", &own) * 1000.0,
                ),
                in_flight: whole(scrape.sum("causeway_origin_in_flight", &own)),
            })
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

fn whole(value: f64) -> u32 {
    if value.is_finite() && value > 0.0 {
        // Gauges of small counts; the cast saturates on absurd values.
        value.round() as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn scrape(requests_200: f64, requests_503: f64, fast: f64, slow: f64) -> Scrape {
        let site = "site=\"ns/shop\"";
        let text = format!(
            "causeway_requests_total{{{site},class=\"2\",code=\"200\"}} {requests_200}\n\
             causeway_requests_total{{{site},class=\"2\",code=\"503\"}} {requests_503}\n\
             causeway_requests_total{{site=\"ns/other\",class=\"2\",code=\"200\"}} 1000\n\
             causeway_request_duration_seconds_bucket{{{site},class=\"2\",le=\"0.01\"}} {fast}\n\
             causeway_request_duration_seconds_bucket{{{site},class=\"2\",le=\"0.1\"}} {fast}\n\
             causeway_request_duration_seconds_bucket{{{site},class=\"2\",le=\"1\"}} {}\n\
             causeway_request_duration_seconds_bucket{{{site},class=\"2\",le=\"+Inf\"}} {}\n\
             causeway_origin_healthy{{{site},origin=\"a\"}} 1\n\
             causeway_origin_healthy{{{site},origin=\"b\"}} 0\n\
             causeway_origin_latency_ewma_seconds{{{site},origin=\"a\"}} 0.0123\n\
             causeway_origin_in_flight{{{site},origin=\"a\"}} 3\n\
             causeway_queue_depth{{{site}}} 2\n\
             causeway_link_rtt_seconds{{peer=\"10.0.0.9:4433\",end=\"local\"}} 0.020\n\
             causeway_link_rtt_seconds{{peer=\"10.0.0.9:4433\",end=\"remote\"}} 0.025\n\
             causeway_link_loss_ratio{{peer=\"10.0.0.9:4433\",end=\"local\"}} 0.01\n",
            fast + slow,
            fast + slow,
        );
        Scrape::parse(&text).expect("parses")
    }

    #[test]
    fn rates_and_percentiles_come_from_the_interval() {
        let before = scrape(100.0, 0.0, 100.0, 0.0);
        // 10 s later: 190 more OK answers and 10 errors; 100 fast and 100 slow (0.1–1 s).
        let now = scrape(290.0, 10.0, 200.0, 100.0);
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
        let now = scrape(50.0, 0.0, 50.0, 0.0);
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
