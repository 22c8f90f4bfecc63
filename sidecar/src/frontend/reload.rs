//! Live reload of a front-end: new Sites and back-ends while clients are served, with the
//! gateway's semantics for Sites ([`crate::reload`]) and these for what only a front-end has:
//!
//! - links: one per back-end of the new configuration, shared by every Site it serves; a
//!   back-end new to the front-end is dialled, a link kept is not touched, and a link to a
//!   back-end no longer listed takes no new channel and closes once its channels are done,
//!   within the drain timeout ([`LinkHandle::drain`]);
//! - tunnelled TCP ports: a port new to the configuration is bound before anything changes (a
//!   port taken refuses the configuration), a port dropped stops its listener while the
//!   connections it carries go on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use causeway_api::Site;
use causeway_link::{Dialer, LinkHandle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BackendMap, CompiledFrontSite, FrontLinks, FrontSite, FrontendError, bind, tunnel};
use crate::metrics::Metrics;
use crate::reload::{Generations, ReloadReport, next_router};
use crate::sites::{LiveRouter, check_names, site_name};

/// What a front-end's reloader works with.
pub(crate) struct FrontendParts {
    /// Dials links to new back-ends.
    pub dialer: Dialer,
    /// The links in force, shared with the admin endpoint and link metrics.
    pub links: Arc<FrontLinks>,
    /// The front-end's metrics.
    pub metrics: Metrics,
    /// Address tunnelled ports listen on.
    pub tunnel_ip: IpAddr,
    /// Longest wait for a dropped link's channels to finish.
    pub drain_timeout: Duration,
    /// Process shutdown.
    pub shutdown: watch::Receiver<bool>,
}

/// Applies new Sites and back-ends to a running front-end; cheap to clone, and shareable
/// between a SIGHUP handler and a configuration watcher.
#[derive(Clone)]
pub struct FrontendReloader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FrontendReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontendReloader").finish_non_exhaustive()
    }
}

struct Inner {
    parts: FrontendParts,
    router: LiveRouter<FrontSite>,
    generations: Generations,
    /// Tunnel listeners by port.
    tunnels: Mutex<BTreeMap<u16, Tunnel>>,
}

struct Tunnel {
    address: SocketAddr,
    stop: CancellationToken,
}

impl FrontendReloader {
    /// Presents `credentials` on links dialled from now on (a renewed certificate).
    ///
    /// # Errors
    /// When they do not make a TLS configuration.
    pub fn set_link_credentials(
        &self,
        credentials: &causeway_link::LinkCredentials,
    ) -> Result<(), causeway_link::LinkError> {
        self.inner.parts.dialer.set_credentials(credentials)
    }

    /// Starts `sites` over `backends` as generation 1: dials the links, binds the tunnels.
    /// Must run inside a Tokio runtime.
    pub(crate) fn start(
        sites: &[Site],
        backends: &BackendMap,
        parts: FrontendParts,
    ) -> Result<Self, FrontendError> {
        let inner = Inner {
            generations: Generations::first(parts.metrics.clone()),
            parts,
            router: LiveRouter::default(),
            tunnels: Mutex::new(BTreeMap::new()),
        };
        inner.install(sites, backends, 1)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The router in force.
    pub fn router(&self) -> LiveRouter<FrontSite> {
        self.inner.router.clone()
    }

    /// The addresses tunnelled ports listen on now.
    pub fn tunnels(&self) -> Vec<SocketAddr> {
        lock(&self.inner.tunnels)
            .values()
            .map(|t| t.address)
            .collect()
    }

    /// Puts `sites`, linked to `backends`, in force in place of the running configuration,
    /// or refuses it all (the running configuration stays). Requests and tunnelled
    /// connections in flight finish where they are. Reloads apply one at a time. Must run
    /// inside a Tokio runtime (links are dialled).
    ///
    /// # Errors
    ///
    /// The first reason the configuration cannot run — a Site that does not compile, a
    /// clash, a Site without a back-end, a tunnelled port that cannot be bound; it is also
    /// logged and counted in `causeway_config_reloads_total{result="refused"}`.
    pub fn apply(
        &self,
        sites: &[Site],
        backends: &BackendMap,
    ) -> Result<ReloadReport, FrontendError> {
        self.inner
            .generations
            .reload(|generation| self.inner.install(sites, backends, generation))
    }

    /// Counts and logs a configuration refused before it could be applied (an unreadable or
    /// invalid manifest), like a refusal by [`FrontendReloader::apply`].
    pub fn refuse(&self, error: &dyn std::fmt::Display) {
        self.inner.generations.refuse(error);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps, whole after a panic elsewhere: keep serving with them.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The tunnelled ports of `sites` and the Site of each; two Sites may not share one.
fn tunnel_ports(sites: &[Site]) -> Result<BTreeMap<u16, String>, FrontendError> {
    let mut ports = BTreeMap::new();
    for site in sites {
        let name = site_name(site);
        for port in &site.spec.tcp_ports {
            if let Some(first) = ports.insert(port.port, name.clone()) {
                return Err(FrontendError::DuplicateTunnelPort {
                    port: port.port,
                    first,
                    second: name,
                });
            }
        }
    }
    Ok(ports)
}

impl Inner {
    fn install(
        &self,
        sites: &[Site],
        backends: &BackendMap,
        generation: u64,
    ) -> Result<ReloadReport, FrontendError> {
        let parts = &self.parts;
        // Everything that can refuse the configuration comes first, changing nothing.
        let compiled = sites
            .iter()
            .map(|site| CompiledFrontSite::new(site, backends))
            .collect::<Result<Vec<_>, _>>()?;
        check_names(sites)?;
        let ports = tunnel_ports(sites)?;
        let mut tunnels = lock(&self.tunnels);
        let mut bound = Vec::new();
        for port in ports.keys().filter(|port| !tunnels.contains_key(port)) {
            let address = SocketAddr::new(parts.tunnel_ip, *port);
            let listener = bind(address)?;
            bound.push((*port, listener.local_addr().unwrap_or(address), listener));
        }

        let wanted: BTreeSet<SocketAddr> = compiled
            .iter()
            .flat_map(|site| site.backends().iter().copied())
            .collect();
        let running_links: BTreeMap<SocketAddr, Arc<LinkHandle>> = parts.links.lock().clone();
        let mut links = running_links.clone();
        links.retain(|address, _| wanted.contains(address));
        let mut links_added = Vec::new();
        for address in &wanted {
            links.entry(*address).or_insert_with(|| {
                links_added.push(*address);
                Arc::new(parts.dialer.spawn(*address))
            });
        }
        let running = self.router.load_full();
        let next = next_router(
            &running,
            sites,
            compiled,
            |site: &FrontSite| &site.name,
            CompiledFrontSite::is_running_as,
            |compiled, previous| compiled.start(&parts.metrics, &links, previous.map(|p| &**p)),
        )?;

        // In force from here.
        self.router.store(Arc::new(next.router));
        *parts.links.lock() = links;
        let mut links_removed = Vec::new();
        for (address, handle) in running_links {
            if !wanted.contains(&address) {
                links_removed.push(address);
                let limit = parts.drain_timeout;
                tokio::spawn(async move { handle.drain(limit).await });
            }
        }
        tunnels.retain(|port, tunnel| {
            let keep = ports.contains_key(port);
            if !keep {
                tunnel.stop.cancel();
            }
            keep
        });
        for (port, address, listener) in bound {
            let stop = CancellationToken::new();
            tokio::spawn(tunnel::serve(
                listener,
                self.router.clone(),
                port,
                parts.shutdown.clone(),
                stop.clone(),
            ));
            tunnels.insert(port, Tunnel { address, stop });
        }
        for name in &next.report.removed {
            parts.metrics.remove_site(name);
            let gone = running.sites().iter().find(|site| &site.name == name);
            if let Some(cache) = gone.and_then(|site| site.cache.as_ref()) {
                cache.store().clear();
            }
        }
        Ok(ReloadReport {
            generation,
            links_added,
            links_removed,
            ..next.report
        })
    }
}
