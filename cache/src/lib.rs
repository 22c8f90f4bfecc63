//! Causeway's front-end cache: an RFC 9111 shared HTTP cache, one [`Cache`] per Site, in every
//! front-end and single-tier gateway.
//!
//! The proxy drives it in three steps, all decisions here and all I/O in the proxy:
//! 1. [`Cache::lookup`] says what to do with a request: answer from the store
//!    ([`respond::serve`]), serve stale and revalidate in the background, validate first, or
//!    go upstream — alone, as the leader of a collapsed flight, or waiting for one.
//! 2. Upstream requests get their validators from [`Cache::prepare_upstream`]; the response
//!    goes to [`Cache::admit`], whose [`PendingBody`] takes the body chunk by chunk as it
//!    streams to the client and gives up (the body streams through uncached) past the
//!    per-object limit; [`Cache::commit`] stores it. A 304 goes to [`Cache::revalidated`].
//! 3. Unsafe methods call [`Cache::invalidate`]; the admin endpoint calls
//!    [`Cache::purge_url`] and [`Cache::purge_prefix`].
//!
//! Modules, by mechanism: [`cache_control`], [`freshness`], [`storable`], [`key`], [`store`],
//! [`collapse`], [`revalidate`], [`range`], [`respond`], [`refresh_ahead`], [`metrics`].

#![forbid(unsafe_code)]

pub mod cache_control;
pub mod collapse;
pub mod error;
pub mod freshness;
pub mod key;
pub mod metrics;
pub mod range;
pub mod refresh_ahead;
pub mod respond;
pub mod revalidate;
pub mod storable;
pub mod store;
#[cfg(test)]
mod test_support;

mod cache;

pub use cache::{Admission, Bypass, Cache, CacheSettings, Lookup, PendingBody, RevalidationResult};
pub use collapse::{Collapse, CollapseSettings, FlightLeader, FlightOutcome, Follower, GoUpstream};
pub use error::CacheError;
pub use key::PrimaryKey;
pub use metrics::{CacheMetrics, SiteMetrics};
pub use refresh_ahead::{RefreshAhead, should_refresh_ahead};
pub use respond::{CacheStatus, Forward};
pub use storable::{NotStorable, StorePolicy};
pub use store::{ExchangeTimes, StoreLimits, StoredEntry};
