//! HTTP message helpers every phase of the request pipeline shares — the cache phase, the
//! origin side and the link side alike: header rewriting, the declared body length, which
//! methods may be repeated, the request body on its way upstream, and the one error type a
//! request can end with. Nothing here knows about Sites, balancers or links' choice.

pub mod error;
pub mod headers;
pub mod request_body;

use http::Method;
use http::request::Parts;

/// A boxed, thread-safe error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body's declared length (`Content-Length`), if valid.
pub fn body_length(parts: &Parts) -> Option<u64> {
    causeway_cache::storable::content_length(&parts.headers)
}

/// Methods a retry may repeat (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_methods_are_retried() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
