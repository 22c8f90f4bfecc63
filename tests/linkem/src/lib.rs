//! A userspace WAN link emulator for Causeway's tests and benchmarks.
//!
//! [`NetLab`] builds a chain of network namespaces (e.g. client — front — back) joined by TUN
//! devices; a forwarder thread moves packets between neighbours through a [`LinkModel`] per
//! direction that adds delay, jitter, random loss and a rate limit with a drop-tail queue.
//! Every namespace has one address in 127.0.0.0/8 (see [`addressing`]), so tests never touch
//! any other address. The kernel's netem is not needed.
//!
//! Layout: [`impairment`] (settings), [`model`] (the pure per-packet decision), [`spec`] (text
//! form), [`addressing`] (names, addresses, routes), [`netns`] (namespace plumbing),
//! [`forwarder`] (TUN I/O) with its [`timer`], [`lab`] (the builder and handle), [`error`].
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use std::time::Duration;
//! use causeway_linkem::{Impairment, NetLab};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let wan = Impairment::delay(Duration::from_millis(20)).with_loss(0.01);
//! let lab = NetLab::builder()
//!     .namespace("client")
//!     .namespace("back")
//!     .link("client", "back", wan)
//!     .build()?;
//! let back = lab.address("back");
//! let server = lab.in_namespace("back", || UdpSocket::bind((back, 9000)))??;
//! let client = lab.in_namespace("client", || UdpSocket::bind((lab.address("client"), 0)))??;
//! client.send_to(b"ping", (back, 9000))?;
//! # drop(server);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod addressing;
pub mod error;
pub mod forwarder;
pub mod impairment;
pub mod lab;
pub mod model;
pub mod netns;
pub mod spec;
pub mod timer;

pub use error::Error;
pub use forwarder::LinkStats;
pub use impairment::Impairment;
pub use lab::{LabDescription, NetLab, NetLabBuilder};
pub use model::{DropReason, LinkModel, Verdict};
