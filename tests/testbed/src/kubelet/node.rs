//! The Nodes the test kubelet registers: one per [`NodeSpec`], labelled with its region and
//! zone so that topology-aware behaviour can be tested.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// The region label.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// One node of the test kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The Node's name.
    pub name: String,
    /// Its `topology.kubernetes.io/region` label.
    pub region: String,
    /// Its `topology.kubernetes.io/zone` label.
    pub zone: String,
    /// Its InternalIP, a loopback address; its pods get the other addresses of that /24.
    pub address: Ipv4Addr,
}

impl NodeSpec {
    /// Parses `NAME=REGION/ZONE@ADDRESS`, as the test-kubelet binary takes it.
    ///
    /// # Errors
    /// A message saying what is wrong, when `text` has another shape or the address is not
    /// a loopback IPv4 address.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape = || format!("node {text:?}: expected NAME=REGION/ZONE@127.X.Y.1");
        let (name, rest) = text.split_once('=').ok_or_else(shape)?;
        let (topology, address) = rest.split_once('@').ok_or_else(shape)?;
        let (region, zone) = topology.split_once('/').ok_or_else(shape)?;
        let address: Ipv4Addr = address.parse().map_err(|_| shape())?;
        if !address.is_loopback() {
            return Err(format!(
                "node {text:?}: {address} is not a loopback address"
            ));
        }
        if name.is_empty() || region.is_empty() || zone.is_empty() {
            return Err(shape());
        }
        Ok(Self {
            name: name.to_owned(),
            region: region.to_owned(),
            zone: zone.to_owned(),
            address,
        })
    }
}

/// The Node object (metadata and spec) for `spec`.
pub fn node_object(spec: &NodeSpec) -> Node {
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), spec.name.clone()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        (
            "kubernetes.io/arch".to_owned(),
            std::env::consts::ARCH.to_owned(),
        ),
        (REGION_LABEL.to_owned(), spec.region.clone()),
        (ZONE_LABEL.to_owned(), spec.zone.clone()),
        (
            "node.kubernetes.io/instance-type".to_owned(),
            "causeway-testbed".to_owned(),
        ),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

/// The status of a healthy node, heartbeat `now`.
pub fn node_status(spec: &NodeSpec, kubelet_version: &str, now: &Time) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity("16".to_owned())),
        ("memory".to_owned(), Quantity("64Gi".to_owned())),
        ("pods".to_owned(), Quantity("250".to_owned())),
        ("ephemeral-storage".to_owned(), Quantity("100Gi".to_owned())),
    ]);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: spec.address.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: spec.name.clone(),
            },
        ]),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "enough memory",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "enough disk",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "enough PIDs",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "the causeway test kubelet is running",
            ),
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.to_owned(),
            boot_id: String::new(),
            container_runtime_version: "causeway-testbed://0.1.0".to_owned(),
            kernel_version: String::new(),
            kube_proxy_version: String::new(),
            kubelet_version: kubelet_version.to_owned(),
            machine_id: String::new(),
            operating_system: "linux".to_owned(),
            os_image: "causeway test kubelet (pods are local processes)".to_owned(),
            system_uuid: String::new(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_specs() {
        assert_eq!(
            NodeSpec::parse("a=eu/eu-1@127.64.1.1"),
            Ok(NodeSpec {
                name: "a".to_owned(),
                region: "eu".to_owned(),
                zone: "eu-1".to_owned(),
                address: Ipv4Addr::new(127, 64, 1, 1),
            })
        );
        assert!(NodeSpec::parse("a=eu/eu-1@10.0.0.1").is_err());
        assert!(NodeSpec::parse("a=eu@127.0.0.2").is_err());
    }

    #[test]
    fn nodes_carry_topology_labels() {
        let spec = NodeSpec::parse("a=eu/eu-1@127.64.1.1").unwrap_or_else(|e| panic!("{e}"));
        let labels = node_object(&spec).metadata.labels.unwrap_or_default();
        assert_eq!(labels.get(REGION_LABEL).map(String::as_str), Some("eu"));
        assert_eq!(labels.get(ZONE_LABEL).map(String::as_str), Some("eu-1"));
    }
}
