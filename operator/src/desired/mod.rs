//! The objects the operator wants, computed by pure functions of plain data: a Site and its
//! resolved origins give the back-end ConfigMap, Service and Deployment; a Frontend, the Sites
//! it serves and their ready back-ends give the front-end ConfigMap, Service and Deployment.
//! Nothing here talks to the API server, so every rule is unit-tested.
//!
//! Configuration reaches the pods through the API: each gateway watches its own ConfigMap
//! (`--config-map`) and applies a new version live, without dropping a connection. The
//! ConfigMap holds one key, [`CONFIG_KEY`], the typed gateway configuration document
//! ([`GatewayConfig`]: the Sites, a front-end's back-ends, the TMP link CA); each pod gets its
//! own link certificate through a CertificateSigningRequest. What a gateway reads only at start (the CA, the client TLS
//! Secret) is hashed into the pod template, so a change there rolls the pods, new before old
//! (`maxUnavailable: 0`).

pub mod backend;
pub mod frontend;
pub mod site_file;
pub mod subset;

use std::collections::BTreeMap;

use causeway_api::contract::{CONFIG_KEY, ConfigDocumentError, GatewayConfig};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecurityContext,
    ServiceAccount, ServicePort, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::error::{Error, Result};
use crate::names::{self, GATEWAY_CONFIG_ROLE, RESTART_HASH_ANNOTATION};

/// What every gateway pod needs besides its own spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSettings {
    /// The container image holding the `causeway` binary.
    pub image: String,
    /// The ServiceAccount gateway pods run as.
    pub service_account: String,
    /// The ClusterRole letting gateways ask for link certificates.
    pub csr_cluster_role: String,
}

/// Metadata of an object the operator makes in `namespace`, owned by `owner`.
pub fn meta(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The ServiceAccount gateway pods run as, in `namespace`. It has no owner: every Site and
/// Frontend of the namespace shares it. Its token lets a gateway read ConfigMaps of its
/// namespace ([`config_role`]) and nothing else.
pub fn service_account(name: &str, namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: gateway_meta(name.to_owned(), Some(namespace)),
        ..ServiceAccount::default()
    }
}

/// Metadata of the objects the operator makes for every gateway of a namespace (shared, so
/// without an owner): the name, the namespace for namespaced ones, the operator's labels.
fn gateway_meta(name: String, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([
            (
                crate::names::MANAGED_BY_LABEL.to_owned(),
                crate::names::FIELD_MANAGER.to_owned(),
            ),
            (
                "app.kubernetes.io/name".to_owned(),
                crate::names::APP_NAME.to_owned(),
            ),
        ])),
        ..ObjectMeta::default()
    }
}

/// The Role letting gateways of `namespace` read (get, list, watch) its ConfigMaps: each
/// gateway watches its own. ConfigMaps the operator writes hold Site files and back-end
/// addresses, no secrets; Secrets stay out of reach.
pub fn config_role(namespace: &str) -> Role {
    Role {
        metadata: gateway_meta(GATEWAY_CONFIG_ROLE.to_owned(), Some(namespace)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
            ..PolicyRule::default()
        }]),
    }
}

/// A reference to the RBAC role `name` of `kind` (`Role` or `ClusterRole`).
fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

/// The gateways' ServiceAccount `account` in `namespace`, as a binding's only subject.
fn gateway_subjects(account: &str, namespace: &str) -> Option<Vec<Subject>> {
    Some(vec![Subject {
        kind: "ServiceAccount".to_owned(),
        name: account.to_owned(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    }])
}

/// Binds the ClusterRole `cluster_role` (create and read CertificateSigningRequests, which
/// are cluster-scoped) to the gateways' ServiceAccount `account` in `namespace`, so its pods
/// can ask for their link certificates. Only the operator's signer acts on those requests,
/// and only for gateway pods.
pub fn csr_role_binding(cluster_role: &str, account: &str, namespace: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: gateway_meta(format!("{cluster_role}:{namespace}"), None),
        role_ref: role_ref("ClusterRole", cluster_role),
        subjects: gateway_subjects(account, namespace),
    }
}

/// Binds [`config_role`] to the gateways' ServiceAccount `account` in `namespace`.
pub fn config_role_binding(account: &str, namespace: &str) -> RoleBinding {
    RoleBinding {
        metadata: gateway_meta(GATEWAY_CONFIG_ROLE.to_owned(), Some(namespace)),
        role_ref: role_ref("Role", GATEWAY_CONFIG_ROLE),
        subjects: gateway_subjects(account, namespace),
    }
}

/// The data of a gateway ConfigMap: `config` as its one document.
///
/// # Errors
/// [`Error::Render`] when the document cannot be written.
fn config_data(config: &GatewayConfig) -> Result<BTreeMap<String, String>> {
    let text = config.to_yaml().map_err(|e| Error::Render {
        what: "the gateway configuration".to_owned(),
        reason: e.to_string(),
    })?;
    Ok(BTreeMap::from([(CONFIG_KEY.to_owned(), text)]))
}

/// The hash of a ConfigMap's data, every key and value framed.
fn data_hash(data: &BTreeMap<String, String>) -> String {
    names::content_hash(data.iter().flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]))
}

/// The configuration document a gateway ConfigMap carries, read as the gateways read it;
/// `None` when it has none (a ConfigMap written before the document existed).
///
/// # Errors
/// [`ConfigDocumentError`] when the document is refused, also for a front-end's that lists no
/// Site yet ([`ConfigDocumentError::NoSites`]).
pub fn published(map: &ConfigMap) -> Result<Option<GatewayConfig>, ConfigDocumentError> {
    map.data
        .as_ref()
        .and_then(|data| data.get(CONFIG_KEY))
        .map(|text| GatewayConfig::from_yaml(text))
        .transpose()
}

/// The pod security settings of every gateway: not root, nothing to escalate, read-only root.
fn security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// The environment every gateway container gets: its pod IP, name and namespace (the
/// downward API).
fn pod_env() -> Vec<EnvVar> {
    let from_field = |name: &str, field_path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    vec![
        from_field("POD_IP", "status.podIP"),
        from_field("POD_NAME", "metadata.name"),
        from_field("POD_NAMESPACE", "metadata.namespace"),
        EnvVar {
            name: "CAUSEWAY_LOG_FORMAT".to_owned(),
            value: Some("json".to_owned()),
            ..EnvVar::default()
        },
    ]
}

/// A named container port.
fn container_port(name: &str, port: u16, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some(protocol.to_owned()),
        ..ContainerPort::default()
    }
}

/// A named Service port sending to `target` in the pods.
fn service_port(name: &str, protocol: &str, port: u16, target: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        protocol: Some(protocol.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(target))),
        ..ServicePort::default()
    }
}

/// A probe of `path` on the container's `admin` port every `period_seconds`; three misses
/// count as a failure.
fn admin_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// What a back-end and a front-end gateway Deployment differ in; [`gateway_deployment`]
/// builds the rest the same way for both tiers.
struct GatewayDeployment<'a> {
    /// The workload's name (Deployment, ConfigMap and Service share it).
    name: &'a str,
    namespace: &'a str,
    /// The pods' labels; `selector` is the part of them that picks the pods.
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    owner: &'a OwnerReference,
    pod: &'a PodSettings,
    /// The tier's name: the container's name and the first argument of `causeway`.
    tier: &'static str,
    args: Vec<String>,
    ports: Vec<ContainerPort>,
    admin_port: u16,
    replicas: i32,
    /// The hash of the published configuration, on the Deployment (not the pods: a new
    /// configuration is reloaded, not rolled).
    config_hash: &'a str,
    /// The hash of what the pods cannot reload (the link CA): a new one rolls them.
    restart_hash: String,
    min_ready_seconds: Option<i32>,
    node_selector: Option<BTreeMap<String, String>>,
    volumes: Option<Vec<Volume>>,
    mounts: Option<Vec<VolumeMount>>,
    resources: Option<ResourceRequirements>,
}

/// A gateway Deployment: one `causeway <tier>` container with the pod's environment, admin
/// probes and locked-down security context, rolled one pod at a time.
fn gateway_deployment(gateway: GatewayDeployment<'_>) -> Deployment {
    let container = Container {
        name: gateway.tier.to_owned(),
        image: Some(gateway.pod.image.clone()),
        args: Some(gateway.args),
        env: Some(pod_env()),
        ports: Some(gateway.ports),
        readiness_probe: Some(admin_probe("/readyz", 1)),
        liveness_probe: Some(admin_probe("/healthz", 10)),
        security_context: Some(security_context()),
        volume_mounts: gateway.mounts,
        resources: gateway.resources,
        ..Container::default()
    };
    let mut metadata = meta(
        gateway.name,
        gateway.namespace,
        gateway.labels.clone(),
        gateway.owner,
    );
    metadata.annotations = Some(BTreeMap::from([(
        names::CONFIG_HASH_ANNOTATION.to_owned(),
        gateway.config_hash.to_owned(),
    )]));
    Deployment {
        metadata,
        spec: DeploymentSpec {
            replicas: Some(gateway.replicas),
            min_ready_seconds: gateway.min_ready_seconds,
            selector: LabelSelector {
                match_labels: Some(gateway.selector),
                ..LabelSelector::default()
            },
            strategy: Some(rolling_update()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(gateway.labels),
                    annotations: Some(template_annotations(
                        gateway.restart_hash,
                        gateway.admin_port,
                    )),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(gateway.pod.service_account.clone()),
                    // The token reads the pod's ConfigMap (the gateway Role allows no more).
                    automount_service_account_token: Some(true),
                    termination_grace_period_seconds: Some(10),
                    node_selector: gateway.node_selector,
                    containers: vec![container],
                    volumes: gateway.volumes,
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The gateway Deployments' roll: one new pod at a time, and never one ready pod fewer, so
/// the tier keeps serving throughout.
fn rolling_update() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    }
}

/// The annotations of a gateway pod template: the restart hash, and Prometheus's
/// pod-discovery convention inviting a scrape of the admin port.
fn template_annotations(restart_hash: String, admin_port: u16) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RESTART_HASH_ANNOTATION.to_owned(), restart_hash),
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), admin_port.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ])
}

/// The TMP link flags: the pod's name names its link. The link certificate needs no flag: a
/// gateway with `--config-map` and no `--link-cert` asks the operator for one.
fn link_args() -> Vec<String> {
    vec!["--name".to_owned(), "$(POD_NAME)".to_owned()]
}
