//! When the set of Frontends serving Sites changes: a Frontend's link subsets depend on its
//! rank among the Frontends serving each Site ([`crate::desired::subset`]), so one Frontend
//! created, deleted or re-pointed at other Sites changes the others' subsets too.

use std::collections::HashMap;

use causeway_api::Frontend;
use kube::ResourceExt;
use kube::runtime::watcher::Event;

/// What of a Frontend decides the subsets of the others: its key (namespace and name), and
/// the Sites it selects, as text.
#[derive(Debug, Default)]
pub struct Membership {
    seen: HashMap<(String, String), String>,
}

impl Membership {
    /// Records `event` and tells whether it changes which Frontends serve which Sites: a new
    /// Frontend, one gone, or one whose `sites` or `siteSelector` changed. Replicas, status
    /// and the first listing (`Init*`: nothing changed, the controller reconciles each anyway)
    /// do not count, so status writes cause no reconcile of every Frontend.
    pub fn changed(&mut self, event: &Event<Frontend>) -> bool {
        match event {
            Event::Init => {
                self.seen.clear();
                false
            }
            Event::InitApply(frontend) => {
                self.seen.insert(key(frontend), selects(frontend));
                false
            }
            Event::InitDone => false,
            Event::Apply(frontend) => {
                let selects = selects(frontend);
                self.seen.insert(key(frontend), selects.clone()) != Some(selects)
            }
            Event::Delete(frontend) => {
                self.seen.remove(&key(frontend));
                true
            }
        }
    }
}

fn key(frontend: &Frontend) -> (String, String) {
    (
        frontend.namespace().unwrap_or_default(),
        frontend.name_any(),
    )
}

/// The Sites a Frontend selects, as comparable text; a Frontend being deleted selects none
/// (the reconciler leaves it out of the ranks already).
fn selects(frontend: &Frontend) -> String {
    if frontend.metadata.deletion_timestamp.is_some() {
        return String::new();
    }
    let spec = &frontend.spec;
    serde_json::to_string(&(&spec.sites, &spec.site_selector)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn frontend(name: &str, sites: &[&str], replicas: i32) -> Frontend {
        serde_json::from_value(json!({
            "apiVersion": "causeway.dev/v1alpha1", "kind": "Frontend",
            "metadata": {"name": name, "namespace": "web"},
            "spec": {"region": "eu", "sites": sites, "replicas": replicas},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_membership_changes_count() {
        let mut m = Membership::default();
        assert!(!m.changed(&Event::Init));
        assert!(!m.changed(&Event::InitApply(frontend("a", &["shop"], 2))));
        assert!(!m.changed(&Event::InitDone));
        // The same Frontend again (a status write, more replicas): nothing for the others.
        assert!(!m.changed(&Event::Apply(frontend("a", &["shop"], 2))));
        assert!(!m.changed(&Event::Apply(frontend("a", &["shop"], 5))));
        assert!(m.changed(&Event::Apply(frontend("a", &["shop", "blog"], 5))));
        assert!(m.changed(&Event::Apply(frontend("b", &["shop"], 1))));
        assert!(m.changed(&Event::Delete(frontend("b", &["shop"], 1))));
        let mut deleting = frontend("a", &["shop", "blog"], 5);
        deleting.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-01-01T00:00:00Z")).ok();
        assert!(m.changed(&Event::Apply(deleting)));
    }
}
