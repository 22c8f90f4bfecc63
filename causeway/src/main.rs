//! The `causeway` command: parses the command line and starts what it names — a gateway
//! tier, `local`, the operator, or a tool. Each tier starts one way whatever its
//! configuration source (files and SIGHUP, or the pod's ConfigMap):
//! [`causeway_gateway::config_source`] gives the first configuration and keeps it current.

mod args;
mod link_certs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use causeway_api::Duration as TextDuration;
use causeway_api::contract::signing::FRONTEND_CERT_NAME;
use causeway_gateway::backend::{self, BackendOptions};
use causeway_gateway::config_source::{ConfigSource, LinkIdentity};
use causeway_gateway::frontend::{self, BackendMap, FrontendOptions};
use causeway_gateway::gateway;
use causeway_gateway::origin::{DemoOrigin, DemoOriginConfig, SlowWindow};
use causeway_gateway::server::{self, ConnectionLimits, ListenerStats};
use causeway_gateway::telemetry::{self, LogFormat};
use causeway_gateway::{local, shutdown};
use clap::{Parser, Subcommand};

use crate::args::{BackendArg, LinkArgs, ServeArgs};

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
            let source = ConfigSource::Files {
                paths: sites,
                backends: BackendMap::default(),
            };
            let opened = source.open(LinkIdentity::NoLink, &shutdown).await?;
            let options = serve.options(SocketAddr::from(([0, 0, 0, 0], 8080)))?;
            let running = gateway::start(&opened.config.sites, options, shutdown.clone())?;
            tracing::info!(http = ?running.http, https = ?running.https, admin = %running.admin, sites = opened.config.sites.len(), "gateway serving");
            opened.follow(running.reload_target(), shutdown);
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
        Command::LinkCerts { out } => link_certs::write_link_certs(&out)?,
        Command::Frontend {
            serve,
            link,
            backends,
            tunnel_ip,
            sites,
        } => {
            let serve = serve.options(SocketAddr::from(([0, 0, 0, 0], 8080)))?;
            let settings = link.settings()?;
            let identity = link.identity(FRONTEND_CERT_NAME)?;
            let source = link.source(sites, args::backend_map(backends));
            let opened = source.open(identity, &shutdown).await?;
            let options = FrontendOptions {
                serve,
                backends: opened.config.backends.clone(),
                link: settings,
                tunnel_ip,
            };
            let running = frontend::start(
                &opened.config.sites,
                options,
                opened.link_credentials()?,
                shutdown.clone(),
            )?;
            tracing::info!(http = ?running.http, https = ?running.https, admin = %running.admin, tunnels = ?running.tunnels, config_map = ?link.config_map(), "front-end serving");
            opened.follow(running.reload_target(), shutdown);
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
            let identity = link.identity(link.server_name())?;
            let source = link.source(sites, BackendMap::default());
            let opened = source.open(identity, &shutdown).await?;
            let running = backend::start(
                &opened.config.sites,
                options,
                opened.link_credentials()?,
                shutdown.clone(),
            )?;
            tracing::info!(link = %running.link_address, admin = %running.admin, config_map = ?link.config_map(), "back-end serving");
            opened.follow(running.reload_target(), shutdown);
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
