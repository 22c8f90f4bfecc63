//! Reading Site and Frontend manifests from YAML — the same documents `kubectl apply` takes —
//! with errors that name the document, the field and the reason.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::frontend::{Frontend, FrontendSpec};
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
    /// A document is not of the expected kind.
    #[error(
        "{source_name}, document {document}: expected apiVersion {API_VERSION} and kind {expected}, found apiVersion {api_version:?} and kind {kind:?}"
    )]
    WrongKind {
        /// File name or other label of the input.
        source_name: String,
        /// 1-based index of the YAML document in the input.
        document: usize,
        /// The kind that was expected.
        expected: &'static str,
        /// The apiVersion found.
        api_version: String,
        /// The kind found.
        kind: String,
    },
    /// The document parses but breaks a rule.
    #[error("{source_name}, document {document} ({kind} {name:?}): {violations}")]
    Invalid {
        /// File name or other label of the input.
        source_name: String,
        /// 1-based index of the YAML document in the input.
        document: usize,
        /// The resource's kind.
        kind: &'static str,
        /// The resource's name.
        name: String,
        /// Every rule broken.
        violations: Violations,
    },
    /// The input holds no document of the expected kind.
    #[error("{source_name}: no {kind} document found")]
    Empty {
        /// File name or other label of the input.
        source_name: String,
        /// The kind that was expected.
        kind: &'static str,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document<Spec> {
    // Read through `Header` first; named here so that `deny_unknown_fields` accepts them.
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta,
    spec: Spec,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde_json::Value>,
}

/// A resource kind that manifests hold.
trait Kind: Sized {
    const KIND: &'static str;
    type Spec: DeserializeOwned;

    fn validate(spec: &Self::Spec) -> Result<(), Violations>;

    fn build(metadata: ObjectMeta, spec: Self::Spec) -> Self;
}

impl Kind for Site {
    const KIND: &'static str = "Site";
    type Spec = SiteSpec;

    fn validate(spec: &SiteSpec) -> Result<(), Violations> {
        spec.validate()
    }

    fn build(metadata: ObjectMeta, spec: SiteSpec) -> Self {
        let mut site = Site::new(metadata.name.as_deref().unwrap_or_default(), spec);
        site.metadata = metadata;
        site
    }
}

impl Kind for Frontend {
    const KIND: &'static str = "Frontend";
    type Spec = FrontendSpec;

    fn validate(spec: &FrontendSpec) -> Result<(), Violations> {
        spec.validate()
    }

    fn build(metadata: ObjectMeta, spec: FrontendSpec) -> Self {
        let mut frontend = Frontend::new(metadata.name.as_deref().unwrap_or_default(), spec);
        frontend.metadata = metadata;
        frontend
    }
}

/// Parses and validates every Site in a (possibly multi-document) YAML text.
///
/// `source_name` labels errors, usually the file name. Empty documents are skipped; a
/// document without a name is refused because metrics and routing need one.
///
/// # Errors
/// [`ManifestError`] naming the first document that is not YAML, not a Site, or breaks a rule.
pub fn parse_sites(source_name: &str, yaml: &str) -> Result<Vec<Site>, ManifestError> {
    parse(source_name, yaml)
}

/// Parses and validates every Frontend in a (possibly multi-document) YAML text, as
/// [`parse_sites`] does for Sites.
///
/// # Errors
/// [`ManifestError`] naming the first document that is not YAML, not a Frontend, or breaks
/// a rule.
pub fn parse_frontends(source_name: &str, yaml: &str) -> Result<Vec<Frontend>, ManifestError> {
    parse(source_name, yaml)
}

fn parse<K: Kind>(source_name: &str, yaml: &str) -> Result<Vec<K>, ManifestError> {
    let mut resources = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let number = index + 1;
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::Value::deserialize(document).map_err(|e| ManifestError::Syntax {
                source_name: source_name.to_owned(),
                document: number,
                field: ".".into(),
                reason: e.to_string(),
            })?;
        if value.is_null() {
            continue;
        }
        resources.push(parse_document(source_name, number, value)?);
    }
    if resources.is_empty() {
        return Err(ManifestError::Empty {
            source_name: source_name.to_owned(),
            kind: K::KIND,
        });
    }
    Ok(resources)
}

/// Reads and validates one Site document already parsed as YAML: a Site embedded in a larger
/// document (the gateway configuration), checked exactly as a Site file is.
///
/// # Errors
/// [`ManifestError`] naming `source_name` and document `number` when the value is not a
/// Site or breaks a rule.
pub fn site_from_value(
    source_name: &str,
    number: usize,
    value: serde_yaml_ng::Value,
) -> Result<Site, ManifestError> {
    parse_document(source_name, number, value)
}

fn parse_document<K: Kind>(
    source_name: &str,
    number: usize,
    value: serde_yaml_ng::Value,
) -> Result<K, ManifestError> {
    let syntax = |field: String, reason: String| ManifestError::Syntax {
        source_name: source_name.to_owned(),
        document: number,
        field,
        reason,
    };
    // The kind is checked before the spec is read, so that another kind's document is
    // reported as such rather than as a spec full of unknown fields.
    let header: Header = serde_path_to_error::deserialize(value.clone())
        .map_err(|e| syntax(e.path().to_string(), e.inner().to_string()))?;
    if header.api_version != API_VERSION || header.kind != K::KIND {
        return Err(ManifestError::WrongKind {
            source_name: source_name.to_owned(),
            document: number,
            expected: K::KIND,
            api_version: header.api_version,
            kind: header.kind,
        });
    }
    let parsed: Document<K::Spec> = serde_path_to_error::deserialize(value)
        .map_err(|e| syntax(e.path().to_string(), e.inner().to_string()))?;
    let name = parsed.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(syntax(
            "metadata.name".into(),
            format!("a {} needs a name", K::KIND),
        ));
    }
    K::validate(&parsed.spec).map_err(|violations| ManifestError::Invalid {
        source_name: source_name.to_owned(),
        document: number,
        kind: K::KIND,
        name,
        violations,
    })?;
    Ok(K::build(parsed.metadata, parsed.spec))
}

/// The part of a document that says what it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
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

    #[test]
    fn a_site_is_not_a_frontend() {
        let err = parse_frontends("site.yaml", GOOD).expect_err("a Site");
        assert!(
            matches!(
                err,
                ManifestError::WrongKind {
                    expected: "Frontend",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_examples_parse_and_validate() {
        let sites = parse_sites(
            "examples/site.yaml",
            include_str!("../../examples/site.yaml"),
        )
        .expect("examples/site.yaml is valid");
        assert_eq!(sites.len(), 1);
        let site = &sites[0].spec;
        assert_eq!(site.origins.len(), 3);
        assert_eq!(
            site.origins.iter().filter(|o| o.service.is_some()).count(),
            1
        );
        assert_eq!(site.origins.iter().filter(|o| o.url.is_some()).count(), 2);

        let frontends = parse_frontends(
            "examples/frontend.yaml",
            include_str!("../../examples/frontend.yaml"),
        )
        .expect("examples/frontend.yaml is valid");
        assert_eq!(frontends.len(), 2);
        assert!(frontends.iter().any(|f| f.spec.site_selector.is_some()));
        assert!(frontends.iter().any(|f| !f.spec.sites.is_empty()));
    }
}
