//! Reading Site manifests from YAML — the same documents `kubectl apply` takes — with errors
//! that name the document, the field and the reason.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::site::{Site, SiteSpec};
use crate::validate::Violations;

/// The `apiVersion` of every Causeway resource.
pub const API_VERSION: &str = "causeway.dev/v1alpha1";

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML, or a field has the wrong shape.
    #[error("{source_name}, document {document}: field {field}: {reason}")]
    Syntax {
        /// File name or other label of the input.
        source_name: String,
        /// 1-based index of the YAML document in the input.
        document: usize,
        /// Path of the offending field (`.` for the document itself).
        field: String,
        /// The parser's reason.
        reason: String,
    },
    /// A document is not a Causeway Site.
    #[error(
        "{source_name}, document {document}: expected apiVersion {API_VERSION} and kind Site, found apiVersion {api_version:?} and kind {kind:?}"
    )]
    WrongKind {
        /// File name or other label of the input.
        source_name: String,
        /// 1-based index of the YAML document in the input.
        document: usize,
        /// The apiVersion found.
        api_version: String,
        /// The kind found.
        kind: String,
    },
    /// The document parses but breaks a rule.
    #[error("{source_name}, document {document} (Site {name:?}): {violations}")]
    Invalid {
        /// File name or other label of the input.
        source_name: String,
        /// 1-based index of the YAML document in the input.
        document: usize,
        /// The Site's name.
        name: String,
        /// Every rule broken.
        violations: Violations,
    },
    /// The input holds no Site.
    #[error("{source_name}: no Site document found")]
    Empty {
        /// File name or other label of the input.
        source_name: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SiteDocument {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: SiteSpec,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde_json::Value>,
}

/// Parses and validates every Site in a (possibly multi-document) YAML text.
///
/// `source_name` labels errors, usually the file name. Empty documents are skipped; a
/// document without a name is refused because metrics and routing need one.
pub fn parse_sites(source_name: &str, yaml: &str) -> Result<Vec<Site>, ManifestError> {
    let mut sites = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let number = index + 1;
        let syntax = |field: String, reason: String| ManifestError::Syntax {
            source_name: source_name.to_owned(),
            document: number,
            field,
            reason,
        };
        let value: serde_yaml_ng::Value = serde_yaml_ng::Value::deserialize(document)
            .map_err(|e| syntax(".".into(), e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let parsed: SiteDocument = serde_path_to_error::deserialize(value)
            .map_err(|e| syntax(e.path().to_string(), e.inner().to_string()))?;
        if parsed.api_version != API_VERSION || parsed.kind != "Site" {
            return Err(ManifestError::WrongKind {
                source_name: source_name.to_owned(),
                document: number,
                api_version: parsed.api_version,
                kind: parsed.kind,
            });
        }
        let name = parsed.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(syntax("metadata.name".into(), "a Site needs a name".into()));
        }
        parsed
            .spec
            .validate()
            .map_err(|violations| ManifestError::Invalid {
                source_name: source_name.to_owned(),
                document: number,
                name: name.clone(),
                violations,
            })?;
        let mut site = Site::new(&name, parsed.spec);
        site.metadata = parsed.metadata;
        sites.push(site);
    }
    if sites.is_empty() {
        return Err(ManifestError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: causeway.dev/v1alpha1
kind: Site
metadata:
  name: shop
spec:
  hostnames: [shop.example.com]
  origins:
    - name: a
      url: http://127.0.0.1:9001
      primary: true
      maxInFlight: 8
    - name: b
      url: http://127.0.0.1:9002
  priority:
    rules:
      - class: 0
        match: { pathPrefix: /checkout }
---
"#;

    #[test]
    fn parses_a_site_with_defaults() {
        let sites = parse_sites("site.yaml", GOOD).expect("valid");
        assert_eq!(sites.len(), 1);
        let spec = &sites[0].spec;
        assert_eq!(sites[0].metadata.name.as_deref(), Some("shop"));
        assert_eq!(spec.origins[0].max_in_flight, 8);
        assert_eq!(spec.origins[1].max_in_flight, 100);
        assert_eq!(spec.queue.max_length, 1024);
        assert_eq!(spec.priority.rules[0].class, 0);
    }

    #[test]
    fn a_typo_names_the_field() {
        let bad = GOOD.replace("maxInFlight: 8", "maxInFligt: 8");
        let err = parse_sites("site.yaml", &bad)
            .expect_err("typo")
            .to_string();
        assert!(err.contains("site.yaml, document 1"), "{err}");
        assert!(err.contains("spec.origins[0]"), "{err}");
        assert!(err.contains("maxInFligt"), "{err}");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let bad = GOOD.replace("maxInFlight: 8", "maxInFlight: lots");
        let err = parse_sites("site.yaml", &bad)
            .expect_err("wrong type")
            .to_string();
        assert!(err.contains("spec.origins[0].maxInFlight"), "{err}");
    }

    #[test]
    fn a_rule_violation_is_reported_with_the_site() {
        let bad = GOOD.replace("class: 0", "class: 9");
        let err = parse_sites("site.yaml", &bad)
            .expect_err("class")
            .to_string();
        assert!(err.contains("Site \"shop\""), "{err}");
        assert!(err.contains("spec.priority.rules[0].class"), "{err}");
    }

    #[test]
    fn other_kinds_and_empty_inputs_are_refused() {
        let other = GOOD.replace("kind: Site", "kind: Deployment");
        assert!(matches!(
            parse_sites("x", &other),
            Err(ManifestError::WrongKind { .. })
        ));
        assert!(matches!(
            parse_sites("x", "---\n"),
            Err(ManifestError::Empty { .. })
        ));
        assert!(matches!(
            parse_sites("x", "{ not yaml"),
            Err(ManifestError::Syntax { .. })
        ));
    }
}
