//! Sites as the data plane runs them: each Site manifest compiled into its classifier,
//! balancer and origin connection pool, and a router from Host to Site.
//!
//! A Site goes live in two steps so that a reload can refuse a whole configuration without
//! touching the running one: [`CompiledSite::new`] checks and compiles, with no side effect;
//! [`CompiledSite::start`] makes the balancer (taking over a predecessor's state) and the
//! metric handles. The router in force is a [`LiveRouter`], swapped whole by a reload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use causeway_api::Site;
use causeway_api::site::{HealthCheckSpec, SiteSpec};
use tokio_util::sync::CancellationToken;

use crate::balancer::health::{CheckThresholds, OutlierSettings};
use crate::balancer::queue::QueueTiming;
use crate::balancer::{Balancer, BalancerConfig, Lease, MAX_ORIGINS, OriginInfo, TypeNames};
use crate::classify::{Classifier, ClassifyError};
use crate::metrics::Metrics;
use crate::proxy::origin_pool::{OriginPool, Pooling};

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
    /// Two Sites have one name: a reload could not tell which running Site each one is.
    #[error("two sites are named {0}")]
    DuplicateName(String),
}

/// Whether a tier keeps a response cache for the Sites that turn theirs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// A gateway (or front-end): clients' repeat requests are answered from the cache.
    On,
    /// A back-end: the front-ends in front of it cache.
    Off,
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
    /// Each origin's connections, in the balancer's order of origins.
    pub pools: Vec<Arc<OriginPool>>,
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
    /// The Site's response cache, on a gateway whose Site turns it on (never on a back-end:
    /// the front-ends cache in front of it).
    pub cache: Option<Arc<causeway_cache::Cache>>,
    /// The spec it runs, to tell an unchanged Site on reload.
    spec: SiteSpec,
    /// Cancelled when a reload replaces or removes the Site: its background work stops.
    retired: CancellationToken,
}

/// The router in force, replaced whole by a reload: a request is routed on one snapshot and
/// keeps the Site it got until it ends, while later requests see the new one.
pub type LiveRouter<S = SiteRuntime> = Arc<ArcSwap<Router<S>>>;

/// A Site compiled and checked but not started: building one has no side effect (no
/// balancer, metric series or task), so a whole configuration is compiled, and refused as a
/// whole, before any of it goes live.
#[derive(Debug)]
pub struct CompiledSite {
    name: String,
    spec: SiteSpec,
    classifier: Classifier,
    origins: Vec<OriginInfo>,
    config: BalancerConfig,
}

/// The name a Site runs under: namespace/name in a cluster, name alone from a file.
pub fn site_name(site: &Site) -> String {
    let name = site.metadata.name.clone().unwrap_or_default();
    match &site.metadata.namespace {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
        _ => name,
    }
}

impl CompiledSite {
    /// Compiles a validated Site.
    pub fn new(site: &Site) -> Result<Self, SiteError> {
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
            queue_timing: QueueTiming {
                aging_interval: spec.queue.aging_interval.get(),
                standing_after: spec.queue.standing_after.get(),
                standing_wait: spec.queue.standing_wait.get(),
            },
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
        Ok(Self {
            name,
            spec: spec.clone(),
            classifier,
            origins,
            config,
        })
    }

    /// The Site's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `running` already runs exactly this Site, so a reload keeps it as it is.
    pub fn is_running_as(&self, running: &SiteRuntime) -> bool {
        self.name == running.name && self.spec == running.spec
    }

    /// Starts the Site: a balancer of its own, or, given the `predecessor` it replaces, one
    /// that takes over the predecessor's origins and queue ([`Balancer::succeed`]); with
    /// [`Caching::On`], the Site's cache (the predecessor's when its settings are unchanged).
    pub fn start(
        self,
        metrics: &Metrics,
        predecessor: Option<&SiteRuntime>,
        caching: Caching,
    ) -> SiteRuntime {
        let Self {
            name,
            spec,
            classifier,
            origins,
            config,
        } = self;
        let names: Vec<String> = origins.iter().map(|o| o.name.clone()).collect();
        let site_metrics = metrics.site(&name, &names);
        let balancer = match predecessor {
            Some(old) => {
                // A default type the spec does not define is refused by the classifier, so
                // the lookup only falls back on a spec that skipped validation.
                let new_default = classifier
                    .type_index(&spec.request_types.default_type)
                    .unwrap_or(0);
                old.balancer.succeed(
                    origins,
                    config,
                    site_metrics,
                    fastrand::u64(..),
                    TypeNames {
                        old: old.classifier.type_names(),
                        new: classifier.type_names(),
                        new_default,
                    },
                )
            }
            None => Balancer::new(origins, config, site_metrics, fastrand::u64(..)),
        };
        let cache = match caching {
            Caching::On => crate::caching::settings::site_cache(
                &spec.cache,
                &name,
                &metrics.cache,
                predecessor.and_then(|p| p.cache.as_ref()),
            ),
            Caching::Off => None,
        };
        // An origin the predecessor also had keeps its warm connections.
        let connect_timeout = spec.limits.connect_timeout.get();
        let pools = balancer
            .origins()
            .iter()
            .map(|origin| {
                predecessor
                    .and_then(|old| old.pool_by_authority(&origin.authority))
                    .filter(|pool| pool.connect_timeout() == connect_timeout)
                    .unwrap_or_else(|| {
                        Arc::new(OriginPool::new(
                            origin.authority.clone(),
                            connect_timeout,
                            Pooling::KeepAlive,
                        ))
                    })
            })
            .collect();
        SiteRuntime {
            cache,
            classifier,
            balancer,
            pools,
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
            spec,
            retired: CancellationToken::new(),
        }
    }
}

impl crate::caching::purge::HasCache for SiteRuntime {
    fn cache(&self) -> Option<&Arc<causeway_cache::Cache>> {
        self.cache.as_ref()
    }
}

impl SiteRuntime {
    /// Compiles and starts a validated Site.
    pub fn new(site: &Site, metrics: &Metrics, caching: Caching) -> Result<Self, SiteError> {
        Ok(CompiledSite::new(site)?.start(metrics, None, caching))
    }

    /// The connections of the origin `lease` holds a slot on. A lease from the balancer that
    /// succeeded this Site's (a reload while the request waited) may name an origin this Site
    /// does not have: it gets a connection of its own, kept by no pool.
    pub fn pool_for(&self, lease: &Lease) -> Arc<OriginPool> {
        let authority = &lease.info().authority;
        match self.pools.get(lease.origin()) {
            Some(pool) if pool.authority() == authority => pool.clone(),
            _ => self.pool_by_authority(authority).unwrap_or_else(|| {
                Arc::new(OriginPool::new(
                    authority.clone(),
                    self.connect_timeout,
                    Pooling::None,
                ))
            }),
        }
    }

    fn pool_by_authority(&self, authority: &http::uri::Authority) -> Option<Arc<OriginPool>> {
        self.pools
            .iter()
            .find(|pool| pool.authority() == authority)
            .cloned()
    }

    /// The spec the Site runs.
    pub fn spec(&self) -> &SiteSpec {
        &self.spec
    }

    /// Stops the Site's background work (health checks); requests it is serving finish.
    pub fn retire(&self) {
        self.retired.cancel();
    }

    /// Cancelled once the Site is retired by a reload.
    pub fn retirement(&self) -> &CancellationToken {
        &self.retired
    }
}

/// Finds the Site for a request's host; `S` is how this gateway runs a Site (origins and a
/// balancer on a gateway or back-end, links on a front-end).
#[derive(Debug)]
pub struct Router<S = SiteRuntime> {
    exact: HashMap<String, Arc<S>>,
    wildcard: Vec<(String, Arc<S>)>,
    sites: Vec<Arc<S>>,
}

impl<S> Default for Router<S> {
    /// A router of no Site.
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            sites: Vec::new(),
        }
    }
}

impl Router<SiteRuntime> {
    /// Compiles every Site and indexes its hostnames.
    pub fn new(sites: &[Site], metrics: &Metrics, caching: Caching) -> Result<Self, SiteError> {
        Self::build(sites, |site| {
            Ok(Arc::new(SiteRuntime::new(site, metrics, caching)?))
        })
    }
}

/// Checks that the Sites can run side by side: no two share a name or claim one hostname.
/// Pure, so a reload checks a configuration before starting any of it.
pub fn check_names(sites: &[Site]) -> Result<(), SiteError> {
    let mut names = std::collections::HashSet::new();
    let mut owner: HashMap<String, String> = HashMap::new();
    for site in sites {
        let name = site_name(site);
        if !names.insert(name.clone()) {
            return Err(SiteError::DuplicateName(name));
        }
        for host in &site.spec.hostnames {
            let host = host.to_ascii_lowercase();
            if let Some(first) = owner.insert(host.clone(), name.clone()) {
                return Err(SiteError::DuplicateHost {
                    host,
                    first,
                    second: name,
                });
            }
        }
    }
    Ok(())
}

impl<S> Router<S> {
    /// Checks the Sites with [`check_names`], then runs each through `compile` and indexes
    /// its hostnames; `compile` is called only once the checks have passed.
    pub fn build<E: From<SiteError>>(
        sites: &[Site],
        mut compile: impl FnMut(&Site) -> Result<Arc<S>, E>,
    ) -> Result<Self, E> {
        check_names(sites)?;
        let mut entries = Vec::with_capacity(sites.len());
        for site in sites {
            entries.push((site, compile(site)?));
        }
        Ok(Self::index(entries))
    }

    /// Indexes running Sites by the hostnames of the Site each one runs. The Sites must have
    /// passed [`check_names`]: a hostname claimed twice goes to the later Site.
    pub fn index<'a>(entries: impl IntoIterator<Item = (&'a Site, Arc<S>)>) -> Self {
        let mut router = Self::default();
        for (site, runtime) in entries {
            for host in &site.spec.hostnames {
                let host = host.to_ascii_lowercase();
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
        router
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
        let router = Router::new(&sites, &metrics, Caching::Off).expect("router");
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
            Router::new(&sites, &metrics, Caching::Off),
            Err(SiteError::DuplicateHost { .. })
        ));
    }
}
