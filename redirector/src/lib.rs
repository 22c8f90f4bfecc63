//! Causeway's DNS redirector: an authoritative DNS server that answers each Site's hostnames
//! with the best healthy front-ends for the asking client — nearest region first by client
//! subnet (EDNS Client Subnet or source address), weighted by headroom, failing over to
//! other regions — kept current from a directory file or the Kubernetes API.
//!
//! The decision is pure ([`answer`], over a compiled [`directory::Index`]); the wire codec
//! ([`wire`]) is pure too; sockets ([`server`], [`admin`]) and the sources ([`source`]) only
//! feed them and carry their results.
#![forbid(unsafe_code)]

pub mod admin;
pub mod answer;
pub mod directory;
pub mod error;
#[cfg(any(test, fuzzing))]
pub mod fixtures;
pub mod metrics;
pub mod rfc2136;
pub mod server;
pub mod source;
pub mod wire;

pub use error::{DirectoryError, Error, Result};
