//! The contract between the operator and the gateways: what the operator writes and the
//! gateways read, defined once so that neither side parses text the other formats by hand.
//!
//! - [`config`]: the gateway configuration document the operator publishes in each gateway
//!   Deployment's ConfigMap (Sites, a front-end's back-ends, the link CA), versioned.
//! - [`signing`]: how a gateway pod asks for its TMP link certificate and what the operator's
//!   signer accepts (signer name, lifetimes, per-tier DNS names, the `NAMESPACE/POD` subject,
//!   where a request stands).

pub mod config;
pub mod signing;

pub use config::{CONFIG_KEY, ConfigDocumentError, FORMAT_VERSION, GatewayConfig};
