//! The cache's Prometheus families, labelled by Site only (bounded), and their per-Site
//! handles.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The families every Site's cache reports into, registered once per process.
#[derive(Clone)]
pub struct CacheMetrics {
    hits: IntCounterVec,
    misses: IntCounterVec,
    stale_served: IntCounterVec,
    revalidations: IntCounterVec,
    collapsed: IntCounterVec,
    evictions: IntCounterVec,
    purged: IntCounterVec,
    stored_bytes: IntGaugeVec,
}

/// Revalidation outcomes, the `result` label of `causeway_cache_revalidations_total`.
const REVALIDATION_RESULTS: [&str; 3] = ["not_modified", "modified", "failed"];

impl CacheMetrics {
    /// Creates the `causeway_cache_*` families and registers them.
    ///
    /// # Errors
    /// A family of the same name is already registered.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered()?;
        for family in [
            &metrics.hits,
            &metrics.misses,
            &metrics.stale_served,
            &metrics.revalidations,
            &metrics.collapsed,
            &metrics.evictions,
            &metrics.purged,
        ] {
            registry.register(Box::new(family.clone()))?;
        }
        registry.register(Box::new(metrics.stored_bytes.clone()))?;
        Ok(metrics)
    }

    /// The families, registered nowhere.
    fn unregistered() -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        Ok(Self {
            hits: counter(
                "causeway_cache_hits_total",
                "Requests answered from a fresh stored response.",
                &["site"],
            )?,
            misses: counter(
                "causeway_cache_misses_total",
                "Requests with no usable stored response.",
                &["site"],
            )?,
            stale_served: counter(
                "causeway_cache_stale_served_total",
                "Stale responses served (stale-while-revalidate, stale-if-error, max-stale).",
                &["site"],
            )?,
            revalidations: counter(
                "causeway_cache_revalidations_total",
                "Conditional requests sent upstream to validate a stored response, by result.",
                &["site", "result"],
            )?,
            collapsed: counter(
                "causeway_cache_collapsed_requests_total",
                "Requests that waited for another request's upstream fetch instead of making their own.",
                &["site"],
            )?,
            evictions: counter(
                "causeway_cache_evictions_total",
                "Stored responses evicted to keep the cache within its byte limit.",
                &["site"],
            )?,
            purged: counter(
                "causeway_cache_purged_total",
                "Stored responses removed by purges and invalidations.",
                &["site"],
            )?,
            stored_bytes: IntGaugeVec::new(
                Opts::new(
                    "causeway_cache_stored_bytes",
                    "Bytes held by the cache (bodies, headers and keys).",
                ),
                &["site"],
            )?,
        })
    }

    /// The handles of one Site.
    #[must_use]
    pub fn site(&self, site: &str) -> SiteMetrics {
        let result = |r: &str| self.revalidations.with_label_values(&[site, r]);
        SiteMetrics {
            hits: self.hits.with_label_values(&[site]),
            misses: self.misses.with_label_values(&[site]),
            stale_served: self.stale_served.with_label_values(&[site]),
            not_modified: result(REVALIDATION_RESULTS[0]),
            modified: result(REVALIDATION_RESULTS[1]),
            revalidation_failed: result(REVALIDATION_RESULTS[2]),
            collapsed: self.collapsed.with_label_values(&[site]),
            evictions: self.evictions.with_label_values(&[site]),
            purged: self.purged.with_label_values(&[site]),
            stored_bytes: self.stored_bytes.with_label_values(&[site]),
        }
    }

    /// Drops a retired Site's series so the label set stays bounded across reloads.
    pub fn remove_site(&self, site: &str) {
        for family in [
            &self.hits,
            &self.misses,
            &self.stale_served,
            &self.collapsed,
            &self.evictions,
            &self.purged,
        ] {
            // Absent series are fine: the Site may never have been served.
            let _ = family.remove_label_values(&[site]);
        }
        for result in REVALIDATION_RESULTS {
            let _ = self.revalidations.remove_label_values(&[site, result]);
        }
        let _ = self.stored_bytes.remove_label_values(&[site]);
    }
}

/// One Site's metric handles; cheap to clone.
#[derive(Clone, Debug)]
pub struct SiteMetrics {
    pub(crate) hits: IntCounter,
    pub(crate) misses: IntCounter,
    pub(crate) stale_served: IntCounter,
    pub(crate) not_modified: IntCounter,
    pub(crate) modified: IntCounter,
    pub(crate) revalidation_failed: IntCounter,
    pub(crate) collapsed: IntCounter,
    pub(crate) evictions: IntCounter,
    pub(crate) purged: IntCounter,
    pub(crate) stored_bytes: IntGauge,
}

impl SiteMetrics {
    /// Handles registered nowhere, for a cache whose metrics nobody scrapes (and tests).
    ///
    /// # Errors
    /// Only if the families' static definitions were invalid.
    pub fn detached(site: &str) -> Result<Self, prometheus::Error> {
        CacheMetrics::unregistered().map(|metrics| metrics.site(site))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_by_convention_and_removable() {
        let registry = Registry::new();
        let metrics = CacheMetrics::register(&registry).expect("register");
        let site = metrics.site("shop");
        site.hits.inc();
        site.stored_bytes.set(42);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.contains(&"causeway_cache_hits_total".to_owned()));
        assert!(names.contains(&"causeway_cache_stored_bytes".to_owned()));
        assert!(names.iter().all(|n| n.starts_with("causeway_cache_")));
        metrics.remove_site("shop");
        let series: usize = registry.gather().iter().map(|f| f.get_metric().len()).sum();
        assert_eq!(series, 0);
        assert!(
            CacheMetrics::register(&registry).is_err(),
            "double registration is refused"
        );
    }
}
