//! The reconcilers' shared parts: the [`Context`] they are given, server-side apply under the
//! operator's field manager, events, and the error policy (requeue with per-object
//! exponential backoff).

pub mod frontend;
pub mod peers;
pub mod signer;
pub mod site;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::certificates::Authority;
use crate::desired::{self, PodSettings};
use crate::error::{Error, Result};
use crate::metrics::{Controller, Metrics};
use crate::names::FIELD_MANAGER;

/// The first retry after a failure; each further failure doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What every reconciliation is given.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Publishes events on Sites and Frontends.
    pub recorder: Recorder,
    /// The TMP link CA.
    pub authority: Authority,
    /// Image and ServiceAccount of gateway pods.
    pub pod: PodSettings,
    /// The one namespace this operator serves, when it is restricted to one: certificate
    /// requests of gateways elsewhere are left to the operator serving them.
    pub watch_namespace: Option<String>,
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("pod", &self.pod)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context.
    pub fn new(
        client: kube::Client,
        metrics: Metrics,
        recorder: Recorder,
        authority: Authority,
        pod: PodSettings,
    ) -> Self {
        Self {
            client,
            metrics,
            recorder,
            authority,
            pod,
            watch_namespace: None,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Restricts the operator to `namespace` (`None`: every namespace).
    #[must_use]
    pub fn watching(mut self, namespace: Option<String>) -> Self {
        self.watch_namespace = namespace;
        self
    }

    /// Publishes an event on `object`; a failure is logged, never fatal.
    pub async fn event(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }

    /// Forgets `key`'s failures after a successful reconciliation.
    fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// The backoff before retrying `key` after one more failure.
    fn next_backoff(&self, key: &str) -> Duration {
        let count = self.failures.lock().map_or(1, |mut failures| {
            let count = failures.entry(key.to_owned()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        });
        backoff(count)
    }

    /// Makes sure gateway pods can run in `namespace`: their ServiceAccount exists, may read
    /// the namespace's ConfigMaps and may ask for link certificates. An existing account (such as the chart's, in the
    /// release namespace) is left as it is, so that the operator and Helm do not take its
    /// fields from each other; the Role and RoleBinding are the operator's own.
    ///
    /// # Errors
    /// When the API refuses them.
    pub async fn ensure_gateway_access(&self, namespace: &str) -> Result<()> {
        let account = &self.pod.service_account;
        let binding = desired::csr_role_binding(&self.pod.csr_cluster_role, account, namespace);
        if let Some(name) = &binding.metadata.name {
            let bindings: Api<ClusterRoleBinding> = Api::all(self.client.clone());
            bindings
                .patch(
                    name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&binding),
                )
                .await?;
        }
        apply(&self.client, namespace, &desired::config_role(namespace)).await?;
        apply(
            &self.client,
            namespace,
            &desired::config_role_binding(account, namespace),
        )
        .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        if accounts.get_opt(account).await?.is_some() {
            return Ok(());
        }
        match accounts
            .create(
                &PostParams::default(),
                &desired::service_account(account, namespace),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// The wait before retry number `failures` (1-based): 1 s, 2 s, 4 s … at most 5 min.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// The key of an object for backoff bookkeeping.
fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// Server-side applies `object` (named by its metadata) in `namespace` under the operator's
/// field manager, taking over fields another manager set.
///
/// # Errors
/// When the object has no name or the API refuses it.
pub async fn apply<K>(client: &kube::Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().ok_or(Error::MissingField {
        kind: "desired object",
        field: "metadata.name",
    })?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?)
}

/// Wraps one reconciliation in a span naming the object: counts and times it, and on success
/// forgets past failures.
async fn instrumented<K, F>(
    object: Arc<K>,
    ctx: Arc<Context>,
    controller: Controller,
    run: F,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: std::future::Future<Output = Result<Action>>,
{
    let _timer = ctx.metrics.reconcile(controller);
    let span = tracing::info_span!(
        "reconcile",
        controller = controller.as_str(),
        object = %key(object.as_ref())
    );
    let outcome = tracing::Instrument::instrument(run, span).await;
    if outcome.is_ok() {
        ctx.succeeded(&key(object.as_ref()));
    }
    outcome
}

/// The error policy of both controllers: count the error by kind and retry with backoff.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
    controller: Controller,
) -> Action {
    ctx.metrics.failed(controller, error);
    let wait = ctx.next_backoff(&key(object.as_ref()));
    tracing::warn!(
        controller = controller.as_str(),
        object = %key(object.as_ref()),
        %error,
        retry_in_s = wait.as_secs_f64(),
        "reconciliation failed"
    );
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }
}
