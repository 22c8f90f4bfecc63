//! Live reload of the Sites a gateway or back-end serves, without dropping a connection or a
//! request in flight — the way Envoy and HAProxy take new configuration.
//!
//! A new configuration is compiled and checked whole first ([`CompiledSite::new`],
//! [`check_names`]); any error refuses all of it and the running configuration stays. Then a
//! new router is built and swapped in at once ([`LiveRouter`]): a request already routed
//! finishes on the Site it holds, later requests see the new one. A Site whose spec did not
//! change keeps its very runtime; a changed Site's balancer takes over the old one's state
//! ([`crate::balancer::Balancer::succeed`]); a replaced or removed Site is retired (its health
//! checks stop) and the metric series of origins that left are dropped.
//!
//! [`SiteReloader`] serves `causeway gateway` and `causeway backend`; the front-end's links
//! and tunnels make its own, [`crate::frontend::reload::FrontendReloader`], built on the same
//! [`next_router`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use causeway_api::Site;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::sites::{
    Caching, CompiledSite, LiveRouter, Router, SiteError, SiteRuntime, check_names, site_name,
};

/// What a reload did, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// The configuration generation now in force.
    pub generation: u64,
    /// Sites that were not running before.
    pub added: Vec<String>,
    /// Sites whose spec changed (or, on a front-end, whose back-ends changed).
    pub changed: Vec<String>,
    /// Sites no longer served.
    pub removed: Vec<String>,
    /// Sites kept exactly as they were.
    pub unchanged: Vec<String>,
    /// Links dialled to back-ends new to the front-end.
    pub links_added: Vec<SocketAddr>,
    /// Links to back-ends no longer listed, now draining.
    pub links_removed: Vec<SocketAddr>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "generation {}: added {:?}, changed {:?}, removed {:?}, unchanged {:?}",
            self.generation, self.added, self.changed, self.removed, self.unchanged
        )?;
        if !self.links_added.is_empty() || !self.links_removed.is_empty() {
            write!(
                f,
                ", links added {:?}, links removed {:?}",
                self.links_added, self.links_removed
            )?;
        }
        Ok(())
    }
}

/// A new configuration's router, built over the running one but not swapped in yet.
pub(crate) struct NextRouter<S> {
    /// The router to swap in.
    pub router: Router<S>,
    /// Running Sites the new router does not keep (changed or removed): to retire.
    pub retired: Vec<Arc<S>>,
    /// Sites started for the new router (added or changed): to start background work for.
    pub started: Vec<Arc<S>>,
    /// Which Sites were added, changed, removed or kept.
    pub report: ReloadReport,
}

/// Builds the router for `sites` over `running`. `compiled[i]` is `sites[i]` compiled; a
/// running Site that `unchanged` says matches it is kept as the very same `Arc`, any other
/// is made by `start`, given the running Site of that name to take over from, if any.
///
/// Checks names and hostnames before calling `start`, so on error nothing was started and
/// nothing running was touched.
pub(crate) fn next_router<S, C>(
    running: &Router<S>,
    sites: &[Site],
    compiled: Vec<C>,
    running_name: impl Fn(&S) -> &str,
    unchanged: impl Fn(&C, &S) -> bool,
    mut start: impl FnMut(C, Option<&Arc<S>>) -> S,
) -> Result<NextRouter<S>, SiteError> {
    check_names(sites)?;
    let by_name: HashMap<&str, &Arc<S>> = running
        .sites()
        .iter()
        .map(|site| (running_name(site), site))
        .collect();
    let mut report = ReloadReport::default();
    let mut started = Vec::new();
    let mut entries = Vec::with_capacity(sites.len());
    for (site, compiled) in sites.iter().zip(compiled) {
        let name = site_name(site);
        let runtime = match by_name.get(name.as_str()) {
            Some(old) if unchanged(&compiled, old) => {
                report.unchanged.push(name);
                Arc::clone(old)
            }
            previous => {
                let runtime = Arc::new(start(compiled, previous.copied()));
                started.push(runtime.clone());
                match previous {
                    Some(_) => report.changed.push(name),
                    None => report.added.push(name),
                }
                runtime
            }
        };
        entries.push((site, runtime));
    }
    let router = Router::index(entries);
    let kept: HashSet<*const S> = router.sites().iter().map(Arc::as_ptr).collect();
    let retired: Vec<Arc<S>> = running
        .sites()
        .iter()
        .filter(|site| !kept.contains(&Arc::as_ptr(site)))
        .cloned()
        .collect();
    let new_names: HashSet<&str> = router.sites().iter().map(|s| running_name(s)).collect();
    report.removed = retired
        .iter()
        .map(|site| running_name(site))
        .filter(|name| !new_names.contains(name))
        .map(str::to_owned)
        .collect();
    Ok(NextRouter {
        router,
        retired,
        started,
        report,
    })
}

/// Locks a mutex whose data stays consistent through a panic (a counter).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The generation in force, counted the same way by every mode's reloader: a lock taken for
/// a whole reload (so reloads apply one at a time, in order) and the metrics that show it.
#[derive(Debug)]
pub(crate) struct Generations {
    current: Mutex<u64>,
    metrics: Metrics,
}

impl Generations {
    /// The first configuration, in force from start.
    pub fn first(metrics: Metrics) -> Self {
        metrics.record_generation(1);
        Self {
            current: Mutex::new(1),
            metrics,
        }
    }

    /// Runs one reload: `install` gets the next generation number and either puts the new
    /// configuration in force or refuses it; counted and, when refused, logged.
    pub fn reload<E: std::fmt::Display>(
        &self,
        install: impl FnOnce(u64) -> Result<ReloadReport, E>,
    ) -> Result<ReloadReport, E> {
        let mut current = lock(&self.current);
        match install(*current + 1) {
            Ok(report) => {
                *current += 1;
                self.metrics.record_reload(Some(*current));
                Ok(report)
            }
            Err(error) => {
                self.refuse(&error);
                Err(error)
            }
        }
    }

    /// Counts and logs a refused configuration.
    pub fn refuse(&self, error: &dyn std::fmt::Display) {
        self.metrics.record_reload(None);
        tracing::warn!(%error, "configuration refused; the running one stays in force");
    }
}

/// Applies new Site configurations to a running gateway or back-end; cheap to clone, and
/// shareable between a SIGHUP handler and a configuration watcher.
#[derive(Clone, Debug)]
pub struct SiteReloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    router: LiveRouter,
    metrics: Metrics,
    caching: Caching,
    generations: Generations,
    shutdown: watch::Receiver<bool>,
}

impl SiteReloader {
    /// Compiles and starts `sites` as generation 1, with their health checks (which stop at
    /// `shutdown`). Must run inside a Tokio runtime.
    pub fn start(
        sites: &[Site],
        metrics: &Metrics,
        caching: Caching,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, SiteError> {
        let inner = Inner {
            router: LiveRouter::default(),
            metrics: metrics.clone(),
            caching,
            generations: Generations::first(metrics.clone()),
            shutdown,
        };
        inner.install(sites, 1)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The router in force, for the proxy and the admin endpoint.
    pub fn router(&self) -> LiveRouter {
        self.inner.router.clone()
    }

    /// Puts `sites` in force in place of the running configuration, or refuses them all
    /// (the running configuration stays) when any does not compile or two clash. Requests in
    /// flight finish where they are; see the module documentation for what carries over.
    /// Reloads apply one at a time. Must run inside a Tokio runtime (health checks start).
    ///
    /// # Errors
    ///
    /// The first reason the configuration cannot run; it is also logged and counted in
    /// `causeway_config_reloads_total{result="refused"}`.
    pub fn apply(&self, sites: &[Site]) -> Result<ReloadReport, SiteError> {
        self.inner
            .generations
            .reload(|generation| self.inner.install(sites, generation))
    }

    /// Counts and logs a configuration refused before it could be applied (an unreadable or
    /// invalid manifest), like a refusal by [`SiteReloader::apply`].
    pub fn refuse(&self, error: &dyn std::fmt::Display) {
        self.inner.generations.refuse(error);
    }
}

impl Inner {
    fn install(&self, sites: &[Site], generation: u64) -> Result<ReloadReport, SiteError> {
        // Every Site compiles before any starts: a refusal leaves nothing behind.
        let compiled = sites
            .iter()
            .map(CompiledSite::new)
            .collect::<Result<Vec<_>, _>>()?;
        let running = self.router.load_full();
        let next = next_router(
            &running,
            sites,
            compiled,
            |site: &SiteRuntime| &site.name,
            CompiledSite::is_running_as,
            |compiled, previous| {
                compiled.start(&self.metrics, previous.map(|p| &**p), self.caching)
            },
        )?;
        self.router.store(Arc::new(next.router));
        let live = self.router.load();
        for site in &next.retired {
            site.retire();
            forget_origins(&self.metrics, site, &live);
        }
        for site in &next.started {
            crate::health_check::spawn(site, &self.shutdown);
        }
        Ok(ReloadReport {
            generation,
            ..next.report
        })
    }
}

/// `/status` of a gateway or back-end over the router in force at each request.
pub(crate) fn origin_status(router: LiveRouter) -> crate::admin::JsonSource {
    Arc::new(move || crate::admin::origin_status(router.load_full())())
}

/// Drops the metric series of `retired`'s origins that `live` no longer has under that Site
/// (all of them when the Site is gone).
fn forget_origins(metrics: &Metrics, retired: &SiteRuntime, live: &Router) {
    let successor = live.sites().iter().find(|s| s.name == retired.name);
    for origin in retired.balancer.origins() {
        let kept =
            successor.is_some_and(|s| s.balancer.origins().iter().any(|o| o.name == origin.name));
        if !kept {
            metrics.remove_origin(&retired.name, &origin.name);
        }
    }
    if successor.is_none() {
        metrics.remove_site(&retired.name);
        if let Some(cache) = &retired.cache {
            cache.store().clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(yaml: &str) -> Vec<Site> {
        causeway_api::parse_sites("test", yaml).expect("valid sites")
    }

    fn site(name: &str, host: &str, origins: &[(&str, u16, u32)]) -> String {
        let origins: Vec<String> = origins
            .iter()
            .map(|(o, port, mark)| {
                format!("{{ name: {o}, url: \"http://127.0.0.1:{port}\", maxInFlight: {mark} }}")
            })
            .collect();
        format!(
            "apiVersion: causeway.dev/v1alpha1\nkind: Site\nmetadata: {{ name: {name} }}\nspec:\n  hostnames: [{host}]\n  origins: [{}]\n",
            origins.join(", ")
        )
    }

    fn by_name(router: &LiveRouter, name: &str) -> Option<Arc<SiteRuntime>> {
        router
            .load()
            .sites()
            .iter()
            .find(|s| s.name == name)
            .cloned()
    }

    #[tokio::test]
    async fn a_reload_keeps_unchanged_sites_and_hands_over_changed_ones() {
        let metrics = Metrics::new().expect("metrics");
        let (_stop, shutdown) = watch::channel(false);
        let first = format!(
            "{}---\n{}---\n{}",
            site("same", "same.test", &[("a", 1, 4)]),
            site("edit", "edit.test", &[("a", 2, 4), ("b", 3, 4)]),
            site("gone", "gone.test", &[("a", 4, 4)])
        );
        let reloader =
            SiteReloader::start(&sites(&first), &metrics, Caching::On, shutdown).expect("start");
        let router = reloader.router();
        let same = by_name(&router, "same").expect("same");
        let edit = by_name(&router, "edit").expect("edit");
        let gone = by_name(&router, "gone").expect("gone");
        assert!(metrics.render().contains("site=\"gone\""));

        let second = format!(
            "{}---\n{}---\n{}",
            site("same", "same.test", &[("a", 1, 4)]),
            site("edit", "edit.test", &[("a", 2, 8), ("c", 5, 4)]),
            site("new", "new.test", &[("a", 6, 4)])
        );
        let report = reloader.apply(&sites(&second)).expect("applied");
        assert_eq!(report.generation, 2);
        assert_eq!(report.unchanged, ["same"]);
        assert_eq!(report.changed, ["edit"]);
        assert_eq!(report.added, ["new"]);
        assert_eq!(report.removed, ["gone"]);
        let same_after = by_name(&router, "same").expect("same");
        assert!(
            Arc::ptr_eq(&same, &same_after),
            "an unchanged Site keeps its runtime"
        );
        assert!(!same.retirement().is_cancelled());
        assert!(edit.retirement().is_cancelled() && gone.retirement().is_cancelled());
        assert!(
            edit.balancer.is_retired(),
            "the changed Site's balancer handed over"
        );
        let text = metrics.render();
        let series = |needle: &str| {
            text.lines()
                .any(|l| !l.starts_with('#') && l.contains(needle) && l.contains("origin"))
        };
        assert!(
            !series("site=\"gone\""),
            "a removed Site's origins go: {text}"
        );
        assert!(
            !text.contains("causeway_queue_depth{site=\"gone\"}"),
            "{text}"
        );
        assert!(
            !series("origin=\"b\""),
            "a removed origin's series go: {text}"
        );
        assert!(series("origin=\"c\""), "{text}");
        assert!(text.contains("causeway_config_generation 2"), "{text}");
        assert!(text.contains("causeway_config_reloads_total{result=\"applied\"} 1"));
    }

    #[tokio::test]
    async fn a_configuration_with_a_clash_is_refused_whole() {
        let metrics = Metrics::new().expect("metrics");
        let (_stop, shutdown) = watch::channel(false);
        let first = site("one", "one.test", &[("a", 1, 4)]);
        let reloader =
            SiteReloader::start(&sites(&first), &metrics, Caching::On, shutdown).expect("start");
        let before = by_name(&reloader.router(), "one").expect("one");
        let clash = format!(
            "{}---\n{}",
            site("one", "one.test", &[("a", 1, 9)]),
            site("two", "one.test", &[("a", 2, 4)])
        );
        assert!(matches!(
            reloader.apply(&sites(&clash)),
            Err(SiteError::DuplicateHost { .. })
        ));
        let after = by_name(&reloader.router(), "one").expect("one");
        assert!(Arc::ptr_eq(&before, &after), "the running Site stays");
        assert!(!before.balancer.is_retired());
        let text = metrics.render();
        assert!(text.contains("causeway_config_generation 1"), "{text}");
        assert!(text.contains("causeway_config_reloads_total{result=\"refused\"} 1"));
        assert!(
            !text.contains("causeway_queue_depth{site=\"two\"}"),
            "nothing of it started: {text}"
        );
    }
}
