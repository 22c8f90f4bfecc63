//! The objects the operator wants, computed by pure functions of plain data: a Site and its
//! resolved origins give the back-end ConfigMap, Service and Deployment; a Frontend, the Sites
//! it serves and their ready back-ends give the front-end ConfigMap, Service and Deployment.
//! Nothing here talks to the API server, so every rule is unit-tested.
//!
//! Configuration reaches the pods through the API: each gateway watches its own ConfigMap
//! (`--config-map`) and applies a new version live, without dropping a connection. The
//! ConfigMap also carries the TMP link CA; each pod gets its own link certificate through a
//! CertificateSigningRequest. What a gateway reads only at start (the CA, the client TLS
//! Secret) is hashed into the pod template, so a change there rolls the pods, new before old
//! (`maxUnavailable: 0`).

pub mod backend;
pub mod frontend;
pub mod site_file;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::names::GATEWAY_CONFIG_ROLE;

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

/// Converts JSON built here into a typed object; a failure is a bug in this module, reported
/// as a render error rather than a panic.
fn typed<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::Render {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// The pod security settings of every gateway: not root, nothing to escalate, read-only root.
fn security_context() -> serde_json::Value {
    serde_json::json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

/// The environment every gateway container gets: its pod IP, name and namespace (the
/// downward API).
fn pod_env() -> serde_json::Value {
    serde_json::json!([
        { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
        { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
        { "name": "CAUSEWAY_LOG_FORMAT", "value": "json" },
    ])
}

/// The TMP link flags: the pod's name names its link. The link certificate needs no flag: a
/// gateway with `--config-map` and no `--link-cert` asks the operator for one.
fn link_args() -> Vec<String> {
    vec!["--name".to_owned(), "$(POD_NAME)".to_owned()]
}
