//! TMP link certificates, apart from running a link: the link CA, the signing request a
//! gateway makes for a key that never leaves it, and the parsed request a signer decides on.
//!
//! - [`authority`]: [`LinkAuthority`], the CA that issues and signs (held in memory for
//!   `causeway local` and tests, kept in a Secret by the operator);
//! - [`request`]: [`certificate_request`] (the gateway's side) and [`RequestedCertificate`]
//!   (the signer's side);
//! - [`pem`]: PEM texts to DER certificates and keys;
//! - [`error`]: the crate's error, [`PkiError`].
//!
//! What the signer and the gateway agree on (signer name, lifetimes, names, subject form) is
//! not here but in `causeway_api::contract::signing`, so the API crate stays free of crypto.

#![forbid(unsafe_code)]

pub mod authority;
pub mod error;
pub mod pem;
pub mod request;

pub use authority::{IssuedPem, LinkAuthority};
pub use error::PkiError;
pub use request::{KeyAndRequest, RequestedCertificate, certificate_request};
