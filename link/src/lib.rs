//! TMP links: the persistent, multiplexed, mutually authenticated QUIC connections that join
//! Causeway's front-end and back-end gateways.
//!
//! - [`frame`]: the wire format of channel heads and control messages;
//! - [`blender`]: who sends next on a busy link (class weights, round-robin within a class);
//! - [`congestion`]: the congestion controller that behaves like the N connections a link
//!   hosts;
//! - [`qos`]: each end's view of the link, exchanged so both know the whole link;
//! - [`link`]: dialling, accepting and running links; [`channel`]: one exchange on a link;
//! - [`compress`]: optional zstd for compressible bodies; [`tls`]: mutual TLS (the
//!   certificates themselves come from `causeway_pki`).

#![forbid(unsafe_code)]

pub mod blender;
pub mod channel;
pub mod compress;
pub mod congestion;
pub mod error;
pub mod frame;
pub mod link;
pub mod qos;
pub mod settings;
pub mod tls;

pub use blender::{BlendSettings, Blender};
pub use channel::{Channel, ChannelReceiver, ChannelReset, ChannelSender};
pub use error::LinkError;
pub use frame::{ChannelHead, ChannelKind, RequestHead, ResponseHead, TcpTarget};
pub use link::dial::{Dialer, LinkHandle};
pub use link::listen::{ChannelHandler, LinkRegistry, Listener};
pub use link::{Link, LinkView, LoadProbe};
pub use qos::{LinkQos, Load, QosReport, Role};
pub use settings::LinkSettings;
pub use tls::LinkCredentials;
