//! Purging from the admin endpoint: `POST /cache/purge` with `{"url": "https://host/path"}`
//! (every variant of one URL) or `{"prefix": "https://host/dir/"}` (every URL under it),
//! authorised by `Authorization: Bearer <token>` against the token the process was given.
//! Without a token, purging is refused: an admin port reachable by mistake must not let
//! anyone empty the cache.

use std::sync::Arc;

use causeway_cache::Cache;
use http::{HeaderValue, StatusCode, Uri};
use serde::Deserialize;

use crate::message::headers::host_of;
use crate::sites::Router;

/// Largest purge request body read.
pub const MAX_PURGE_BODY: usize = 16 * 1024;

/// A tier's Sites as far as their caches go.
pub trait HasCache {
    /// The Site's cache, if it caches.
    fn cache(&self) -> Option<&Arc<Cache>>;
}

/// Finds caches in the router in force at each call.
pub trait CacheDirectory: Send + Sync {
    /// The cache of the Site serving `host`.
    fn for_host(&self, host: &str) -> Option<Arc<Cache>>;
    /// Every Site's cache.
    fn all(&self) -> Vec<Arc<Cache>>;
}

impl<S: HasCache + Send + Sync> CacheDirectory for crate::sites::LiveRouter<S> {
    fn for_host(&self, host: &str) -> Option<Arc<Cache>> {
        let router: Arc<Router<S>> = self.load_full();
        router.route(host).and_then(|site| site.cache().cloned())
    }

    fn all(&self) -> Vec<Arc<Cache>> {
        let router: Arc<Router<S>> = self.load_full();
        router
            .sites()
            .iter()
            .filter_map(|site| site.cache().cloned())
            .collect()
    }
}

/// What to purge.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PurgeRequest {
    /// One absolute URL, every variant.
    Url(String),
    /// Every URL starting with this absolute URL.
    Prefix(String),
}

/// The purge side of the admin endpoint.
pub struct Purger {
    directory: Arc<dyn CacheDirectory>,
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Purger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purger")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Purger {
    /// Purges from `directory`'s caches for callers holding `token`.
    pub fn new(directory: Arc<dyn CacheDirectory>, token: Option<Arc<str>>) -> Self {
        Self { directory, token }
    }

    /// Lets every cache settle its bookkeeping, so a scrape sees exact stored bytes.
    pub fn settle(&self) {
        for cache in self.directory.all() {
            cache.store().run_pending_tasks();
        }
    }

    /// Answers one purge request: its status and a JSON body.
    pub fn handle(&self, authorization: Option<&HeaderValue>, body: &[u8]) -> (StatusCode, String) {
        let Some(token) = &self.token else {
            return refusal(
                StatusCode::FORBIDDEN,
                "purging is off: start the process with --admin-token-file",
            );
        };
        if !bearer_matches(authorization, token) {
            return refusal(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        }
        let request: PurgeRequest = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(error) => {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "expected {{\"url\": \"https://host/path\"}} or {{\"prefix\": \"https://host/dir/\"}}: {error}"
                    ),
                );
            }
        };
        let target = match &request {
            PurgeRequest::Url(url) | PurgeRequest::Prefix(url) => url,
        };
        let Some(host) = target
            .parse::<Uri>()
            .ok()
            .and_then(|uri| uri.authority().map(|a| a.as_str().to_owned()))
        else {
            return refusal(
                StatusCode::BAD_REQUEST,
                &format!("{target:?} is not an absolute http(s) URL"),
            );
        };
        let Some(cache) = host_of(&host).and_then(|host| self.directory.for_host(host)) else {
            return refusal(
                StatusCode::NOT_FOUND,
                &format!("no Site with a cache serves {host:?}"),
            );
        };
        let purged = match &request {
            PurgeRequest::Url(url) => cache.purge_url(url).map(usize::from),
            PurgeRequest::Prefix(prefix) => cache.purge_prefix(prefix),
        };
        match purged {
            Ok(purged) => {
                tracing::info!(?request, purged, "cache purged");
                (
                    StatusCode::OK,
                    serde_json::json!({ "purged": purged }).to_string(),
                )
            }
            Err(error) => refusal(StatusCode::BAD_REQUEST, &error.to_string()),
        }
    }
}

fn refusal(status: StatusCode, reason: &str) -> (StatusCode, String) {
    (status, serde_json::json!({ "error": reason }).to_string())
}

/// Whether `authorization` is `Bearer <token>`, compared in constant time so the answer's
/// timing does not tell how much of a guess was right.
fn bearer_matches(authorization: Option<&HeaderValue>, token: &str) -> bool {
    let Some(given) = authorization
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    let mut difference = given.len() ^ token.len();
    for (i, byte) in token.iter().enumerate() {
        difference |= usize::from(given.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let value = |s: &'static str| HeaderValue::from_static(s);
        assert!(bearer_matches(Some(&value("Bearer s3cret")), "s3cret"));
        assert!(!bearer_matches(Some(&value("Bearer s3cre")), "s3cret"));
        assert!(!bearer_matches(Some(&value("Bearer s3cret!")), "s3cret"));
        assert!(!bearer_matches(Some(&value("Basic s3cret")), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn purge_requests_name_a_url_or_a_prefix() {
        assert_eq!(
            serde_json::from_str::<PurgeRequest>(r#"{"url":"https://a/b"}"#).ok(),
            Some(PurgeRequest::Url("https://a/b".to_owned()))
        );
        assert_eq!(
            serde_json::from_str::<PurgeRequest>(r#"{"prefix":"https://a/"}"#).ok(),
            Some(PurgeRequest::Prefix("https://a/".to_owned()))
        );
        assert!(serde_json::from_str::<PurgeRequest>(r#"{"path":"/b"}"#).is_err());
    }
}
