//! A Site's `cache` section as the cache crate runs it, and the Site's cache across reloads.

use std::sync::Arc;

use causeway_api::site::CacheSpec;
use causeway_cache::freshness::Heuristic;
use causeway_cache::metrics::CacheMetrics;
use causeway_cache::refresh_ahead::RefreshAhead;
use causeway_cache::storable::StorePolicy;
use causeway_cache::store::StoreLimits;
use causeway_cache::{Cache, CacheSettings};

/// The cache settings of a Site's `cache` section; `None` when its cache is off.
pub fn from_spec(spec: &CacheSpec) -> Option<CacheSettings> {
    if !spec.enabled {
        return None;
    }
    let default_ttl = spec.default_ttl.get();
    let refresh = &spec.refresh_ahead;
    Some(CacheSettings {
        limits: StoreLimits {
            max_bytes: spec.max_size_bytes,
            ..StoreLimits::default()
        },
        policy: StorePolicy {
            share_set_cookie: spec.share_set_cookie,
            share_authorized: spec.share_authorized,
            heuristic: (!default_ttl.is_zero()).then(|| Heuristic {
                max: default_ttl,
                ..Heuristic::default()
            }),
            max_object_bytes: spec.max_object_bytes,
        },
        refresh_ahead: refresh.enabled.then(|| RefreshAhead {
            min_hits: u64::from(refresh.min_hits),
            before_expiry: f64::from(refresh.window_percent.min(100)) / 100.0,
        }),
        ..CacheSettings::default()
    })
}

/// The cache a (re)started Site runs with: its predecessor's when the settings are the same,
/// so a reload that changes something else keeps what is stored; else a new one (the old
/// one's bytes are given back).
pub fn site_cache(
    spec: &CacheSpec,
    site: &str,
    metrics: &CacheMetrics,
    predecessor: Option<&Arc<Cache>>,
) -> Option<Arc<Cache>> {
    let settings = from_spec(spec);
    if let (Some(old), Some(settings)) = (predecessor, &settings)
        && old.settings() == settings
    {
        return Some(Arc::clone(old));
    }
    if let Some(old) = predecessor {
        old.store().clear();
    }
    settings.map(|settings| Arc::new(Cache::new(settings, metrics.site(site))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_api::duration::Duration;

    #[test]
    fn the_spec_maps_onto_the_cache_settings() {
        assert!(from_spec(&CacheSpec::default()).is_none());
        let spec = CacheSpec {
            enabled: true,
            max_size_bytes: 1 << 20,
            max_object_bytes: 1 << 10,
            ..CacheSpec::default()
        };
        let settings = from_spec(&spec).expect("on");
        assert_eq!(settings.limits.max_bytes, 1 << 20);
        assert_eq!(settings.policy.max_object_bytes, 1 << 10);
        assert!(
            settings.policy.heuristic.is_none(),
            "heuristic only when configured"
        );
        assert!(!settings.policy.share_set_cookie && !settings.policy.share_authorized);
        let ahead = settings.refresh_ahead.expect("refresh-ahead on by default");
        assert_eq!(ahead.min_hits, 10);
        assert!((ahead.before_expiry - 0.1).abs() < 1e-9);

        let heuristic = CacheSpec {
            enabled: true,
            default_ttl: Duration::from_secs(300),
            ..CacheSpec::default()
        };
        let settings = from_spec(&heuristic).expect("on");
        assert_eq!(
            settings.policy.heuristic.map(|h| h.max),
            Some(std::time::Duration::from_secs(300))
        );
    }

    #[test]
    fn a_reload_keeps_the_cache_unless_its_settings_change() {
        let metrics = CacheMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let on = CacheSpec {
            enabled: true,
            ..CacheSpec::default()
        };
        let first = site_cache(&on, "shop", &metrics, None).expect("on");
        let kept = site_cache(&on, "shop", &metrics, Some(&first)).expect("on");
        assert!(Arc::ptr_eq(&first, &kept));
        let bigger = CacheSpec {
            max_size_bytes: on.max_size_bytes * 2,
            ..on.clone()
        };
        let replaced = site_cache(&bigger, "shop", &metrics, Some(&first)).expect("on");
        assert!(!Arc::ptr_eq(&first, &replaced));
        assert!(site_cache(&CacheSpec::default(), "shop", &metrics, Some(&first)).is_none());
    }
}
