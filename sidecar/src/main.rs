//! The `causeway` command: the data plane's modes and the local all-in-one runner.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use causeway_api::Duration as TextDuration;
use causeway_sidecar::gateway::{self, GatewayOptions};
use causeway_sidecar::origin::{DemoOrigin, DemoOriginConfig, SlowWindow};
use causeway_sidecar::server::{self, ConnectionLimits, ListenerStats};
use causeway_sidecar::telemetry::{self, LogFormat};
use causeway_sidecar::{local, shutdown};
use clap::{Args, Parser, Subcommand};

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
enum Command {
    /// Single-tier gateway: client HTTP balanced straight over each Site's origins.
    Gateway {
        #[command(flatten)]
        serve: ServeArgs,
        /// Site manifests (YAML, the same documents `kubectl apply` takes).
        #[arg(required = true, value_name = "SITE_FILE")]
        sites: Vec<String>,
    },
    /// Run a whole Site on this machine: the embedded demo, or the Sites in the files given.
    Local {
        #[command(flatten)]
        serve: ServeArgs,
        /// Site manifests; none runs the embedded demo Site with its own origins.
        #[arg(value_name = "SITE_FILE")]
        sites: Vec<String>,
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
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, default_value = "30s")]
    drain_timeout: TextDuration,
}

impl ServeArgs {
    fn options(self, default_listen: SocketAddr) -> GatewayOptions {
        let listen = match (self.listen, self.tls_listen) {
            (None, Some(_)) => None,
            (listen, _) => Some(listen.unwrap_or(default_listen)),
        };
        GatewayOptions {
            listen,
            tls_listen: self.tls_listen,
            tls_files: self.tls_cert.zip(self.tls_key),
            admin_listen: self.admin_listen,
            limits: ConnectionLimits {
                header_read_timeout: self.header_read_timeout.get(),
                idle_timeout: self.idle_timeout.get(),
                max_header_bytes: self.max_header_bytes,
                max_connections: self.max_connections,
                ..ConnectionLimits::default()
            },
            drain_timeout: self.drain_timeout.get(),
        }
    }
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
            let sites = local::read_sites(&sites)?;
            let running = gateway::start(
                &sites,
                serve.options(SocketAddr::from(([0, 0, 0, 0], 8080))),
                shutdown,
            )?;
            tracing::info!(http = ?running.http, https = ?running.https, admin = %running.admin, sites = sites.len(), "gateway serving");
            running.wait().await;
        }
        Command::Local { serve, sites } => {
            local::run(
                &sites,
                serve.options(SocketAddr::from(([127, 0, 0, 1], 8080))),
                shutdown,
            )
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
