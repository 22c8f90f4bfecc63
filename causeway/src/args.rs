//! Flag groups the tiers share, and what they turn into.

use std::net::SocketAddr;
use std::path::PathBuf;

use causeway_api::Duration as TextDuration;
use causeway_gateway::config_source::{ConfigSource, LinkIdentity};
use causeway_gateway::frontend::BackendMap;
use causeway_gateway::gateway::GatewayOptions;
use causeway_gateway::server::ConnectionLimits;
use causeway_link::{BlendSettings, LinkCredentials, LinkSettings};
use clap::Args;

/// Listener settings shared by `gateway` and `local`.
#[derive(Args, Clone)]
pub struct ServeArgs {
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
pub struct LinkArgs {
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
    pub fn settings(&self) -> Result<LinkSettings, Box<dyn std::error::Error>> {
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

    /// Where this tier's Sites come from: the ConfigMap when `--config-map` is given, else
    /// `paths` with `backends`.
    pub fn source(&self, paths: Vec<String>, backends: BackendMap) -> ConfigSource {
        match &self.config_map {
            Some(name) => ConfigSource::ConfigMap { name: name.clone() },
            None => ConfigSource::Files { paths, backends },
        }
    }

    /// How this tier gets its link certificate: the link files when given; else, with
    /// `--config-map`, one the operator signs for `server_name`.
    ///
    /// # Errors
    /// When the files are unreadable, or there are none and no ConfigMap either.
    pub fn identity(&self, server_name: &str) -> Result<LinkIdentity, Box<dyn std::error::Error>> {
        if let Some(credentials) = self.file_credentials()? {
            return Ok(LinkIdentity::Files(credentials));
        }
        if self.config_map.is_none() {
            return Err(
                "give --link-ca, --link-cert and --link-key (or run in a pod with --config-map)"
                    .into(),
            );
        }
        let pod = std::env::var("POD_NAME")
            .ok()
            .filter(|p| !p.is_empty())
            .or_else(|| self.name.clone());
        Ok(LinkIdentity::Signed {
            pod,
            server_name: server_name.to_owned(),
            lifetime: self.link_cert_lifetime.get(),
        })
    }

    /// The ConfigMap this tier follows, if any.
    pub fn config_map(&self) -> Option<&str> {
        self.config_map.as_deref()
    }

    /// The DNS name back-end certificates carry.
    pub fn server_name(&self) -> &str {
        &self.link_server_name
    }
}

/// A `--backend` value: `HOST:PORT` or `SITE=HOST:PORT`.
#[derive(Clone, Debug)]
pub struct BackendArg {
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

/// The back-ends the `--backend` flags name.
pub fn backend_map(backends: Vec<BackendArg>) -> BackendMap {
    let mut map = BackendMap::default();
    for backend in backends {
        match backend.site {
            Some(site) => map.per_site.entry(site).or_default().push(backend.address),
            None => map.default.push(backend.address),
        }
    }
    map
}

impl ServeArgs {
    pub fn options(self, default_listen: SocketAddr) -> Result<GatewayOptions, String> {
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
