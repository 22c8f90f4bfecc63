//! Causeway's front-end cache: an RFC 9111 shared HTTP cache, one per Site, in every
//! front-end and single-tier gateway.
//!
//! - [`cache_control`]: `Cache-Control` and `Pragma` parsing, tolerant of hostile input;
//! - [`freshness`]: freshness lifetime, current age, what a stored response allows;
//! - [`storable`]: whether a response may be stored, and which of its fields;
//! - [`key`]: primary keys and `Vary` secondary keys.

#![forbid(unsafe_code)]

pub mod cache_control;
pub mod freshness;
pub mod key;
pub mod storable;
