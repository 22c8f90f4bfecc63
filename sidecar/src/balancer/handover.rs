//! What a reload's new balancer takes over from the old one: which old origin is which new
//! one, and which old request type is which new one. Pure functions of the two
//! configurations; [`super::Balancer::succeed`] applies them under the old balancer's lock.
//!
//! An origin is the same origin only when both its name and its address are unchanged: a
//! name pointed at another server is a new origin, and nothing measured about the old server
//! (latency, health, requests in flight) says anything about the new one.

use super::{OriginInfo, OriginSet};
use crate::classify::RequestProfile;

/// How the old balancer's indexes read in its successor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexMap {
    /// New index of each old origin; `None` for origins the reload removed.
    pub origins: Vec<Option<usize>>,
    /// New index of each old request type; a type the reload removed becomes the new
    /// default type, as a request of an unknown type would be classified.
    pub types: Vec<usize>,
}

impl IndexMap {
    /// Matches `new` origins to `old` ones by name and address, and old request type names to
    /// new ones, `default_type` standing for types that are gone.
    pub fn new(
        old: &[OriginInfo],
        new: &[OriginInfo],
        old_types: &[String],
        new_types: &[String],
        default_type: usize,
    ) -> Self {
        Self {
            origins: old
                .iter()
                .map(|o| {
                    new.iter()
                        .position(|n| n.name == o.name && n.authority == o.authority)
                })
                .collect(),
            types: old_types
                .iter()
                .map(|t| {
                    new_types
                        .iter()
                        .position(|n| n == t)
                        .unwrap_or(default_type)
                })
                .collect(),
        }
    }

    /// The successor's index of an old origin.
    pub fn origin(&self, old: usize) -> Option<usize> {
        self.origins.get(old).copied().flatten()
    }

    /// An old set of origins in the successor's indexes; removed origins drop out.
    pub fn set(&self, old: OriginSet) -> OriginSet {
        let mut new = OriginSet::default();
        for (i, mapped) in self.origins.iter().enumerate() {
            if let Some(j) = mapped
                && old.contains(i)
            {
                new.insert(*j);
            }
        }
        new
    }

    /// A request's profile in the successor's request types (class and cost are the
    /// request's own and stay).
    pub fn profile(&self, old: RequestProfile) -> RequestProfile {
        RequestProfile {
            request_type: self.types.get(old.request_type).copied().unwrap_or(0),
            ..old
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(name: &str, authority: &'static str) -> OriginInfo {
        OriginInfo {
            name: name.to_owned(),
            authority: http::uri::Authority::from_static(authority),
            max_in_flight: 1,
            primary: false,
            weight: 1,
            latency_goal: None,
            serves: u64::MAX,
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn origins_match_by_name_and_address_only() {
        let old = [
            origin("a", "10.0.0.1:80"),
            origin("b", "10.0.0.2:80"),
            origin("c", "10.0.0.3:80"),
        ];
        let new = [
            origin("c", "10.0.0.3:80"),
            origin("b", "10.0.0.9:80"),
            origin("d", "10.0.0.4:80"),
        ];
        let map = IndexMap::new(&old, &new, &[], &[], 0);
        assert_eq!(map.origins, [None, None, Some(0)], "b moved: a new origin");
        let mut tried = OriginSet::default();
        tried.insert(0);
        tried.insert(2);
        let mut expected = OriginSet::default();
        expected.insert(0);
        assert_eq!(map.set(tried), expected);
    }

    #[test]
    fn types_match_by_name_and_removed_ones_become_the_default() {
        let map = IndexMap::new(
            &[],
            &[],
            &names(&["api", "media", "static"]),
            &names(&["default", "media", "static"]),
            0,
        );
        assert_eq!(map.types, [0, 1, 2]);
        let profile = RequestProfile {
            class: 3,
            request_type: 2,
            cost: 7,
        };
        assert_eq!(
            map.profile(profile),
            RequestProfile {
                request_type: 2,
                ..profile
            }
        );
    }
}
