//! The `Frontend` resource: a pool of front-end gateways in one region that serve some Sites
//! to the clients nearest to them.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::{self, LABEL_PATTERN, OBJECT_NAME_PATTERN};
use crate::site::PRIORITY_CLASSES;
use crate::status::FrontendStatus;

/// Most Sites one Frontend may name.
pub const MAX_SITES: usize = 256;

/// Most client subnets one Frontend may list.
pub const MAX_CLIENT_SUBNETS: usize = 256;

/// The longest CIDR text: a full IPv6 address and `/128`.
pub const MAX_CIDR_LENGTH: usize = 43;

/// A pool of front-end gateways in one region.
// Each printcolumn(...) repeats the keys name, type_ and json_path, which clippy takes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "causeway.dev",
    version = "v1alpha1",
    kind = "Frontend",
    namespaced,
    shortname = "cwf",
    category = "causeway",
    status = "FrontendStatus",
    doc = "A pool of Causeway front-end gateways in one region: it takes the connections of nearby clients for some Sites and carries them over TMP links to the Sites' back-ends.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Region",
        type_ = "string",
        json_path = ".spec.region",
        description = "The region the front-ends run in"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Front-end pods ready to serve"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Front-end pods wanted"
    ),
    printcolumn(
        name = "Sites",
        type_ = "string",
        json_path = ".status.sites",
        description = "The Sites served"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = rules::SITES_OR_SELECTOR)]
pub struct FrontendSpec {
    /// The region the front-ends run in: their pods are placed on nodes labelled
    /// `topology.kubernetes.io/region` with this value.
    #[schemars(pattern(LABEL_PATTERN), length(min = 1, max = 63))]
    pub region: String,
    /// Front-end pods to run; `kubectl scale frontend/NAME --replicas=N` sets it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Most front-end pods the operator may run when the QoS goals of the Sites served are
    /// missed on the client side (TMP link loss or round-trip time); `replicas` is the floor.
    /// Absent: the QoS loop does not add front-ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    /// The Sites served, by name, in this Frontend's namespace. Exactly one of `sites` and
    /// `siteSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_SITES),
        inner(pattern(OBJECT_NAME_PATTERN), length(min = 1, max = 253))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub sites: Vec<String>,
    /// The Sites served, by label, in this Frontend's namespace. Exactly one of `sites` and
    /// `siteSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_selector: Option<LabelSelector>,
    /// The client networks these front-ends are nearest to, as CIDRs (`203.0.113.0/24`,
    /// `2001:db8::/32`). The DNS redirector answers clients in them with this Frontend first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_CLIENT_SUBNETS),
        inner(length(min = 1, max = MAX_CIDR_LENGTH))
    )]
    #[x_kube(validation = rules::CLIENT_SUBNETS)]
    pub client_subnets: Vec<String>,
    /// How a busy TMP link shares its bytes among the priority classes.
    #[serde(default)]
    pub blender: BlenderSpec,
    /// The Service that exposes the front-ends to clients.
    #[serde(default)]
    pub service: FrontendServiceSpec,
    /// CPU and memory for each front-end pod's gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_replicas() -> i32 {
    2
}

/// The blender: when a TMP link is busy, the bytes of its channels leave in proportion to
/// their classes' weights, round-robin inside a class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlenderSpec {
    /// One weight per priority class, from class 0 (most urgent) to class 4.
    #[serde(default = "default_weights")]
    #[schemars(length(max = 5))]
    #[x_kube(
        validation = rules::BLENDER_WEIGHT_COUNT,
        validation = rules::BLENDER_WEIGHTS_POSITIVE,
        merge_strategy = ListMerge::Atomic
    )]
    pub weights: Vec<u32>,
    /// The largest piece of one channel sent before the blender moves to the next channel,
    /// in bytes (1 KiB to 1 MiB).
    #[serde(default = "default_sub_packet_bytes")]
    #[schemars(range(min = 1024, max = 1_048_576))]
    pub sub_packet_bytes: u32,
}

/// The default class weights, 16:8:4:2:1.
pub const DEFAULT_WEIGHTS: [u32; PRIORITY_CLASSES as usize] = [16, 8, 4, 2, 1];

fn default_weights() -> Vec<u32> {
    DEFAULT_WEIGHTS.to_vec()
}

fn default_sub_packet_bytes() -> u32 {
    16 * 1024
}

impl Default for BlenderSpec {
    fn default() -> Self {
        Self {
            weights: default_weights(),
            sub_packet_bytes: default_sub_packet_bytes(),
        }
    }
}

/// How the front-ends' Service is exposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also on an external load balancer's address.
    #[default]
    LoadBalancer,
}

/// The Service in front of the front-end pods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = rules::DISTINCT_SERVICE_PORTS)]
pub struct FrontendServiceSpec {
    /// The Service type.
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
    /// The port clients use for HTTP.
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1))]
    pub http_port: u16,
    /// The port clients use for HTTPS, for Sites that have `tls`; absent means the front-ends
    /// take no HTTPS connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub https_port: Option<u16>,
}

fn default_http_port() -> u16 {
    80
}

impl Default for FrontendServiceSpec {
    fn default() -> Self {
        Self {
            service_type: ServiceType::default(),
            http_port: default_http_port(),
            https_port: None,
        }
    }
}
