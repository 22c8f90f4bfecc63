//! Site and Frontend status: pure functions compute the fields the operator owns
//! (`observedGeneration`, the Ready/Progressing/Degraded conditions with typed reasons, pod
//! counts, the scale selector) from what was observed; one writer per kind applies them with
//! server-side apply under the operator's field manager, and skips the write when nothing
//! would change. Fields other writers own (per-pod QoS) are left alone.

use causeway_api::conditions::{
    ConditionStatus, DegradedReason, ProgressingReason, ReadyReason, condition, set_condition,
};
use causeway_api::status::ScalingStatus;
use causeway_api::{API_VERSION, Frontend, FrontendStatus, Site, SiteStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::error::Result;
use crate::names::FIELD_MANAGER;
use crate::qos::goals::Verdict;

/// Pod counts of a Deployment the operator made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Pods that exist.
    pub replicas: i32,
    /// Pods ready.
    pub ready: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// Whether the Deployment controller has seen the current template and has no old pods
    /// left.
    pub complete: bool,
}

impl Rollout {
    /// The counts of `deployment` (absent: nothing yet), wanting `desired` pods.
    pub fn of(deployment: Option<&Deployment>, desired: i32) -> Self {
        let Some(deployment) = deployment else {
            return Self::default();
        };
        let status = deployment.status.clone().unwrap_or_default();
        let generation = deployment.metadata.generation.unwrap_or(0);
        let replicas = status.replicas.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        Self {
            replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated,
            complete: status.observed_generation.unwrap_or(0) >= generation
                && updated >= desired
                && replicas <= desired,
        }
    }
}

/// What the Site controller saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteObservation {
    /// Back-end pods wanted.
    pub desired: i32,
    /// The back-end Deployment's counts.
    pub rollout: Rollout,
    /// Why the back-end configuration could not be made, if it could not.
    pub config_error: Option<String>,
    /// Service origins without endpoints.
    pub unresolved: Vec<String>,
    /// How the Site stands against its QoS goals.
    pub qos: Verdict,
    /// The QoS loop's memory to keep.
    pub scaling: Option<ScalingStatus>,
}

/// The Site status the operator wants, from `current` (its conditions' transition times and
/// the fields it does not own are kept).
pub fn site_status(
    current: &SiteStatus,
    generation: Option<i64>,
    seen: &SiteObservation,
    now: &Time,
) -> SiteStatus {
    let mut status = current.clone();
    status.observed_generation = generation;
    status.desired_backends = seen.desired;
    status.ready_backends = seen.rollout.ready;
    let counts = format!("{} of {} back-ends ready", seen.rollout.ready, seen.desired);
    let ready = match &seen.config_error {
        Some(error) => condition(
            ReadyReason::InvalidSpec,
            ConditionStatus::False,
            error.clone(),
            generation,
            now.clone(),
        ),
        None if seen.rollout.ready > 0 => condition(
            ReadyReason::Available,
            ConditionStatus::True,
            counts.clone(),
            generation,
            now.clone(),
        ),
        None => condition(
            ReadyReason::Unavailable,
            ConditionStatus::False,
            counts.clone(),
            generation,
            now.clone(),
        ),
    };
    let progressing = progressing(
        seen.config_error.is_none(),
        &seen.rollout,
        seen.desired,
        generation,
        now,
    );
    let degraded = if seen.rollout.ready < seen.desired {
        condition(
            DegradedReason::ReplicasUnavailable,
            ConditionStatus::True,
            counts,
            generation,
            now.clone(),
        )
    } else if !seen.unresolved.is_empty() {
        condition(
            DegradedReason::OriginsUnhealthy,
            ConditionStatus::True,
            seen.unresolved.join("; "),
            generation,
            now.clone(),
        )
    } else if let Verdict::Missed(misses) = &seen.qos
        && let Some(worst) = misses.first()
    {
        let message = misses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        condition(
            worst.goal.reason(),
            ConditionStatus::True,
            message,
            generation,
            now.clone(),
        )
    } else {
        condition(
            DegradedReason::Healthy,
            ConditionStatus::False,
            "every back-end is ready and the QoS goals are met",
            generation,
            now.clone(),
        )
    };
    if seen.scaling.is_some() {
        status.scaling.clone_from(&seen.scaling);
    }
    for update in [ready, progressing, degraded] {
        set_condition(&mut status.conditions, update);
    }
    status
}

fn progressing(
    configured: bool,
    rollout: &Rollout,
    desired: i32,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    if configured && !rollout.complete {
        condition(
            ProgressingReason::RollingOut,
            ConditionStatus::True,
            format!(
                "{} of {desired} pods run the current configuration",
                rollout.updated
            ),
            generation,
            now.clone(),
        )
    } else if configured && rollout.ready != desired {
        condition(
            ProgressingReason::Scaling,
            ConditionStatus::True,
            format!("{} of {desired} pods ready", rollout.ready),
            generation,
            now.clone(),
        )
    } else {
        condition(
            ProgressingReason::Stable,
            ConditionStatus::False,
            "no change in progress",
            generation,
            now.clone(),
        )
    }
}

/// What the Frontend controller saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrontendObservation {
    /// Front-end pods wanted.
    pub desired: i32,
    /// The front-end Deployment's counts.
    pub rollout: Rollout,
    /// The Sites served, sorted.
    pub sites: Vec<String>,
    /// Named Sites that do not exist.
    pub missing: Vec<String>,
    /// Served Sites without a ready back-end yet.
    pub waiting: Vec<String>,
    /// The pods' label selector, `kubectl get -l` form.
    pub selector: String,
    /// The QoS loop's memory to keep.
    pub scaling: Option<ScalingStatus>,
}

/// The Frontend status the operator wants, from `current`.
pub fn frontend_status(
    current: &FrontendStatus,
    generation: Option<i64>,
    seen: &FrontendObservation,
    now: &Time,
) -> FrontendStatus {
    let mut status = current.clone();
    status.observed_generation = generation;
    status.replicas = seen.rollout.replicas;
    status.ready_replicas = seen.rollout.ready;
    status.selector = Some(seen.selector.clone());
    status.sites = seen.sites.clone();
    status.desired_replicas = Some(seen.desired);
    if seen.scaling.is_some() {
        status.scaling.clone_from(&seen.scaling);
    }
    let counts = format!(
        "{} of {} front-ends ready",
        seen.rollout.ready, seen.desired
    );
    let ready = if seen.sites.is_empty() {
        let message = if seen.missing.is_empty() {
            "the site selector matches no Site".to_owned()
        } else {
            format!("no such Site: {}", seen.missing.join(", "))
        };
        condition(
            ReadyReason::NoSites,
            ConditionStatus::False,
            message,
            generation,
            now.clone(),
        )
    } else if seen.rollout.ready > 0 {
        condition(
            ReadyReason::Available,
            ConditionStatus::True,
            counts.clone(),
            generation,
            now.clone(),
        )
    } else if seen.waiting.len() == seen.sites.len() {
        condition(
            ReadyReason::Unavailable,
            ConditionStatus::False,
            format!("waiting for back-ends of {}", seen.waiting.join(", ")),
            generation,
            now.clone(),
        )
    } else {
        condition(
            ReadyReason::Unavailable,
            ConditionStatus::False,
            counts.clone(),
            generation,
            now.clone(),
        )
    };
    let configured = seen.waiting.len() < seen.sites.len();
    let progressing = progressing(configured, &seen.rollout, seen.desired, generation, now);
    let degraded = if seen.rollout.ready < seen.desired {
        condition(
            DegradedReason::ReplicasUnavailable,
            ConditionStatus::True,
            counts,
            generation,
            now.clone(),
        )
    } else if !seen.waiting.is_empty() || !seen.missing.is_empty() {
        let mut parts = Vec::new();
        if !seen.waiting.is_empty() {
            parts.push(format!("no ready back-end for {}", seen.waiting.join(", ")));
        }
        if !seen.missing.is_empty() {
            parts.push(format!("no such Site: {}", seen.missing.join(", ")));
        }
        condition(
            DegradedReason::LinksDown,
            ConditionStatus::True,
            parts.join("; "),
            generation,
            now.clone(),
        )
    } else {
        condition(
            DegradedReason::Healthy,
            ConditionStatus::False,
            "every front-end is ready",
            generation,
            now.clone(),
        )
    };
    for update in [ready, progressing, degraded] {
        set_condition(&mut status.conditions, update);
    }
    status
}

/// Applies `wanted` to the Site's status unless it equals `current`; returns whether it wrote.
///
/// # Errors
/// When the API refuses the write.
pub async fn write_site(
    api: &Api<Site>,
    name: &str,
    current: &SiteStatus,
    wanted: &SiteStatus,
) -> Result<bool> {
    if current == wanted {
        return Ok(false);
    }
    let body = json!({
        "apiVersion": API_VERSION,
        "kind": "Site",
        "status": {
            "observedGeneration": wanted.observed_generation,
            "conditions": wanted.conditions,
            "desiredBackends": wanted.desired_backends,
            "readyBackends": wanted.ready_backends,
            "scaling": wanted.scaling,
        },
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(true)
}

/// Applies `wanted` to the Frontend's status unless it equals `current`; returns whether it
/// wrote.
///
/// # Errors
/// When the API refuses the write.
pub async fn write_frontend(
    api: &Api<Frontend>,
    name: &str,
    current: &FrontendStatus,
    wanted: &FrontendStatus,
) -> Result<bool> {
    if current == wanted {
        return Ok(false);
    }
    let body = json!({
        "apiVersion": API_VERSION,
        "kind": "Frontend",
        "status": {
            "observedGeneration": wanted.observed_generation,
            "conditions": wanted.conditions,
            "replicas": wanted.replicas,
            "readyReplicas": wanted.ready_replicas,
            "selector": wanted.selector,
            "sites": wanted.sites,
            "desiredReplicas": wanted.desired_replicas,
            "scaling": wanted.scaling,
        },
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_api::conditions::{ConditionType, find_condition, is_true};
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    fn serving(ready: i32) -> SiteObservation {
        SiteObservation {
            desired: 2,
            rollout: Rollout {
                replicas: 2,
                ready,
                updated: 2,
                complete: true,
            },
            ..SiteObservation::default()
        }
    }

    #[test]
    fn a_site_with_ready_backends_is_ready_and_stable() {
        let status = site_status(&SiteStatus::default(), Some(3), &serving(2), &at(10));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.ready_backends, 2);
        assert!(is_true(&status.conditions, ConditionType::Ready));
        assert!(!is_true(&status.conditions, ConditionType::Progressing));
        assert!(!is_true(&status.conditions, ConditionType::Degraded));
    }

    #[test]
    fn recomputing_the_same_observation_changes_nothing() {
        let first = site_status(&SiteStatus::default(), Some(3), &serving(2), &at(10));
        let again = site_status(&first, Some(3), &serving(2), &at(99));
        assert_eq!(first, again, "no write when nothing changed");
    }

    #[test]
    fn transition_time_moves_only_when_a_condition_flips() {
        let first = site_status(&SiteStatus::default(), Some(1), &serving(0), &at(10));
        let flipped = site_status(&first, Some(1), &serving(1), &at(20));
        let ready = find_condition(&flipped.conditions, ConditionType::Ready).cloned();
        assert_eq!(ready.map(|c| c.last_transition_time), Some(at(20)));
        let degraded = find_condition(&flipped.conditions, ConditionType::Degraded).cloned();
        assert_eq!(degraded.map(|c| c.last_transition_time), Some(at(10)));
    }

    #[test]
    fn a_config_error_is_an_invalid_spec() {
        let seen = SiteObservation {
            config_error: Some("no origin has an address yet".into()),
            ..serving(0)
        };
        let status = site_status(&SiteStatus::default(), Some(1), &seen, &at(1));
        let ready = find_condition(&status.conditions, ConditionType::Ready).cloned();
        assert_eq!(ready.map(|c| c.reason), Some("InvalidSpec".to_owned()));
    }

    #[test]
    fn a_frontend_without_sites_says_so_and_reports_its_selector() {
        let seen = FrontendObservation {
            desired: 2,
            missing: vec!["shop".into()],
            selector: "a=b".into(),
            ..FrontendObservation::default()
        };
        let status = frontend_status(&FrontendStatus::default(), Some(1), &seen, &at(1));
        let ready = find_condition(&status.conditions, ConditionType::Ready).cloned();
        assert_eq!(ready.as_ref().map(|c| c.reason.as_str()), Some("NoSites"));
        assert!(ready.is_some_and(|c| c.message.contains("shop")));
        assert_eq!(status.selector.as_deref(), Some("a=b"));
    }

    #[test]
    fn a_rolling_deployment_is_progressing() {
        let mut seen = serving(2);
        seen.rollout.complete = false;
        seen.rollout.updated = 1;
        let status = site_status(&SiteStatus::default(), Some(1), &seen, &at(1));
        let progressing = find_condition(&status.conditions, ConditionType::Progressing).cloned();
        assert_eq!(progressing.map(|c| c.reason), Some("RollingOut".to_owned()));
    }
}
