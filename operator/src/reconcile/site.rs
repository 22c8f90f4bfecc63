//! The Site reconciler: resolves the Site's Service origins through their EndpointSlices,
//! makes sure the back-ends' link certificate exists, applies the back-end ConfigMap, Service
//! and Deployment, and writes the status. It runs on every change of the Site, of the
//! objects it owns and of the EndpointSlices of the Services its origins name.

use std::sync::Arc;
use std::time::Duration;

use causeway_api::status::PodRole;
use causeway_api::{Site, SiteStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::{Context, apply, instrumented};
use crate::desired::backend::{self, BackendInputs};
use crate::endpoints;
use crate::error::{Error, Result};
use crate::metrics::Controller;
use crate::names::{self, CONFIG_HASH_ANNOTATION, Tier};
use crate::qos::goals::{self, Verdict};
use crate::qos::scaling;
use crate::status::{self, Rollout, SiteObservation};

/// Reconciles one Site.
///
/// # Errors
/// When the API fails; the controller retries with backoff.
pub async fn reconcile(site: Arc<Site>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(
        site.clone(),
        ctx.clone(),
        Controller::Site,
        apply_site(site, ctx),
    )
    .await
}

async fn apply_site(site: Arc<Site>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = site.namespace().ok_or(Error::MissingField {
        kind: "Site",
        field: "metadata.namespace",
    })?;
    let name = site.name_any();
    let owner = site.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: "Site",
        field: "metadata.uid",
    })?;
    let reference = site.object_ref(&());
    ctx.ensure_gateway_access(&namespace).await?;

    let services = endpoints::fetch(&ctx.client, &namespace, &site.spec).await?;
    let resolved = endpoints::resolve(&site.spec, &services);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let workload = names::workload(&name, Tier::Backend);
    let previous = deployments.get_opt(&workload).await?;

    let current_status = site.status.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let scaling = scale_backends(&site, &current_status, &now);
    let desired = scaling.decision.replicas;
    if let Some(change) = &scaling.decision.change {
        let (reason, action) = if change.to > change.from {
            ("ScaledUp", "AddBackend")
        } else {
            ("ScaledDown", "RemoveBackend")
        };
        ctx.metrics.scaled("backend", change.to > change.from);
        ctx.event(
            &reference,
            EventType::Normal,
            reason,
            action,
            change.reason.clone(),
        )
        .await;
    }
    let built = backend::objects(&BackendInputs {
        site: &site,
        origins: resolved.origins.clone(),
        owner,
        pod: &ctx.pod,
        link_ca: ctx.authority.ca_pem(),
    });
    let (config_error, deployment) = match built {
        Ok(mut objects) => {
            // The QoS loop's count, which the desired objects start from `replicas`.
            objects.deployment.spec.replicas = Some(desired);
            apply(&ctx.client, &namespace, &objects.config_map).await?;
            apply(&ctx.client, &namespace, &objects.service).await?;
            let applied = apply(&ctx.client, &namespace, &objects.deployment).await?;
            let before = previous.as_ref().and_then(published_hash);
            if before.as_deref() != Some(objects.config_hash.as_str()) {
                let note = match &before {
                    None => format!(
                        "created the back-ends ({desired} pods, {} origins)",
                        resolved.origins.len()
                    ),
                    Some(old) => format!(
                        "back-end configuration changed ({old} → {}, {} origins): published, the back-ends apply it live",
                        objects.config_hash,
                        resolved.origins.len()
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
                if !resolved.unresolved.is_empty() {
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        "OriginsUnresolved",
                        "ResolveOrigins",
                        resolved.unresolved.join("; "),
                    )
                    .await;
                }
            }
            (None, Some(applied))
        }
        Err(Error::Render { reason, .. }) => {
            let message = if resolved.unresolved.is_empty() {
                reason
            } else {
                format!("{reason}: {}", resolved.unresolved.join("; "))
            };
            ctx.event(
                &reference,
                EventType::Warning,
                "NoOrigins",
                "ResolveOrigins",
                message.clone(),
            )
            .await;
            (Some(message), previous)
        }
        Err(error) => return Err(error),
    };

    let seen = SiteObservation {
        desired,
        rollout: Rollout::of(deployment.as_ref(), desired),
        config_error,
        unresolved: resolved.unresolved,
        qos: scaling.verdict.clone(),
        scaling: Some(scaling.decision.memory.clone()),
    };
    let current = current_status;
    let wanted = status::site_status(&current, site.metadata.generation, &seen, &now);
    let sites: Api<Site> = Api::namespaced(ctx.client.clone(), &namespace);
    status::write_site(&sites, &name, &current, &wanted).await?;

    Ok(if seen.config_error.is_some() {
        Action::requeue(Duration::from_secs(30))
    } else if !seen.rollout.complete || seen.rollout.ready < desired {
        Action::requeue(Duration::from_secs(10))
    } else if !matches!(scaling.verdict, Verdict::Unknown) {
        // The QoS loop's clocks run between status updates too.
        Action::requeue(Duration::from_secs(10))
    } else {
        Action::requeue(Duration::from_secs(300))
    })
}

/// The Site's goals judged and the back-end count decided.
struct BackendScaling {
    verdict: Verdict,
    decision: scaling::Decision,
}

/// Judges the Site's QoS figures against its goals and decides the back-end count: from the
/// count in force (a spec change starts again from `backends.replicas`), within
/// `minReplicas`..`maxReplicas`.
fn scale_backends(site: &Site, status: &SiteStatus, now: &Time) -> BackendScaling {
    let backends = &site.spec.backends;
    let spec_changed = status.observed_generation != site.metadata.generation;
    let current = if spec_changed || status.desired_backends <= 0 {
        backend::desired_replicas(site)
    } else {
        status.desired_backends
    };
    let verdict = goals::assess(&site.spec.qos, &status.qos);
    let policy = scaling::Policy {
        min: backends.min(),
        max: backends.max(),
        window: site.spec.qos.scale_up_window(),
        cool_down: site.spec.qos.cool_down(),
    };
    let memory = status.scaling.clone().unwrap_or_default();
    let decision = scaling::decide(
        &goals::for_tier(&verdict, PodRole::Backend),
        current,
        policy,
        &memory,
        now,
    );
    BackendScaling { verdict, decision }
}

/// The hash of the configuration a Deployment's gateways were last given.
pub fn published_hash(deployment: &Deployment) -> Option<String> {
    deployment
        .metadata
        .annotations
        .as_ref()?
        .get(CONFIG_HASH_ANNOTATION)
        .cloned()
}
