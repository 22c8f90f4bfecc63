//! `causeway-redirector`: the authoritative DNS server for the Sites' hostnames, reading its
//! directory from a file (`--directory`) or from the Kubernetes API (`--kubernetes`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use causeway_redirector::directory::{AnswerPolicy, DEFAULT_ANSWER_COUNT, DEFAULT_TTL};
use causeway_redirector::metrics::Metrics;
use causeway_redirector::server::{Server, ServerConfig};
use causeway_redirector::source::{self, Published};
use causeway_redirector::wire::{DEFAULT_MAX_UDP_PAYLOAD, Limits};
use causeway_redirector::{Error, admin, rfc2136};
use clap::Parser;

/// Causeway's DNS redirector.
#[derive(Debug, Parser)]
#[command(name = "causeway-redirector", version, about)]
struct Args {
    /// The directory file (YAML or JSON): zones, Sites, front-end groups, exports. Read
    /// again on SIGHUP and when it changes. With --kubernetes, it holds the zones (and
    /// exports) and the cluster adds the Sites and Frontends.
    #[arg(long, env = "CAUSEWAY_DIRECTORY")]
    directory: PathBuf,
    /// Read Sites, Frontends and the front-ends' readiness from the Kubernetes API (read
    /// only); Sites are then named NAMESPACE/NAME.
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: only this namespace (default: every namespace).
    #[arg(long, env = "CAUSEWAY_NAMESPACE")]
    namespace: Option<String>,
    /// UDP and TCP address to answer DNS on.
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9053")]
    admin: SocketAddr,
    /// TTL of A and AAAA answers, in seconds.
    #[arg(long, default_value_t = DEFAULT_TTL)]
    ttl: u32,
    /// Most addresses per answer (1 to 64).
    #[arg(long, default_value_t = DEFAULT_ANSWER_COUNT)]
    answer_count: usize,
    /// EDNS UDP payload size advertised, and the most a UDP answer may take.
    #[arg(long, default_value_t = DEFAULT_MAX_UDP_PAYLOAD, value_parser = clap::value_parser!(u16).range(512..))]
    max_udp_payload: u16,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the answer RNG, for reproducible runs (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("causeway-redirector: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, threads)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "causeway-redirector stopped");
            eprintln!("causeway-redirector: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, threads: usize) -> Result<(), Error> {
    let policy = AnswerPolicy {
        ttl: args.ttl,
        answer_count: args.answer_count,
    };
    // Refuse a bad answer count at start rather than on every directory.
    causeway_redirector::directory::Directory::default().compile(policy, 0)?;
    let metrics = Metrics::new();
    let published = Arc::new(Published::new());
    let server = Server::bind(ServerConfig {
        listen: args.listen,
        limits: Limits {
            max_udp_payload: args.max_udp_payload,
        },
        udp_workers: threads,
        seed: args.seed,
    })
    .await?;
    let admin_listener = admin::bind(args.admin).await?;
    let admin_address = admin_listener
        .local_addr()
        .map_err(|source| Error::Listen {
            address: args.admin,
            source,
        })?;
    tracing::info!(
        dns = %server.local_addr()?,
        admin = %admin_address,
        threads,
        "causeway-redirector listening"
    );
    let file = source::file::FileSource::new(args.directory.clone())?;
    let feeding = {
        let published = Arc::clone(&published);
        let metrics = metrics.clone();
        if args.kubernetes {
            let client = kube::Client::try_default().await?;
            let cluster = source::kubernetes::KubeSource::new(client, args.namespace.clone(), file);
            tokio::spawn(source::run(cluster, policy, published, metrics))
        } else {
            tokio::spawn(source::run(file, policy, published, metrics))
        }
    };
    let exporting = tokio::spawn(rfc2136::run(Arc::clone(&published), metrics.clone()));
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        Arc::clone(&published),
    ));
    let serving = tokio::spawn(server.serve(published, metrics));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| Error::Read {
        path: PathBuf::from("SIGTERM"),
        source,
    })?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    for task in [feeding, exporting, admin, serving] {
        task.abort();
    }
    Ok(())
}
