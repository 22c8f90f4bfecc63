//! The QoS loop's I/O: every interval, fetch each gateway pod's QoS report (`GET /qos/pod`
//! on its admin port, [`causeway_api::contract::qos`]), compute its figures against the
//! previous report ([`super::figures`]), and write each Site's and
//! Frontend's `status.qos` — only when a figure moved past a threshold or the set of pods
//! changed, so a quiet system makes no writes, and never more than once per object per
//! interval. Writes use their own field manager, so they never conflict with the
//! reconcilers' status writes; the reconcilers read the figures back to judge the goals.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use causeway_api::status::{PodQos, PodRole, worst_p99};
use causeway_api::{API_VERSION, Frontend, Site};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use causeway_api::contract::qos::{MAX_REPORT_BYTES, PodReport, REPORT_PATH, ReportError};

use super::figures::{Interval, Scope, pod_qos};
use crate::metrics::Metrics;
use crate::names::{BACKEND_ADMIN_PORT, COMPONENT_LABEL, FRONTEND_ADMIN_PORT, SITE_LABEL, Tier};

/// The field manager of the QoS loop's status writes.
pub const QOS_FIELD_MANAGER: &str = "causeway-qos";

/// How often pods are asked for their report (and at most how often an object's status is written).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The longest fetching a report may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pod's report this round and its previous one, if any.
type PodRound<'a> = (&'a GatewayPod, PodReport, Option<(PodReport, Instant)>);

/// A gateway pod found this round.
struct GatewayPod {
    name: String,
    namespace: String,
    uid: String,
    role: PodRole,
    /// The Site (back-ends) or Frontend (front-ends) it belongs to.
    owner: String,
    address: String,
}

/// The collector's memory: each pod's last report and when it was fetched.
pub struct Collector {
    client: kube::Client,
    namespace: Option<String>,
    metrics: Metrics,
    http: Client<HttpConnector, Empty<Bytes>>,
    previous: HashMap<String, (PodReport, Instant)>,
}

impl Collector {
    /// A collector over the gateways of `namespace` (all when `None`).
    pub fn new(client: kube::Client, namespace: Option<String>, metrics: Metrics) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(SCRAPE_TIMEOUT));
        Self {
            client,
            namespace,
            metrics,
            http: Client::builder(TokioExecutor::new()).build(connector),
            previous: HashMap::new(),
        }
    }

    /// Runs a round every `interval`, forever; errors of one round are logged and the next
    /// round tries again.
    pub async fn run(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = self.round().await {
                tracing::warn!(%error, "QoS round failed; trying again next interval");
            }
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// One round: scrape, compute, write what changed.
    ///
    /// # Errors
    /// When listing pods, Sites or Frontends fails.
    pub async fn round(&mut self) -> Result<(), kube::Error> {
        let selector = format!(
            "{COMPONENT_LABEL} in ({},{})",
            Tier::Frontend.as_str(),
            Tier::Backend.as_str()
        );
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&selector))
            .await?;
        let gateways: Vec<GatewayPod> = pods.items.iter().filter_map(gateway_pod).collect();
        let scrapes = futures_util::future::join_all(
            gateways.iter().map(|pod| scrape(&self.http, &pod.address)),
        )
        .await;
        let now = Instant::now();
        let at = Time(Timestamp::now());
        // This round's figures source: each pod's scrape and the interval since its last.
        let mut rounds: Vec<PodRound<'_>> = Vec::new();
        for (pod, scraped) in gateways.iter().zip(scrapes) {
            self.metrics.qos_scrape(scraped.is_ok());
            match scraped {
                Ok(scrape) => {
                    let before = self.previous.remove(&pod.uid);
                    rounds.push((pod, scrape, before));
                }
                // A reply that is not a report this build reads is a fault to see (an
                // operator and gateways of different versions); a pod not answering yet is not.
                Err(error @ ScrapeError::Report(_)) => {
                    tracing::warn!(pod = %pod.name, %error, "QoS report refused");
                }
                Err(error) => {
                    tracing::debug!(pod = %pod.name, %error, "scrape failed");
                }
            }
        }
        let figures = |pod: &GatewayPod,
                       scope: Scope<'_>,
                       now_scrape: &PodReport,
                       before: &Option<(PodReport, Instant)>| {
            let interval = Interval {
                before: before.as_ref().map(|(s, _)| s),
                now: now_scrape,
                seconds: before
                    .as_ref()
                    .map_or(0.0, |(_, then)| now.duration_since(*then).as_secs_f64()),
            };
            pod_qos(&pod.name, pod.role, scope, interval, at.clone())
        };

        let frontends = self.api::<Frontend>().list(&ListParams::default()).await?;
        // Which Frontends serve each Site: (namespace, site) → Frontend names.
        let mut serving: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for frontend in &frontends.items {
            let namespace = frontend.namespace().unwrap_or_default();
            for site in frontend.status.iter().flat_map(|s| s.sites.iter()) {
                serving
                    .entry((namespace.clone(), site.clone()))
                    .or_default()
                    .push(frontend.name_any());
            }
        }
        let sites = self.api::<Site>().list(&ListParams::default()).await?;
        for site in &sites.items {
            let namespace = site.namespace().unwrap_or_default();
            let name = site.name_any();
            let label = format!("{namespace}/{name}");
            let fronts = serving
                .get(&(namespace.clone(), name.clone()))
                .cloned()
                .unwrap_or_default();
            let mut qos: Vec<PodQos> = rounds
                .iter()
                .filter(|(pod, _, _)| {
                    pod.namespace == namespace
                        && match pod.role {
                            PodRole::Backend => pod.owner == name,
                            PodRole::Frontend => fronts.contains(&pod.owner),
                        }
                })
                .map(|(pod, scrape, before)| figures(pod, Scope::Site(&label), scrape, before))
                .collect();
            qos.sort_by(|a, b| a.pod.cmp(&b.pod));
            let current = site
                .status
                .as_ref()
                .map(|s| s.qos.as_slice())
                .unwrap_or(&[]);
            if significant_change(current, &qos) {
                let api: Api<Site> = Api::namespaced(self.client.clone(), &namespace);
                let body = json!({
                    "apiVersion": API_VERSION,
                    "kind": "Site",
                    "status": { "qos": qos, "latencyP99": worst_p99(&qos) },
                });
                match api
                    .patch_status(
                        &name,
                        &PatchParams::apply(QOS_FIELD_MANAGER).force(),
                        &Patch::Apply(&body),
                    )
                    .await
                {
                    Ok(_) => self.metrics.qos_write("site"),
                    Err(error) => tracing::warn!(site = %label, %error, "QoS status write failed"),
                }
            }
        }
        for frontend in &frontends.items {
            let namespace = frontend.namespace().unwrap_or_default();
            let name = frontend.name_any();
            let mut qos: Vec<PodQos> = rounds
                .iter()
                .filter(|(pod, _, _)| {
                    pod.role == PodRole::Frontend && pod.namespace == namespace && pod.owner == name
                })
                .map(|(pod, scrape, before)| figures(pod, Scope::Pod, scrape, before))
                .collect();
            qos.sort_by(|a, b| a.pod.cmp(&b.pod));
            let current = frontend
                .status
                .as_ref()
                .map(|s| s.qos.as_slice())
                .unwrap_or(&[]);
            if significant_change(current, &qos) {
                let api: Api<Frontend> = Api::namespaced(self.client.clone(), &namespace);
                let body = json!({
                    "apiVersion": API_VERSION,
                    "kind": "Frontend",
                    "status": { "qos": qos },
                });
                match api
                    .patch_status(
                        &name,
                        &PatchParams::apply(QOS_FIELD_MANAGER).force(),
                        &Patch::Apply(&body),
                    )
                    .await
                {
                    Ok(_) => self.metrics.qos_write("frontend"),
                    Err(error) => {
                        tracing::warn!(frontend = %name, %error, "QoS status write failed");
                    }
                }
            }
        }
        // Keep this round's reports for the next; pods not seen are forgotten.
        self.previous = rounds
            .into_iter()
            .map(|(pod, scrape, _)| (pod.uid.clone(), (scrape, now)))
            .collect();
        Ok(())
    }
}

/// A running gateway pod with an address, from the labels the operator gave it.
fn gateway_pod(pod: &Pod) -> Option<GatewayPod> {
    let labels = pod.metadata.labels.as_ref()?;
    let (role, owner_label, port) = match labels.get(COMPONENT_LABEL)?.as_str() {
        "backend" => (PodRole::Backend, SITE_LABEL, BACKEND_ADMIN_PORT),
        "frontend" => (
            PodRole::Frontend,
            Tier::Frontend.owner_label(),
            FRONTEND_ADMIN_PORT,
        ),
        _ => return None,
    };
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip = status.pod_ip.as_ref()?;
    let address = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    Some(GatewayPod {
        name: pod.name_any(),
        namespace: pod.namespace()?,
        uid: pod.uid()?,
        role,
        owner: labels.get(owner_label)?.clone(),
        address,
    })
}

/// Why fetching a pod's report failed (counted as a failed scrape).
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error("{0}")]
    Http(String),
    #[error("timed out")]
    Timeout,
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("body larger than {MAX_REPORT_BYTES} bytes or unreadable")]
    Body,
    #[error(transparent)]
    Report(#[from] ReportError),
}

async fn scrape(
    http: &Client<HttpConnector, Empty<Bytes>>,
    address: &str,
) -> Result<PodReport, ScrapeError> {
    let uri: http::Uri = format!("http://{address}{REPORT_PATH}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| ScrapeError::Http(e.to_string()))?;
    let exchange = async {
        let response = http
            .get(uri)
            .await
            .map_err(|e| ScrapeError::Http(e.to_string()))?;
        if !response.status().is_success() {
            return Err(ScrapeError::Status(response.status()));
        }
        read_report(response.into_body()).await
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
        .await
        .map_err(|_| ScrapeError::Timeout)?
}

/// Reads a reply body as a report, never more than [`MAX_REPORT_BYTES`] of it.
async fn read_report<B>(body: B) -> Result<PodReport, ScrapeError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = http_body_util::Limited::new(body, MAX_REPORT_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| ScrapeError::Body)?;
    Ok(PodReport::from_json(&body)?)
}

/// Whether `new` differs from the status in force enough to be written: another set of
/// pods, or a figure that moved by more than 10% (and more than a small absolute amount, so
/// near-zero figures do not churn). Timestamps alone never make a write.
pub fn significant_change(old: &[PodQos], new: &[PodQos]) -> bool {
    if old.len() != new.len() {
        return true;
    }
    let moved = |a: f64, b: f64, floor: f64| {
        let delta = (a - b).abs();
        delta > floor && delta > 0.1 * a.abs().max(b.abs())
    };
    old.iter().zip(new).any(|(a, b)| {
        a.pod != b.pod
            || a.role != b.role
            || moved(a.p99_ms, b.p99_ms, 5.0)
            || moved(a.p50_ms, b.p50_ms, 5.0)
            || moved(a.request_rate, b.request_rate, 1.0)
            || moved(a.error_rate, b.error_rate, 0.5)
            || moved(a.rtt_ms, b.rtt_ms, 2.0)
            || moved(a.loss, b.loss, 0.002)
            || moved(a.queue_wait_p99_ms, b.queue_wait_p99_ms, 5.0)
            || moved(f64::from(a.in_flight), f64::from(b.in_flight), 2.0)
            || moved(f64::from(a.queued), f64::from(b.queued), 2.0)
            || a.links.len() != b.links.len()
            || a.origins
                .iter()
                .map(|o| o.healthy)
                .ne(b.origins.iter().map(|o| o.healthy))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pod: &str, p99_ms: f64, rate: f64) -> PodQos {
        PodQos {
            pod: pod.into(),
            role: PodRole::Backend,
            rtt_ms: 0.0,
            loss: 0.0,
            p50_ms: 1.0,
            p99_ms,
            request_rate: rate,
            error_rate: 0.0,
            in_flight: 0,
            queued: 0,
            queue_wait_p99_ms: 0.0,
            links: Vec::new(),
            origins: Vec::new(),
            updated: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[tokio::test]
    async fn a_bad_or_oversized_reply_is_an_error_not_a_report() {
        let body = |bytes: Vec<u8>| http_body_util::Full::new(Bytes::from(bytes));
        let good = PodReport::default().to_json().expect("serializes");
        assert_eq!(
            read_report(body(good)).await.expect("reads"),
            PodReport::default()
        );
        let text = b"causeway_requests_total{site=\"ns/shop\"} 1\n".to_vec();
        assert!(matches!(
            read_report(body(text)).await,
            Err(ScrapeError::Report(ReportError::Syntax(_)))
        ));
        assert!(matches!(
            read_report(body(br#"{"version": 99}"#.to_vec())).await,
            Err(ScrapeError::Report(ReportError::Version {
                found: Some(99)
            }))
        ));
        let mut huge = br#"{"version": 1, "sites": [], "pad": ""#.to_vec();
        huge.resize(MAX_REPORT_BYTES + 10, b'x');
        huge.extend_from_slice(br#""}"#);
        assert!(matches!(
            read_report(body(huge)).await,
            Err(ScrapeError::Body)
        ));
    }

    #[test]
    fn only_real_movement_makes_a_write() {
        let old = [entry("a", 100.0, 50.0)];
        assert!(!significant_change(&old, &[entry("a", 104.0, 52.0)]));
        let mut later = entry("a", 100.0, 50.0);
        later.updated = Time(Timestamp::now());
        assert!(
            !significant_change(&old, &[later]),
            "time alone is no change"
        );
        assert!(significant_change(&old, &[entry("a", 150.0, 50.0)]));
        assert!(significant_change(&old, &[entry("a", 100.0, 80.0)]));
        assert!(significant_change(&old, &[entry("b", 100.0, 50.0)]));
        assert!(significant_change(&old, &[]));
        assert!(!significant_change(
            &[entry("a", 0.0, 0.2)],
            &[entry("a", 0.0, 0.9)]
        ));
    }
}
