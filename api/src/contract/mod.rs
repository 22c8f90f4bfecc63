//! The contract between the operator and the gateways: what one side writes and the other
//! reads, defined once so that neither side parses text the other formats by hand.
//!
//! - [`config`]: the gateway configuration document the operator publishes in each gateway
//!   Deployment's ConfigMap (Sites, a front-end's back-ends, the link CA), versioned.
//! - [`qos`]: the QoS report each gateway pod serves at `GET /qos/pod` on its admin port and
//!   the operator's QoS loop reads (request counts, latency and queue-wait histograms, origins,
//!   TMP links), versioned.
//! - [`signing`]: how a gateway pod asks for its TMP link certificate and what the operator's
//!   signer accepts (signer name, lifetimes, per-tier DNS names, the `NAMESPACE/POD` subject,
//!   where a request stands).

pub mod config;
pub mod qos;
pub mod signing;

pub use config::{CONFIG_KEY, ConfigDocumentError, FORMAT_VERSION, GatewayConfig};
