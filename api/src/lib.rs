//! Causeway's shared types: the `Site` custom resource, its validation and manifest parsing.
//!
//! One definition serves every consumer: `causeway local` reads the same YAML that
//! `kubectl apply` sends, and the CRD schema is generated from these types.
#![forbid(unsafe_code)]

pub mod duration;
pub mod manifest;
pub mod site;
pub mod validate;

pub use duration::Duration;
pub use manifest::{API_VERSION, ManifestError, parse_sites};
pub use site::{Site, SiteSpec};
