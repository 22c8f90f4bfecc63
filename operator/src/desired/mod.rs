//! The objects the operator wants, computed by pure functions of plain data: a Site and its
//! resolved origins give the back-end ConfigMap, Service and Deployment; a Frontend, the Sites
//! it serves and their ready back-ends give the front-end ConfigMap, Service and Deployment.
//! Nothing here talks to the API server, so every rule is unit-tested.
//!
//! Configuration reaches the pods through mounted volumes (the ConfigMap holds the Site files,
//! a Secret the TMP certificate), and the pod template carries a hash of both: a change rolls
//! the pods, new ones before old ones go (`maxUnavailable: 0`). Live reload through the API is
//! the next step (the sidecar would watch its own ConfigMap).

pub mod backend;
pub mod frontend;
pub mod site_file;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Where the Site files are mounted in gateway pods.
pub const SITE_DIR: &str = "/etc/causeway/sites";

/// Where the TMP certificate Secret is mounted in gateway pods.
pub const LINK_DIR: &str = "/etc/causeway/link";

/// What every gateway pod needs besides its own spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSettings {
    /// The container image holding the `causeway` binary.
    pub image: String,
    /// The ServiceAccount gateway pods run as.
    pub service_account: String,
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
/// Frontend of the namespace shares it. Gateways get no API token in v1 (they read their
/// configuration from volumes), so the account grants nothing.
pub fn service_account(name: &str, namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
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
        },
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
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

/// The environment every gateway container gets: its pod IP and name (the downward API).
fn pod_env() -> serde_json::Value {
    serde_json::json!([
        { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
        { "name": "CAUSEWAY_LOG_FORMAT", "value": "json" },
    ])
}

/// The TMP link flags, reading the mounted certificate Secret.
fn link_args() -> Vec<String> {
    vec![
        "--name".to_owned(),
        "$(POD_NAME)".to_owned(),
        "--link-ca".to_owned(),
        format!("{LINK_DIR}/ca.crt"),
        "--link-cert".to_owned(),
        format!("{LINK_DIR}/tls.crt"),
        "--link-key".to_owned(),
        format!("{LINK_DIR}/tls.key"),
    ]
}
