//! The directory from the Kubernetes API, read only: Sites (hostnames), Frontends (region,
//! client subnets, the Sites the operator says they serve), the front-ends' Services (made
//! by the operator, owned by their Frontend) and those Services' EndpointSlices (which
//! front-end pods are ready). The zones and exports come from the directory file.
//!
//! Each kind is mirrored by a kube-runtime reflector; any event wakes [`KubeSource::next`],
//! which waits [`SETTLE`] for the burst to end and builds the directory from the stores. When
//! the API server is unreachable the watchers retry with backoff while the stores keep the
//! last state, so answers go on from the last good directory.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use causeway_api::status::{PodQos, PodRole};
use causeway_api::{Frontend, Site};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Notify;

use crate::directory::{Directory, Endpoint, FrontendGroup, SiteEntry};
use crate::error::Error;
use crate::source::DirectorySource;
use crate::source::file::FileSource;

/// How long a burst of events may go on before the directory is rebuilt: short, so a change
/// reaches answers well within 2 s.
pub const SETTLE: Duration = Duration::from_millis(100);

/// A QoS report older than this says nothing about a front-end's headroom now.
pub const QOS_MAX_AGE: Duration = Duration::from_secs(60);

/// The label the operator puts on every front-end object (Service, pods), and Kubernetes
/// copies from a Service to its EndpointSlices.
pub const FRONTEND_COMPONENT: &str = "app.kubernetes.io/component=frontend";

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Everything read from the cluster, as plain lists.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    /// Sites.
    pub sites: Vec<Arc<Site>>,
    /// Frontends.
    pub frontends: Vec<Arc<Frontend>>,
    /// Front-end Services.
    pub services: Vec<Arc<Service>>,
    /// Their EndpointSlices.
    pub slices: Vec<Arc<EndpointSlice>>,
}

/// The directory of `state`, with `base`'s zones and exports (and any static Sites and
/// groups it lists). Pure: `now` dates QoS reports.
///
/// Sites are named `NAMESPACE/NAME`, since names repeat across namespaces. A Frontend's
/// front-ends are its Service's load-balancer addresses when it has any (then the group is
/// ready while any pod is), else its ready pods' addresses from the EndpointSlices.
///
/// Headroom: a front-end pod's latest QoS figures — from its Frontend's `status.qos`, or a
/// served Site's (the operator's QoS loop writes both, about every 10 s), at most
/// [`QOS_MAX_AGE`] old — give `1 / ((1 + in flight + queued) × max(p50 ms, 1))`: the inverse
/// of the wait a new request would expect, as the balancer's cost. Pods without figures weigh
/// the median of the others, or 1 when none has any, so a Frontend whose figures are missing
/// or stale is balanced evenly.
pub fn directory(base: &Directory, state: &ClusterState, now: Timestamp) -> Directory {
    let mut directory = base.clone();
    let mut reports: BTreeMap<(String, String), &PodQos> = BTreeMap::new();
    let sources = state
        .sites
        .iter()
        .map(|site| (site.namespace(), site.status.as_ref().map(|s| &s.qos)))
        .chain(state.frontends.iter().map(|frontend| {
            (
                frontend.namespace(),
                frontend.status.as_ref().map(|s| &s.qos),
            )
        }));
    for (namespace, qos) in sources {
        for report in qos.into_iter().flatten() {
            if report.role != PodRole::Frontend || !fresh(report, now) {
                continue;
            }
            let key = (namespace.clone().unwrap_or_default(), report.pod.clone());
            if reports
                .get(&key)
                .is_none_or(|old| old.updated.0 < report.updated.0)
            {
                reports.insert(key, report);
            }
        }
    }
    for site in &state.sites {
        directory.sites.push(SiteEntry {
            name: format!(
                "{}/{}",
                site.namespace().unwrap_or_default(),
                site.name_any()
            ),
            hostnames: site.spec.hostnames.clone(),
        });
    }
    directory.sites.sort_by(|a, b| a.name.cmp(&b.name));

    let mut groups = Vec::new();
    for frontend in &state.frontends {
        let namespace = frontend.namespace().unwrap_or_default();
        let served = match frontend.status.as_ref().map(|s| &s.sites) {
            Some(sites) if !sites.is_empty() => sites.clone(),
            _ => frontend.spec.sites.clone(),
        };
        let service = frontend.uid().and_then(|uid| {
            state.services.iter().find(|service| {
                service.namespace() == Some(namespace.clone())
                    && service
                        .owner_references()
                        .iter()
                        .any(|owner| owner.uid == uid && owner.kind == "Frontend")
            })
        });
        let pods = service.map_or_else(Vec::new, |service| {
            ready_pods(&state.slices, &namespace, &service.name_any())
        });
        let balancers = service.map_or_else(Vec::new, |s| load_balancer_addresses(s));
        let endpoints = if balancers.is_empty() {
            pods.iter()
                .map(|(address, pod)| Endpoint {
                    address: *address,
                    ready: true,
                    headroom: pod
                        .as_ref()
                        .and_then(|pod| reports.get(&(namespace.clone(), pod.clone())))
                        .map_or(f64::NAN, |report| headroom(report)),
                })
                .collect()
        } else {
            balancers
                .iter()
                .map(|address| Endpoint {
                    address: *address,
                    ready: !pods.is_empty(),
                    headroom: 1.0,
                })
                .collect()
        };
        groups.push(FrontendGroup {
            name: format!("{namespace}/{}", frontend.name_any()),
            region: frontend.spec.region.clone(),
            sites: served.iter().map(|s| format!("{namespace}/{s}")).collect(),
            // The API server's CEL rule admits only valid CIDRs; one that still does not
            // parse steers nobody rather than failing the whole directory.
            client_subnets: frontend
                .spec
                .client_subnets
                .iter()
                .filter_map(|cidr| cidr.parse().ok())
                .collect(),
            endpoints: fill_unreported(endpoints),
        });
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    directory.frontends.extend(groups);
    directory
}

/// Whether `report` is recent enough to count (a little clock skew either way is fine).
fn fresh(report: &PodQos, now: Timestamp) -> bool {
    now.duration_since(report.updated.0).unsigned_abs() <= QOS_MAX_AGE
}

fn headroom(report: &PodQos) -> f64 {
    let load = 1.0 + f64::from(report.in_flight) + f64::from(report.queued);
    let latency = if report.p50_ms.is_finite() {
        report.p50_ms.max(1.0)
    } else {
        1.0
    };
    1.0 / (load * latency)
}

/// Endpoints without a report (NaN headroom) get the median of those with one, or 1.
fn fill_unreported(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    let mut known: Vec<f64> = endpoints
        .iter()
        .map(|e| e.headroom)
        .filter(|h| h.is_finite())
        .collect();
    known.sort_by(f64::total_cmp);
    let fallback = known.get(known.len() / 2).copied().unwrap_or(1.0);
    for endpoint in &mut endpoints {
        if !endpoint.headroom.is_finite() {
            endpoint.headroom = fallback;
        }
    }
    endpoints
}

/// Ready, not terminating endpoint addresses of `service`'s slices, with their pod's name.
fn ready_pods(
    slices: &[Arc<EndpointSlice>],
    namespace: &str,
    service: &str,
) -> Vec<(IpAddr, Option<String>)> {
    let mut found: Vec<(IpAddr, Option<String>)> = Vec::new();
    for slice in slices {
        if slice.namespace().as_deref() != Some(namespace)
            || slice.labels().get(SERVICE_NAME_LABEL).map(String::as_str) != Some(service)
        {
            continue;
        }
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.as_ref();
            // The API: an unknown `ready` is to be taken as ready.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| t.name.clone());
            for address in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                if !found.iter().any(|(known, _)| *known == address) {
                    found.push((address, pod.clone()));
                }
            }
        }
    }
    found.sort();
    found
}

fn load_balancer_addresses(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|ingress| ingress.ip.as_ref()?.parse().ok())
        .collect()
}

/// The Kubernetes source.
pub struct KubeSource {
    zones: FileSource,
    base: Option<Directory>,
    sites: Store<Site>,
    frontends: Store<Frontend>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    changed: Arc<Notify>,
    synced: bool,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("zones", &self.zones.path())
            .finish_non_exhaustive()
    }
}

fn mirror<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => {
                    tracing::warn!(%error, kind, "watch failed; retrying, answers keep the last state");
                }
            }
        }
    });
    reader
}

impl KubeSource {
    /// Starts watching, in `namespace` or every namespace; `zones` is the directory file.
    pub fn new(client: Client, namespace: Option<String>, zones: FileSource) -> Self {
        fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
        where
            K: Resource<Scope = kube::core::NamespaceResourceScope>,
            K::DynamicType: Default,
        {
            match namespace {
                Some(namespace) => Api::namespaced(client.clone(), namespace),
                None => Api::all(client.clone()),
            }
        }
        let changed = Arc::new(Notify::new());
        let ns = namespace.as_deref();
        let frontend_objects = || watcher::Config::default().labels(FRONTEND_COMPONENT);
        Self {
            zones,
            base: None,
            sites: mirror(
                api(&client, ns),
                watcher::Config::default(),
                Arc::clone(&changed),
            ),
            frontends: mirror(
                api(&client, ns),
                watcher::Config::default(),
                Arc::clone(&changed),
            ),
            services: mirror(api(&client, ns), frontend_objects(), Arc::clone(&changed)),
            slices: mirror(api(&client, ns), frontend_objects(), Arc::clone(&changed)),
            changed,
            synced: false,
        }
    }

    fn state(&self) -> ClusterState {
        ClusterState {
            sites: self.sites.state(),
            frontends: self.frontends.state(),
            services: self.services.state(),
            slices: self.slices.state(),
        }
    }
}

impl DirectorySource for KubeSource {
    async fn next(&mut self) -> Result<Directory, Error> {
        if self.base.is_none() {
            self.base = Some(self.zones.next().await?);
        }
        if !self.synced {
            // Answering before every kind is listed would answer from half a cluster.
            for ready in [
                self.sites.wait_until_ready().await,
                self.frontends.wait_until_ready().await,
                self.services.wait_until_ready().await,
                self.slices.wait_until_ready().await,
            ] {
                ready.map_err(|_| Error::Read {
                    path: "kubernetes watch".into(),
                    source: std::io::Error::other("a watcher stopped"),
                })?;
            }
            self.synced = true;
        } else {
            tokio::select! {
                () = self.changed.notified() => {
                    tokio::time::sleep(SETTLE).await;
                }
                zones = self.zones.next() => {
                    self.base = Some(zones?);
                }
            }
        }
        let base = self.base.clone().unwrap_or_default();
        Ok(directory(&base, &self.state(), Timestamp::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> Arc<T> {
        Arc::new(serde_yaml_ng::from_str(yaml).expect("parses"))
    }

    fn state() -> ClusterState {
        ClusterState {
            sites: vec![parse(
                r#"
apiVersion: causeway.dev/v1alpha1
kind: Site
metadata: { name: shop, namespace: web }
spec:
  hostnames: [shop.example.com]
  origins: [{ name: main, url: "http://10.0.0.1:8080" }]
status:
  qos:
    - { pod: edge-frontend-a, role: Frontend, rttMs: 1, loss: 0, p50Ms: 2, p99Ms: 9, requestRate: 10, inFlight: 3, queued: 0, updated: "2030-01-01T00:00:00Z" }
    - { pod: edge-frontend-b, role: Frontend, rttMs: 1, loss: 0, p50Ms: 2, p99Ms: 9, requestRate: 10, inFlight: 9, queued: 0, updated: "2029-12-31T23:59:50Z" }
    - { pod: shop-backend-x, role: Backend, rttMs: 1, loss: 0, p50Ms: 2, p99Ms: 9, requestRate: 10, inFlight: 0, queued: 0, updated: "2030-01-01T00:00:00Z" }
"#,
            )],
            frontends: vec![parse(
                r#"
apiVersion: causeway.dev/v1alpha1
kind: Frontend
metadata: { name: edge, namespace: web, uid: u-edge }
spec: { region: eu, sites: [shop], clientSubnets: [10.1.0.0/16] }
status:
  sites: [shop]
  qos:
    - { pod: edge-frontend-b, role: Frontend, rttMs: 1, loss: 0, p50Ms: 2, p99Ms: 9, requestRate: 10, inFlight: 0, queued: 0, updated: "2030-01-01T00:00:00Z" }
"#,
            )],
            services: vec![parse(
                r#"
apiVersion: v1
kind: Service
metadata:
  name: edge-frontend
  namespace: web
  labels: { app.kubernetes.io/component: frontend }
  ownerReferences: [{ apiVersion: causeway.dev/v1alpha1, kind: Frontend, name: edge, uid: u-edge }]
"#,
            )],
            slices: vec![parse(
                r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: edge-frontend-abc
  namespace: web
  labels: { kubernetes.io/service-name: edge-frontend, app.kubernetes.io/component: frontend }
addressType: IPv4
endpoints:
  - { addresses: [127.0.1.1], conditions: { ready: true }, targetRef: { kind: Pod, name: edge-frontend-a } }
  - { addresses: [127.0.1.2], conditions: { ready: true }, targetRef: { kind: Pod, name: edge-frontend-b } }
  - { addresses: [127.0.1.3], conditions: { ready: false }, targetRef: { kind: Pod, name: edge-frontend-c } }
  - { addresses: [127.0.1.4], conditions: { ready: true, terminating: true } }
  - { addresses: [127.0.1.5], targetRef: { kind: Pod, name: edge-frontend-e } }
"#,
            )],
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn builds_groups_from_frontends_services_and_slices() {
        let built = directory(&Directory::default(), &state(), at("2030-01-01T00:00:10Z"));
        assert_eq!(built.sites[0].name, "web/shop");
        assert_eq!(built.sites[0].hostnames, ["shop.example.com"]);
        let group = &built.frontends[0];
        assert_eq!(group.name, "web/edge");
        assert_eq!(group.region, "eu");
        assert_eq!(group.sites, ["web/shop"]);
        assert_eq!(group.client_subnets[0].to_string(), "10.1.0.0/16");
        let addresses: Vec<String> = group
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(
            addresses,
            ["127.0.1.1", "127.0.1.2", "127.0.1.5"],
            "ready, not terminating"
        );
        // a (Site status): 1/((1+3)×2) = 0.125; b: the Frontend's newer figures win over the
        // Site's older ones, 1/(1×2) = 0.5; e (no figures): the median, 0.5.
        let weights: Vec<f64> = group.endpoints.iter().map(|e| e.headroom).collect();
        assert_eq!(weights, [0.125, 0.5, 0.5]);
    }

    #[test]
    fn stale_reports_weigh_the_same() {
        let built = directory(&Directory::default(), &state(), at("2030-01-01T00:05:00Z"));
        assert!(
            built.frontends[0]
                .endpoints
                .iter()
                .all(|e| (e.headroom - 1.0).abs() < 1e-12)
        );
    }

    #[test]
    fn load_balancer_addresses_stand_for_the_pods() {
        let mut cluster = state();
        let mut service = (*cluster.services[0]).clone();
        service.status = Some(
            serde_yaml_ng::from_str("loadBalancer: { ingress: [{ ip: 203.0.113.7 }] }")
                .expect("status"),
        );
        cluster.services = vec![Arc::new(service)];
        let built = directory(&Directory::default(), &cluster, at("2030-01-01T00:00:10Z"));
        let endpoints = &built.frontends[0].endpoints;
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].address.to_string(), "203.0.113.7");
        assert!(endpoints[0].ready);
        cluster.slices.clear();
        let built = directory(&Directory::default(), &cluster, at("2030-01-01T00:00:10Z"));
        assert!(
            !built.frontends[0].endpoints[0].ready,
            "no ready pod behind it"
        );
    }

    #[test]
    fn a_service_of_another_owner_is_not_used() {
        let mut cluster = state();
        let mut frontend = (*cluster.frontends[0]).clone();
        frontend.metadata.uid = Some("someone-else".into());
        cluster.frontends = vec![Arc::new(frontend)];
        let built = directory(&Directory::default(), &cluster, at("2030-01-01T00:00:10Z"));
        assert!(built.frontends[0].endpoints.is_empty());
    }

    #[test]
    fn compiles_with_zones_and_answers() {
        let base: Directory = serde_yaml_ng::from_str(
            "zones: [{ name: example.com, nameservers: [{ name: ns1.example.com }] }]",
        )
        .expect("zones");
        let built = directory(&base, &state(), at("2030-01-01T00:00:10Z"));
        let index = built
            .compile(crate::directory::AnswerPolicy::default(), 1)
            .expect("compiles");
        assert_eq!(index.sites[0].regions[0].v4.len(), 3);
    }
}
