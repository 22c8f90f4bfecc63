//! Causeway's shared types: the `Site` and `Frontend` custom resources, their status, their
//! validation, manifest parsing, the generated CRDs, and the [`contract`] between the
//! operator and the gateways.
//!
//! One definition serves every consumer: `causeway local` reads the same YAML that
//! `kubectl apply` sends, and the CRD schema is generated from these types.
#![forbid(unsafe_code)]

pub mod conditions;
pub mod contract;
pub mod crd;
pub mod duration;
pub mod frontend;
pub mod manifest;
pub mod rules;
pub mod site;
pub mod status;
pub mod validate;

pub use duration::Duration;
pub use frontend::{Frontend, FrontendSpec};
pub use manifest::{API_VERSION, ManifestError, parse_frontends, parse_sites};
pub use site::{Site, SiteSpec};
pub use status::{FrontendStatus, SiteStatus};
