//! `causeway local`: a whole Site on this machine, no Kubernetes. With no files it runs the
//! embedded demo — three origins (one primary holding the freshest copy, one ten times
//! slower than the others); with files it serves the Sites they describe. By default the
//! two-tier shape runs: a front-end, a TMP link (mutual TLS from a CA made in memory), a
//! back-end, the origins; `--single-tier` runs the single gateway instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use causeway_api::{ManifestError, Site, parse_sites};
use tokio::sync::watch;

use causeway_link::{LinkCredentials, LinkSettings};
use causeway_pki::LinkAuthority;

use crate::backend::{self, BackendError, BackendOptions};
use crate::frontend::{self, FrontendError, FrontendOptions};
use crate::gateway::{self, GatewayError, GatewayOptions};
use crate::origin::{DemoOrigin, DemoOriginConfig};
use crate::server::{self, ConnectionLimits, ListenerStats};

/// Why `causeway local` could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A Site file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A Site file is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The gateway could not start.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The front-end could not start.
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// The back-end could not start.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Link credentials could not be made.
    #[error("link credentials: {0}")]
    Credentials(#[from] causeway_link::tls::TlsError),
    /// The link CA for the run could not be made.
    #[error("link credentials: {0}")]
    Authority(#[from] causeway_pki::PkiError),
    /// A demo origin could not bind.
    #[error("cannot start a demo origin: {0}")]
    Origin(std::io::Error),
}

/// One demo origin of the embedded Site.
struct DemoSpec {
    name: &'static str,
    delay: Duration,
    primary: bool,
    max_in_flight: u32,
}

const DEMO_ORIGINS: [DemoSpec; 3] = [
    DemoSpec {
        name: "primary",
        delay: Duration::from_millis(2),
        primary: true,
        max_in_flight: 8,
    },
    DemoSpec {
        name: "mirror",
        delay: Duration::from_millis(2),
        primary: false,
        max_in_flight: 32,
    },
    DemoSpec {
        name: "mirror-slow",
        delay: Duration::from_millis(20),
        primary: false,
        max_in_flight: 32,
    },
];

/// Reads and validates every Site in the given files.
pub fn read_sites(paths: &[String]) -> Result<Vec<Site>, LocalError> {
    let mut sites = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| LocalError::Read {
            path: path.clone(),
            source,
        })?;
        sites.extend(parse_sites(path, &text)?);
    }
    Ok(sites)
}

/// Starts the demo origins on loopback and returns the embedded Site pointing at them.
async fn start_demo_origins(
    shutdown: &watch::Receiver<bool>,
) -> Result<(Site, Vec<(String, SocketAddr)>), LocalError> {
    let mut origins_yaml = String::new();
    let mut addresses = Vec::new();
    for spec in &DEMO_ORIGINS {
        let listener =
            server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(LocalError::Origin)?;
        let addr = listener.local_addr().map_err(LocalError::Origin)?;
        let handler = Arc::new(DemoOrigin::new(DemoOriginConfig {
            name: spec.name.into(),
            delay: spec.delay,
            slow: None,
        }));
        tokio::spawn(server::serve(
            listener,
            handler,
            None,
            ConnectionLimits::default(),
            Arc::new(ListenerStats::default()),
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        origins_yaml.push_str(&format!(
            "    - {{ name: {}, url: \"http://{addr}\", primary: {}, maxInFlight: {}, latencyGoal: 50ms }}\n",
            spec.name, spec.primary, spec.max_in_flight
        ));
        addresses.push((spec.name.to_owned(), addr));
    }
    let yaml = format!(
        r#"apiVersion: causeway.dev/v1alpha1
kind: Site
metadata:
  name: demo
spec:
  hostnames: [localhost, 127.0.0.1]
  origins:
{origins_yaml}  healthCheck: {{ path: /healthz, interval: 2s }}
  priority:
    defaultClass: 2
    rules:
      - class: 0
        match: {{ pathPrefix: /checkout }}
      - class: 4
        match: {{ pathPrefix: /catalogue }}
  requestTypes:
    rules:
      - type: static
        match: {{ extensions: [css, js, png, jpg, svg] }}
      - type: media
        match: {{ pathPrefix: /video }}
  cache: {{ enabled: true, maxSizeBytes: 67108864 }}
"#
    );
    let mut sites = parse_sites("embedded demo site", &yaml)?;
    Ok((sites.remove(0), addresses))
}

/// The shape `causeway local` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiers {
    /// Front-end → TMP link → back-end → origins.
    Two,
    /// One gateway straight to the origins.
    One,
}

/// What `causeway local` started, for the banner.
struct Started {
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    admin: SocketAddr,
    backend_admin: Option<SocketAddr>,
    wait: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Starts the single-tier gateway, swapping a taken port for a free one (at most once each
/// for the listener and the admin endpoint), since the addresses are printed.
fn start_gateway(
    sites: &[Site],
    mut options: GatewayOptions,
    shutdown: &watch::Receiver<bool>,
) -> Result<Started, LocalError> {
    let mut attempts_left = 2;
    let running = loop {
        match gateway::start(sites, options.clone(), shutdown.clone()) {
            Err(GatewayError::Bind { addr, .. })
                if attempts_left > 0 && options.listen == Some(addr) =>
            {
                options.listen = Some(SocketAddr::new(addr.ip(), 0));
            }
            Err(GatewayError::Bind { addr, .. })
                if attempts_left > 0 && options.admin_listen == addr =>
            {
                options.admin_listen = SocketAddr::new(addr.ip(), 0);
            }
            other => break other?,
        }
        attempts_left -= 1;
    };
    Ok(Started {
        http: running.http,
        https: running.https,
        admin: running.admin,
        backend_admin: None,
        wait: Box::pin(running.wait()),
    })
}

/// Starts a back-end and a front-end joined by a TMP link, with credentials from a CA made
/// in memory for this run.
async fn start_two_tier(
    sites: &[Site],
    mut options: GatewayOptions,
    shutdown: &watch::Receiver<bool>,
) -> Result<Started, LocalError> {
    let authority = LinkAuthority::generate("causeway local link CA")?;
    let backend_credentials =
        LinkCredentials::issued_by(&authority, &[causeway_link::settings::DEFAULT_SERVER_NAME])?;
    let frontend_credentials = LinkCredentials::issued_by(&authority, &["causeway-frontend"])?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let backend = backend::start(
        sites,
        BackendOptions {
            link_listen: loopback,
            admin_listen: loopback,
            link: LinkSettings {
                name: "local-backend".to_owned(),
                ..LinkSettings::default()
            },
            drain_timeout: options.drain_timeout,
        },
        &backend_credentials,
        shutdown.clone(),
    )?;
    let backend_admin = backend.admin;
    let mut attempts_left = 2;
    let front = loop {
        let frontend_options = FrontendOptions {
            serve: options.clone(),
            backends: frontend::BackendMap {
                per_site: Default::default(),
                default: vec![backend.link_address],
            },
            link: LinkSettings {
                name: "local-frontend".to_owned(),
                ..LinkSettings::default()
            },
            tunnel_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        };
        match frontend::start(
            sites,
            frontend_options,
            &frontend_credentials,
            shutdown.clone(),
        ) {
            Err(FrontendError::Bind { addr, .. })
                if attempts_left > 0 && options.listen == Some(addr) =>
            {
                options.listen = Some(SocketAddr::new(addr.ip(), 0));
            }
            Err(FrontendError::Bind { addr, .. })
                if attempts_left > 0 && options.admin_listen == addr =>
            {
                options.admin_listen = SocketAddr::new(addr.ip(), 0);
            }
            other => break other?,
        }
        attempts_left -= 1;
    };
    if !front.links.wait_up(Duration::from_secs(5)).await {
        tracing::warn!("the TMP link to the local back-end is not up yet");
    }
    Ok(Started {
        http: front.http,
        https: front.https,
        admin: front.admin,
        backend_admin: Some(backend_admin),
        wait: Box::pin(async move {
            tokio::join!(front.wait(), backend.wait());
        }),
    })
}

/// Runs `causeway local` until shutdown.
pub async fn run(
    paths: &[String],
    options: GatewayOptions,
    tiers: Tiers,
    shutdown: watch::Receiver<bool>,
) -> Result<(), LocalError> {
    let (sites, demo) = if paths.is_empty() {
        let (site, origins) = start_demo_origins(&shutdown).await?;
        (vec![site], Some(origins))
    } else {
        (read_sites(paths)?, None)
    };
    let running = match tiers {
        Tiers::Two => start_two_tier(&sites, options, &shutdown).await?,
        Tiers::One => start_gateway(&sites, options, &shutdown)?,
    };
    if let Some(http) = running.http {
        println!("Causeway is serving on http://{http}/");
        println!(
            "  try:     curl http://{http}/   (and /checkout for class 0, /catalogue for class 4)"
        );
    }
    if let Some(https) = running.https {
        println!("  TLS:     https://{https}/");
    }
    println!("  metrics: http://{}/metrics", running.admin);
    println!("  status:  http://{}/status", running.admin);
    if let Some(backend_admin) = running.backend_admin {
        println!(
            "  link:    http://{}/qos   (front-end view; back-end: http://{backend_admin}/qos)",
            running.admin
        );
    }
    match demo {
        Some(origins) => {
            println!("  sites:   demo (embedded), origins:");
            for (name, addr) in origins {
                println!("             {name:<12} http://{addr}");
            }
        }
        None => {
            let names: Vec<_> = sites
                .iter()
                .filter_map(|s| s.metadata.name.clone())
                .collect();
            println!("  sites:   {}", names.join(", "));
        }
    }
    println!("Press Ctrl-C to stop.");
    running.wait.await;
    Ok(())
}
