//! The [`Cache`] of one Site: the decision API the proxy calls, tying the store, freshness,
//! collapsing and metrics together.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, Uri, request, response};

use crate::cache_control::{RequestDirectives, ResponseDirectives};
use crate::collapse::{Collapse, CollapseSettings, Collapser, FlightLeader};
use crate::error::CacheError;
use crate::freshness::{self, Freshness};
use crate::key::PrimaryKey;
use crate::metrics::SiteMetrics;
use crate::refresh_ahead::{RefreshAhead, should_refresh_ahead};
use crate::revalidate::{self, MergeRefused};
use crate::storable::{self, NotStorable, StorePolicy};
use crate::store::{ExchangeTimes, Store, StoreLimits, StoredEntry};

/// A Site's cache configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CacheSettings {
    /// Byte bound, variants per resource, retention of validatable entries.
    pub limits: StoreLimits,
    /// What may be stored (cookies, authorization, heuristic, per-object limit).
    pub policy: StorePolicy,
    /// Bounds of request collapsing.
    pub collapse: CollapseSettings,
    /// Refresh-ahead of hot entries; `None` turns it off.
    pub refresh_ahead: Option<RefreshAhead>,
}

/// Why a request does not use the cache at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Not GET or HEAD (an unsafe method also calls [`Cache::invalidate`] on its response).
    Method,
    /// No host to key it by.
    NoKey,
    /// The request carries `Authorization` and the stored response may not be shared with it
    /// (RFC 9111 §3.5).
    Authorization,
}

/// What to do with a request.
#[derive(Debug)]
#[must_use]
pub enum Lookup {
    /// Serve the fresh entry. With `refresh`, it is hot and near expiry: fetch it again in the
    /// background through that leader (refresh-ahead).
    Hit {
        /// The entry to serve.
        entry: Arc<StoredEntry>,
        /// Background refresh to run, if due and nobody runs it already.
        refresh: Option<FlightLeader>,
    },
    /// Serve the stale entry now (`stale-while-revalidate` or the client's `max-stale`); with
    /// `revalidation`, validate it in the background through that leader.
    Stale {
        /// The entry to serve.
        entry: Arc<StoredEntry>,
        /// Background revalidation to run, if nobody runs it already.
        revalidation: Option<FlightLeader>,
    },
    /// The entry must be validated before it is served: send a conditional request
    /// ([`Cache::prepare_upstream`]) as leader or alone, or wait as a follower. If upstream
    /// fails, [`Cache::stale_if_error`] says whether the entry may be served anyway.
    Revalidate {
        /// The stored entry to validate.
        entry: Arc<StoredEntry>,
        /// How this request takes part in the upstream fetch.
        collapse: Collapse,
    },
    /// Nothing usable is stored: go upstream.
    Miss {
        /// How this request takes part in the upstream fetch.
        collapse: Collapse,
        /// Whether another variant of the resource is stored (`fwd=vary-miss`).
        other_variant: bool,
    },
    /// `only-if-cached` and nothing usable: answer 504 (RFC 9111 §5.2.1.7).
    OnlyIfCachedMiss,
    /// Do not use the cache.
    Bypass(Bypass),
}

/// Whether a response is being stored.
#[derive(Debug)]
#[must_use]
pub enum Admission {
    /// Feed the body to this as it streams, then [`Cache::commit`] it.
    Store(Box<PendingBody>),
    /// Stream it through; the reason goes in `Cache-Status` `detail`.
    Skip(NotStorable),
}

/// A response being stored, collecting its body while it streams to the client.
#[derive(Debug)]
pub struct PendingBody {
    key: PrimaryKey,
    status: http::StatusCode,
    headers: HeaderMap,
    request_headers: HeaderMap,
    times: ExchangeTimes,
    body: BytesMut,
    limit: u64,
    too_large: bool,
}

impl PendingBody {
    /// Adds a chunk. Past the per-object limit the collected bytes are dropped at once (so a
    /// huge body holds no memory) and every later call fails too: stream the rest through.
    ///
    /// # Errors
    /// [`NotStorable::TooLarge`] once the body exceeds the limit.
    pub fn push(&mut self, chunk: &Bytes) -> Result<(), NotStorable> {
        if self.too_large || self.body.len() as u64 + chunk.len() as u64 > self.limit {
            self.too_large = true;
            self.body = BytesMut::new();
            return Err(NotStorable::TooLarge);
        }
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    /// The resource it will be stored under.
    #[must_use]
    pub fn key(&self) -> &PrimaryKey {
        &self.key
    }
}

/// How a validation ended, for `causeway_cache_revalidations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevalidationResult {
    /// 304: the stored response was freshened.
    NotModified,
    /// A new full response replaced it.
    Modified,
    /// The upstream failed.
    Failed,
}

/// One Site's cache.
#[derive(Debug)]
pub struct Cache {
    store: Store,
    collapser: Collapser,
    settings: CacheSettings,
    metrics: SiteMetrics,
}

impl Cache {
    /// An empty cache.
    #[must_use]
    pub fn new(settings: CacheSettings, metrics: SiteMetrics) -> Self {
        Self {
            store: Store::new(settings.limits.clone(), metrics.clone()),
            collapser: Collapser::new(settings.collapse),
            settings,
            metrics,
        }
    }

    /// The settings it runs with.
    #[must_use]
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// The store, for inspection (sizes, tests).
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Decides what to do with a request (RFC 9111 §4): serve, serve stale, validate, or go
    /// upstream, and counts it.
    pub fn lookup(&self, request: &request::Parts, now: SystemTime) -> Lookup {
        if request.method != Method::GET && request.method != Method::HEAD {
            return Lookup::Bypass(Bypass::Method);
        }
        let Some(key) = PrimaryKey::from_request(request) else {
            return Lookup::Bypass(Bypass::NoKey);
        };
        let directives = RequestDirectives::from_headers(&request.headers);
        // HEAD is answered from a stored GET but cannot fill the cache; no-store requests
        // must not store what they fetch.
        let may_lead = request.method == Method::GET && !directives.no_store;
        let Some(entry) = self.store.get(&key, &request.headers) else {
            if directives.only_if_cached {
                return Lookup::OnlyIfCachedMiss;
            }
            self.metrics.misses.inc();
            let collapse = self.join(&key, &request.headers, may_lead);
            return Lookup::Miss {
                collapse,
                other_variant: self.store.contains(&key),
            };
        };
        if request.headers.contains_key(http::header::AUTHORIZATION)
            && !self.settings.policy.share_authorized
            && !entry.directives().allows_authorized_sharing()
        {
            return Lookup::Bypass(Bypass::Authorization);
        }
        match entry.freshness(&directives, now) {
            Freshness::Fresh { .. } => {
                self.metrics.hits.inc();
                entry.record_hit();
                let refresh = self
                    .settings
                    .refresh_ahead
                    .filter(|policy| {
                        should_refresh_ahead(policy, entry.hits(), entry.lifetime(), entry.age(now))
                    })
                    .and_then(|_| self.collapser.try_lead(&key));
                Lookup::Hit { entry, refresh }
            }
            Freshness::Stale {
                within_swr,
                client_accepts,
                ..
            } if within_swr || client_accepts => {
                self.metrics.stale_served.inc();
                entry.record_hit();
                let revalidation = if within_swr {
                    self.collapser.try_lead(&key)
                } else {
                    None
                };
                Lookup::Stale {
                    entry,
                    revalidation,
                }
            }
            Freshness::Stale { .. } | Freshness::MustRevalidate => {
                if directives.only_if_cached {
                    return Lookup::OnlyIfCachedMiss;
                }
                let collapse = self.join(&key, &request.headers, may_lead);
                Lookup::Revalidate { entry, collapse }
            }
        }
    }

    fn join(&self, key: &PrimaryKey, headers: &HeaderMap, may_lead: bool) -> Collapse {
        let collapse = self.collapser.join(key, headers, may_lead);
        if matches!(collapse, Collapse::Follower(_)) {
            self.metrics.collapsed.inc();
        }
        collapse
    }

    /// Prepares the headers of a request going upstream for the cache: the client's own
    /// preconditions and `Range` removed, the stored entry's validators added when validating.
    /// Requests that go [`Collapse::Alone`] and bypasses need not call it.
    pub fn prepare_upstream(&self, headers: &mut HeaderMap, validating: Option<&StoredEntry>) {
        revalidate::prepare_fill(headers, validating);
    }

    /// Decides whether an upstream response is stored (RFC 9111 §3), from its head, before
    /// its body streams.
    pub fn admit(
        &self,
        request: &request::Parts,
        response: &response::Parts,
        times: ExchangeTimes,
    ) -> Admission {
        let Some(key) = PrimaryKey::from_request(request) else {
            return Admission::Skip(NotStorable::Method);
        };
        let request_cc = RequestDirectives::from_headers(&request.headers);
        let response_cc = ResponseDirectives::from_headers(&response.headers);
        let policy = &self.settings.policy;
        let lifetime = freshness::freshness_lifetime(
            response.status,
            &response_cc,
            &response.headers,
            times.response_time,
            policy.heuristic.as_ref(),
        );
        if let Err(reason) = storable::check(
            request,
            &request_cc,
            response,
            &response_cc,
            lifetime,
            policy,
        ) {
            return Admission::Skip(reason);
        }
        Admission::Store(Box::new(PendingBody {
            key,
            status: response.status,
            headers: storable::stored_headers(&response.headers, &response_cc),
            request_headers: request.headers.clone(),
            times,
            body: BytesMut::new(),
            limit: policy.max_object_bytes,
            too_large: false,
        }))
    }

    /// Stores a fully received response; `None` if its body went past the limit.
    pub fn commit(&self, pending: PendingBody, now: SystemTime) -> Option<Arc<StoredEntry>> {
        if pending.too_large {
            return None;
        }
        let entry = Arc::new(StoredEntry::new(
            pending.status,
            pending.headers,
            pending.body.freeze(),
            &pending.request_headers,
            pending.times,
            self.settings.policy.heuristic.as_ref(),
        ));
        self.store.insert(pending.key, Arc::clone(&entry), now);
        Some(entry)
    }

    /// Freshens a stored entry with the `304 Not Modified` its validation got (RFC 9111
    /// §4.3.4) and stores the result.
    ///
    /// # Errors
    /// The 304 validated another representation: fetch the resource unconditionally.
    pub fn revalidated(
        &self,
        stored: &Arc<StoredEntry>,
        request: &request::Parts,
        not_modified: &response::Parts,
        times: ExchangeTimes,
    ) -> Result<Arc<StoredEntry>, MergeRefused> {
        let heuristic = self.settings.policy.heuristic.as_ref();
        let merged = revalidate::merge_not_modified(
            stored,
            not_modified,
            &request.headers,
            times,
            heuristic,
        )?;
        if let Some(key) = PrimaryKey::from_request(request) {
            self.store
                .insert(key, Arc::clone(&merged), times.response_time);
        }
        self.record_revalidation(RevalidationResult::NotModified);
        Ok(merged)
    }

    /// Counts how a validation ended ([`Cache::revalidated`] counts 304s itself).
    pub fn record_revalidation(&self, result: RevalidationResult) {
        match result {
            RevalidationResult::NotModified => self.metrics.not_modified.inc(),
            RevalidationResult::Modified => self.metrics.modified.inc(),
            RevalidationResult::Failed => self.metrics.revalidation_failed.inc(),
        }
    }

    /// Whether a stale entry may answer a request whose upstream failed (an error, or a 500,
    /// 502, 503 or 504): `stale-if-error` of the response or the request, never past
    /// `must-revalidate` (RFC 5861 §4). Counts the stale response when it may.
    #[must_use]
    pub fn stale_if_error(
        &self,
        request: &request::Parts,
        entry: &StoredEntry,
        now: SystemTime,
    ) -> bool {
        let directives = RequestDirectives::from_headers(&request.headers);
        let allowed = match entry.freshness(&directives, now) {
            Freshness::Stale { within_sie, .. } => within_sie,
            // Fresh can only mean the request's own no-cache/max-age forced the validation.
            Freshness::Fresh { .. } => true,
            Freshness::MustRevalidate => false,
        };
        if allowed {
            self.metrics.stale_served.inc();
        }
        allowed
    }

    /// Invalidates after an unsafe request (RFC 9111 §4.4): on a non-error response, the
    /// target URI and the same-origin `Location` and `Content-Location` targets. Returns how
    /// many resources were removed.
    pub fn invalidate(&self, request: &request::Parts, response: &response::Parts) -> usize {
        if request.method.is_safe()
            || !(response.status.is_success() || response.status.is_redirection())
        {
            return 0;
        }
        let Some(target) = PrimaryKey::from_request(request) else {
            return 0;
        };
        let mut removed = usize::from(self.store.remove(&target));
        for name in [LOCATION, CONTENT_LOCATION] {
            let Some(value) = response.headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Some(key) = same_origin_key(&target, value) else {
                continue;
            };
            if key != target {
                removed += usize::from(self.store.remove(&key));
            }
        }
        removed
    }

    /// Purges one URL (every variant).
    ///
    /// # Errors
    /// `url` is not an absolute http(s) URL.
    pub fn purge_url(&self, url: &str) -> Result<bool, CacheError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| CacheError::InvalidUrl(url.to_owned()))?;
        let key =
            PrimaryKey::from_uri(&uri).ok_or_else(|| CacheError::InvalidUrl(url.to_owned()))?;
        Ok(self.store.remove(&key))
    }

    /// Purges every URL starting with `prefix` (e.g. `https://shop.example/images/`);
    /// returns how many resources went.
    ///
    /// # Errors
    /// `prefix` is not an absolute http(s) URL.
    pub fn purge_prefix(&self, prefix: &str) -> Result<usize, CacheError> {
        let uri: Uri = prefix
            .parse()
            .map_err(|_| CacheError::InvalidUrl(prefix.to_owned()))?;
        let key =
            PrimaryKey::from_uri(&uri).ok_or_else(|| CacheError::InvalidUrl(prefix.to_owned()))?;
        // Normalised like the stored keys (`http://h` becomes `http://h/`, the whole host).
        Ok(self.store.remove_prefix(key.as_str()))
    }
}

/// The key of a `Location`/`Content-Location` value if it names the target's origin (relative
/// references resolve against it; other origins are left alone, §4.4).
fn same_origin_key(target: &PrimaryKey, value: &str) -> Option<PrimaryKey> {
    let absolute = if value.starts_with('/') && !value.starts_with("//") {
        format!("{}{value}", target.origin())
    } else {
        value.to_owned()
    };
    let key = PrimaryKey::from_uri(&absolute.parse().ok()?)?;
    (key.origin() == target.origin()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collapse::FlightOutcome;
    use crate::test_support::at;
    use http::{Request, Response, StatusCode};

    fn cache(settings: CacheSettings) -> Cache {
        Cache::new(settings, SiteMetrics::detached("shop").expect("metrics"))
    }

    fn req(builder: http::request::Builder) -> request::Parts {
        builder
            .header("host", "shop.example")
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    fn resp(builder: http::response::Builder) -> response::Parts {
        builder.body(()).expect("response").into_parts().0
    }

    fn times(secs: u64) -> ExchangeTimes {
        ExchangeTimes {
            request_time: at(secs),
            response_time: at(secs),
        }
    }

    /// Stores `body` for `path` as an origin answering with `cache_control` at `secs`.
    fn fill(cache: &Cache, path: &str, cache_control: &str, secs: u64) -> Arc<StoredEntry> {
        let request = req(Request::get(path));
        let response = resp(
            Response::builder()
                .header("cache-control", cache_control)
                .header("etag", "\"v1\""),
        );
        let Admission::Store(mut pending) = cache.admit(&request, &response, times(secs)) else {
            panic!("not admitted");
        };
        pending.push(&Bytes::from_static(b"hello")).expect("fits");
        cache.commit(*pending, at(secs)).expect("stored")
    }

    #[test]
    fn miss_leads_then_hits_and_head_uses_the_get_entry() {
        let cache = cache(CacheSettings::default());
        let Lookup::Miss {
            collapse: Collapse::Leader(leader),
            other_variant: false,
        } = cache.lookup(&req(Request::get("/a")), at(0))
        else {
            panic!("expected a leading miss");
        };
        assert!(matches!(
            cache.lookup(&req(Request::get("/a")), at(0)),
            Lookup::Miss {
                collapse: Collapse::Follower(_),
                ..
            }
        ));
        let entry = fill(&cache, "/a", "max-age=60", 0);
        leader.publish(FlightOutcome::Stored(entry));
        assert!(matches!(
            cache.lookup(&req(Request::get("/a")), at(10)),
            Lookup::Hit { refresh: None, .. }
        ));
        assert!(matches!(
            cache.lookup(&req(Request::head("/a")), at(10)),
            Lookup::Hit { .. }
        ));
        assert_eq!(cache.metrics.hits.get(), 2);
        assert_eq!(cache.metrics.misses.get(), 2);
        assert_eq!(cache.metrics.collapsed.get(), 1);
    }

    #[test]
    fn head_and_no_store_requests_do_not_lead() {
        let cache = cache(CacheSettings::default());
        assert!(matches!(
            cache.lookup(&req(Request::head("/a")), at(0)),
            Lookup::Miss {
                collapse: Collapse::Alone,
                ..
            }
        ));
        let no_store = req(Request::get("/a").header("cache-control", "no-store"));
        assert!(matches!(
            cache.lookup(&no_store, at(0)),
            Lookup::Miss {
                collapse: Collapse::Alone,
                ..
            }
        ));
        assert!(matches!(
            cache.lookup(&req(Request::post("/a")), at(0)),
            Lookup::Bypass(Bypass::Method)
        ));
    }

    #[test]
    fn stale_while_revalidate_serves_and_revalidates_once() {
        let cache = cache(CacheSettings::default());
        fill(&cache, "/a", "max-age=10, stale-while-revalidate=30", 0);
        let Lookup::Stale {
            revalidation: Some(_leader),
            ..
        } = cache.lookup(&req(Request::get("/a")), at(15))
        else {
            panic!("expected stale with revalidation");
        };
        assert!(matches!(
            cache.lookup(&req(Request::get("/a")), at(16)),
            Lookup::Stale {
                revalidation: None,
                ..
            }
        ));
        assert!(matches!(
            cache.lookup(&req(Request::get("/a")), at(50)),
            Lookup::Revalidate { .. }
        ));
        assert_eq!(cache.metrics.stale_served.get(), 2);
    }

    #[test]
    fn revalidation_with_304_freshens_and_stale_if_error_serves() {
        let cache = cache(CacheSettings::default());
        fill(&cache, "/a", "max-age=10, stale-if-error=100", 0);
        let request = req(Request::get("/a"));
        let Lookup::Revalidate {
            entry,
            collapse: Collapse::Leader(_leader),
        } = cache.lookup(&request, at(20))
        else {
            panic!("expected a revalidation");
        };
        let mut upstream = request.headers.clone();
        cache.prepare_upstream(&mut upstream, Some(&entry));
        assert_eq!(upstream["if-none-match"], "\"v1\"");
        assert!(cache.stale_if_error(&request, &entry, at(20)));
        assert!(!cache.stale_if_error(&request, &entry, at(200)));
        let not_modified = resp(
            Response::builder()
                .status(304)
                .header("cache-control", "max-age=60"),
        );
        cache
            .revalidated(&entry, &request, &not_modified, times(20))
            .expect("merged");
        assert!(matches!(cache.lookup(&request, at(30)), Lookup::Hit { .. }));
        assert_eq!(cache.metrics.not_modified.get(), 1);
    }

    #[test]
    fn a_body_past_the_limit_is_not_stored() {
        let policy = StorePolicy {
            max_object_bytes: 8,
            ..StorePolicy::default()
        };
        let cache = cache(CacheSettings {
            policy,
            ..CacheSettings::default()
        });
        let request = req(Request::get("/big"));
        let response = resp(Response::builder().header("cache-control", "max-age=60"));
        let Admission::Store(mut pending) = cache.admit(&request, &response, times(0)) else {
            panic!("admitted before the body is seen");
        };
        assert!(pending.push(&Bytes::from_static(b"12345")).is_ok());
        assert_eq!(
            pending.push(&Bytes::from_static(b"67890")),
            Err(NotStorable::TooLarge)
        );
        assert_eq!(
            pending.push(&Bytes::from_static(b"1")),
            Err(NotStorable::TooLarge)
        );
        assert!(cache.commit(*pending, at(0)).is_none());
        let declared = resp(
            Response::builder()
                .header("cache-control", "max-age=60")
                .header("content-length", "9"),
        );
        assert!(matches!(
            cache.admit(&request, &declared, times(0)),
            Admission::Skip(NotStorable::TooLarge)
        ));
    }

    #[test]
    fn unsafe_methods_invalidate_target_and_same_origin_locations() {
        let cache = cache(CacheSettings::default());
        for path in ["/cart", "/cart/1", "/other"] {
            fill(&cache, path, "max-age=60", 0);
        }
        let post = req(Request::post("/cart"));
        let created = resp(
            Response::builder()
                .status(201)
                .header("location", "/cart/1")
                .header("content-location", "http://elsewhere.example/other"),
        );
        assert_eq!(cache.invalidate(&post, &created), 2);
        assert!(matches!(
            cache.lookup(&req(Request::get("/other")), at(1)),
            Lookup::Hit { .. }
        ));
        let failed = resp(Response::builder().status(500));
        fill(&cache, "/cart", "max-age=60", 0);
        assert_eq!(cache.invalidate(&post, &failed), 0);
    }

    #[test]
    fn purge_url_and_prefix() {
        let cache = cache(CacheSettings::default());
        for path in ["/img/a", "/img/b", "/index"] {
            fill(&cache, path, "max-age=60", 0);
        }
        assert!(
            cache
                .purge_url("http://SHOP.example:80/index")
                .expect("valid")
        );
        assert_eq!(
            cache
                .purge_prefix("http://shop.example/img/")
                .expect("valid"),
            2
        );
        assert!(cache.purge_url("/relative").is_err());
    }

    #[test]
    fn authorization_and_only_if_cached() {
        let cache = cache(CacheSettings::default());
        fill(&cache, "/a", "max-age=60", 0);
        let authed = req(Request::get("/a").header("authorization", "Bearer x"));
        assert!(matches!(
            cache.lookup(&authed, at(1)),
            Lookup::Bypass(Bypass::Authorization)
        ));
        let only = req(Request::get("/none").header("cache-control", "only-if-cached"));
        assert!(matches!(
            cache.lookup(&only, at(1)),
            Lookup::OnlyIfCachedMiss
        ));
    }

    #[test]
    fn hot_entries_near_expiry_are_refreshed_ahead_once() {
        let refresh_ahead = Some(RefreshAhead {
            min_hits: 3,
            before_expiry: 0.2,
        });
        let cache = cache(CacheSettings {
            refresh_ahead,
            ..CacheSettings::default()
        });
        fill(&cache, "/a", "max-age=100", 0);
        for _ in 0..3 {
            assert!(matches!(
                cache.lookup(&req(Request::get("/a")), at(10)),
                Lookup::Hit { refresh: None, .. }
            ));
        }
        let Lookup::Hit {
            refresh: Some(_refresh),
            ..
        } = cache.lookup(&req(Request::get("/a")), at(85))
        else {
            panic!("expected a refresh-ahead");
        };
        assert!(matches!(
            cache.lookup(&req(Request::get("/a")), at(86)),
            Lookup::Hit { refresh: None, .. }
        ));
    }

    #[test]
    fn set_cookie_responses_are_not_shared_by_default() {
        let cache = cache(CacheSettings::default());
        let response = resp(
            Response::builder()
                .status(StatusCode::OK)
                .header("cache-control", "max-age=60")
                .header("set-cookie", "s=1"),
        );
        assert!(matches!(
            cache.admit(&req(Request::get("/a")), &response, times(0)),
            Admission::Skip(NotStorable::SetCookie)
        ));
    }
}
