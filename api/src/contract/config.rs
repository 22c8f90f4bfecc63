//! The gateway configuration document: one YAML document under one ConfigMap key, written
//! by the operator for every gateway Deployment and read by its pods (`--config-map`).
//!
//! ```yaml
//! version: 1
//! sites:                      # full Site documents, with origins the pod can dial
//!   - apiVersion: causeway.dev/v1alpha1
//!     kind: Site
//!     metadata: { name: shop, namespace: web }
//!     spec: { hostnames: [shop.example.com], origins: [...] }
//! backends:                   # front-ends only: each Site's back-end TMP addresses
//!   shop: ["10.1.2.3:4433", "10.1.2.4:4433"]
//! linkCa: |                   # the TMP link CA both link ends verify each other against
//!   -----BEGIN CERTIFICATE-----
//! ```
//!
//! Every Site is checked exactly as a Site file is ([`crate::manifest`]); a document that
//! breaks any rule is refused as a whole, so a gateway never applies half a configuration.
//! `version` lets the layout change later: a gateway refuses a version it does not know
//! rather than guessing at it, and keeps serving the last one it understood.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::manifest::{self, ManifestError};
use crate::site::Site;

/// The ConfigMap key holding the document.
pub const CONFIG_KEY: &str = "gateway.yaml";

/// The document layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// One version of a gateway's configuration.
#[derive(Clone, Debug, Default)]
pub struct GatewayConfig {
    /// The Sites to serve, each valid and named.
    pub sites: Vec<Site>,
    /// Back-end TMP addresses by Site name (front-ends only; empty for back-ends).
    pub backends: BTreeMap<String, Vec<SocketAddr>>,
    /// The TMP link CA certificate (PEM) peers are verified against.
    pub link_ca: Option<String>,
}

/// The document as written: Sites stay YAML values until each is checked as a manifest.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document<S> {
    version: u32,
    sites: Vec<S>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    backends: BTreeMap<String, Vec<SocketAddr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link_ca: Option<String>,
}

/// The version field alone, read first so that a newer layout is reported as such rather
/// than as a document full of unknown fields.
#[derive(Deserialize)]
struct VersionOnly {
    version: Option<u32>,
}

/// Why a configuration document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDocumentError {
    /// The text is not YAML, or a field has the wrong shape.
    #[error("{CONFIG_KEY}: field {field}: {reason}")]
    Syntax {
        /// Path of the offending field (`.` for the document itself).
        field: String,
        /// The parser's reason.
        reason: String,
    },
    /// The document has no `version`, or one this gateway does not know.
    #[error(
        "{CONFIG_KEY}: format version {found:?} is not one this gateway reads (it reads {FORMAT_VERSION}); the operator is newer or older than the gateway image"
    )]
    Version {
        /// The version found, if any.
        found: Option<u32>,
    },
    /// A Site in the document breaks a rule.
    #[error(transparent)]
    Site(#[from] Box<ManifestError>),
    /// The document lists no Site.
    #[error("{CONFIG_KEY}: the document lists no Site")]
    NoSites,
    /// Two Sites share a name.
    #[error("{CONFIG_KEY}: Site {0:?} is listed twice")]
    DuplicateSite(String),
    /// A back-end entry names no Site.
    #[error("{CONFIG_KEY}: backends: an entry has an empty Site name")]
    EmptyBackendSite,
    /// The document could not be written.
    #[error("cannot write the gateway configuration: {0}")]
    Write(String),
}

impl GatewayConfig {
    /// The document's YAML, as the operator writes it. Back-end lists are written sorted so
    /// that the same configuration always gives the same text (and ConfigMap hash).
    ///
    /// # Errors
    /// [`ConfigDocumentError::Write`] when a Site does not serialize.
    pub fn to_yaml(&self) -> Result<String, ConfigDocumentError> {
        let mut backends = self.backends.clone();
        for addresses in backends.values_mut() {
            addresses.sort_unstable();
            addresses.dedup();
        }
        let document = Document {
            version: FORMAT_VERSION,
            sites: self.sites.iter().map(without_status).collect(),
            backends,
            link_ca: self.link_ca.clone(),
        };
        serde_yaml_ng::to_string(&document).map_err(|e| ConfigDocumentError::Write(e.to_string()))
    }

    /// Reads a document: its version first, then every field, then each Site as a manifest.
    ///
    /// # Errors
    /// [`ConfigDocumentError`] naming the first field, Site or rule that is wrong.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigDocumentError> {
        let syntax = |field: String, reason: String| ConfigDocumentError::Syntax { field, reason };
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| syntax(".".into(), e.to_string()))?;
        let version: VersionOnly = serde_path_to_error::deserialize(value.clone())
            .map_err(|e| syntax(e.path().to_string(), e.inner().to_string()))?;
        if version.version != Some(FORMAT_VERSION) {
            return Err(ConfigDocumentError::Version {
                found: version.version,
            });
        }
        let document: Document<serde_yaml_ng::Value> = serde_path_to_error::deserialize(value)
            .map_err(|e| syntax(e.path().to_string(), e.inner().to_string()))?;
        let mut sites: Vec<Site> = Vec::with_capacity(document.sites.len());
        for (index, site) in document.sites.into_iter().enumerate() {
            let label = format!("{CONFIG_KEY} sites[{index}]");
            let site = manifest::site_from_value(&label, index + 1, site).map_err(Box::new)?;
            let name = site.metadata.name.clone().unwrap_or_default();
            if sites
                .iter()
                .any(|s| s.metadata.name.as_deref() == Some(&name))
            {
                return Err(ConfigDocumentError::DuplicateSite(name));
            }
            sites.push(site);
        }
        if sites.is_empty() {
            return Err(ConfigDocumentError::NoSites);
        }
        if document.backends.keys().any(|site| site.trim().is_empty()) {
            return Err(ConfigDocumentError::EmptyBackendSite);
        }
        Ok(Self {
            sites,
            backends: document.backends,
            link_ca: document.link_ca.filter(|ca| !ca.trim().is_empty()),
        })
    }
}

/// A Site as the gateways need it: status is the operator's report, not configuration, and
/// would only make the document (and the pods' reloads) change with every QoS write.
fn without_status(site: &Site) -> Site {
    let mut site = site.clone();
    site.status = None;
    site
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::SiteSpec;

    fn site(name: &str, host: &str) -> Site {
        let spec: SiteSpec = serde_json::from_value(serde_json::json!({
            "hostnames": [host],
            "origins": [{"name": "a", "url": "http://127.0.0.1:1"}],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut site = Site::new(name, spec);
        site.metadata.namespace = Some("web".into());
        site
    }

    fn config() -> GatewayConfig {
        GatewayConfig {
            sites: vec![site("shop", "shop.example"), site("blog", "blog.example")],
            backends: BTreeMap::from([
                (
                    "shop".to_owned(),
                    vec![
                        "127.0.0.6:4433".parse().unwrap_or_else(|e| panic!("{e}")),
                        "127.0.0.5:4433".parse().unwrap_or_else(|e| panic!("{e}")),
                    ],
                ),
                (
                    "blog".to_owned(),
                    vec!["[::1]:4433".parse().unwrap_or_else(|e| panic!("{e}"))],
                ),
            ]),
            link_ca: Some("-----BEGIN CERTIFICATE-----\n".to_owned()),
        }
    }

    #[test]
    fn a_document_round_trips() -> Result<(), ConfigDocumentError> {
        let written = config().to_yaml()?;
        let read = GatewayConfig::from_yaml(&written)?;
        let mut expected = config();
        expected
            .backends
            .values_mut()
            .for_each(|a| a.sort_unstable());
        assert_eq!(read.backends, expected.backends);
        assert_eq!(read.link_ca, expected.link_ca);
        assert_eq!(read.sites.len(), 2);
        for (read, expected) in read.sites.iter().zip(&expected.sites) {
            assert_eq!(read.metadata.name, expected.metadata.name);
            assert_eq!(read.metadata.namespace, expected.metadata.namespace);
            assert_eq!(read.spec, expected.spec);
        }
        assert!(written.starts_with("version: 1\n"), "{written}");
        // The same configuration writes the same text: the ConfigMap hash depends on it.
        assert_eq!(written, read.to_yaml()?);
        Ok(())
    }

    #[test]
    fn status_is_not_configuration() -> Result<(), ConfigDocumentError> {
        let mut with_status = config();
        with_status.sites[0].status = Some(crate::status::SiteStatus::default());
        assert_eq!(with_status.to_yaml()?, config().to_yaml()?);
        Ok(())
    }

    #[test]
    fn an_unknown_or_missing_version_is_refused_by_name() -> Result<(), ConfigDocumentError> {
        let written = config().to_yaml()?;
        let newer = written.replacen("version: 1", "version: 2", 1);
        let error = GatewayConfig::from_yaml(&newer).expect_err("version 2 refused");
        assert!(
            matches!(error, ConfigDocumentError::Version { found: Some(2) }),
            "{error}"
        );
        assert!(
            error.to_string().contains("format version Some(2)"),
            "{error}"
        );
        let none = written.replacen("version: 1\n", "", 1);
        assert!(matches!(
            GatewayConfig::from_yaml(&none),
            Err(ConfigDocumentError::Version { found: None })
        ));
        Ok(())
    }

    #[test]
    fn an_invalid_site_is_named_and_refuses_the_whole_document() -> Result<(), ConfigDocumentError>
    {
        let written = config().to_yaml()?;
        let broken = written.replacen("origins:", "orgins:", 1);
        let error = GatewayConfig::from_yaml(&broken).expect_err("refused");
        let text = error.to_string();
        assert!(text.contains("gateway.yaml sites[0]"), "{text}");
        assert!(text.contains("orgins"), "{text}");
        Ok(())
    }

    #[test]
    fn bad_shapes_are_named_by_field() {
        let cases = [
            ("not: [yaml", "."),
            ("version: 1\nsites: []\nbackend: {}\n", "backend"),
            (
                "version: 1\nsites: []\nbackends: { shop: [\"not an address\"] }\n",
                "backends.shop[0]",
            ),
        ];
        for (text, field) in cases {
            match GatewayConfig::from_yaml(text) {
                Err(ConfigDocumentError::Syntax { field: found, .. }) => {
                    assert!(found.contains(field) || field == ".", "{text}: {found}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn no_site_a_duplicate_or_an_unnamed_backend_is_refused() -> Result<(), ConfigDocumentError> {
        assert!(matches!(
            GatewayConfig::from_yaml("version: 1\nsites: []\n"),
            Err(ConfigDocumentError::NoSites)
        ));
        let mut twice = config();
        twice.sites.push(site("shop", "other.example"));
        assert!(matches!(
            GatewayConfig::from_yaml(&twice.to_yaml()?),
            Err(ConfigDocumentError::DuplicateSite(name)) if name == "shop"
        ));
        let mut unnamed = config();
        unnamed.backends.insert(" ".to_owned(), Vec::new());
        assert!(matches!(
            GatewayConfig::from_yaml(&unnamed.to_yaml()?),
            Err(ConfigDocumentError::EmptyBackendSite)
        ));
        Ok(())
    }
}
