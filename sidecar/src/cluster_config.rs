//! Configuration through the API server. A gateway in a pod watches its own ConfigMap — the
//! one the operator writes for its Site or Frontend — and hands every valid version to the
//! running gateway, which applies it live: no pod restart, no dropped connection.
//!
//! The ConfigMap holds one document, [`causeway_api::contract::GatewayConfig`] under
//! [`CONFIG_KEY`]: the Sites (the same documents `causeway local` reads from files), a
//! front-end's back-ends and the link CA. A version that does not parse is refused as a whole
//! and logged; the gateway keeps serving the last good one. While the API server is
//! unreachable the watch retries with backoff and the gateway keeps its last configuration,
//! so a control plane outage never touches the data plane.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use causeway_api::contract::{CONFIG_KEY, ConfigDocumentError, GatewayConfig};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

/// One version of the ConfigMap as the gateway received it: usable, or refused with the
/// reason (which the gateway counts as a refused reload and logs).
#[derive(Clone, Debug)]
pub enum Version {
    /// A configuration that parsed.
    Valid(GatewayConfig),
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
    /// The ConfigMap has no configuration document.
    #[error("the ConfigMap has no {CONFIG_KEY} key (is it one the Causeway operator writes?)")]
    NoDocument,
    /// The document is refused.
    #[error(transparent)]
    Document(#[from] ConfigDocumentError),
    /// The watch ended before a first valid configuration arrived.
    #[error("the watch of ConfigMap {0} ended before a valid configuration arrived")]
    Ended(String),
}

/// Reads one version of the ConfigMap's data.
///
/// # Errors
/// [`ConfigError`] naming the field, Site or rule that is wrong.
pub fn parse(data: &BTreeMap<String, String>) -> Result<GatewayConfig, ConfigError> {
    let text = data.get(CONFIG_KEY).ok_or(ConfigError::NoDocument)?;
    Ok(GatewayConfig::from_yaml(text)?)
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
) -> Result<(GatewayConfig, watch::Receiver<Arc<Version>>), ConfigError> {
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
            "  - apiVersion: causeway.dev/v1alpha1\n    kind: Site\n    metadata: {{ name: {name}, namespace: web }}\n    spec:\n      hostnames: [{host}]\n      origins: [{{ name: a, url: \"http://127.0.0.1:1\" }}]\n"
        )
    }

    fn document(sites: &[String], backends: &str) -> BTreeMap<String, String> {
        let text = format!("version: 1\nsites:\n{}{backends}", sites.concat());
        BTreeMap::from([(CONFIG_KEY.to_owned(), text)])
    }

    #[test]
    fn reads_every_site_and_the_backend_list() -> Result<(), ConfigError> {
        let data = document(
            &[
                site_yaml("shop", "shop.example"),
                site_yaml("blog", "blog.example"),
            ],
            "backends:\n  shop: [\"127.0.0.5:4433\", \"127.0.0.6:4433\"]\n  blog: [\"[::1]:4433\"]\n",
        );
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
    fn a_bad_backend_address_is_named() {
        let data = document(
            &[site_yaml("shop", "shop.example")],
            "backends:\n  shop: [\"127.0.0.5:4433\", \"127.0.0.6\"]\n",
        );
        let error = parse(&data).expect_err("refused");
        assert!(
            matches!(
                error,
                ConfigError::Document(ConfigDocumentError::Syntax { ref field, .. })
                    if field.contains("backends.shop[1]")
            ),
            "{error}"
        );
    }

    #[test]
    fn an_invalid_site_or_none_at_all_is_refused() {
        let broken = document(
            &[site_yaml("shop", "shop.example").replace("origins", "orgins")],
            "",
        );
        let error = parse(&broken).expect_err("refused");
        assert!(
            error.to_string().contains("gateway.yaml sites[0]"),
            "{error}"
        );
        let empty = BTreeMap::from([(CONFIG_KEY.to_owned(), "version: 1\nsites: []\n".to_owned())]);
        assert!(matches!(
            parse(&empty),
            Err(ConfigError::Document(ConfigDocumentError::NoSites))
        ));
        let old_layout = BTreeMap::from([("backends.txt".to_owned(), String::new())]);
        assert!(matches!(parse(&old_layout), Err(ConfigError::NoDocument)));
    }
}
