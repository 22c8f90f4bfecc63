//! The `causeway` command: the data plane's modes and the local all-in-one runner.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use causeway_api::Duration as TextDuration;
use causeway_api::contract::signing::FRONTEND_CERT_NAME;
use causeway_gateway::backend::{self, BackendOptions};
use causeway_gateway::cluster_config::{self, ClusterConfig, Version};
use causeway_gateway::frontend::{self, BackendMap, FrontendOptions};
use causeway_gateway::gateway::{self, GatewayOptions};
use causeway_gateway::link_identity::{self, PodIdentity};
use causeway_gateway::origin::{DemoOrigin, DemoOriginConfig, SlowWindow};
use causeway_gateway::reload::ReloadReport;
use causeway_gateway::server::{self, ConnectionLimits, ListenerStats};
use causeway_gateway::telemetry::{self, LogFormat};
use causeway_gateway::{local, shutdown};
use causeway_link::{BlendSettings, LinkCredentials, LinkSettings};
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Causeway: edge load balancing between clients and redundant origin servers.
#[derive(Parser)]
#[command(name = "causeway", version, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value_t,
        global = true,
        env = "CAUSEWAY_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Worker threads (default: one per CPU).
    #[arg(long, global = true, env = "CAUSEWAY_WORKERS")]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start and matched once; boxing would only add noise"
)]
enum Command {
    /// Single-tier gateway: client HTTP balanced straight over each Site's origins. SIGHUP
    /// reads the Site files again and applies them without dropping requests.
    Gateway {
        #[command(flatten)]
        serve: ServeArgs,
        /// Site manifests (YAML, the same documents `kubectl apply` takes).
        #[arg(required = true, value_name = "SITE_FILE")]
        sites: Vec<String>,
    },
    /// Front-end gateway: client HTTP forwarded over TMP links to the Sites' back-ends.
    /// SIGHUP reads the Site files again and applies them (with the same --backend flags);
    /// with --config-map, each new version of the ConfigMap is applied as it comes.
    Frontend {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        link: LinkArgs,
        /// A back-end's TMP address, as `HOST:PORT` (serves every Site) or `SITE=HOST:PORT`;
        /// repeat for each back-end.
        #[arg(
            long = "backend",
            value_name = "[SITE=]HOST:PORT",
            required_unless_present = "config_map",
            conflicts_with = "config_map"
        )]
        backends: Vec<BackendArg>,
        /// Address tunnelled TCP ports listen on.
        #[arg(long, default_value = "0.0.0.0")]
        tunnel_ip: std::net::IpAddr,
        /// Site manifests.
        #[arg(
            value_name = "SITE_FILE",
            required_unless_present = "config_map",
            conflicts_with = "config_map"
        )]
        sites: Vec<String>,
    },
    /// Back-end gateway: ends TMP links and balances their requests over the Sites' origins.
    /// SIGHUP reads the Site files again and applies them without dropping requests; with
    /// --config-map, each new version of the ConfigMap is applied as it comes.
    Backend {
        #[command(flatten)]
        link: LinkArgs,
        /// UDP address for TMP links.
        #[arg(long, default_value = "0.0.0.0:4433")]
        link_listen: SocketAddr,
        /// Admin address: /metrics, /healthz, /readyz, /status, /qos.
        #[arg(long, default_value = "127.0.0.1:9902")]
        admin_listen: SocketAddr,
        /// On SIGTERM, how long the links may take to finish their channels once the
        /// front-ends are told this back-end is draining.
        #[arg(long, default_value = "8s")]
        drain_timeout: TextDuration,
        /// Site manifests.
        #[arg(
            value_name = "SITE_FILE",
            required_unless_present = "config_map",
            conflicts_with = "config_map"
        )]
        sites: Vec<String>,
    },
    /// Run a whole Site on this machine: the embedded demo, or the Sites in the files given.
    Local {
        #[command(flatten)]
        serve: ServeArgs,
        /// Run the single-tier gateway instead of front-end → TMP link → back-end.
        #[arg(long)]
        single_tier: bool,
        /// Site manifests; none runs the embedded demo Site with its own origins.
        #[arg(value_name = "SITE_FILE")]
        sites: Vec<String>,
    },
    /// Writes a CA and TMP link certificates for one back-end and one front-end (PEM files
    /// ca.pem, backend.pem, backend.key, frontend.pem, frontend.key), for running the tiers
    /// by hand or in benchmarks; in a cluster the operator makes them.
    LinkCerts {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// The Kubernetes operator: reconciles Sites and Frontends into gateway pods.
    Operator(causeway_operator::OperatorOptions),
    /// A live view of every Site and Frontend: pods, QoS figures, health and the QoS loop's
    /// decisions, from the cluster in the current kubeconfig.
    Top {
        /// Only this namespace (default: every namespace).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Time between redraws.
        #[arg(long, default_value = "2s")]
        interval: TextDuration,
        /// Print once and exit.
        #[arg(long)]
        once: bool,
    },
    /// A demo origin server: answers every path, optionally slowly.
    Origin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Name written in answers and the x-origin header.
        #[arg(long, default_value = "origin")]
        name: String,
        /// Delay added to every answer.
        #[arg(long, default_value = "0ms")]
        delay: TextDuration,
        /// Start of a slow window, from start-up.
        #[arg(long, requires = "slow_for")]
        slow_after: Option<TextDuration>,
        /// Length of the slow window.
        #[arg(long, requires = "slow_after")]
        slow_for: Option<TextDuration>,
        /// Extra delay inside the slow window.
        #[arg(long, default_value = "2s")]
        slow_delay: TextDuration,
    },
}

/// Listener settings shared by `gateway` and `local`.
#[derive(Args, Clone)]
struct ServeArgs {
    /// Plain HTTP address (HTTP/1.1 and h2c) [gateway: 0.0.0.0:8080, local: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TLS address (HTTP/1.1 and h2 by ALPN); needs --tls-cert and --tls-key.
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listener.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Admin address: /metrics, /healthz, /readyz, /status.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin_listen: SocketAddr,
    /// Longest time to receive a request head; also the idle limit of HTTP/1 keep-alive.
    #[arg(long, default_value = "30s")]
    header_read_timeout: TextDuration,
    /// A connection with no request in flight and nothing moving for this long is closed.
    #[arg(long, default_value = "60s")]
    idle_timeout: TextDuration,
    /// Largest request head in bytes; larger ones get 431 or the connection is closed.
    #[arg(long, default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Most client connections open at once.
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,
    /// Most connections open at once from one client address (IPv6: one /64); more are
    /// closed at once. 0 turns the limit off.
    #[arg(long, default_value_t = 1024)]
    max_connections_per_ip: usize,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, default_value = "30s")]
    drain_timeout: TextDuration,
    /// A file holding the bearer token that `POST /cache/purge` on the admin address
    /// requires (surrounding whitespace is ignored); without it, purging is refused.
    #[arg(long, env = "CAUSEWAY_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
}

/// TMP link settings shared by `frontend` and `backend`.
#[derive(Args, Clone)]
struct LinkArgs {
    /// This gateway's name in link reports [default: the host name].
    #[arg(long, env = "CAUSEWAY_NAME")]
    name: Option<String>,
    /// PEM CA bundle both link ends trust. With --config-map and no link files, the CA comes
    /// from the ConfigMap and the operator signs this pod's own certificate.
    #[arg(long, env = "CAUSEWAY_LINK_CA", requires_all = ["link_cert", "link_key"])]
    link_ca: Option<PathBuf>,
    /// PEM certificate chain of this gateway.
    #[arg(long, env = "CAUSEWAY_LINK_CERT", requires_all = ["link_ca", "link_key"])]
    link_cert: Option<PathBuf>,
    /// PEM private key of this gateway.
    #[arg(long, env = "CAUSEWAY_LINK_KEY", requires_all = ["link_ca", "link_cert"])]
    link_key: Option<PathBuf>,
    /// Read the Sites (and a front-end's back-ends) from this ConfigMap of the pod's
    /// namespace (`POD_NAMESPACE`) instead of files, and apply each new version live.
    #[arg(long, env = "CAUSEWAY_CONFIG_MAP")]
    config_map: Option<String>,
    /// Lifetime asked for the link certificate the operator signs (10m to 24h); it is
    /// renewed at two thirds of it.
    #[arg(long, default_value = "24h")]
    link_cert_lifetime: TextDuration,
    /// DNS name back-end certificates carry.
    #[arg(long, default_value = causeway_link::settings::DEFAULT_SERVER_NAME)]
    link_server_name: String,
    /// Longest RTT a link should run at full rate over (sizes flow-control windows).
    #[arg(long, default_value = "200ms")]
    link_expected_rtt: TextDuration,
    /// Highest rate a link should reach, bits per second (sizes flow-control windows).
    #[arg(long, default_value_t = 1_000_000_000)]
    link_bandwidth: u64,
    /// Blender class weights, class 0 first.
    #[arg(
        long,
        default_value = "16,8,4,2,1",
        value_delimiter = ',',
        num_args = 5
    )]
    blender_weights: Vec<u32>,
    /// Most bytes one channel sends per blender turn.
    #[arg(long, default_value_t = causeway_link::blender::schedule::DEFAULT_SUB_PACKET)]
    sub_packet_bytes: usize,
    /// QoS report interval on each link.
    #[arg(long, default_value = "1s")]
    qos_interval: TextDuration,
    /// Interval of keep-alive pings on idle links.
    #[arg(long, default_value = "1s")]
    link_keep_alive: TextDuration,
    /// A link silent this long is declared dead (its channels fail, front-ends redial).
    #[arg(long, default_value = "5s")]
    link_idle_timeout: TextDuration,
}

impl LinkArgs {
    fn settings(&self) -> Result<LinkSettings, Box<dyn std::error::Error>> {
        let weights: [u32; 5] = self
            .blender_weights
            .clone()
            .try_into()
            .map_err(|_| "--blender-weights needs exactly five weights")?;
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| "causeway".to_owned()));
        Ok(LinkSettings {
            name,
            server_name: self.link_server_name.clone(),
            expected_rtt: self.link_expected_rtt.get(),
            expected_bandwidth_bps: self.link_bandwidth,
            qos_interval: self.qos_interval.get(),
            keep_alive: self.link_keep_alive.get(),
            idle_timeout: self.link_idle_timeout.get(),
            blend: BlendSettings::new(weights, self.sub_packet_bytes)?,
            ..LinkSettings::default()
        })
    }

    /// Credentials from the link files, when given.
    fn file_credentials(&self) -> Result<Option<LinkCredentials>, causeway_link::tls::TlsError> {
        match (&self.link_ca, &self.link_cert, &self.link_key) {
            (Some(ca), Some(cert), Some(key)) => {
                LinkCredentials::from_pem_files(ca, cert, key).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Credentials from the link files, which file mode needs.
    fn credentials(&self) -> Result<LinkCredentials, Box<dyn std::error::Error>> {
        self.file_credentials()?.ok_or_else(|| {
            "give --link-ca, --link-cert and --link-key (or run in a pod with --config-map)".into()
        })
    }
}

/// A `--backend` value: `HOST:PORT` or `SITE=HOST:PORT`.
#[derive(Clone, Debug)]
struct BackendArg {
    site: Option<String>,
    address: SocketAddr,
}

impl std::str::FromStr for BackendArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (site, address) = match text.split_once('=') {
            Some((site, address)) => (Some(site.to_owned()), address),
            None => (None, text),
        };
        let address = address
            .parse()
            .map_err(|e| format!("{address:?} is not HOST:PORT: {e}"))?;
        Ok(Self { site, address })
    }
}

impl ServeArgs {
    fn options(self, default_listen: SocketAddr) -> Result<GatewayOptions, String> {
        let listen = match (self.listen, self.tls_listen) {
            (None, Some(_)) => None,
            (listen, _) => Some(listen.unwrap_or(default_listen)),
        };
        let admin_token = self
            .admin_token_file
            .as_deref()
            .map(read_admin_token)
            .transpose()?;
        Ok(GatewayOptions {
            listen,
            tls_listen: self.tls_listen,
            tls_files: self.tls_cert.zip(self.tls_key),
            admin_listen: self.admin_listen,
            limits: ConnectionLimits {
                header_read_timeout: self.header_read_timeout.get(),
                idle_timeout: self.idle_timeout.get(),
                max_header_bytes: self.max_header_bytes,
                max_connections: self.max_connections,
                max_connections_per_ip: self.max_connections_per_ip,
                ..ConnectionLimits::default()
            },
            drain_timeout: self.drain_timeout.get(),
            admin_token,
        })
    }
}

/// Reads the admin bearer token; an empty or unreadable file is an error, not purging left
/// open or silently off.
fn read_admin_token(path: &std::path::Path) -> Result<std::sync::Arc<str>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("--admin-token-file {} is empty", path.display()));
    }
    Ok(token.into())
}

/// Writes a fresh CA and a certificate for each tier into `out`.
fn write_link_certs(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let authority = causeway_pki::LinkAuthority::generate("causeway link CA")?;
    let write = |name: &str, text: &str, mode: u32| -> Result<(), String> {
        let path = out.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("ca.pem", &authority.ca_pem(), 0o644)?;
    for (role, name) in [
        ("backend", causeway_link::settings::DEFAULT_SERVER_NAME),
        ("frontend", "causeway-frontend"),
    ] {
        let issued = authority.issue_pem(&[name])?;
        write(&format!("{role}.pem"), &issued.cert, 0o644)?;
        write(&format!("{role}.key"), &issued.key, 0o600)?;
    }
    println!(
        "wrote ca.pem, backend.pem/.key, frontend.pem/.key to {}",
        out.display()
    );
    Ok(())
}

/// Why a reload asked for by SIGHUP did not happen.
type ReloadFailure = Box<dyn std::error::Error + Send + Sync>;

/// On each SIGHUP, runs `reload` (read the files, apply them) and logs what it did; a
/// refusal is logged by the reloader itself.
fn reload_on_sighup(
    shutdown: watch::Receiver<bool>,
    mut reload: impl FnMut() -> Result<ReloadReport, ReloadFailure> + Send + 'static,
) {
    let Some(mut hangups) = shutdown::hangups(shutdown) else {
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reading the Site files again");
            if let Ok(report) = reload() {
                log_reload(&report);
            }
        }
    });
}

/// Logs what a reload did.
fn log_reload(report: &ReloadReport) {
    tracing::info!(
        generation = report.generation,
        added = ?report.added,
        changed = ?report.changed,
        removed = ?report.removed,
        unchanged = ?report.unchanged,
        links_added = ?report.links_added,
        links_removed = ?report.links_removed,
        "configuration reloaded"
    );
}

/// A gateway in a pod: its ConfigMap, watched, and its link credentials — from files when
/// given, else a certificate the operator signed for this pod's own key.
struct InCluster {
    first: ClusterConfig,
    updates: watch::Receiver<Arc<Version>>,
    credentials: LinkCredentials,
    /// What renewing the signed certificate needs (none with link files).
    renewal: Option<(kube::Client, PodIdentity, String)>,
}

/// Waits for the first valid version of `config_map` and for the link credentials.
async fn in_cluster(
    config_map: &str,
    link: &LinkArgs,
    server_name: &str,
    shutdown: &watch::Receiver<bool>,
) -> Result<InCluster, Box<dyn std::error::Error>> {
    let namespace = cluster_config::pod_namespace()?;
    let client = cluster_config::client().await?;
    let (first, updates) =
        cluster_config::watch(client.clone(), &namespace, config_map, shutdown.clone()).await?;
    if let Some(credentials) = link.file_credentials()? {
        return Ok(InCluster {
            first,
            updates,
            credentials,
            renewal: None,
        });
    }
    let ca = first
        .link_ca
        .clone()
        .ok_or(link_identity::IdentityError::NoCa)?;
    let pod = std::env::var("POD_NAME")
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| link.name.clone())
        .ok_or(
            "the link certificate names the pod: set POD_NAME (the downward API's metadata.name)",
        )?;
    let identity = PodIdentity {
        namespace,
        pod,
        server_name: server_name.to_owned(),
        lifetime: link.link_cert_lifetime.get(),
    };
    let credentials = link_identity::obtain(&client, &identity, &ca).await?;
    Ok(InCluster {
        first,
        updates,
        credentials,
        renewal: Some((client, identity, ca)),
    })
}

/// A front-end's back-ends from its ConfigMap.
fn backend_map(config: &ClusterConfig) -> BackendMap {
    BackendMap {
        per_site: config.backends.clone(),
        default: Vec::new(),
    }
}

/// Applies each new version of the configuration with `apply` (which counts and logs a
/// refusal itself), or counts and logs it with `refuse` when it did not even parse, and logs
/// what was done.
fn follow_config(
    mut updates: watch::Receiver<Arc<Version>>,
    mut apply: impl FnMut(&ClusterConfig) -> Result<ReloadReport, ReloadFailure> + Send + 'static,
    refuse: impl Fn(&dyn std::fmt::Display) + Send + 'static,
) {
    tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let version = updates.borrow_and_update().clone();
            match version.as_ref() {
                Version::Valid(config) => {
                    if let Ok(report) = apply(config) {
                        log_reload(&report);
                    }
                }
                Version::Refused(reason) => refuse(reason),
            }
        }
    });
}

/// Reads the Site files for a reload; a failure is a refused configuration, counted and
/// logged by `refuse`.
fn reread_sites(
    paths: &[String],
    refuse: impl FnOnce(&dyn std::fmt::Display),
) -> Result<Vec<causeway_api::Site>, ReloadFailure> {
    local::read_sites(paths).map_err(|error| {
        refuse(&error);
        error.into()
    })
}

fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    match workers {
        // One worker: a current-thread runtime saves the cross-thread wake-ups.
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match runtime(cli.workers) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("causeway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("causeway: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = shutdown::on_signals();
    match command {
        Command::Gateway { serve, sites } => {
            let paths = sites;
            let sites = local::read_sites(&paths)?;
            let running = gateway::start(
                &sites,
                serve.options(SocketAddr::from(([0, 0, 0, 0], 8080)))?,
                shutdown.clone(),
            )?;
            tracing::info!(http = ?running.http, https = ?running.https, admin = %running.admin, sites = sites.len(), "gateway serving");
            let reloader = running.reloader();
            reload_on_sighup(shutdown, move || {
                let sites = reread_sites(&paths, |e| reloader.refuse(e))?;
                Ok(reloader.apply(&sites)?)
            });
            running.wait().await;
        }
        Command::Local {
            serve,
            single_tier,
            sites,
        } => {
            let tiers = if single_tier {
                local::Tiers::One
            } else {
                local::Tiers::Two
            };
            local::run(
                &sites,
                serve.options(SocketAddr::from(([127, 0, 0, 1], 8080)))?,
                tiers,
                shutdown,
            )
            .await?;
        }
        Command::LinkCerts { out } => write_link_certs(&out)?,
        Command::Frontend {
            serve,
            link,
            backends,
            tunnel_ip,
            sites,
        } => {
            let serve = serve.options(SocketAddr::from(([0, 0, 0, 0], 8080)))?;
            let settings = link.settings()?;
            if let Some(config_map) = &link.config_map {
                let cluster = in_cluster(config_map, &link, FRONTEND_CERT_NAME, &shutdown).await?;
                let first = &cluster.first;
                let options = FrontendOptions {
                    serve,
                    backends: backend_map(first),
                    link: settings,
                    tunnel_ip,
                };
                let running = frontend::start(
                    &first.sites,
                    options,
                    &cluster.credentials,
                    shutdown.clone(),
                )?;
                tracing::info!(http = ?running.http, https = ?running.https, admin = %running.admin, %config_map, "front-end serving");
                let reloader = running.reloader();
                if let Some((client, identity, ca)) = cluster.renewal {
                    let renewed = reloader.clone();
                    link_identity::keep_renewed(
                        client,
                        identity,
                        ca,
                        move |credentials| {
                            renewed
                                .set_link_credentials(credentials)
                                .map_err(|e| e.to_string())
                        },
                        shutdown.clone(),
                    );
                }
                let refuser = reloader.clone();
                follow_config(
                    cluster.updates,
                    move |config| Ok(reloader.apply(&config.sites, &backend_map(config))?),
                    move |reason| refuser.refuse(reason),
                );
                running.wait().await;
                return Ok(());
            }
            let paths = sites;
            let sites = local::read_sites(&paths)?;
            let mut map = BackendMap::default();
            for backend in backends {
                match backend.site {
                    Some(site) => map.per_site.entry(site).or_default().push(backend.address),
                    None => map.default.push(backend.address),
                }
            }
            let options = FrontendOptions {
                serve,
                backends: map.clone(),
                link: settings,
                tunnel_ip,
            };
            let running = frontend::start(&sites, options, &link.credentials()?, shutdown.clone())?;
            tracing::info!(http = ?running.http, https = ?running.https, admin = %running.admin, tunnels = ?running.tunnels, "front-end serving");
            let reloader = running.reloader();
            reload_on_sighup(shutdown, move || {
                let sites = reread_sites(&paths, |e| reloader.refuse(e))?;
                Ok(reloader.apply(&sites, &map)?)
            });
            running.wait().await;
        }
        Command::Backend {
            link,
            link_listen,
            admin_listen,
            drain_timeout,
            sites,
        } => {
            let options = BackendOptions {
                link_listen,
                admin_listen,
                link: link.settings()?,
                drain_timeout: drain_timeout.get(),
            };
            if let Some(config_map) = &link.config_map {
                let server_name = link.link_server_name.clone();
                let cluster = in_cluster(config_map, &link, &server_name, &shutdown).await?;
                let first = &cluster.first;
                let running = backend::start(
                    &first.sites,
                    options,
                    &cluster.credentials,
                    shutdown.clone(),
                )?;
                tracing::info!(link = %running.link_address, admin = %running.admin, %config_map, "back-end serving");
                if let Some((client, identity, ca)) = cluster.renewal {
                    let listener = running.link_listener();
                    link_identity::keep_renewed(
                        client,
                        identity,
                        ca,
                        move |credentials| {
                            listener
                                .set_credentials(credentials)
                                .map_err(|e| e.to_string())
                        },
                        shutdown.clone(),
                    );
                }
                let reloader = running.reloader();
                let refuser = reloader.clone();
                follow_config(
                    cluster.updates,
                    move |config| Ok(reloader.apply(&config.sites)?),
                    move |reason| refuser.refuse(reason),
                );
                running.wait().await;
                return Ok(());
            }
            let paths = sites;
            let sites = local::read_sites(&paths)?;
            let running = backend::start(&sites, options, &link.credentials()?, shutdown.clone())?;
            tracing::info!(link = %running.link_address, admin = %running.admin, "back-end serving");
            let reloader = running.reloader();
            reload_on_sighup(shutdown, move || {
                let sites = reread_sites(&paths, |e| reloader.refuse(e))?;
                Ok(reloader.apply(&sites)?)
            });
            running.wait().await;
        }
        Command::Operator(options) => causeway_operator::run(options).await?,
        Command::Top {
            namespace,
            interval,
            once,
        } => {
            causeway_gateway::top::run(causeway_gateway::top::TopOptions {
                namespace,
                interval: interval.get(),
                once,
            })
            .await?;
        }
        Command::Origin {
            listen,
            name,
            delay,
            slow_after,
            slow_for,
            slow_delay,
        } => {
            let slow = slow_after.zip(slow_for).map(|(after, length)| SlowWindow {
                after: after.get(),
                length: length.get(),
                delay: slow_delay.get(),
            });
            let listener =
                server::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let handler = Arc::new(DemoOrigin::new(DemoOriginConfig {
                name,
                delay: delay.get(),
                slow,
            }));
            tracing::info!(%listen, "demo origin serving");
            server::serve(
                listener,
                handler,
                None,
                ConnectionLimits::default(),
                Arc::new(ListenerStats::default()),
                shutdown,
                Duration::from_secs(5),
            )
            .await;
        }
    }
    Ok(())
}
