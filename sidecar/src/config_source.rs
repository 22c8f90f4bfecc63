//! Where a gateway tier's configuration comes from, and what keeps it current. Every tier
//! starts the same way whatever the source: [`ConfigSource::open`] gives the first
//! configuration and the link credentials, the tier starts on them, and
//! [`OpenedSource::follow`] hands it every later version and every renewed certificate.
//!
//! - [`ConfigSource::Files`]: Site files (and a front-end's `--backend` flags), read again on
//!   each SIGHUP; link credentials from files.
//! - [`ConfigSource::ConfigMap`]: the pod's ConfigMap ([`crate::cluster_config`]), each new
//!   version applied as it comes; link credentials from files, or a certificate the operator
//!   signs for the pod's own key ([`crate::link_identity`]), renewed before it expires.
//!
//! A version that cannot be read is refused and counted by the running tier, which keeps
//! what it has.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use causeway_api::Site;
use causeway_api::contract::GatewayConfig;
use causeway_link::LinkCredentials;
use tokio::sync::watch;

use crate::backend::RunningBackend;
use crate::cluster_config::{self, ConfigError, Version};
use crate::frontend::reload::FrontendReloader;
use crate::frontend::{BackendMap, RunningFrontend};
use crate::gateway::RunningGateway;
use crate::link_identity::{self, IdentityError, PodIdentity};
use crate::local::{self, LocalError};
use crate::reload::{ReloadReport, SiteReloader};
use crate::shutdown;

/// Why a reload did not happen (already counted and logged by the running tier).
pub type ReloadFailure = Box<dyn std::error::Error + Send + Sync>;

/// Where a tier's Sites (and a front-end's back-ends) come from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// Site files and fixed back-ends, read again on SIGHUP.
    Files {
        /// The Site manifests.
        paths: Vec<String>,
        /// A front-end's back-ends (empty for other tiers).
        backends: BackendMap,
    },
    /// A ConfigMap of the pod's namespace (`POD_NAMESPACE`), watched.
    ConfigMap {
        /// The ConfigMap's name.
        name: String,
    },
}

/// How a tier gets its TMP link certificate.
#[derive(Clone, Debug)]
pub enum LinkIdentity {
    /// The tier has no TMP link (the single-tier gateway).
    NoLink,
    /// Credentials loaded from files given on the command line.
    Files(LinkCredentials),
    /// A certificate the operator signs for this pod's own key (ConfigMap source only).
    Signed {
        /// The pod's name (`POD_NAME`), which the certificate's subject names.
        pod: Option<String>,
        /// The DNS name of the tier, which peers verify.
        server_name: String,
        /// The lifetime to ask for.
        lifetime: Duration,
    },
}

/// Why a tier's configuration or credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A Site file is unreadable or invalid.
    #[error(transparent)]
    Files(#[from] LocalError),
    /// The ConfigMap could not be watched or never held a valid version.
    #[error(transparent)]
    ConfigMap(#[from] ConfigError),
    /// No link certificate could be had from the operator.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Link files are needed and were not given.
    #[error("give --link-ca, --link-cert and --link-key (or run in a pod with --config-map)")]
    NoLinkFiles,
    /// The signed certificate must name the pod.
    #[error("the link certificate names the pod: set POD_NAME (the downward API's metadata.name)")]
    NoPodName,
}

/// A tier's configuration at one moment.
#[derive(Clone, Debug, Default)]
pub struct TierConfig {
    /// The Sites to serve.
    pub sites: Vec<Site>,
    /// A front-end's back-ends (empty for other tiers).
    pub backends: BackendMap,
}

/// The first configuration and the credentials, and what keeps them current.
#[derive(Debug)]
pub struct OpenedSource {
    /// The configuration to start with.
    pub config: TierConfig,
    /// The link credentials to start with (none for a tier without links).
    pub credentials: Option<LinkCredentials>,
    updates: Updates,
    renewal: Option<Renewal>,
}

#[derive(Debug)]
enum Updates {
    /// Read the files again on SIGHUP, with the same back-ends.
    Files {
        paths: Vec<String>,
        backends: BackendMap,
    },
    /// Versions of the ConfigMap as the watch delivers them.
    Watch(watch::Receiver<Arc<Version>>),
}

/// What renewing an operator-signed certificate needs.
struct Renewal {
    client: kube::Client,
    identity: PodIdentity,
    ca_pem: String,
}

impl std::fmt::Debug for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewal")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ConfigSource {
    /// Waits for the first configuration and the link credentials.
    ///
    /// # Errors
    /// [`SourceError`] when the files are unreadable or invalid, the ConfigMap cannot be
    /// watched or its watch ends before a valid version, or no certificate can be had.
    pub async fn open(
        self,
        identity: LinkIdentity,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<OpenedSource, SourceError> {
        match self {
            Self::Files { paths, backends } => {
                let credentials = match identity {
                    LinkIdentity::NoLink => None,
                    LinkIdentity::Files(credentials) => Some(credentials),
                    LinkIdentity::Signed { .. } => return Err(SourceError::NoLinkFiles),
                };
                let sites = local::read_sites(&paths)?;
                Ok(OpenedSource {
                    config: TierConfig {
                        sites,
                        backends: backends.clone(),
                    },
                    credentials,
                    updates: Updates::Files { paths, backends },
                    renewal: None,
                })
            }
            Self::ConfigMap { name } => {
                let namespace = cluster_config::pod_namespace()?;
                let client = cluster_config::client().await?;
                let (first, updates) =
                    cluster_config::watch(client.clone(), &namespace, &name, shutdown.clone())
                        .await?;
                let config = tier_config(&first);
                let (credentials, renewal) = match identity {
                    LinkIdentity::NoLink => (None, None),
                    LinkIdentity::Files(credentials) => (Some(credentials), None),
                    LinkIdentity::Signed {
                        pod,
                        server_name,
                        lifetime,
                    } => {
                        let ca_pem = first.link_ca.clone().ok_or(IdentityError::NoCa)?;
                        let pod = pod
                            .filter(|p| !p.is_empty())
                            .ok_or(SourceError::NoPodName)?;
                        let identity = PodIdentity {
                            namespace,
                            pod,
                            server_name,
                            lifetime,
                        };
                        let credentials =
                            link_identity::obtain(&client, &identity, &ca_pem).await?;
                        let renewal = Renewal {
                            client,
                            identity,
                            ca_pem,
                        };
                        (Some(credentials), Some(renewal))
                    }
                };
                Ok(OpenedSource {
                    config,
                    credentials,
                    updates: Updates::Watch(updates),
                    renewal,
                })
            }
        }
    }
}

/// The tier's view of one ConfigMap version.
fn tier_config(config: &GatewayConfig) -> TierConfig {
    TierConfig {
        sites: config.sites.clone(),
        backends: BackendMap {
            per_site: config
                .backends
                .iter()
                .map(|(site, addresses)| (site.clone(), addresses.clone()))
                .collect::<HashMap<_, _>>(),
            default: Vec::new(),
        },
    }
}

/// What a running tier offers the source that keeps it current.
pub trait ReloadTarget: Send + Sync + 'static {
    /// Puts `config` in force, or refuses it (counting and logging the refusal).
    ///
    /// # Errors
    /// Why it was refused.
    fn apply(&self, config: &TierConfig) -> Result<ReloadReport, ReloadFailure>;

    /// Counts and logs a version refused before it could be applied.
    fn refuse(&self, reason: &dyn std::fmt::Display);

    /// Presents renewed link credentials on links made from now on.
    ///
    /// # Errors
    /// When they are unusable, or the tier has no link.
    fn set_link_credentials(&self, credentials: &LinkCredentials) -> Result<(), String>;
}

impl OpenedSource {
    /// The link credentials, which a tier with links needs.
    ///
    /// # Errors
    /// [`SourceError::NoLinkFiles`] when there are none.
    pub fn link_credentials(&self) -> Result<&LinkCredentials, SourceError> {
        self.credentials.as_ref().ok_or(SourceError::NoLinkFiles)
    }

    /// Hands every later version (on SIGHUP, or as the ConfigMap changes) and every renewed
    /// certificate to `target`, until `shutdown`.
    pub fn follow(self, target: impl ReloadTarget, shutdown: watch::Receiver<bool>) {
        let target = Arc::new(target);
        if let Some(renewal) = self.renewal {
            let renewed = target.clone();
            link_identity::keep_renewed(
                renewal.client,
                renewal.identity,
                renewal.ca_pem,
                move |credentials| renewed.set_link_credentials(credentials),
                shutdown.clone(),
            );
        }
        match self.updates {
            Updates::Files { paths, backends } => {
                let Some(mut hangups) = shutdown::hangups(shutdown) else {
                    return;
                };
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        tracing::info!("SIGHUP: reading the Site files again");
                        let sites = match local::read_sites(&paths) {
                            Ok(sites) => sites,
                            Err(error) => {
                                target.refuse(&error);
                                continue;
                            }
                        };
                        let config = TierConfig {
                            sites,
                            backends: backends.clone(),
                        };
                        if let Ok(report) = target.apply(&config) {
                            log_reload(&report);
                        }
                    }
                });
            }
            Updates::Watch(mut updates) => {
                tokio::spawn(async move {
                    while updates.changed().await.is_ok() {
                        let version = updates.borrow_and_update().clone();
                        match version.as_ref() {
                            Version::Valid(config) => {
                                if let Ok(report) = target.apply(&tier_config(config)) {
                                    log_reload(&report);
                                }
                            }
                            Version::Refused(reason) => target.refuse(reason),
                        }
                    }
                });
            }
        }
    }
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

/// The single-tier gateway's reload target: its Sites.
#[derive(Clone, Debug)]
pub struct GatewayTarget(SiteReloader);

impl RunningGateway {
    /// What keeps this gateway's configuration current.
    pub fn reload_target(&self) -> GatewayTarget {
        GatewayTarget(self.reloader())
    }
}

impl ReloadTarget for GatewayTarget {
    fn apply(&self, config: &TierConfig) -> Result<ReloadReport, ReloadFailure> {
        Ok(self.0.apply(&config.sites)?)
    }

    fn refuse(&self, reason: &dyn std::fmt::Display) {
        self.0.refuse(reason);
    }

    fn set_link_credentials(&self, _: &LinkCredentials) -> Result<(), String> {
        Err("the single-tier gateway has no TMP link".to_owned())
    }
}

/// A front-end's reload target: its Sites, back-ends and client certificate.
#[derive(Clone, Debug)]
pub struct FrontendTarget(FrontendReloader);

impl RunningFrontend {
    /// What keeps this front-end's configuration and link certificate current.
    pub fn reload_target(&self) -> FrontendTarget {
        FrontendTarget(self.reloader())
    }
}

impl ReloadTarget for FrontendTarget {
    fn apply(&self, config: &TierConfig) -> Result<ReloadReport, ReloadFailure> {
        Ok(self.0.apply(&config.sites, &config.backends)?)
    }

    fn refuse(&self, reason: &dyn std::fmt::Display) {
        self.0.refuse(reason);
    }

    fn set_link_credentials(&self, credentials: &LinkCredentials) -> Result<(), String> {
        self.0
            .set_link_credentials(credentials)
            .map_err(|e| e.to_string())
    }
}

/// A back-end's reload target: its Sites and the certificate its link listener presents.
#[derive(Clone)]
pub struct BackendTarget {
    reloader: SiteReloader,
    listener: Arc<causeway_link::Listener>,
}

impl std::fmt::Debug for BackendTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTarget").finish_non_exhaustive()
    }
}

impl RunningBackend {
    /// What keeps this back-end's configuration and link certificate current.
    pub fn reload_target(&self) -> BackendTarget {
        BackendTarget {
            reloader: self.reloader(),
            listener: self.link_listener(),
        }
    }
}

impl ReloadTarget for BackendTarget {
    fn apply(&self, config: &TierConfig) -> Result<ReloadReport, ReloadFailure> {
        Ok(self.reloader.apply(&config.sites)?)
    }

    fn refuse(&self, reason: &dyn std::fmt::Display) {
        self.reloader.refuse(reason);
    }

    fn set_link_credentials(&self, credentials: &LinkCredentials) -> Result<(), String> {
        self.listener
            .set_credentials(credentials)
            .map_err(|e| e.to_string())
    }
}
