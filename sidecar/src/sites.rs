//! Sites as the data plane runs them: each Site manifest compiled into its classifier,
//! balancer and origin connection pool, and a router from Host to Site.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use causeway_api::Site;
use causeway_api::site::HealthCheckSpec;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::balancer::health::{CheckThresholds, OutlierSettings};
use crate::balancer::{Balancer, BalancerConfig, MAX_ORIGINS, OriginInfo};
use crate::classify::{Classifier, ClassifyError};
use crate::metrics::Metrics;
use crate::proxy::body::RequestBody;

/// The HTTP/1.1 keep-alive client a site uses to reach its origins.
pub type OriginClient = Client<HttpConnector, RequestBody>;

/// Why a Site cannot be run by this process.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// The classification rules do not compile.
    #[error("site {site}: {source}")]
    Rules {
        /// Site name.
        site: String,
        /// The rule error.
        source: ClassifyError,
    },
    /// A Service origin needs the operator to resolve it.
    #[error(
        "site {site}, origin {origin}: Service origins are resolved by the operator in a cluster; outside one, give the origin a url"
    )]
    ServiceOrigin {
        /// Site name.
        site: String,
        /// Origin name.
        origin: String,
    },
    /// An origin URL is unusable.
    #[error("site {site}, origin {origin}: {reason}")]
    OriginUrl {
        /// Site name.
        site: String,
        /// Origin name.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// More origins than a balancer handles.
    #[error("site {site} has {count} origins; at most {MAX_ORIGINS} are supported")]
    TooManyOrigins {
        /// Site name.
        site: String,
        /// Origins given.
        count: usize,
    },
    /// Too many request types for the type masks.
    #[error("site {site} defines {count} request types; at most 64 are supported")]
    TooManyTypes {
        /// Site name.
        site: String,
        /// Types given.
        count: usize,
    },
    /// Two Sites claim one hostname.
    #[error("hostname {host} is claimed by both site {first} and site {second}")]
    DuplicateHost {
        /// The hostname.
        host: String,
        /// First claimant.
        first: String,
        /// Second claimant.
        second: String,
    },
}

/// One Site, ready to serve.
#[derive(Debug)]
pub struct SiteRuntime {
    /// The Site's name (namespace/name in a cluster).
    pub name: String,
    /// Priority and type rules.
    pub classifier: Classifier,
    /// Origin choice.
    pub balancer: Balancer,
    /// Connection pool to the origins.
    pub client: OriginClient,
    /// Extra attempts allowed for idempotent requests.
    pub retry_attempts: u32,
    /// Largest request body.
    pub max_body_bytes: Option<u64>,
    /// Longest wait for response headers, per attempt.
    pub response_timeout: Duration,
    /// Longest wait in the release queue.
    pub queue_timeout: Duration,
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheckSpec>,
    /// Longest wait for an origin connection.
    pub connect_timeout: Duration,
    /// TCP ports tunnelled through links: (the port front-ends listen on, the origins' port).
    pub tcp_ports: Vec<(u16, u16)>,
}

/// The name a Site runs under: namespace/name in a cluster, name alone from a file.
pub fn site_name(site: &Site) -> String {
    let name = site.metadata.name.clone().unwrap_or_default();
    match &site.metadata.namespace {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
        _ => name,
    }
}

impl SiteRuntime {
    /// Compiles a validated Site.
    pub fn new(site: &Site, metrics: &Metrics) -> Result<Self, SiteError> {
        let name = site_name(site);
        let spec = &site.spec;
        if spec.origins.len() > MAX_ORIGINS {
            return Err(SiteError::TooManyOrigins {
                site: name,
                count: spec.origins.len(),
            });
        }
        if spec.request_types.costs.len() > 64 {
            return Err(SiteError::TooManyTypes {
                site: name,
                count: spec.request_types.costs.len(),
            });
        }
        let classifier = Classifier::new(spec).map_err(|source| SiteError::Rules {
            site: name.clone(),
            source,
        })?;
        let mut origins = Vec::with_capacity(spec.origins.len());
        for origin in &spec.origins {
            let Some(url) = &origin.url else {
                return Err(SiteError::ServiceOrigin {
                    site: name,
                    origin: origin.name.clone(),
                });
            };
            let bad_url = |reason: String| SiteError::OriginUrl {
                site: name.clone(),
                origin: origin.name.clone(),
                reason,
            };
            let uri: http::Uri = url
                .parse()
                .map_err(|e| bad_url(format!("{url:?} is not a URL: {e}")))?;
            let authority = uri
                .authority()
                .cloned()
                .ok_or_else(|| bad_url(format!("{url:?} has no host")))?;
            let serves = if origin.types.is_empty() {
                u64::MAX
            } else {
                origin
                    .types
                    .iter()
                    .map(|t| {
                        classifier
                            .type_index(t)
                            .map(|i| 1u64 << i)
                            .ok_or_else(|| bad_url(format!("unknown type {t:?}")))
                    })
                    .try_fold(0u64, |mask, bit| bit.map(|b| mask | b))?
            };
            origins.push(OriginInfo {
                name: origin.name.clone(),
                authority,
                max_in_flight: origin.max_in_flight.max(1),
                primary: origin.primary,
                weight: origin.weight.max(1),
                latency_goal: origin.latency_goal.map(|d| d.get()),
                serves,
            });
        }
        let config = BalancerConfig {
            policy: spec.load_balancing.policy,
            ewma_decay: spec.load_balancing.ewma_decay.get(),
            failure_penalty: spec.load_balancing.failure_penalty.get(),
            queue_capacity: spec.queue.max_length as usize,
            queue_timeout: spec.queue.timeout.get(),
            aging_interval: spec.queue.aging_interval.get(),
            outlier: OutlierSettings {
                consecutive_failures: spec.outlier_detection.consecutive_failures,
                base_ejection: spec.outlier_detection.base_ejection_time.get(),
                max_ejection: spec.outlier_detection.max_ejection_time.get(),
            },
            max_ejected_percent: spec.outlier_detection.max_ejected_percent,
            check_thresholds: spec.health_check.as_ref().map(|hc| CheckThresholds {
                healthy: hc.healthy_threshold,
                unhealthy: hc.unhealthy_threshold,
            }),
            retry_ratio: spec.retries.budget_ratio,
            min_retries_per_second: spec.retries.min_retries_per_second,
        };
        let names: Vec<String> = origins.iter().map(|o| o.name.clone()).collect();
        let balancer = Balancer::new(
            origins,
            config,
            metrics.site(&name, &names),
            fastrand::u64(..),
        );
        Ok(Self {
            classifier,
            balancer,
            client: origin_client(spec.limits.connect_timeout.get()),
            retry_attempts: spec.retries.attempts,
            max_body_bytes: spec.limits.max_request_body_bytes,
            response_timeout: spec.limits.response_timeout.get(),
            queue_timeout: spec.queue.timeout.get(),
            health_check: spec.health_check.clone(),
            connect_timeout: spec.limits.connect_timeout.get(),
            tcp_ports: spec
                .tcp_ports
                .iter()
                .map(|p| (p.port, p.target_port))
                .collect(),
            name,
        })
    }
}

/// A keep-alive HTTP/1.1 client for origins.
pub fn origin_client(connect_timeout: Duration) -> OriginClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(30)));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        // The client's Host header is forwarded as is; the origin authority is only where
        // to connect.
        .set_host(false)
        .build(connector)
}

/// Finds the Site for a request's host; `S` is how this gateway runs a Site (origins and a
/// balancer on a gateway or back-end, links on a front-end).
#[derive(Debug)]
pub struct Router<S = SiteRuntime> {
    exact: HashMap<String, Arc<S>>,
    wildcard: Vec<(String, Arc<S>)>,
    sites: Vec<Arc<S>>,
}

impl Router<SiteRuntime> {
    /// Compiles every Site and indexes its hostnames.
    pub fn new(sites: &[Site], metrics: &Metrics) -> Result<Self, SiteError> {
        Self::build(sites, |site| SiteRuntime::new(site, metrics), |s| &s.name)
    }
}

impl<S> Router<S> {
    /// Compiles every Site with `compile` and indexes its hostnames; `name` gives a compiled
    /// Site's name for error messages.
    pub fn build(
        sites: &[Site],
        mut compile: impl FnMut(&Site) -> Result<S, SiteError>,
        name: impl Fn(&S) -> &str,
    ) -> Result<Self, SiteError> {
        let mut router = Self {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            sites: Vec::new(),
        };
        let mut owner: HashMap<String, String> = HashMap::new();
        for site in sites {
            let runtime = Arc::new(compile(site)?);
            let runtime_name = name(&runtime).to_owned();
            for host in &site.spec.hostnames {
                let host = host.to_ascii_lowercase();
                if let Some(first) = owner.insert(host.clone(), runtime_name.clone()) {
                    return Err(SiteError::DuplicateHost {
                        host,
                        first,
                        second: runtime_name,
                    });
                }
                match host.strip_prefix("*.") {
                    Some(suffix) => router
                        .wildcard
                        .push((format!(".{suffix}"), runtime.clone())),
                    None => {
                        router.exact.insert(host, runtime.clone());
                    }
                }
            }
            router.sites.push(runtime);
        }
        // The longest suffix is the most specific wildcard.
        router
            .wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(router)
    }

    /// The Site serving `host` (without port, any case).
    pub fn route(&self, host: &str) -> Option<&Arc<S>> {
        if let Some(site) = self.exact.get(host) {
            return Some(site);
        }
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            if let Some(site) = self.exact.get(&lower) {
                return Some(site);
            }
            lower.as_str()
        } else {
            host
        };
        self.wildcard
            .iter()
            .find(|(suffix, _)| host.ends_with(suffix.as_str()))
            .map(|(_, site)| site)
    }

    /// Every Site.
    pub fn sites(&self) -> &[Arc<S>] {
        &self.sites
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, hosts: &[&str]) -> Site {
        let yaml = format!(
            "apiVersion: causeway.dev/v1alpha1\nkind: Site\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{}]\n  origins: [{{ name: a, url: \"http://127.0.0.1:1\" }}]\n",
            hosts.join(", ")
        );
        causeway_api::parse_sites("test", &yaml)
            .expect("valid")
            .remove(0)
    }

    #[tokio::test]
    async fn routes_exact_then_most_specific_wildcard() {
        let metrics = Metrics::new().expect("metrics");
        let sites = [
            site("shop", &["shop.example.com"]),
            site("all", &["\"*.example.com\""]),
            site("deep", &["\"*.eu.example.com\""]),
        ];
        let router = Router::new(&sites, &metrics).expect("router");
        let name = |host: &str| router.route(host).map(|s| s.name.clone());
        assert_eq!(name("shop.example.com").as_deref(), Some("shop"));
        assert_eq!(name("SHOP.Example.com").as_deref(), Some("shop"));
        assert_eq!(name("cdn.example.com").as_deref(), Some("all"));
        assert_eq!(name("a.eu.example.com").as_deref(), Some("deep"));
        assert_eq!(name("example.com"), None);
        assert_eq!(name("other.org"), None);
    }

    #[tokio::test]
    async fn a_hostname_claimed_twice_is_refused() {
        let metrics = Metrics::new().expect("metrics");
        let sites = [site("a", &["x.example.com"]), site("b", &["x.example.com"])];
        assert!(matches!(
            Router::new(&sites, &metrics),
            Err(SiteError::DuplicateHost { .. })
        ));
    }
}
