//! `causeway gateway`: the single-tier gateway of the patent's FIG. 6/7 — client HTTP in,
//! balanced straight over each Site's origins — with its admin endpoint and health checks.
//! Its Sites are reloaded live through [`RunningGateway::reloader`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use causeway_api::Site;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::Admin;
use crate::caching::purge::Purger;
use crate::metrics::{Metrics, MetricsError};
use crate::proxy::Proxy;
use crate::reload::SiteReloader;
use crate::server::{self, ConnectionLimits, ListenerStats};
use crate::sites::{Caching, SiteError};
use crate::tls::{self, TlsError};

/// Where and how the gateway listens.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Plain HTTP listener (HTTP/1.1 and h2c).
    pub listen: Option<SocketAddr>,
    /// TLS listener (HTTP/1.1 and h2 by ALPN).
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and key for the TLS listener.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Admin endpoint.
    pub admin_listen: SocketAddr,
    /// Client connection limits.
    pub limits: ConnectionLimits,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// The bearer token the admin endpoint's cache purge requires; `None` turns purging off.
    pub admin_token: Option<Arc<str>>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A Site cannot be served.
    #[error(transparent)]
    Site(#[from] SiteError),
    /// TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A TLS listener without certificate files, or the reverse.
    #[error("--tls-listen needs --tls-cert and --tls-key")]
    TlsIncomplete,
    /// No listener at all.
    #[error("nothing to listen on: give --listen or --tls-listen")]
    NoListener,
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Metrics registration failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// A started gateway: its bound addresses and the tasks serving them.
pub struct RunningGateway {
    /// The plain HTTP address, once bound.
    pub http: Option<SocketAddr>,
    /// The TLS address, once bound.
    pub https: Option<SocketAddr>,
    /// The admin address.
    pub admin: SocketAddr,
    reloader: SiteReloader,
    tasks: JoinSet<()>,
}

impl RunningGateway {
    /// Applies new Site configurations to this gateway while it serves.
    pub fn reloader(&self) -> SiteReloader {
        self.reloader.clone()
    }

    /// Waits until every listener has drained after shutdown.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, GatewayError> {
    server::bind(addr).map_err(|source| GatewayError::Bind { addr, source })
}

/// Binds every listener and starts serving `sites` until `shutdown` turns true.
pub fn start(
    sites: &[Site],
    options: GatewayOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<RunningGateway, GatewayError> {
    let metrics = Metrics::new()?;
    let tls = match (&options.tls_listen, &options.tls_files) {
        (Some(_), Some((cert, key))) => Some(tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err(GatewayError::TlsIncomplete),
    };
    if options.listen.is_none() && options.tls_listen.is_none() {
        return Err(GatewayError::NoListener);
    }
    let plain = options.listen.map(bind).transpose()?;
    let secure = options.tls_listen.map(bind).transpose()?;
    let admin_listener = bind(options.admin_listen)?;
    let local =
        |l: &tokio::net::TcpListener, fallback: SocketAddr| l.local_addr().unwrap_or(fallback);
    let http = plain.as_ref().zip(options.listen).map(|(l, a)| local(l, a));
    let https = secure
        .as_ref()
        .zip(options.tls_listen)
        .map(|(l, a)| local(l, a));
    let admin = local(&admin_listener, options.admin_listen);

    // Sites start last, once every listener is bound: a failed start leaves no health check
    // running.
    let reloader = SiteReloader::start(sites, &metrics, Caching::On, shutdown.clone())?;
    let router = reloader.router();
    let proxy = Arc::new(Proxy::new(router.clone(), metrics.clone()));
    let stats = Arc::new(ListenerStats::default());
    let mut tasks = JoinSet::new();
    for (listener, acceptor) in [(plain, None), (secure, tls)] {
        let Some(listener) = listener else { continue };
        tasks.spawn(server::serve(
            listener,
            proxy.clone(),
            acceptor,
            options.limits.clone(),
            stats.clone(),
            shutdown.clone(),
            options.drain_timeout,
        ));
    }
    let ready = Arc::new(AtomicBool::new(true));
    let admin_handler = Arc::new(
        Admin::new(
            metrics.clone(),
            ready,
            crate::reload::origin_status(router.clone()),
        )
        .with_purge(Purger::new(Arc::new(router), options.admin_token.clone())),
    );
    tasks.spawn(admin_handler.serve(admin_listener, shutdown.clone()));
    tasks.spawn(export_listener_stats(stats, metrics, shutdown));
    Ok(RunningGateway {
        http,
        https,
        admin,
        reloader,
        tasks,
    })
}

/// Copies the listener's atomic counters into the metric families once a second.
pub(crate) async fn export_listener_stats(
    stats: Arc<ListenerStats>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let (mut accepted, mut errors, mut refused) = (0u64, 0u64, 0u64);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = crate::shutdown::requested(&mut shutdown) => return,
        }
        metrics
            .connections_open
            .set(stats.open.load(Relaxed) as i64);
        let now_accepted = stats.accepted.load(Relaxed);
        metrics.connections_accepted.inc_by(now_accepted - accepted);
        accepted = now_accepted;
        let now_errors = stats.protocol_errors.load(Relaxed);
        metrics.protocol_errors.inc_by(now_errors - errors);
        errors = now_errors;
        let now_refused = stats.refused_per_ip.load(Relaxed);
        metrics.refused_per_ip.inc_by(now_refused - refused);
        refused = now_refused;
    }
}
