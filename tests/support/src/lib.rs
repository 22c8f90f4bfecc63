//! What Causeway's process-level tests share: the gateway's integration tests
//! (`sidecar/tests/`) and the fault suite (`tests/faults/`) start the real `causeway` binary
//! and real origin servers on loopback, and talk to them with these pieces.
//!
//! | module | what |
//! | --- | --- |
//! | [`origin`] | test origins that count what they see, can be slowed, failed, killed and restarted; the bodies they answer |
//! | [`site`] | Site manifests around those origins |
//! | [`binary`] | the `causeway` binary under test, built once per test process (or `$CAUSEWAY_BIN`) |
//! | [`gateway`] | a `causeway` tier as a child process: ready, restart, kill, signals, admin, reload |
//! | [`pki`] | mutual-TLS files for TMP links |
//! | [`tiers`] | a two-tier deployment: back-ends and a front-end linked to them |
//! | [`client`] | HTTP/1.1 and h2c test clients, request bodies, whole answers |
//! | [`raw`] | raw TCP exchanges, for malformed requests a client library refuses to send |
//! | [`load`] | a closed-loop load generator and its report |
//! | [`metrics`] | reading one value from Prometheus text |
//! | [`scratch`] | scratch files and free loopback ports |
//! | [`wait`] | bounded waits for an event (never sleep-then-assert) |
//! | [`lab`] | processes and origins inside `causeway-linkem` network namespaces |
//!
//! Everything listens on 127.0.0.1 on ports the kernel hands out, so test binaries and the
//! tests inside them run in parallel without clashing; every wait is bounded in time.
#![forbid(unsafe_code)]

pub mod binary;
pub mod client;
pub mod gateway;
pub mod lab;
pub mod load;
pub mod metrics;
pub mod origin;
pub mod pki;
pub mod raw;
pub mod scratch;
pub mod site;
pub mod tiers;
pub mod wait;
