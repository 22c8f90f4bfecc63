//! `causeway frontend`: the gateway next to the clients. It speaks HTTP to clients with the
//! same routing, limits and classification as the single-tier gateway, and forwards each
//! request over a TMP link to one of the Site's back-ends, chosen per request by link quality
//! and back-end load ([`link_choice`]). Idempotent requests whose link fails before the answer
//! are sent again over another link; [`tunnel`] carries the Site's plain TCP ports; [`reload`]
//! applies new Sites and back-ends while it serves.

pub mod body;
pub mod link_choice;
pub mod reload;
pub mod tunnel;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use causeway_api::Site;
use causeway_api::site::SiteSpec;
use causeway_link::compress::Decompressor;
use causeway_link::frame::ResponseHead;
use causeway_link::link::silence::stall_after;
use causeway_link::{
    ChannelHead, ChannelKind, Dialer, Link, LinkCredentials, LinkError, LinkHandle, LinkSettings,
    Load, LoadProbe, RequestHead,
};
use http::Response;
use http::request::Parts;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::body::{FrontBody, FrontCompletion};
use self::link_choice::{LinkLimits, LinkState};
use self::reload::FrontendReloader;
use crate::admin::Admin;
use crate::caching::Upstream;
use crate::classify::{Classifier, RequestProfile};
use crate::gateway::GatewayOptions;
use crate::message::error::ProxyError;
use crate::message::request_body::{RequestBody, channel_stream};
use crate::message::{headers, is_idempotent};
use crate::metrics::{Metrics, MetricsError, SiteMetrics};
use crate::pipeline::{Pipeline, RoutedSite, Tier};
use crate::server::{self, ListenerStats};
use crate::sites::{SiteError, site_name};
use crate::tls::{self, TlsError};

/// Which back-ends serve which Sites.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendMap {
    /// Back-end link addresses per Site name (namespace/name, or the bare name).
    pub per_site: HashMap<String, Vec<SocketAddr>>,
    /// Back-ends of Sites not in `per_site`.
    pub default: Vec<SocketAddr>,
}

impl BackendMap {
    /// The back-ends of `site`: its own list by full or bare name, else the default one.
    pub fn for_site(&self, site: &Site) -> &[SocketAddr] {
        self.per_site
            .get(&site_name(site))
            .or_else(|| {
                self.per_site
                    .get(site.metadata.name.as_deref().unwrap_or(""))
            })
            .unwrap_or(&self.default)
    }
}

/// Where the front-end listens and which back-ends serve which Sites.
#[derive(Clone, Debug)]
pub struct FrontendOptions {
    /// Client listeners, admin and limits, as on the gateway; the drain timeout also bounds
    /// how long a link to a back-end dropped by a reload may take to finish its channels.
    pub serve: GatewayOptions,
    /// Back-end link addresses of the Sites.
    pub backends: BackendMap,
    /// Link behaviour.
    pub link: LinkSettings,
    /// Address tunnelled TCP ports listen on (the port comes from the Site).
    pub tunnel_ip: std::net::IpAddr,
}

/// Why the front-end could not start, or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A Site cannot be served.
    #[error(transparent)]
    Site(#[from] SiteError),
    /// A Site has no back-end to link to.
    #[error("site {0} has no back-end: give --backend {0}=HOST:PORT")]
    NoBackend(String),
    /// Two Sites tunnel one TCP port.
    #[error("TCP port {port} is tunnelled by both site {first} and site {second}")]
    DuplicateTunnelPort {
        /// The port.
        port: u16,
        /// First claimant.
        first: String,
        /// Second claimant.
        second: String,
    },
    /// TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The link endpoint could not start.
    #[error("TMP dialer: {0}")]
    Link(#[from] LinkError),
    /// No client listener.
    #[error("nothing to listen on: give --listen or --tls-listen")]
    NoListener,
    /// A TLS listener without certificate files, or the reverse.
    #[error("--tls-listen needs --tls-cert and --tls-key")]
    TlsIncomplete,
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

/// Binds a client or tunnel listener, naming the address when it fails.
pub(crate) fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, FrontendError> {
    server::bind(addr).map_err(|source| FrontendError::Bind { addr, source })
}

/// One Site as a front-end runs it.
#[derive(Debug)]
pub struct FrontSite {
    /// The Site's name.
    pub name: String,
    /// Priority and type rules.
    pub classifier: Classifier,
    /// Extra attempts (on other links) for idempotent requests.
    pub retry_attempts: u32,
    /// Largest request body.
    pub max_body_bytes: Option<u64>,
    /// Longest wait for the answer head.
    pub response_timeout: Duration,
    /// Links to the Site's back-ends.
    pub links: Vec<Arc<LinkHandle>>,
    /// Link quality limits from the Site's QoS goals.
    pub limits: LinkLimits,
    /// TCP ports tunnelled to the back-ends.
    pub tcp_ports: Vec<u16>,
    /// The class tunnelled connections travel in.
    pub default_class: u8,
    /// The Site's response cache, when the Site turns it on: repeat requests are answered
    /// here and never cross a link.
    pub cache: Option<Arc<causeway_cache::Cache>>,
    metrics: SiteMetrics,
    /// The spec it runs and its back-ends, to tell an unchanged Site on reload.
    spec: SiteSpec,
    backends: Vec<SocketAddr>,
}

impl crate::caching::purge::HasCache for FrontSite {
    fn cache(&self) -> Option<&Arc<causeway_cache::Cache>> {
        self.cache.as_ref()
    }
}

impl FrontSite {
    fn link_states(&self) -> Vec<(LinkState, Option<Arc<Link>>)> {
        self.links
            .iter()
            .map(|handle| {
                let link = handle.current();
                let state = match &link {
                    None => LinkState {
                        up: false,
                        rtt: Duration::ZERO,
                        loss: 0.0,
                        channels: 0,
                        backend_in_flight: 0,
                        backend_queued: 0,
                        stalled: false,
                    },
                    Some(link) => {
                        let qos = link.qos();
                        let own = qos.frontend.as_ref();
                        let peer = qos.backend.as_ref();
                        let (sample, unanswered) = link.sample_and_silence();
                        let rtt = sample.rtt;
                        LinkState {
                            up: true,
                            rtt,
                            // The worse of the two ends' views: loss on the way back shows
                            // only at the back-end.
                            loss: own
                                .map_or(0.0, |r| r.loss_smoothed)
                                .max(peer.map_or(0.0, |r| r.loss_smoothed)),
                            channels: link.channels_open() as u64,
                            backend_in_flight: peer.map_or(0, |r| r.in_flight),
                            backend_queued: peer.map_or(0, |r| r.queued_requests),
                            stalled: unanswered > stall_after(rtt),
                        }
                    }
                };
                (state, link)
            })
            .collect()
    }

    /// Chooses a link for one request, skipping those in `excluded`.
    pub fn choose_link(&self, excluded: u64) -> Option<(usize, Arc<Link>)> {
        let states = self.link_states();
        let plain: Vec<LinkState> = states.iter().map(|(s, _)| *s).collect();
        // A back-end that is shutting down finishes what it has and still takes a request,
        // but only when no other link can: `choose` avoids excluded links while others are up.
        let draining = states
            .iter()
            .enumerate()
            .filter(|(_, (_, link))| link.as_ref().is_some_and(|l| l.peer_draining()))
            .fold(0u64, |mask, (i, _)| mask | (1u64 << (i % 64)));
        let index = link_choice::choose(
            &plain,
            &self.limits,
            excluded | draining,
            [fastrand::u64(..), fastrand::u64(..)],
        )?;
        let link = states.into_iter().nth(index)?.1?;
        Some((index, link))
    }
}

/// A Site compiled for a front-end and checked, with its back-ends, before any link is
/// dialled: compiling has no side effect, so a reload can refuse a whole configuration.
#[derive(Debug)]
pub struct CompiledFrontSite {
    name: String,
    spec: SiteSpec,
    classifier: Classifier,
    backends: Vec<SocketAddr>,
}

impl CompiledFrontSite {
    /// Compiles `site`'s rules and finds its back-ends in `backends`.
    pub fn new(site: &Site, backends: &BackendMap) -> Result<Self, FrontendError> {
        let name = site_name(site);
        let addresses = backends.for_site(site);
        if addresses.is_empty() {
            return Err(FrontendError::NoBackend(name));
        }
        let classifier = Classifier::new(&site.spec).map_err(|source| SiteError::Rules {
            site: name.clone(),
            source,
        })?;
        Ok(Self {
            name,
            spec: site.spec.clone(),
            classifier,
            backends: addresses.to_vec(),
        })
    }

    /// The back-ends the Site links to.
    pub fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }

    /// Whether `running` already runs exactly this Site over the same back-ends.
    pub fn is_running_as(&self, running: &FrontSite) -> bool {
        self.name == running.name && self.spec == running.spec && self.backends == running.backends
    }

    /// Starts the Site over the links of its back-ends, taken from `links` (which must hold
    /// one for each), with its cache (the `predecessor`'s when the cache settings did not
    /// change).
    pub fn start(
        self,
        metrics: &Metrics,
        links: &BTreeMap<SocketAddr, Arc<LinkHandle>>,
        predecessor: Option<&FrontSite>,
    ) -> FrontSite {
        let Self {
            name,
            spec,
            classifier,
            backends,
        } = self;
        let cache = crate::caching::settings::site_cache(
            &spec.cache,
            &name,
            &metrics.cache,
            predecessor.and_then(|p| p.cache.as_ref()),
        );
        FrontSite {
            cache,
            classifier,
            retry_attempts: spec.retries.attempts,
            max_body_bytes: spec.limits.max_request_body_bytes,
            response_timeout: spec.limits.response_timeout.get(),
            links: backends
                .iter()
                .filter_map(|address| links.get(address).cloned())
                .collect(),
            limits: LinkLimits {
                max_rtt: spec.qos.max_link_rtt.map(|d| d.get()),
                max_loss: spec.qos.max_loss,
            },
            tcp_ports: spec.tcp_ports.iter().map(|p| p.port).collect(),
            default_class: spec.priority.default_class,
            metrics: metrics.site(&name, &[]),
            name,
            spec,
            backends,
        }
    }
}

/// The client-facing handler.
type FrontendProxy = Pipeline<Frontend>;

/// The front-end's part of the pipeline: its Sites reach their back-ends over TMP links.
#[derive(Debug)]
pub enum Frontend {}

impl Tier for Frontend {
    type Site = FrontSite;
    type Upstream = FrontUpstream;

    fn upstream(site: Arc<FrontSite>, profile: RequestProfile, started: Instant) -> FrontUpstream {
        FrontUpstream {
            site,
            profile,
            started,
        }
    }
}

impl RoutedSite for FrontSite {
    fn name(&self) -> &str {
        &self.name
    }

    fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    fn max_body_bytes(&self) -> Option<u64> {
        self.max_body_bytes
    }

    fn cache(&self) -> Option<&Arc<causeway_cache::Cache>> {
        self.cache.as_ref()
    }
}

/// Starts the front-end: client listeners, admin, then the Sites — links to every back-end
/// and the tunnels.
pub fn start(
    sites: &[Site],
    options: FrontendOptions,
    credentials: &LinkCredentials,
    shutdown: watch::Receiver<bool>,
) -> Result<RunningFrontend, FrontendError> {
    let metrics = Metrics::new()?;
    let serve = &options.serve;
    let load_metrics: LoadProbe = Arc::new(Load::default);
    let dialer = Dialer::new(
        SocketAddr::new(options.tunnel_ip, 0),
        credentials,
        options.link.clone(),
        load_metrics,
    )?;
    let tls = match (&serve.tls_listen, &serve.tls_files) {
        (Some(_), Some((cert, key))) => Some(tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err(FrontendError::TlsIncomplete),
    };
    if serve.listen.is_none() && serve.tls_listen.is_none() {
        return Err(FrontendError::NoListener);
    }
    let plain = serve.listen.map(bind).transpose()?;
    let secure = serve.tls_listen.map(bind).transpose()?;
    let admin_listener = bind(serve.admin_listen)?;
    let local = |l: &tokio::net::TcpListener| l.local_addr().ok();
    let http = plain.as_ref().and_then(local);
    let https = secure.as_ref().and_then(local);
    let admin = local(&admin_listener).unwrap_or(serve.admin_listen);

    // Sites start last, once every client listener is bound: links are dialled and tunnels
    // bound only for a front-end that runs.
    let links = Arc::new(FrontLinks::default());
    let reloader = FrontendReloader::start(
        sites,
        &options.backends,
        reload::FrontendParts {
            dialer,
            links: links.clone(),
            metrics: metrics.clone(),
            tunnel_ip: options.tunnel_ip,
            drain_timeout: serve.drain_timeout,
            shutdown: shutdown.clone(),
        },
    )?;
    let router = reloader.router();
    let tunnels = reloader.tunnels();
    let mut tasks = JoinSet::new();
    let purger =
        crate::caching::purge::Purger::new(Arc::new(router.clone()), serve.admin_token.clone());
    let proxy = Arc::new(FrontendProxy::new(router, metrics.clone()));
    let stats = Arc::new(ListenerStats::default());
    for (listener, acceptor) in [(plain, None), (secure, tls)] {
        let Some(listener) = listener else { continue };
        tasks.spawn(server::serve(
            listener,
            proxy.clone(),
            acceptor,
            serve.limits.clone(),
            stats.clone(),
            shutdown.clone(),
            serve.drain_timeout,
        ));
    }
    let status_links = links.clone();
    let qos_links = links.clone();
    let admin_handler = Admin::new(
        metrics.clone(),
        Arc::new(AtomicBool::new(true)),
        Arc::new(move || {
            let links: Vec<_> = status_links
                .handles()
                .iter()
                .map(|h| serde_json::json!({ "backend": h.address(), "up": h.current().is_some() }))
                .collect();
            serde_json::json!({ "links": links })
        }),
    )
    .with_readiness({
        // A front-end takes clients only once it can reach a back-end: before its first link
        // is up (or when every link is down) it would answer each request 503.
        let links = links.clone();
        Arc::new(move || {
            let handles = links.handles();
            let up = handles.iter().any(|h| h.current().is_some());
            (!up).then(|| format!("no TMP link up (of {})", handles.len()))
        })
    })
    .with_qos(Arc::new(move || {
        let links: Vec<_> = qos_links
            .handles()
            .iter()
            .filter_map(|h| h.current())
            .map(|l| l.view())
            .collect();
        serde_json::json!({ "links": links })
    }))
    .with_links(links.clone())
    .with_purge(purger);
    tasks.spawn(Arc::new(admin_handler).serve(admin_listener, shutdown.clone()));
    tasks.spawn(crate::gateway::export_listener_stats(
        stats,
        metrics.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::link_metrics::export(
        metrics,
        links.clone(),
        shutdown,
    ));
    Ok(RunningFrontend {
        http,
        https,
        admin,
        tunnels,
        links,
        reloader,
        tasks,
    })
}

/// A front-end's links, one per back-end of the configuration in force (shared by every
/// Site that back-end serves).
#[derive(Debug, Default)]
pub struct FrontLinks(Mutex<BTreeMap<SocketAddr, Arc<LinkHandle>>>);

impl FrontLinks {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, Arc<LinkHandle>>> {
        // The map stays whole through a panic elsewhere: keep serving with it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The links now.
    pub fn handles(&self) -> Vec<Arc<LinkHandle>> {
        self.lock().values().cloned().collect()
    }

    /// Waits until every link is up, at most `limit`; true when they all are.
    pub async fn wait_up(&self, limit: Duration) -> bool {
        for handle in self.handles() {
            if handle.wait_up(limit).await.is_none() {
                return false;
            }
        }
        true
    }
}

impl crate::link_metrics::LinkSource for FrontLinks {
    fn live_links(&self) -> Vec<Arc<Link>> {
        self.handles().iter().filter_map(|h| h.current()).collect()
    }
}

/// A started front-end.
pub struct RunningFrontend {
    /// The plain HTTP address.
    pub http: Option<SocketAddr>,
    /// The TLS address.
    pub https: Option<SocketAddr>,
    /// The admin address.
    pub admin: SocketAddr,
    /// Tunnelled TCP listeners at start.
    pub tunnels: Vec<SocketAddr>,
    /// The links to back-ends.
    pub links: Arc<FrontLinks>,
    reloader: FrontendReloader,
    tasks: JoinSet<()>,
}

impl RunningFrontend {
    /// Applies new Sites and back-ends to this front-end while it serves.
    pub fn reloader(&self) -> FrontendReloader {
        self.reloader.clone()
    }

    /// Waits until every listener has drained after shutdown.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One front-end request's way over its Site's links, for the proxy and its cache phase.
#[derive(Clone, Debug)]
pub struct FrontUpstream {
    site: Arc<FrontSite>,
    profile: RequestProfile,
    started: Instant,
}

impl FrontUpstream {
    fn completion(&self, status: http::StatusCode) -> FrontCompletion {
        FrontCompletion::new(
            &self.site.metrics,
            self.profile.class,
            status.as_u16(),
            self.started,
        )
    }
}

impl Upstream for FrontUpstream {
    type Body = FrontBody;

    async fn send(
        &self,
        parts: Parts,
        body: RequestBody,
    ) -> Result<Response<FrontBody>, ProxyError> {
        forward(&self.site, &parts, body, self.profile, self.started).await
    }

    fn local(&self, response: Response<bytes::Bytes>) -> Response<FrontBody> {
        let completion = self.completion(response.status());
        response.map(|bytes| FrontBody::from(bytes).with_completion(completion))
    }

    fn failure(&self, error: &ProxyError) -> Response<FrontBody> {
        let completion = self.completion(error.status());
        error
            .to_response::<FrontBody>()
            .map(|body| body.with_completion(completion))
    }
}

/// Sends a request over the Site's links, on another link when one fails before answering
/// and the request may be repeated.
async fn forward(
    site: &FrontSite,
    parts: &Parts,
    body: RequestBody,
    profile: RequestProfile,
    started: Instant,
) -> Result<Response<FrontBody>, ProxyError> {
    let replay = body.replay();
    let repeatable = replay.is_some() && is_idempotent(&parts.method);
    let empty_body = matches!(body, RequestBody::Empty);
    let mut body = Some(body);
    let mut tried = 0u64;
    let mut attempts_left = site.retry_attempts;
    let head = ChannelHead {
        class: profile.class,
        request_type: u8::try_from(profile.request_type).unwrap_or(u8::MAX),
        accepts_zstd: true,
        kind: ChannelKind::Http(RequestHead {
            method: parts.method.clone(),
            target: parts
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned(),
            headers: parts.headers.clone(),
            empty_body,
        }),
    };
    loop {
        let Some((index, link)) = site.choose_link(tried) else {
            return Err(ProxyError::NoLink {
                site: site.name.clone(),
            });
        };
        let attempt_body = body
            .take()
            .or_else(|| replay.as_ref().and_then(RequestBody::replay))
            .unwrap_or(RequestBody::Empty);
        match exchange(site, &link, &head, attempt_body, profile.class, started).await {
            Ok(response) => return Ok(response),
            Err(Failure::Timeout) => {
                return Err(ProxyError::Timeout {
                    origin: link.peer_name(),
                    timeout: site.response_timeout,
                });
            }
            Err(Failure::Link(error)) => {
                let backend = link.peer_address().to_string();
                if error.link_failed() && repeatable && attempts_left > 0 {
                    tracing::debug!(site = %site.name, %backend, %error, "link failed; retrying on another");
                    tried |= 1 << index.min(63);
                    attempts_left -= 1;
                    continue;
                }
                return Err(ProxyError::Link {
                    backend,
                    detail: error.to_string(),
                });
            }
        }
    }
}

/// Why one exchange over a link failed.
enum Failure {
    Link(LinkError),
    Timeout,
}

impl From<LinkError> for Failure {
    fn from(error: LinkError) -> Self {
        Self::Link(error)
    }
}

/// One request over one link: the head, the body (streamed in the background, so an early
/// answer is not held up), then the answer head; the answer body streams to the client.
async fn exchange(
    site: &FrontSite,
    link: &Link,
    head: &ChannelHead,
    mut body: RequestBody,
    class: u8,
    started: Instant,
) -> Result<Response<FrontBody>, Failure> {
    let channel = link.open(head).await?;
    let causeway_link::Channel {
        mut sender,
        mut receiver,
    } = channel;
    let upload = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data()
                        && sender.send(data).await.is_err()
                    {
                        return;
                    }
                }
                Err(error) => {
                    // The back-end must not take a cut-off body for a whole one.
                    tracing::debug!(%error, "client body failed; cancelling the channel");
                    sender.reset(causeway_link::ChannelReset::Cancelled);
                    return;
                }
            }
        }
        let _ = sender.finish();
    });
    let head_frame = tokio::time::timeout(site.response_timeout, receiver.read_frame()).await;
    let payload = match head_frame {
        Ok(Ok(payload)) => payload,
        Ok(Err(error)) => {
            upload.abort();
            return Err(Failure::Link(error));
        }
        Err(_) => {
            upload.abort();
            receiver.stop(causeway_link::ChannelReset::Cancelled);
            return Err(Failure::Timeout);
        }
    };
    let answer = ResponseHead::decode(&payload).map_err(LinkError::from)?;
    let decompressor = if answer.zstd {
        Some(Decompressor::new().map_err(LinkError::Io)?)
    } else {
        None
    };
    let mut response_headers = answer.headers;
    headers::remove_hop_by_hop(&mut response_headers);
    headers::add_via(&mut response_headers);
    let record = FrontCompletion::new(&site.metrics, class, answer.status.as_u16(), started);
    let mut response = Response::new(FrontBody::link(
        channel_stream(receiver),
        decompressor,
        record,
    ));
    *response.status_mut() = answer.status;
    *response.headers_mut() = response_headers;
    Ok(response)
}
