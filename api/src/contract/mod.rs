//! The contract between the operator and the gateways: what the operator writes and the
//! gateways read, defined once so that neither side parses text the other formats by hand.
//!
//! - [`config`]: the gateway configuration document the operator publishes in each gateway
//!   Deployment's ConfigMap (Sites, a front-end's back-ends, the link CA), versioned.

pub mod config;

pub use config::{CONFIG_KEY, ConfigDocumentError, FORMAT_VERSION, GatewayConfig};
