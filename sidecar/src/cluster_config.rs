//! Configuration through the API server. A gateway in a pod watches its own ConfigMap — the
//! one the operator writes for its Site or Frontend — and hands every valid version to the
//! running gateway, which applies it live: no pod restart, no dropped connection.
//!
//! The ConfigMap's `*.yaml` keys are Site manifests (the same documents `causeway local`
//! reads from files) and, for front-ends, `backends.txt` lists the back-ends, one
//! `SITE=HOST:PORT` a line. A version that does not parse is refused as a whole and logged;
//! the gateway keeps serving the last good one. While the API server is unreachable the
//! watch retries with backoff and the gateway keeps its last configuration, so a control
//! plane outage never touches the data plane.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use causeway_api::{ManifestError, Site, parse_sites};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

/// The ConfigMap key listing a front-end's back-ends; the operator writes it.
pub use causeway_operator::desired::frontend::BACKENDS_KEY;
/// The ConfigMap key holding the TMP link CA; the operator writes it.
pub use causeway_operator::names::LINK_CA_KEY;

/// One version of a gateway's configuration.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The Sites to serve.
    pub sites: Vec<Site>,
    /// Back-end link addresses by Site name (front-ends only; empty for back-ends).
    pub backends: HashMap<String, Vec<SocketAddr>>,
    /// The TMP link CA certificate (PEM) peers are verified against.
    pub link_ca: Option<String>,
}

/// One version of the ConfigMap as the gateway received it: usable, or refused with the
/// reason (which the gateway counts as a refused reload and logs).
#[derive(Clone, Debug)]
pub enum Version {
    /// A configuration that parsed.
    Valid(ClusterConfig),
    /// Why this version was refused.
    Refused(String),
}

/// Why a configuration cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The pod does not know its namespace.
    #[error(
        "--config-map needs the pod's namespace: set POD_NAMESPACE (the downward API's metadata.namespace)"
    )]
    NoNamespace,
    /// No API client could be made.
    #[error("cannot reach the API server: {0}")]
    Client(#[source] kube::Error),
    /// A Site manifest in the ConfigMap is invalid.
    #[error("ConfigMap key {key}: {source}")]
    Manifest {
        /// The key holding it.
        key: String,
        /// What is wrong.
        source: Box<ManifestError>,
    },
    /// A back-end line is not `SITE=HOST:PORT`.
    #[error("ConfigMap key {BACKENDS_KEY}, line {line}: {text:?} is not SITE=HOST:PORT")]
    BackendLine {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The ConfigMap holds no Site.
    #[error("the ConfigMap holds no Site manifest (no *.yaml key)")]
    NoSites,
    /// The watch ended before a first valid configuration arrived.
    #[error("the watch of ConfigMap {0} ended before a valid configuration arrived")]
    Ended(String),
}

/// Reads one version of the ConfigMap's data.
///
/// # Errors
/// [`ConfigError`] naming the first key or line that is wrong.
pub fn parse(data: &BTreeMap<String, String>) -> Result<ClusterConfig, ConfigError> {
    let mut sites = Vec::new();
    for (key, text) in data {
        if key.ends_with(".yaml") || key.ends_with(".yml") {
            sites.extend(
                parse_sites(key, text).map_err(|source| ConfigError::Manifest {
                    key: key.clone(),
                    source: Box::new(source),
                })?,
            );
        }
    }
    if sites.is_empty() {
        return Err(ConfigError::NoSites);
    }
    let mut backends: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    if let Some(text) = data.get(BACKENDS_KEY) {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || ConfigError::BackendLine {
                line: index + 1,
                text: line.to_owned(),
            };
            let (site, address) = line.split_once('=').ok_or_else(bad)?;
            let address: SocketAddr = address.trim().parse().map_err(|_| bad())?;
            let site = site.trim();
            if site.is_empty() {
                return Err(bad());
            }
            backends.entry(site.to_owned()).or_default().push(address);
        }
    }
    let link_ca = data
        .get(LINK_CA_KEY)
        .filter(|ca| !ca.trim().is_empty())
        .cloned();
    Ok(ClusterConfig {
        sites,
        backends,
        link_ca,
    })
}

/// The pod's namespace, from `POD_NAMESPACE` (the downward API's `metadata.namespace`).
///
/// # Errors
/// [`ConfigError::NoNamespace`] when it is not set.
pub fn pod_namespace() -> Result<String, ConfigError> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|namespace| !namespace.is_empty())
        .ok_or(ConfigError::NoNamespace)
}

/// An API client from the pod's service-account token (or `KUBECONFIG`).
///
/// # Errors
/// [`ConfigError::Client`] when none can be made.
pub async fn client() -> Result<kube::Client, ConfigError> {
    kube::Client::try_default()
        .await
        .map_err(ConfigError::Client)
}

/// Watches ConfigMap `name` in `namespace`: waits for its first valid version and returns it
/// with a receiver that then gets every later version — valid or refused — until `shutdown`.
/// A refused first version is logged and the watch waits for a valid one.
///
/// # Errors
/// When the watch ends before a valid version.
pub async fn watch(
    client: kube::Client,
    namespace: &str,
    name: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(ClusterConfig, watch::Receiver<Arc<Version>>), ConfigError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    // A field selector on the name: the gateway's Role may name only its own ConfigMap.
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut versions = Box::pin(
        watcher(api, config)
            .default_backoff()
            .applied_objects()
            .filter_map(|event| async move {
                match event {
                    Ok(config_map) => Some(config_map),
                    Err(error) => {
                        // The watcher retries with backoff; the running configuration stays.
                        tracing::warn!(%error, "configuration watch interrupted; retrying");
                        None
                    }
                }
            }),
    );
    let source = format!("{namespace}/{name}");
    let mut last_data = None;
    let first = loop {
        let next = tokio::select! {
            next = versions.next() => next,
            () = crate::shutdown::requested(&mut shutdown) => None,
        };
        let Some(config_map) = next else {
            return Err(ConfigError::Ended(source));
        };
        match accept(&source, config_map, &mut last_data) {
            Some(Version::Valid(config)) => break config,
            Some(Version::Refused(reason)) => {
                tracing::error!(configmap = %source, %reason, "configuration refused; waiting for a valid one");
            }
            None => {}
        }
    };
    let (sender, receiver) = watch::channel(Arc::new(Version::Valid(first.clone())));
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = versions.next() => next,
                () = crate::shutdown::requested(&mut shutdown) => return,
            };
            let Some(config_map) = next else { return };
            if let Some(version) = accept(&source, config_map, &mut last_data)
                && sender.send(Arc::new(version)).is_err()
            {
                return;
            }
        }
    });
    Ok((first, receiver))
}

/// The version in `config_map`, unless its data is what was seen last (a resync or a
/// metadata-only change). A refused version is remembered too, so it is reported once.
fn accept(
    source: &str,
    config_map: ConfigMap,
    last_data: &mut Option<BTreeMap<String, String>>,
) -> Option<Version> {
    let data = config_map.data.unwrap_or_default();
    if last_data.as_ref() == Some(&data) {
        return None;
    }
    let version = config_map.metadata.resource_version.unwrap_or_default();
    let parsed = parse(&data);
    *last_data = Some(data);
    Some(match parsed {
        Ok(config) => {
            tracing::info!(
                configmap = source,
                version,
                sites = config.sites.len(),
                "configuration received"
            );
            Version::Valid(config)
        }
        Err(error) => Version::Refused(format!("ConfigMap {source} version {version}: {error}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site_yaml(name: &str, host: &str) -> String {
        format!(
            "apiVersion: causeway.dev/v1alpha1\nkind: Site\nmetadata: {{ name: {name}, namespace: web }}\nspec:\n  hostnames: [{host}]\n  origins: [{{ name: a, url: \"http://127.0.0.1:1\" }}]\n"
        )
    }

    #[test]
    fn reads_every_site_and_the_backend_list() -> Result<(), ConfigError> {
        let data = BTreeMap::from([
            (
                "site-shop.yaml".to_owned(),
                site_yaml("shop", "shop.example"),
            ),
            (
                "site-blog.yaml".to_owned(),
                site_yaml("blog", "blog.example"),
            ),
            (
                BACKENDS_KEY.to_owned(),
                "shop=127.0.0.5:4433\n\nshop=127.0.0.6:4433\nblog=[::1]:4433\n".to_owned(),
            ),
        ]);
        let config = parse(&data)?;
        let mut names: Vec<_> = config
            .sites
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["blog", "shop"]);
        assert_eq!(config.backends["shop"].len(), 2);
        assert_eq!(
            config.backends["blog"],
            ["[::1]:4433".parse().expect("addr")]
        );
        assert_eq!(config.link_ca, None);
        Ok(())
    }

    #[test]
    fn a_bad_backend_line_is_named() {
        let data = BTreeMap::from([
            ("site.yaml".to_owned(), site_yaml("shop", "shop.example")),
            (
                BACKENDS_KEY.to_owned(),
                "shop=127.0.0.5:4433\nshop 127.0.0.6\n".to_owned(),
            ),
        ]);
        let error = parse(&data).expect_err("refused");
        assert!(
            matches!(error, ConfigError::BackendLine { line: 2, .. }),
            "{error}"
        );
    }

    #[test]
    fn an_invalid_site_or_none_at_all_is_refused() {
        let broken = BTreeMap::from([(
            "site.yaml".to_owned(),
            site_yaml("shop", "shop.example").replace("origins", "orgins"),
        )]);
        assert!(matches!(
            parse(&broken),
            Err(ConfigError::Manifest { ref key, .. }) if key == "site.yaml"
        ));
        let empty = BTreeMap::from([(BACKENDS_KEY.to_owned(), String::new())]);
        assert!(matches!(parse(&empty), Err(ConfigError::NoSites)));
    }
}
