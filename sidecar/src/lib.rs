//! Causeway's data plane: the single-tier gateway and the pieces it is made of.
//!
//! Layout by mechanism: [`server`] accepts client connections, [`proxy`] forwards requests,
//! [`classify`] gives them a class and type, [`balancer`] picks the origin (with its
//! [`balancer::selection`], [`balancer::queue`] and [`balancer::health`]), [`health_check`]
//! probes origins, [`metrics`] and [`admin`] expose what happens.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod balancer;
pub mod caching;
pub mod classify;
pub mod cluster_config;
pub mod config_source;
pub mod framing_guard;
pub mod frontend;
pub mod gateway;
pub mod health_check;
pub mod link_identity;
pub mod link_metrics;
pub mod local;
pub mod message;
pub mod metrics;
pub mod origin;
pub mod pipeline;
pub mod preface_guard;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod sites;
pub mod telemetry;
pub mod tls;
pub mod top;
