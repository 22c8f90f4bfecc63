//! Chooses a node for an unscheduled pod, standing in for kube-scheduler: among the nodes that
//! match the pod's `nodeSelector` and required node affinity, the one with the fewest pods
//! (ties by name), which spreads replicas over the zones.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod};

use super::node::NodeSpec;
use super::node::node_object;

/// Whether this kubelet should schedule `pod`: it has no node yet and asks for the default
/// scheduler (another scheduler's pods are left alone).
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let unscheduled = spec.node_name.as_deref().is_none_or(str::is_empty);
    let scheduler = spec
        .scheduler_name
        .as_deref()
        .unwrap_or("default-scheduler");
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    unscheduled
        && scheduler == "default-scheduler"
        && pod.metadata.deletion_timestamp.is_none()
        && !terminal
}

/// The node for `pod` among `nodes`, given how many pods each node has, or `None` when no
/// node fits.
pub fn pick_node<'a>(
    pod: &Pod,
    nodes: &'a [NodeSpec],
    pods_per_node: &HashMap<String, usize>,
) -> Option<&'a NodeSpec> {
    nodes
        .iter()
        .filter(|node| fits(pod, node))
        .min_by_key(|node| {
            (
                pods_per_node.get(&node.name).copied().unwrap_or(0),
                &node.name,
            )
        })
}

/// Whether `node`'s labels satisfy `pod`'s node selector and required node affinity.
fn fits(pod: &Pod, node: &NodeSpec) -> bool {
    let labels = node_object(node).metadata.labels.unwrap_or_default();
    let Some(spec) = &pod.spec else {
        return false;
    };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    // Terms are ORed; the expressions of one term are ANDed.
    let affinity_ok = required.is_none_or(|selector| {
        selector.node_selector_terms.iter().any(|term| {
            term.match_expressions
                .iter()
                .flatten()
                .all(|requirement| matches(requirement, &labels))
        })
    });
    selector_ok && affinity_ok
}

fn matches(requirement: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(value), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|v| v.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if requirement.operator == "Gt" {
                value > bound
            } else {
                value < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn nodes() -> Vec<NodeSpec> {
        [("a", "eu-1"), ("b", "eu-2"), ("c", "us-1")]
            .iter()
            .enumerate()
            .map(|(i, (name, zone))| NodeSpec {
                name: (*name).to_owned(),
                region: zone[..2].to_owned(),
                zone: (*zone).to_owned(),
                address: Ipv4Addr::new(127, 64, u8::try_from(i + 1).unwrap_or(1), 1),
            })
            .collect()
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn picks_the_least_loaded_node() {
        let nodes = nodes();
        let pod = pod(serde_json::json!({"spec": {"containers": []}}));
        let load = HashMap::from([
            ("a".to_owned(), 2),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1),
        ]);
        assert_eq!(
            pick_node(&pod, &nodes, &load).map(|n| n.name.as_str()),
            Some("b")
        );
    }

    #[test]
    fn honours_selectors_and_affinity() {
        let nodes = nodes();
        let selected = pod(serde_json::json!({"spec": {"containers": [],
            "nodeSelector": {"topology.kubernetes.io/region": "us"}}}));
        assert_eq!(
            pick_node(&selected, &nodes, &HashMap::new()).map(|n| n.name.as_str()),
            Some("c")
        );
        let affine = pod(
            serde_json::json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["eu-1", "us-1"]}
            ]}]}}}}}),
        );
        assert_eq!(
            pick_node(&affine, &nodes, &HashMap::new()).map(|n| n.name.as_str()),
            Some("b")
        );
        let nowhere =
            pod(serde_json::json!({"spec": {"containers": [], "nodeSelector": {"x": "y"}}}));
        assert!(pick_node(&nowhere, &nodes, &HashMap::new()).is_none());
    }

    #[test]
    fn leaves_scheduled_and_foreign_pods_alone() {
        assert!(wants_scheduling(&pod(
            serde_json::json!({"spec": {"containers": []}})
        )));
        assert!(!wants_scheduling(&pod(
            serde_json::json!({"spec": {"containers": [], "nodeName": "a"}})
        )));
        assert!(!wants_scheduling(&pod(
            serde_json::json!({"spec": {"containers": [], "schedulerName": "other"}})
        )));
    }
}
