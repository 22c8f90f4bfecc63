//! `causeway backend`: the gateway next to the origins. It ends TMP links from front-ends and
//! serves each channel: an HTTP exchange goes through the Site's balancer (high-water marks,
//! release queue, types, primary preference, health) exactly as on the single-tier gateway;
//! a TCP channel is joined to one of the Site's origins on the channel's port. Its Sites are
//! reloaded live through [`RunningBackend::reloader`], with the gateway's semantics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use causeway_api::Site;
use causeway_link::compress::{self, Compressor};
use causeway_link::frame::ResponseHead;
use causeway_link::{
    Channel, ChannelHandler, ChannelHead, ChannelKind, ChannelReset, Link, LinkCredentials,
    LinkError, LinkRegistry, LinkSettings, Listener, Load, LoadProbe, RequestHead, TcpTarget,
};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::Admin;
use crate::balancer::OriginSet;
use crate::classify::RequestProfile;
use crate::message::error::ProxyError;
use crate::message::request_body::RequestBody;
use crate::message::{BoxError, body_length, headers};
use crate::metrics::{Metrics, MetricsError};
use crate::pipeline::{self, REPLAY_BUFFER_BYTES};
use crate::proxy::{
    self,
    body::{Completion, ProxyBody},
};
use crate::reload::SiteReloader;
use crate::server;
use crate::sites::{Caching, LiveRouter, SiteError};

/// Where and how the back-end listens.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// UDP address for TMP links.
    pub link_listen: SocketAddr,
    /// Admin endpoint.
    pub admin_listen: SocketAddr,
    /// Link behaviour.
    pub link: LinkSettings,
    /// On shutdown, how long links may take to finish their channels after the front-ends
    /// are told this back-end is draining.
    pub drain_timeout: Duration,
}

/// Why the back-end could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A Site cannot be served.
    #[error(transparent)]
    Site(#[from] SiteError),
    /// The link endpoint could not start.
    #[error("TMP listener: {0}")]
    Link(#[from] LinkError),
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

/// A started back-end.
pub struct RunningBackend {
    /// The UDP address links reach.
    pub link_address: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    /// The live links.
    pub links: Arc<LinkRegistry>,
    reloader: SiteReloader,
    tasks: JoinSet<()>,
    listener: Arc<Listener>,
}

impl RunningBackend {
    /// Applies new Site configurations to this back-end while it serves.
    pub fn reloader(&self) -> SiteReloader {
        self.reloader.clone()
    }

    /// The link listener, for presenting a renewed certificate to new links.
    pub fn link_listener(&self) -> Arc<Listener> {
        self.listener.clone()
    }

    /// Waits until shutdown, then closes every link.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.listener.close();
    }
}

/// Drains every link on shutdown: tells each front-end (at once, in a QoS report) to open
/// no new channel here, then waits until the channels already open have finished, or
/// `limit`; the links are closed after. Front-ends move new requests to their other links,
/// so a back-end stopping for a roll costs no request.
async fn drain(links: &LinkRegistry, limit: Duration) {
    let links = links.links();
    for link in &links {
        link.start_draining();
    }
    let open = || links.iter().map(|l| l.channels_open()).sum::<usize>();
    tracing::info!(links = links.len(), channels = open(), "draining links");
    let deadline = tokio::time::Instant::now() + limit;
    while open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match open() {
        0 => tracing::info!("links drained"),
        left => tracing::warn!(
            channels = left,
            "drain timeout: closing links with channels open"
        ),
    }
}

/// Serves each channel of every link.
#[derive(Clone)]
struct BackendService {
    router: LiveRouter,
    metrics: Metrics,
}

/// Binds the link endpoint and the admin endpoint, and serves `sites` until `shutdown`.
pub fn start(
    sites: &[Site],
    options: BackendOptions,
    credentials: &LinkCredentials,
    shutdown: watch::Receiver<bool>,
) -> Result<RunningBackend, BackendError> {
    let metrics = Metrics::new()?;
    let reloader = SiteReloader::start(sites, &metrics, Caching::Off, shutdown.clone())?;
    let router = reloader.router();
    let load_router = router.clone();
    let load: LoadProbe = Arc::new(move || {
        let (in_flight, queued) = load_router
            .load()
            .sites()
            .iter()
            .map(|site| site.balancer.load())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        Load { in_flight, queued }
    });
    let listener = Arc::new(Listener::bind(
        options.link_listen,
        credentials,
        options.link.clone(),
        load,
    )?);
    let link_address = listener.local_addr()?;
    let admin_listener =
        server::bind(options.admin_listen).map_err(|source| BackendError::Bind {
            addr: options.admin_listen,
            source,
        })?;
    let admin = admin_listener.local_addr().unwrap_or(options.admin_listen);
    let links = listener.registry();
    let mut tasks = JoinSet::new();
    let service = BackendService {
        router: router.clone(),
        metrics: metrics.clone(),
    };
    let serving = listener.clone();
    let mut stop = shutdown.clone();
    let drain_timeout = options.drain_timeout;
    tasks.spawn(async move {
        tokio::select! {
            () = serving.serve(service) => return,
            () = crate::shutdown::requested(&mut stop) => {}
        }
        drain(&serving.registry(), drain_timeout).await;
    });
    let qos_links = links.clone();
    let admin_handler = Admin::new(
        metrics.clone(),
        Arc::new(AtomicBool::new(true)),
        crate::reload::origin_status(router),
    )
    .with_qos(Arc::new(
        move || serde_json::json!({ "links": qos_links.views() }),
    ))
    .with_links(links.clone());
    tasks.spawn(Arc::new(admin_handler).serve(admin_listener, shutdown.clone()));
    tasks.spawn(crate::link_metrics::export(
        metrics,
        links.clone(),
        shutdown,
    ));
    Ok(RunningBackend {
        link_address,
        admin,
        links,
        reloader,
        tasks,
        listener,
    })
}

impl ChannelHandler for BackendService {
    fn serve(
        &self,
        _link: Arc<Link>,
        head: ChannelHead,
        channel: Channel,
    ) -> impl Future<Output = ()> + Send + 'static {
        let service = self.clone();
        async move {
            match head.kind {
                ChannelKind::Http(request) => {
                    service
                        .serve_http(
                            head.class,
                            head.request_type,
                            head.accepts_zstd,
                            request,
                            channel,
                        )
                        .await
                }
                ChannelKind::Tcp(target) => service.serve_tcp(head.class, target, channel).await,
            }
        }
    }
}

impl BackendService {
    async fn serve_http(
        self,
        class: u8,
        request_type: u8,
        accepts_zstd: bool,
        request: RequestHead,
        mut channel: Channel,
    ) {
        let started = Instant::now();
        let Ok(uri) = request.target.parse::<Uri>() else {
            return answer_error(&mut channel, ProxyError::BadTarget, None).await;
        };
        let empty_body = request.empty_body;
        let mut head = Request::new(());
        *head.method_mut() = request.method;
        *head.uri_mut() = uri;
        *head.version_mut() = Version::HTTP_11;
        *head.headers_mut() = request.headers;
        let (parts, ()) = head.into_parts();
        // The channel keeps the Site it is routed to until it ends, whatever a reload does.
        let site = match pipeline::route(&**self.router.load(), &parts) {
            Ok(site) => site.clone(),
            Err(error) => {
                self.metrics.record_unrouted(error.status().as_u16());
                return answer_error(&mut channel, error, None).await;
            }
        };
        // The front-end classified the request; a type this Site does not define means the
        // two ends run different specs, and the back-end's own rules decide.
        let profile = site
            .classifier
            .profile(class, usize::from(request_type))
            .unwrap_or_else(|| site.classifier.classify(&parts));
        let completion = |status: u16, lease| {
            Completion::new(&site.balancer, profile.class, status, started, lease)
        };
        if let Some(error) = pipeline::over_limit(site.max_body_bytes, &parts) {
            let record = completion(error.status().as_u16(), None);
            return answer_error(&mut channel, error, Some(record)).await;
        }
        let Channel {
            mut sender,
            receiver,
        } = channel;
        let body = match body_length(&parts) {
            // The front-end said there is no body: the request can be replayed at once, with
            // no wait for the stream's end.
            _ if empty_body => RequestBody::Empty,
            Some(length) if length <= REPLAY_BUFFER_BYTES => {
                match RequestBody::buffer_channel(receiver, REPLAY_BUFFER_BYTES).await {
                    Ok(body) => body,
                    // The front-end (or its client) went away mid-body: nobody to answer.
                    Err(error) => {
                        tracing::debug!(site = %site.name, %error, "request body lost");
                        sender.reset(ChannelReset::Cancelled);
                        return;
                    }
                }
            }
            _ => RequestBody::from_channel(receiver, site.max_body_bytes),
        };
        let response = match proxy::forward(&site, parts, body, profile).await {
            Ok(forwarded) => {
                let (mut head, inner) = forwarded.response.into_parts();
                headers::remove_hop_by_hop(&mut head.headers);
                let record = completion(head.status.as_u16(), Some(forwarded.lease));
                Response::from_parts(
                    head,
                    ProxyBody::upstream(inner, forwarded.connection, record),
                )
            }
            Err(error) => {
                tracing::debug!(site = %site.name, %error, "request failed");
                let record = completion(error.status().as_u16(), None);
                error
                    .to_response::<ProxyBody>()
                    .map(|b| b.with_completion(record))
            }
        };
        if let Err(error) = send_response(&mut sender, response, accepts_zstd).await {
            tracing::debug!(site = %site.name, %error, "answer not delivered");
        }
    }

    async fn serve_tcp(self, class: u8, target: TcpTarget, channel: Channel) {
        let Channel {
            mut sender,
            mut receiver,
        } = channel;
        let found = self.router.load().sites().iter().find_map(|site| {
            let (_, origin_port) = site
                .tcp_ports
                .iter()
                .find(|(listen, _)| *listen == target.port)?;
            (site.name == target.site).then(|| (site.clone(), *origin_port))
        });
        let Some((site, origin_port)) = found else {
            tracing::warn!(site = %target.site, port = target.port, "tunnel refused: no such site or port");
            receiver.stop(ChannelReset::Refused);
            sender.reset(ChannelReset::Refused);
            return;
        };
        let profile = site.classifier.profile(class, 0).unwrap_or(RequestProfile {
            class,
            request_type: 0,
            cost: 1,
        });
        let mut tried = OriginSet::default();
        // A reload may hand the balancer over meanwhile: go on from the lease's own.
        let mut balancer = site.balancer.clone();
        // The origin's slot is held for the whole connection: a tunnelled connection is load.
        let (lease, stream) = loop {
            let lease = match balancer.acquire(profile, tried).await {
                Ok(lease) => lease,
                Err(error) => {
                    tracing::warn!(site = %site.name, %error, "tunnel: no origin");
                    receiver.stop(ChannelReset::UpstreamFailed);
                    sender.reset(ChannelReset::UpstreamFailed);
                    return;
                }
            };
            let host = lease.info().authority.host().to_owned();
            let connect = tokio::net::TcpStream::connect((host.as_str(), origin_port));
            match tokio::time::timeout(site.connect_timeout, connect).await {
                Ok(Ok(stream)) => break (lease, stream),
                outcome => {
                    let detail = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(site = %site.name, origin = %lease.info().name, port = origin_port, %detail, "tunnel connect failed");
                    lease.record(Duration::ZERO, false);
                    balancer = lease.balancer();
                    tried = lease.tried();
                    if tried.len() >= balancer.origins().len() {
                        receiver.stop(ChannelReset::UpstreamFailed);
                        sender.reset(ChannelReset::UpstreamFailed);
                        return;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let started = Instant::now();
        let (mut from_origin, mut to_origin) = stream.into_split();
        let upstream = async {
            while let Some(chunk) = receiver.read_chunk().await? {
                to_origin.write_all(&chunk).await?;
            }
            to_origin.shutdown().await?;
            Ok::<_, TunnelError>(())
        };
        let downstream = async {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = from_origin.read(&mut buffer).await?;
                if read == 0 {
                    sender.finish()?;
                    return Ok::<_, TunnelError>(());
                }
                sender.send(Bytes::copy_from_slice(&buffer[..read])).await?;
            }
        };
        let (up, down) = tokio::join!(upstream, downstream);
        let ok = up.is_ok() && down.is_ok();
        if let Err(error) = up.and(down) {
            tracing::debug!(site = %site.name, %error, "tunnel ended with an error");
        }
        lease.record(started.elapsed().min(Duration::from_secs(1)), ok);
    }
}

/// Why a tunnel ended abnormally.
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("origin connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Answers a channel with an error the back-end produced itself.
async fn answer_error(channel: &mut Channel, error: ProxyError, record: Option<Completion>) {
    let response = error.to_response::<ProxyBody>();
    let response = match record {
        Some(record) => response.map(|b| b.with_completion(record)),
        None => response,
    };
    channel.receiver.stop(ChannelReset::Refused);
    if let Err(error) = send_response(&mut channel.sender, response, false).await {
        tracing::debug!(%error, "error answer not delivered");
    }
}

/// Why an answer did not reach the front-end whole.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("origin body: {0}")]
    Origin(BoxError),
    #[error("compression: {0}")]
    Compress(#[from] std::io::Error),
}

/// Streams a response onto the channel, compressed when the front-end accepts zstd and the
/// content is worth it.
async fn send_response(
    sender: &mut causeway_link::ChannelSender,
    response: Response<ProxyBody>,
    accepts_zstd: bool,
) -> Result<(), SendError> {
    let (head, mut body) = response.into_parts();
    let zstd = accepts_zstd && compress::worth_compressing(&head.headers);
    sender
        .send_frame(
            ResponseHead {
                status: head.status,
                zstd,
                headers: head.headers,
            }
            .encode(),
        )
        .await?;
    let mut compressor = if zstd { Some(Compressor::new()?) } else { None };
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                // The front-end must not take a cut-off body for a whole one.
                sender.reset(ChannelReset::UpstreamFailed);
                return Err(SendError::Origin(error));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let data = match compressor.as_mut() {
            Some(compressor) => compressor.chunk(&data)?,
            None => data,
        };
        if !data.is_empty() {
            sender.send(data).await?;
        }
    }
    if let Some(mut compressor) = compressor {
        let tail = compressor.finish()?;
        sender.send(tail).await?;
    }
    sender.finish()?;
    Ok(())
}
