//! The CustomResourceDefinitions of Causeway, generated from the Rust types and rendered as
//! the YAML checked in under `crds/` and `charts/causeway/crds/`.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::frontend::Frontend;
use crate::site::Site;

/// The directories, relative to the workspace root, that hold the rendered CRDs.
pub const OUTPUT_DIRS: [&str; 2] = ["crds", "charts/causeway/crds"];

/// The command that rewrites the rendered CRDs.
pub const REGENERATE: &str = "cargo run -p causeway-api --bin crdgen -- --write";

/// Why the CRDs could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A CRD could not be serialized.
    #[error("rendering the CRD {name} as YAML: {source}")]
    Yaml {
        /// The CRD's name.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Every CRD Causeway defines.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![Site::crd(), Frontend::crd()]
}

/// One rendered CRD: its file name (`<plural>.<group>.yaml`) and its YAML text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedCrd {
    /// The file name, such as `sites.causeway.dev.yaml`.
    pub file_name: String,
    /// The YAML document, with a header saying how it was made.
    pub yaml: String,
}

/// Renders every CRD as YAML.
///
/// # Errors
/// [`CrdError::Yaml`] when a CRD does not serialize (a bug in the types).
pub fn render() -> Result<Vec<RenderedCrd>, CrdError> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_yaml_ng::to_string(&crd).map_err(|source| CrdError::Yaml {
                name: name.clone(),
                source,
            })?;
            Ok(RenderedCrd {
                file_name: format!("{name}.yaml"),
                yaml: format!(
                    "# Generated from the types in api/ by `{REGENERATE}`; do not edit.\n{body}"
                ),
            })
        })
        .collect()
}

/// Writes every rendered CRD into each of [`OUTPUT_DIRS`] under `root`, creating the
/// directories; returns the paths written.
///
/// # Errors
/// [`CrdError::Write`] when a directory or file cannot be written.
pub fn write_all(root: &Path) -> Result<Vec<PathBuf>, CrdError> {
    let rendered = render()?;
    let mut written = Vec::new();
    for dir in OUTPUT_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).map_err(|source| CrdError::Write {
            path: dir.clone(),
            source,
        })?;
        for crd in &rendered {
            let path = dir.join(&crd.file_name);
            std::fs::write(&path, &crd.yaml).map_err(|source| CrdError::Write {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
    }
    Ok(written)
}
