//! The Frontend reconciler: finds the Sites the Frontend serves and their ready back-end pods,
//! makes sure the front-ends' link certificate exists, applies the front-end ConfigMap,
//! Service and Deployment, and writes the status (with the scale subresource's replicas and
//! selector). It runs on every change of the Frontend, of the objects it owns, of the Sites
//! and of the back-end pods in its namespace.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use causeway_api::contract::ConfigDocumentError;
use causeway_api::status::PodRole;
use causeway_api::{Frontend, FrontendSpec, FrontendStatus, Site};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::site::published_hash;
use super::{Context, apply, instrumented};
use crate::desired;
use crate::desired::frontend::{self, FrontendInputs, ServedSite};
use crate::desired::subset::{self, FrontendPosition};
use crate::error::{Error, Result};
use crate::metrics::Controller;
use crate::names::{self, COMPONENT_LABEL, LINK_PORT, SITE_LABEL, Tier};
use crate::qos::{goals, scaling};
use crate::status::{self, FrontendObservation, Rollout};

/// Reconciles one Frontend.
///
/// # Errors
/// When the API fails; the controller retries with backoff.
pub async fn reconcile(frontend: Arc<Frontend>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(
        frontend.clone(),
        ctx.clone(),
        Controller::Frontend,
        apply_frontend(frontend, ctx),
    )
    .await
}

/// The Sites `spec` serves among `sites` (sorted by name), and the named ones that are missing.
pub fn select_sites<'a>(spec: &FrontendSpec, sites: &'a [Site]) -> (Vec<&'a Site>, Vec<String>) {
    let mut served: Vec<&Site> = match &spec.site_selector {
        Some(selector) => match Selector::try_from(selector.clone()) {
            Ok(selector) => sites
                .iter()
                .filter(|site| selector.matches(site.labels()))
                .collect(),
            Err(_) => Vec::new(),
        },
        None => sites
            .iter()
            .filter(|site| spec.sites.iter().any(|name| *name == site.name_any()))
            .collect(),
    };
    served.sort_by_key(|site| site.name_any());
    let missing = spec
        .sites
        .iter()
        .filter(|name| !sites.iter().any(|site| site.name_any() == **name))
        .cloned()
        .collect();
    (served, missing)
}

/// Where the Frontend named `own` stands among the Frontends serving each Site, by Site
/// name: the subset position ([`desired::subset`]) of its front-ends. The Frontends are
/// ordered by name (a stable order any reconcile computes alike); those being deleted are left
/// out, so their share moves to the others, and `own` always counts (a list read a moment
/// before it was created may miss it).
pub fn subset_positions(
    own: &str,
    own_spec: &FrontendSpec,
    frontends: &[Frontend],
    sites: &[Site],
) -> BTreeMap<String, FrontendPosition> {
    let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let others = frontends
        .iter()
        .filter(|f| f.metadata.deletion_timestamp.is_none() && f.name_any() != own)
        .map(|f| (f.name_any(), &f.spec));
    for (name, spec) in others.chain([(own.to_owned(), own_spec)]) {
        for site in select_sites(spec, sites).0 {
            by_site
                .entry(site.name_any())
                .or_default()
                .push(name.clone());
        }
    }
    by_site
        .into_iter()
        .filter_map(|(site, mut names)| {
            names.sort();
            let index = names.iter().position(|name| name == own)?;
            Some((
                site,
                FrontendPosition {
                    index,
                    count: names.len(),
                },
            ))
        })
        .collect()
}

/// The TMP addresses of the ready back-end pods among `pods`, by their Site label value.
pub fn ready_backends(pods: &[Pod]) -> BTreeMap<String, Vec<SocketAddr>> {
    let mut found: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(site) = pod.labels().get(SITE_LABEL) else {
            continue;
        };
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        if let (true, Some(ip)) = (ready, ip) {
            found
                .entry(site.clone())
                .or_default()
                .push(SocketAddr::new(ip, LINK_PORT));
        }
    }
    for addresses in found.values_mut() {
        addresses.sort();
        addresses.dedup();
    }
    found
}

/// Where a Site's back-end Deployment stands, as the front-ends' back-end list cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendRollout {
    /// Every wanted back-end runs the current template and is ready.
    pub settled: bool,
    /// The Deployment is younger than [`FIRST_ROLLOUT_GRACE`]: its first pods may still come.
    pub young: bool,
}

/// How long a new back-end Deployment may take to have all its pods ready before the
/// front-ends start with the ready part of it.
pub const FIRST_ROLLOUT_GRACE: SignedDuration = SignedDuration::from_secs(20);

/// The rollout state of each back-end Deployment among `deployments`, by Site label value.
pub fn backend_rollouts(
    deployments: &[Deployment],
    now: Timestamp,
) -> BTreeMap<String, BackendRollout> {
    deployments
        .iter()
        .filter_map(|deployment| {
            let site = deployment.labels().get(SITE_LABEL)?.clone();
            let desired = deployment.spec.replicas.unwrap_or(1);
            let rollout = Rollout::of(Some(deployment), desired);
            let created = deployment.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let young = created.is_some_and(|c| now.duration_since(c) < FIRST_ROLLOUT_GRACE);
            Some((
                site,
                BackendRollout {
                    settled: rollout.complete && rollout.ready >= desired,
                    young,
                },
            ))
        })
        .collect()
}

/// The back-ends a front-end should list for one Site: `listed` is what it lists now,
/// `ready` the ready back-end pods. The list only grows while the back-ends roll or scale (a
/// back-end that becomes ready is added, one that goes away stays listed — the front-ends'
/// link to it just fails over), and shrinks to the ready set once the rollout settles, so a
/// front-end never loses its last live link in the middle of a roll. A new Site's front-ends wait for its first rollout to settle, up to
/// [`FIRST_ROLLOUT_GRACE`].
pub fn choose_backends(
    listed: &[SocketAddr],
    ready: &[SocketAddr],
    rollout: BackendRollout,
) -> Vec<SocketAddr> {
    if rollout.settled || listed.is_empty() {
        return if !rollout.settled && rollout.young {
            Vec::new()
        } else {
            ready.to_vec()
        };
    }
    let mut union: Vec<SocketAddr> = listed.iter().chain(ready).copied().collect();
    union.sort();
    union.dedup();
    union
}

/// The back-ends a front-end ConfigMap lists now, by Site. One that lists no Site (none had a
/// ready back-end) or predates the configuration document lists none; one the gateways would
/// refuse (edited by hand) is logged and lists none too, so the list starts again from the
/// ready pods, as the operator's next version replaces it anyway.
pub fn listed_backends(map: &ConfigMap) -> BTreeMap<String, Vec<SocketAddr>> {
    match desired::published(map) {
        Ok(Some(config)) => config.backends,
        Ok(None) | Err(ConfigDocumentError::NoSites) => BTreeMap::new(),
        Err(error) => {
            tracing::warn!(
                config_map = map.metadata.name.as_deref().unwrap_or_default(),
                %error,
                "the published front-end configuration does not read back; listing the ready back-ends"
            );
            BTreeMap::new()
        }
    }
}

async fn apply_frontend(frontend: Arc<Frontend>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = frontend.namespace().ok_or(Error::MissingField {
        kind: "Frontend",
        field: "metadata.namespace",
    })?;
    let name = frontend.name_any();
    let owner = frontend
        .controller_owner_ref(&())
        .ok_or(Error::MissingField {
            kind: "Frontend",
            field: "metadata.uid",
        })?;
    let reference = frontend.object_ref(&());
    ctx.ensure_gateway_access(&namespace).await?;

    let sites: Api<Site> = Api::namespaced(ctx.client.clone(), &namespace);
    let all_sites = sites.list(&ListParams::default()).await?.items;
    let (served, missing) = select_sites(&frontend.spec, &all_sites);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let backend_pods = pods
        .list(
            &ListParams::default().labels(&format!("{COMPONENT_LABEL}={}", Tier::Backend.as_str())),
        )
        .await?
        .items;
    let backends = ready_backends(&backend_pods);
    let frontends: Api<Frontend> = Api::namespaced(ctx.client.clone(), &namespace);
    let positions = subset_positions(
        &name,
        &frontend.spec,
        &frontends.list(&ListParams::default()).await?.items,
        &all_sites,
    );
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let rollouts = backend_rollouts(
        &deployments
            .list(
                &ListParams::default()
                    .labels(&format!("{COMPONENT_LABEL}={}", Tier::Backend.as_str())),
            )
            .await?
            .items,
        Timestamp::now(),
    );
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = maps
        .get_opt(&names::workload(&name, Tier::Frontend))
        .await?
        .map(|map| listed_backends(&map))
        .unwrap_or_default();
    let served: Vec<ServedSite> = served
        .into_iter()
        .map(|site| {
            let site_name = site.name_any();
            let label = names::label_value(&site_name);
            let ready = backends.get(&label).cloned().unwrap_or_default();
            // The subset is taken among the ready back-ends, so one that stops being ready is
            // replaced by the next on the ring: the widening the configuration can express.
            let position = positions
                .get(&site_name)
                .copied()
                .unwrap_or(FrontendPosition { index: 0, count: 1 });
            let k = usize::try_from(site.spec.links.subset_size).unwrap_or(usize::MAX);
            let ready = subset::subset(position, &ready, k);
            let was = listed.get(&site_name).cloned().unwrap_or_default();
            let rollout = rollouts.get(&label).copied().unwrap_or_default();
            ServedSite {
                backends: choose_backends(&was, &ready, rollout),
                name: site_name,
                spec: site.spec.clone(),
            }
        })
        .collect();

    let current_status = frontend.status.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let scaling = scale_frontends(&frontend, &served, &current_status, &now);
    let desired = scaling.replicas;
    if let Some(change) = &scaling.change {
        let (reason, action) = if change.to > change.from {
            ("ScaledUp", "AddFrontend")
        } else {
            ("ScaledDown", "RemoveFrontend")
        };
        ctx.metrics.scaled("frontend", change.to > change.from);
        ctx.event(
            &reference,
            EventType::Normal,
            reason,
            action,
            change.reason.clone(),
        )
        .await;
    }
    let mut objects = frontend::objects(&FrontendInputs {
        frontend: &frontend,
        sites: &served,
        owner,
        pod: &ctx.pod,
        link_ca: ctx.authority.ca_pem(),
    })?;
    apply(&ctx.client, &namespace, &objects.config_map).await?;
    apply(&ctx.client, &namespace, &objects.service).await?;
    let workload = names::workload(&name, Tier::Frontend);
    let previous = deployments.get_opt(&workload).await?;
    if let Some(deployment) = objects.deployment.as_mut() {
        // The QoS loop's count, at least the spec's `replicas`.
        deployment.spec.replicas = Some(desired);
    }
    let deployment = match &objects.deployment {
        Some(wanted) => {
            let applied = apply(&ctx.client, &namespace, wanted).await?;
            let before = previous.as_ref().and_then(published_hash);
            if before.as_deref() != Some(objects.config_hash.as_str()) {
                let count: usize = served.iter().map(|s| s.backends.len()).sum();
                let note = match before {
                    None => format!(
                        "created the front-ends ({} pods, {count} back-ends)",
                        frontend.spec.replicas
                    ),
                    Some(_) => format!(
                        "front-end configuration changed ({count} back-ends): published, the front-ends apply it live"
                    ),
                };
                ctx.event(
                    &reference,
                    EventType::Normal,
                    "ConfigurationApplied",
                    "RollOut",
                    note,
                )
                .await;
                if !objects.warnings.is_empty() {
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        "ClientTls",
                        "ConfigureTls",
                        objects.warnings.join("; "),
                    )
                    .await;
                }
            }
            Some(applied)
        }
        None => previous,
    };

    let seen = FrontendObservation {
        desired,
        scaling: Some(scaling.memory.clone()),
        rollout: Rollout::of(deployment.as_ref(), desired),
        sites: served.iter().map(|s| s.name.clone()).collect(),
        missing,
        waiting: served
            .iter()
            .filter(|s| s.backends.is_empty())
            .map(|s| s.name.clone())
            .collect(),
        selector: names::selector_text(&name, Tier::Frontend),
    };
    let current = current_status;
    let wanted = status::frontend_status(&current, frontend.metadata.generation, &seen, &now);
    let frontends: Api<Frontend> = Api::namespaced(ctx.client.clone(), &namespace);
    status::write_frontend(&frontends, &name, &current, &wanted).await?;

    Ok(
        if !seen.waiting.is_empty()
            || !seen.rollout.complete
            || seen.rollout.ready < desired
            || frontend.spec.max_replicas.is_some()
        {
            Action::requeue(Duration::from_secs(10))
        } else {
            Action::requeue(Duration::from_secs(300))
        },
    )
}

/// Decides the front-end count: `spec.replicas` (set by `kubectl scale` or an autoscaler on
/// the scale subresource) is the floor, `spec.maxReplicas` the ceiling; between them the QoS
/// loop adds front-ends while the served Sites' link goals are missed on these pods, and
/// gives them back once met.
fn scale_frontends(
    frontend: &Frontend,
    served: &[ServedSite],
    status: &FrontendStatus,
    now: &Time,
) -> scaling::Decision {
    let floor = frontend.spec.replicas;
    let ceiling = frontend.spec.max_replicas.unwrap_or(floor).max(floor);
    let current = status.desired_replicas.unwrap_or(floor);
    let goals = goals::frontend_goals(served.iter().map(|site| &site.spec.qos));
    let verdict = goals::for_tier(&goals::assess(&goals, &status.qos), PodRole::Frontend);
    let policy = scaling::Policy {
        min: floor,
        max: ceiling,
        window: goals.scale_up_window(),
        cool_down: goals.cool_down(),
    };
    let memory = status.scaling.clone().unwrap_or_default();
    scaling::decide(&verdict, current, policy, &memory, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_api::contract::GatewayConfig;
    use serde_json::json;

    fn site(name: &str, tier: &str) -> Site {
        serde_json::from_value(json!({
            "apiVersion": "causeway.dev/v1alpha1", "kind": "Site",
            "metadata": {"name": name, "namespace": "web", "labels": {"tier": tier}},
            "spec": {"hostnames": ["a.example"], "origins": [{"name": "o", "url": "http://192.0.2.1:80"}]},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn spec(value: serde_json::Value) -> FrontendSpec {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn selects_sites_by_name_or_label() {
        let sites = [site("b", "gold"), site("a", "gold"), site("c", "bronze")];
        let (served, missing) =
            select_sites(&spec(json!({"region": "eu", "sites": ["c", "zz"]})), &sites);
        assert_eq!(
            served.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(missing, ["zz"]);
        let by_label =
            spec(json!({"region": "eu", "siteSelector": {"matchLabels": {"tier": "gold"}}}));
        let (served, missing) = select_sites(&by_label, &sites);
        assert_eq!(
            served.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(missing.is_empty());
    }

    fn named_frontend(name: &str, sites: &[&str], deleting: bool) -> Frontend {
        let mut value = json!({
            "apiVersion": "causeway.dev/v1alpha1", "kind": "Frontend",
            "metadata": {"name": name, "namespace": "web"},
            "spec": {"region": "eu", "sites": sites},
        });
        if deleting {
            value["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_frontend_counts_among_the_live_frontends_serving_each_site() {
        let sites = [site("a", "gold"), site("b", "gold")];
        let frontends = [
            named_frontend("zeta", &["a", "b"], false),
            named_frontend("alpha", &["a"], false),
            named_frontend("gone", &["a", "b"], true),
        ];
        let own = named_frontend("mid", &["a", "b"], false);
        // "mid" is not in the list yet (read before it was created): it counts all the same.
        let positions = subset_positions("mid", &own.spec, &frontends, &sites);
        assert_eq!(
            positions,
            BTreeMap::from([
                ("a".to_owned(), FrontendPosition { index: 1, count: 3 }),
                ("b".to_owned(), FrontendPosition { index: 0, count: 2 }),
            ])
        );
    }

    fn pod(site: &str, ip: &str, ready: bool, deleting: bool) -> Pod {
        let mut value = json!({
            "metadata": {"name": format!("{site}-{ip}"), "labels": {SITE_LABEL: site}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if deleting {
            value["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn addresses(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().filter_map(|a| a.parse().ok()).collect()
    }

    #[test]
    fn the_backend_list_grows_during_a_rollout_and_shrinks_once_settled() {
        let (a, b, c) = ("127.0.0.1:4433", "127.0.0.2:4433", "127.0.0.3:4433");
        let rolling = BackendRollout {
            settled: false,
            young: false,
        };
        let settled = BackendRollout {
            settled: true,
            young: false,
        };
        // Mid-roll: a new ready back-end is added, a gone one stays.
        assert_eq!(
            choose_backends(&addresses(&[a, b]), &addresses(&[b, c]), rolling),
            addresses(&[a, b, c])
        );
        // Nothing new: the list, and so the pods, stay as they are.
        assert_eq!(
            choose_backends(&addresses(&[a, b]), &addresses(&[b]), rolling),
            addresses(&[a, b])
        );
        // Settled: exactly the ready set.
        assert_eq!(
            choose_backends(&addresses(&[a, b]), &addresses(&[b, c]), settled),
            addresses(&[b, c])
        );
        // A new Site: wait for its first rollout, unless it takes too long.
        let young = BackendRollout {
            settled: false,
            young: true,
        };
        assert!(choose_backends(&[], &addresses(&[a]), young).is_empty());
        assert_eq!(
            choose_backends(&[], &addresses(&[a]), rolling),
            addresses(&[a])
        );
    }

    fn config_map(text: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([(
                causeway_api::contract::CONFIG_KEY.to_owned(),
                text.to_owned(),
            )])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn listed_backends_read_back() -> Result<(), ConfigDocumentError> {
        let published = GatewayConfig {
            sites: vec![site("shop", "gold"), site("blog", "gold")],
            backends: BTreeMap::from([
                (
                    "shop".to_owned(),
                    addresses(&["127.0.0.2:4433", "127.0.0.1:4433"]),
                ),
                ("blog".to_owned(), addresses(&["127.0.0.3:4433"])),
            ]),
            link_ca: Some("ca".to_owned()),
        };
        let parsed = listed_backends(&config_map(&published.to_yaml()?));
        assert_eq!(parsed["shop"].len(), 2);
        assert_eq!(parsed["blog"], addresses(&["127.0.0.3:4433"]));
        // Nothing published yet, nothing served yet, or a document edited out of shape:
        // nothing is listed, and the ready back-ends are taken as they are.
        assert!(listed_backends(&ConfigMap::default()).is_empty());
        let nothing_served = GatewayConfig {
            link_ca: Some("ca".to_owned()),
            ..GatewayConfig::default()
        };
        assert!(listed_backends(&config_map(&nothing_served.to_yaml()?)).is_empty());
        assert!(listed_backends(&config_map("version: 1\nsites: [bad")).is_empty());
        Ok(())
    }

    #[test]
    fn only_ready_live_backends_are_listed() {
        let pods = [
            pod("shop", "127.64.1.9", true, false),
            pod("shop", "127.64.1.3", true, false),
            pod("shop", "127.64.1.4", false, false),
            pod("shop", "127.64.1.5", true, true),
            pod("blog", "127.64.2.1", true, false),
        ];
        let found = ready_backends(&pods);
        let addresses = |site: &str| -> Vec<String> {
            found
                .get(site)
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(addresses("shop"), ["127.64.1.3:4433", "127.64.1.9:4433"]);
        assert_eq!(addresses("blog"), ["127.64.2.1:4433"]);
    }
}
