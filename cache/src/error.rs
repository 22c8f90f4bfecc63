//! The crate's one error type.

/// What can go wrong outside the request path's pure decisions.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A purge named something that is not an absolute `http(s)` URL.
    #[error("not an absolute http(s) URL: {0:?}")]
    InvalidUrl(String),
    /// The metric families could not be created or registered.
    #[error("cache metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
