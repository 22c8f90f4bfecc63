//! The store: stored responses by primary key, each key holding its `Vary` variants, bounded
//! by bytes with moka's TinyLFU admission and eviction, so a scan of cold objects does not push
//! out the hot ones.
//!
//! All variants of a resource live in one moka entry and are evicted together: a resource's
//! variants are usually requested together, and it keeps purge and invalidation one operation.
//! Variants per resource are bounded, so a `Vary` on a high-cardinality field cannot fill the
//! cache with copies of one resource.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, StatusCode};
use moka::notification::RemovalCause;

use crate::cache_control::{RequestDirectives, ResponseDirectives};
use crate::freshness::{self, Freshness, Heuristic};
use crate::key::{PrimaryKey, SecondaryKey};
use crate::metrics::SiteMetrics;

/// Bytes counted for an entry beyond its body and fields: the structures around them.
const ENTRY_OVERHEAD: usize = 256;

/// One stored response: immutable once stored, except its hit count. A 304 produces a new
/// entry that replaces it (see [`crate::revalidate`]).
#[derive(Debug)]
pub struct StoredEntry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    request_time: SystemTime,
    response_time: SystemTime,
    corrected_initial_age: Duration,
    lifetime: Duration,
    directives: ResponseDirectives,
    variant: SecondaryKey,
    etag: Option<HeaderValue>,
    last_modified: Option<SystemTime>,
    hits: AtomicU64,
}

/// When an exchange with the origin happened (RFC 9111 §4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeTimes {
    /// When the request was sent upstream.
    pub request_time: SystemTime,
    /// When the response head arrived.
    pub response_time: SystemTime,
}

impl StoredEntry {
    /// Builds an entry from a response already filtered by [`crate::storable::stored_headers`].
    ///
    /// `request_headers` are those of the request that produced it, for the `Vary` key.
    #[must_use]
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        request_headers: &HeaderMap,
        times: ExchangeTimes,
        heuristic: Option<&Heuristic>,
    ) -> Self {
        let directives = ResponseDirectives::from_headers(&headers);
        let lifetime = freshness::freshness_lifetime(
            status,
            &directives,
            &headers,
            times.response_time,
            heuristic,
        );
        let corrected_initial_age =
            freshness::corrected_initial_age(&headers, times.request_time, times.response_time);
        let variant = SecondaryKey::new(&headers, request_headers);
        let etag = headers.get(ETAG).cloned();
        let last_modified = freshness::http_date(&headers, LAST_MODIFIED);
        Self {
            status,
            headers,
            body,
            request_time: times.request_time,
            response_time: times.response_time,
            corrected_initial_age,
            lifetime,
            directives,
            variant,
            etag,
            last_modified,
            hits: AtomicU64::new(0),
        }
    }

    /// The stored status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stored header fields (no hop-by-hop fields, no `Content-Length`, no stale `Age`
    /// rewrite: [`crate::respond`] sets those when serving).
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole body.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// When the request that produced it was sent.
    #[must_use]
    pub fn request_time(&self) -> SystemTime {
        self.request_time
    }

    /// When the response arrived (or was last validated).
    #[must_use]
    pub fn response_time(&self) -> SystemTime {
        self.response_time
    }

    /// Its freshness lifetime.
    #[must_use]
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Its `Cache-Control` directives.
    #[must_use]
    pub fn directives(&self) -> &ResponseDirectives {
        &self.directives
    }

    /// The `Vary` key it was stored under.
    #[must_use]
    pub fn variant(&self) -> &SecondaryKey {
        &self.variant
    }

    /// Its `ETag`, if any.
    #[must_use]
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.etag.as_ref()
    }

    /// Its `Last-Modified`, if valid.
    #[must_use]
    pub fn last_modified(&self) -> Option<SystemTime> {
        self.last_modified
    }

    /// Its current age (§4.2.3).
    #[must_use]
    pub fn age(&self, now: SystemTime) -> Duration {
        freshness::current_age(self.corrected_initial_age, self.response_time, now)
    }

    /// What it allows for a request with these directives, now.
    #[must_use]
    pub fn freshness(&self, request: &RequestDirectives, now: SystemTime) -> Freshness {
        freshness::assess(self.lifetime, self.age(now), &self.directives, request)
    }

    /// How many times it was served since it was stored or last validated.
    #[must_use]
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Counts one more hit.
    pub fn record_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Carries the hit count over to the entry replacing this one, so refresh-ahead keeps
    /// seeing a hot object as hot.
    pub(crate) fn inherit_hits(&self, from: &StoredEntry) {
        self.hits.store(from.hits(), Ordering::Relaxed);
    }

    /// Bytes it holds, for the byte bound.
    #[must_use]
    pub fn weight(&self) -> usize {
        let fields: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        self.body.len() + fields + self.variant.weight() + ENTRY_OVERHEAD
    }

    /// How long from now it is worth keeping: until stale, then as long as it may be served
    /// stale, and as long as `keep_validatable` if it can be revalidated (a 304 is cheaper than
    /// a full fetch).
    fn keep_for(&self, now: SystemTime, keep_validatable: Duration) -> Duration {
        let remaining = self.lifetime.saturating_sub(self.age(now));
        let stale_window = self
            .directives
            .stale_while_revalidate
            .unwrap_or_default()
            .max(self.directives.stale_if_error.unwrap_or_default());
        let validatable = if self.etag.is_some() || self.last_modified.is_some() {
            keep_validatable
        } else {
            Duration::ZERO
        };
        remaining.saturating_add(stale_window.max(validatable))
    }
}

/// The variants of one resource, as one moka value.
#[derive(Debug)]
struct Variants {
    entries: Vec<Arc<StoredEntry>>,
    /// Sum of the entries' weights, fixed at creation for the weigher.
    weight: u32,
    /// How long the longest-lived variant is worth keeping, fixed at creation.
    keep_for: Duration,
}

impl Variants {
    fn new(entries: Vec<Arc<StoredEntry>>, now: SystemTime, keep_validatable: Duration) -> Self {
        let weight = entries.iter().map(|e| e.weight()).sum::<usize>();
        let keep_for = entries
            .iter()
            .map(|e| e.keep_for(now, keep_validatable))
            .max()
            .unwrap_or_default();
        Self {
            entries,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            keep_for,
        }
    }
}

/// Sizes of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLimits {
    /// The byte bound of the whole store.
    pub max_bytes: u64,
    /// Variants kept per resource; the oldest goes when a new one would exceed it.
    pub max_variants: usize,
    /// How long a stale entry with a validator is kept for revalidation.
    pub keep_validatable: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_variants: 8,
            keep_validatable: Duration::from_secs(3600),
        }
    }
}

/// Expiry of moka entries: memory reclaim only; serving decisions use [`StoredEntry::freshness`].
struct KeepFor;

impl moka::Expiry<PrimaryKey, Arc<Variants>> for KeepFor {
    fn expire_after_create(
        &self,
        _: &PrimaryKey,
        value: &Arc<Variants>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.keep_for)
    }

    fn expire_after_update(
        &self,
        _: &PrimaryKey,
        value: &Arc<Variants>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep_for)
    }
}

/// The bounded store of one Site.
pub struct Store {
    entries: moka::sync::Cache<PrimaryKey, Arc<Variants>>,
    limits: StoreLimits,
    metrics: SiteMetrics,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("limits", &self.limits)
            .field("resources", &self.entries.entry_count())
            .finish()
    }
}

impl Store {
    /// An empty store within these limits.
    #[must_use]
    pub fn new(limits: StoreLimits, metrics: SiteMetrics) -> Self {
        let listener_metrics = metrics.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(limits.max_bytes)
            .weigher(|_: &PrimaryKey, value: &Arc<Variants>| value.weight)
            .expire_after(KeepFor)
            .eviction_listener(move |_key, value: Arc<Variants>, cause| {
                // Every removal, replacement included, gives its bytes back; only the byte
                // bound's removals (and refused admissions) count as evictions.
                listener_metrics.stored_bytes.sub(i64::from(value.weight));
                if cause == RemovalCause::Size {
                    listener_metrics.evictions.inc();
                }
            })
            .build();
        Self {
            entries,
            limits,
            metrics,
        }
    }

    /// The stored variant this request selects (§4.1), newest first.
    #[must_use]
    pub fn get(&self, key: &PrimaryKey, request_headers: &HeaderMap) -> Option<Arc<StoredEntry>> {
        let variants = self.entries.get(key)?;
        variants
            .entries
            .iter()
            .find(|entry| entry.variant().matches(request_headers))
            .cloned()
    }

    /// Whether any variant of the resource is stored.
    #[must_use]
    pub fn contains(&self, key: &PrimaryKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Stores an entry, replacing the variant with the same `Vary` key; the oldest variant
    /// goes beyond the per-resource bound. An entry larger than the whole store is refused
    /// rather than flushing everything else.
    pub fn insert(&self, key: PrimaryKey, entry: Arc<StoredEntry>, now: SystemTime) {
        if entry.weight() as u64 > self.limits.max_bytes {
            return;
        }
        let max_variants = self.limits.max_variants.max(1);
        let keep = self.limits.keep_validatable;
        let mut added = 0u32;
        self.entries.entry(key).and_upsert_with(|existing| {
            let mut entries = vec![Arc::clone(&entry)];
            if let Some(existing) = existing {
                let others = existing
                    .value()
                    .entries
                    .iter()
                    .filter(|e| e.variant() != entry.variant());
                entries.extend(others.take(max_variants - 1).cloned());
            }
            let variants = Variants::new(entries, now, keep);
            added = variants.weight;
            Arc::new(variants)
        });
        self.metrics.stored_bytes.add(i64::from(added));
    }

    /// Removes every variant of a resource; whether there was one.
    pub fn remove(&self, key: &PrimaryKey) -> bool {
        let removed = self.entries.remove(key).is_some();
        if removed {
            self.metrics.purged.inc();
        }
        removed
    }

    /// Removes every resource whose key starts with `prefix`; how many.
    ///
    /// Walks all keys: a purge is rare and administrative, and a walk costs no index to keep
    /// in step with moka's evictions on the request path.
    pub fn remove_prefix(&self, prefix: &str) -> usize {
        let doomed: Vec<Arc<PrimaryKey>> = self
            .entries
            .iter()
            .filter(|(key, _)| key.as_str().starts_with(prefix))
            .map(|(key, _)| key)
            .collect();
        doomed.iter().filter(|key| self.remove(key)).count()
    }

    /// Removes everything (a Site's cache replaced or retired), giving its bytes back to the
    /// stored-bytes gauge.
    pub fn clear(&self) {
        self.entries.invalidate_all();
        self.entries.run_pending_tasks();
    }

    /// Bytes held, as moka accounts them (settled by [`Store::run_pending_tasks`]).
    #[must_use]
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Resources held (settled by [`Store::run_pending_tasks`]).
    #[must_use]
    pub fn resource_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Lets moka finish its deferred bookkeeping (admission, eviction, counters); tests and
    /// metrics scrapes call it, the request path need not.
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;
    use http::HeaderName;

    fn entry(
        cc: &str,
        body: &'static [u8],
        vary: Option<(&'static str, &'static str)>,
    ) -> Arc<StoredEntry> {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_str(cc).expect("cc"));
        let mut request_headers = HeaderMap::new();
        if let Some((name, value)) = vary {
            headers.insert("vary", HeaderValue::from_static(name));
            request_headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let times = ExchangeTimes {
            request_time: at(0),
            response_time: at(0),
        };
        Arc::new(StoredEntry::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(body),
            &request_headers,
            times,
            None,
        ))
    }

    fn key(path: &str) -> PrimaryKey {
        PrimaryKey::from_uri(&format!("http://h{path}").parse().expect("uri")).expect("key")
    }

    fn store(max_bytes: u64) -> Store {
        let limits = StoreLimits {
            max_bytes,
            ..StoreLimits::default()
        };
        Store::new(limits, SiteMetrics::detached("test").expect("metrics"))
    }

    #[test]
    fn entry_age_and_freshness() {
        let e = entry("max-age=60", b"x", None);
        assert_eq!(e.age(at(10)), Duration::from_secs(10));
        assert!(matches!(
            e.freshness(&RequestDirectives::default(), at(10)),
            Freshness::Fresh { .. }
        ));
        assert!(matches!(
            e.freshness(&RequestDirectives::default(), at(61)),
            Freshness::Stale { .. }
        ));
    }

    #[test]
    fn variants_are_selected_and_replaced() {
        let store = store(1 << 20);
        let gzip = entry("max-age=60", b"gz", Some(("accept-encoding", "gzip")));
        let plain = entry(
            "max-age=60",
            b"plain",
            Some(("accept-encoding", "identity")),
        );
        store.insert(key("/a"), gzip, at(0));
        store.insert(key("/a"), plain, at(0));
        let ask = |value: &'static str| {
            let headers: HeaderMap = [(
                HeaderName::from_static("accept-encoding"),
                HeaderValue::from_static(value),
            )]
            .into_iter()
            .collect();
            store.get(&key("/a"), &headers).map(|e| e.body().clone())
        };
        assert_eq!(ask("gzip").as_deref(), Some(&b"gz"[..]));
        assert_eq!(ask("identity").as_deref(), Some(&b"plain"[..]));
        assert_eq!(ask("br"), None);
        // Same variant again replaces, does not add.
        store.insert(
            key("/a"),
            entry("max-age=60", b"gz2", Some(("accept-encoding", "gzip"))),
            at(0),
        );
        assert_eq!(ask("gzip").as_deref(), Some(&b"gz2"[..]));
        assert_eq!(ask("identity").as_deref(), Some(&b"plain"[..]));
    }

    #[test]
    fn variants_per_resource_are_bounded() {
        let limits = StoreLimits {
            max_variants: 2,
            ..StoreLimits::default()
        };
        let store = Store::new(limits, SiteMetrics::detached("t").expect("metrics"));
        for lang in ["en", "fr", "de"] {
            store.insert(
                key("/a"),
                entry("max-age=60", b"x", Some(("accept-language", lang))),
                at(0),
            );
        }
        let ask = |lang: &'static str| {
            let headers: HeaderMap = [(
                HeaderName::from_static("accept-language"),
                HeaderValue::from_static(lang),
            )]
            .into_iter()
            .collect();
            store.get(&key("/a"), &headers).is_some()
        };
        assert!(!ask("en"), "oldest variant dropped");
        assert!(ask("fr") && ask("de"));
    }

    #[test]
    fn byte_bound_holds_and_stored_bytes_follow() {
        static BODY: [u8; 4096] = [7; 4096];
        let store = store(64 * 1024);
        for i in 0..100 {
            store.insert(
                key(&format!("/{i}")),
                entry("max-age=600", &BODY, None),
                at(0),
            );
        }
        store.run_pending_tasks();
        assert!(
            store.weighted_size() <= 64 * 1024,
            "held {}",
            store.weighted_size()
        );
        assert!(store.resource_count() < 100);
        assert!(store.metrics.evictions.get() > 0);
        assert_eq!(
            store.metrics.stored_bytes.get(),
            i64::try_from(store.weighted_size()).expect("fits")
        );
    }

    #[test]
    fn hot_objects_survive_a_scan_of_cold_ones() {
        static BODY: [u8; 4096] = [1; 4096];
        let store = store(64 * 1024);
        let nothing = HeaderMap::new();
        for i in 0..8 {
            store.insert(
                key(&format!("/hot{i}")),
                entry("max-age=600", &BODY, None),
                at(0),
            );
        }
        for _ in 0..20 {
            for i in 0..8 {
                assert!(store.get(&key(&format!("/hot{i}")), &nothing).is_some());
            }
        }
        store.run_pending_tasks();
        for i in 0..200 {
            store.insert(
                key(&format!("/cold{i}")),
                entry("max-age=600", &BODY, None),
                at(0),
            );
        }
        store.run_pending_tasks();
        let hot_left = (0..8)
            .filter(|i| store.contains(&key(&format!("/hot{i}"))))
            .count();
        assert_eq!(hot_left, 8, "TinyLFU keeps frequently used objects");
    }

    #[test]
    fn an_object_larger_than_the_store_is_refused() {
        static BODY: [u8; 8192] = [0; 8192];
        let store = store(4096);
        store.insert(key("/big"), entry("max-age=60", &BODY, None), at(0));
        assert!(!store.contains(&key("/big")));
    }

    #[test]
    fn remove_and_remove_prefix() {
        let store = store(1 << 20);
        for path in ["/a/1", "/a/2", "/b/1"] {
            store.insert(key(path), entry("max-age=60", b"x", None), at(0));
        }
        assert!(store.remove(&key("/b/1")));
        assert!(!store.remove(&key("/b/1")));
        assert_eq!(store.remove_prefix("http://h/a/"), 2);
        store.run_pending_tasks();
        assert_eq!(store.resource_count(), 0);
        assert_eq!(store.metrics.stored_bytes.get(), 0);
        assert_eq!(store.metrics.purged.get(), 3);
    }

    #[test]
    fn keep_for_covers_stale_windows_and_validators() {
        let keep = Duration::from_secs(100);
        assert_eq!(
            entry("max-age=60", b"", None).keep_for(at(10), keep),
            Duration::from_secs(50)
        );
        assert_eq!(
            entry("max-age=60, stale-if-error=300", b"", None).keep_for(at(10), keep),
            Duration::from_secs(350)
        );
    }
}
