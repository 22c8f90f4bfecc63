//! The signer of gateways' TMP link certificates. A gateway pod makes its own key and asks
//! for a certificate with a Kubernetes CertificateSigningRequest under the signer
//! [`LINK_SIGNER`]; this controller approves and signs a request only when it comes from the
//! gateways' ServiceAccount, its subject names a pod of that account in the requester's
//! namespace (the very pod the requester's token is bound to, when the API server says so),
//! and it asks for exactly the DNS name of that pod's tier. Anything else is denied with the
//! reason. Keys never leave the pods, and a certificate lives a day at most: a compromised
//! pod gives away only its own, short-lived identity.
//!
//! The decision is [`decide`], a pure function of the request and the pod it names.

use std::sync::Arc;
use std::time::Duration;

use causeway_api::contract::signing::{
    self, BACKEND_CERT_NAME, FRONTEND_CERT_NAME, LINK_SIGNER, MAX_LIFETIME, MIN_LIFETIME,
    RequestState,
};
use causeway_pki::RequestedCertificate;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Context, instrumented};
use crate::error::Result;
use crate::metrics::Controller;
use crate::names::{COMPONENT_LABEL, MANAGED_BY_LABEL, Tier};

/// The `extra` key in which the API server names the pod a bound token belongs to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// What the signer knows of a request.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// `spec.username`: who created it.
    pub username: &'a str,
    /// The pod the requester's token is bound to, when the API server recorded it.
    pub bound_pod: Option<&'a str>,
    /// The parsed request, or why it does not parse.
    pub request: &'a std::result::Result<RequestedCertificate, String>,
    /// `spec.expirationSeconds`.
    pub expiration_seconds: Option<i32>,
}

/// What the signer knows of the pod a request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// Its tier, from the component label, when the operator made it.
    pub tier: Option<Tier>,
}

/// The signer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Approve and sign, valid this long.
    Sign {
        /// The certificate's lifetime.
        lifetime: Duration,
        /// The pod, `namespace/name`, for the event.
        pod: (String, String),
    },
    /// Deny, with a reason for the person who reads the request.
    Deny(String),
}

/// The namespace and pod a request claims: the requester is `system:serviceaccount:NS:SA`
/// and the subject's common name is `NS/POD` ([`signing::parse_subject_common_name`]).
///
/// # Errors
/// A denial reason when the requester is no ServiceAccount or the name does not match.
pub fn claimed_pod(
    username: &str,
    request: &RequestedCertificate,
) -> std::result::Result<(String, String, String), String> {
    let Some(account) = username.strip_prefix("system:serviceaccount:") else {
        return Err(format!(
            "requested by {username}, not by a gateway's ServiceAccount"
        ));
    };
    let Some((namespace, service_account)) = account.split_once(':') else {
        return Err(format!(
            "requested by {username}: not a ServiceAccount name"
        ));
    };
    let common_name = request.common_name().unwrap_or_default();
    let Some((claimed_namespace, pod)) = signing::parse_subject_common_name(&common_name) else {
        return Err(format!("subject CN {common_name:?} is not NAMESPACE/POD"));
    };
    if claimed_namespace != namespace || pod.is_empty() {
        return Err(format!(
            "subject CN {common_name:?} names a pod outside the requester's namespace {namespace}"
        ));
    }
    Ok((
        namespace.to_owned(),
        service_account.to_owned(),
        pod.to_owned(),
    ))
}

/// Whether a request from `username` is this operator's to decide: always, unless the
/// operator serves only `watched` and the requester's namespace is another (then another
/// operator, with its own CA, serves it — answering would hand out the wrong CA's
/// certificate or a wrong denial).
pub fn in_scope(username: &str, watched: Option<&str>) -> bool {
    let Some(watched) = watched else {
        return true;
    };
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|account| account.split_once(':'))
        .is_some_and(|(namespace, _)| namespace == watched)
}

/// Decides one request; `gateway_account` is the ServiceAccount gateway pods run as, `pod`
/// the pod the request names (`None` when there is none).
pub fn decide(facts: &RequestFacts<'_>, gateway_account: &str, pod: Option<&PodFacts>) -> Verdict {
    let request = match facts.request {
        Ok(request) => request,
        Err(reason) => return Verdict::Deny(format!("not a valid request: {reason}")),
    };
    let (namespace, account, pod_name) = match claimed_pod(facts.username, request) {
        Ok(claim) => claim,
        Err(reason) => return Verdict::Deny(reason),
    };
    if account != gateway_account {
        return Verdict::Deny(format!(
            "requested by ServiceAccount {namespace}/{account}; only {gateway_account} gateways get link certificates"
        ));
    }
    if let Some(bound) = facts.bound_pod
        && bound != pod_name
    {
        return Verdict::Deny(format!(
            "the requester's token belongs to pod {bound}, the request names pod {pod_name}"
        ));
    }
    let Some(pod) = pod else {
        return Verdict::Deny(format!("no pod {namespace}/{pod_name}"));
    };
    if pod.service_account != account {
        return Verdict::Deny(format!(
            "pod {namespace}/{pod_name} runs as {}, not {account}",
            pod.service_account
        ));
    }
    let Some(tier) = pod.tier else {
        return Verdict::Deny(format!(
            "pod {namespace}/{pod_name} is not a gateway the operator made"
        ));
    };
    let wanted = format!(
        "DNS:{}",
        match tier {
            Tier::Backend => BACKEND_CERT_NAME,
            Tier::Frontend => FRONTEND_CERT_NAME,
        }
    );
    let names = request.subject_alt_names();
    if names != [wanted.clone()] {
        return Verdict::Deny(format!(
            "a {} asks for exactly {wanted}, this request for {names:?}",
            tier.as_str()
        ));
    }
    if request.asks_for_ca() {
        return Verdict::Deny("a gateway certificate is never a CA".to_owned());
    }
    let asked = facts
        .expiration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(MAX_LIFETIME, Duration::from_secs);
    Verdict::Sign {
        lifetime: asked.clamp(MIN_LIFETIME, MAX_LIFETIME),
        pod: (namespace, pod_name),
    }
}

/// The facts the signer needs of a pod.
fn pod_facts(pod: &Pod) -> PodFacts {
    let labels = pod.labels();
    let managed =
        labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(crate::names::FIELD_MANAGER);
    let tier = match labels.get(COMPONENT_LABEL).map(String::as_str) {
        Some("backend") if managed => Some(Tier::Backend),
        Some("frontend") if managed => Some(Tier::Frontend),
        _ => None,
    };
    PodFacts {
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        tier,
    }
}

/// Reconciles one request under [`LINK_SIGNER`].
///
/// # Errors
/// When the API fails; the controller retries with backoff.
pub async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(
        csr.clone(),
        ctx.clone(),
        Controller::Signer,
        sign_request(csr, ctx),
    )
    .await
}

async fn sign_request(csr: Arc<CertificateSigningRequest>, ctx: Arc<Context>) -> Result<Action> {
    let spec = &csr.spec;
    let current = signing::state(&csr);
    if spec.signer_name != LINK_SIGNER || current == RequestState::Settled {
        return Ok(Action::await_change());
    }
    let name = csr.name_any();
    let username = spec.username.clone().unwrap_or_default();
    if !in_scope(&username, ctx.watch_namespace.as_deref()) {
        return Ok(Action::await_change());
    }
    let bound_pod = spec
        .extra
        .as_ref()
        .and_then(|extra| extra.get(POD_NAME_EXTRA))
        .and_then(|values| values.first())
        .cloned();
    let pem = String::from_utf8_lossy(&spec.request.0).into_owned();
    let request = RequestedCertificate::parse(&pem).map_err(|e| e.to_string());
    let pod = match request
        .as_ref()
        .ok()
        .and_then(|r| claimed_pod(&username, r).ok())
    {
        Some((namespace, _, pod)) => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            pods.get_opt(&pod).await?
        }
        None => None,
    };
    let facts = RequestFacts {
        username: &username,
        bound_pod: bound_pod.as_deref(),
        request: &request,
        expiration_seconds: spec.expiration_seconds,
    };
    let verdict = decide(
        &facts,
        &ctx.pod.service_account,
        pod.as_ref().map(pod_facts).as_ref(),
    );
    let requests: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    match verdict {
        Verdict::Deny(reason) => {
            tracing::warn!(request = %name, %username, %reason, "denied a link certificate request");
            let patch = json!({ "status": { "conditions": [{
                "type": "Denied", "status": "True", "reason": "NotACausewayGateway",
                "message": reason, "lastUpdateTime": now,
            }]}});
            requests
                .patch_approval(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            if let Some(pod) = &pod {
                ctx.event(
                    &pod.object_ref(&()),
                    EventType::Warning,
                    "LinkCertificateDenied",
                    "SignCertificate",
                    format!("certificate request {name} denied: {reason}"),
                )
                .await;
            }
        }
        Verdict::Sign {
            lifetime,
            pod: (namespace, pod_name),
        } => {
            if current == RequestState::Pending {
                let patch = json!({ "status": { "conditions": [{
                    "type": "Approved", "status": "True", "reason": "CausewayGateway",
                    "message": format!("gateway pod {namespace}/{pod_name}"), "lastUpdateTime": now,
                }]}});
                requests
                    .patch_approval(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            let Ok(parsed) = &request else {
                return Ok(Action::await_change());
            };
            let certificate = ctx.authority.sign(parsed, lifetime)?;
            let patch =
                json!({ "status": { "certificate": ByteString(certificate.into_bytes()) } });
            requests
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(request = %name, pod = %format!("{namespace}/{pod_name}"), lifetime_s = lifetime.as_secs(), "signed a link certificate");
            if let Some(pod) = &pod {
                ctx.event(
                    &pod.object_ref(&()),
                    EventType::Normal,
                    "LinkCertificateIssued",
                    "SignCertificate",
                    format!(
                        "TMP link certificate issued ({name}, valid {} h)",
                        lifetime.as_secs() / 3600
                    ),
                )
                .await;
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_pki::certificate_request;

    fn request(
        common_name: &str,
        names: &[&str],
    ) -> std::result::Result<RequestedCertificate, String> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let made = certificate_request(common_name, &names).map_err(|e| e.to_string())?;
        RequestedCertificate::parse(&made.request_pem).map_err(|e| e.to_string())
    }

    const ACCOUNT: &str = "system:serviceaccount:web:causeway-sidecar";

    fn backend_pod() -> PodFacts {
        PodFacts {
            service_account: "causeway-sidecar".into(),
            tier: Some(Tier::Backend),
        }
    }

    fn verdict(
        username: &str,
        bound: Option<&str>,
        request: &std::result::Result<RequestedCertificate, String>,
        pod: Option<&PodFacts>,
    ) -> Verdict {
        let facts = RequestFacts {
            username,
            bound_pod: bound,
            request,
            expiration_seconds: Some(7200),
        };
        decide(&facts, "causeway-sidecar", pod)
    }

    #[test]
    fn a_gateway_pod_asking_for_its_tier_name_is_signed() {
        let asked = request("web/shop-backend-1", &["causeway-backend"]);
        let pod = backend_pod();
        assert_eq!(
            verdict(ACCOUNT, Some("shop-backend-1"), &asked, Some(&pod)),
            Verdict::Sign {
                lifetime: Duration::from_secs(7200),
                pod: ("web".into(), "shop-backend-1".into()),
            }
        );
    }

    #[test]
    fn an_operator_of_one_namespace_leaves_other_namespaces_requests_alone() {
        assert!(in_scope(ACCOUNT, None));
        assert!(in_scope(ACCOUNT, Some("web")));
        assert!(!in_scope(ACCOUNT, Some("shop")));
        assert!(!in_scope("alice", Some("web")));
        assert!(
            in_scope("alice", None),
            "denied, not ignored, by a cluster-wide operator"
        );
    }

    #[test]
    fn the_lifetime_stays_between_ten_minutes_and_a_day() {
        let asked = request("web/p", &["causeway-backend"]);
        let pod = backend_pod();
        for (seconds, expected) in [(60, MIN_LIFETIME), (10 * 86400, MAX_LIFETIME)] {
            let facts = RequestFacts {
                username: ACCOUNT,
                bound_pod: None,
                request: &asked,
                expiration_seconds: Some(seconds),
            };
            assert!(matches!(
                decide(&facts, "causeway-sidecar", Some(&pod)),
                Verdict::Sign { lifetime, .. } if lifetime == expected
            ));
        }
    }

    #[test]
    fn everything_else_is_denied_with_a_reason() {
        let good = request("web/p", &["causeway-backend"]);
        let pod = backend_pod();
        let denied = |v: Verdict, needle: &str| match v {
            Verdict::Deny(reason) => assert!(reason.contains(needle), "{reason}"),
            other => panic!("expected a denial mentioning {needle}, got {other:?}"),
        };
        denied(
            verdict("alice", None, &good, Some(&pod)),
            "not by a gateway",
        );
        denied(
            verdict("system:serviceaccount:web:default", None, &good, Some(&pod)),
            "only causeway-sidecar",
        );
        denied(
            verdict(
                "system:serviceaccount:shop:causeway-sidecar",
                None,
                &good,
                Some(&pod),
            ),
            "outside the requester's namespace",
        );
        denied(
            verdict(ACCOUNT, Some("other"), &good, Some(&pod)),
            "token belongs to pod other",
        );
        denied(verdict(ACCOUNT, None, &good, None), "no pod web/p");
        let foreign = PodFacts {
            service_account: "causeway-sidecar".into(),
            tier: None,
        };
        denied(
            verdict(ACCOUNT, None, &good, Some(&foreign)),
            "not a gateway",
        );
        let wrong_tier = request("web/p", &["causeway-frontend"]);
        denied(
            verdict(ACCOUNT, None, &wrong_tier, Some(&pod)),
            "exactly DNS:causeway-backend",
        );
        let extra_name = request("web/p", &["causeway-backend", "bank.example"]);
        denied(verdict(ACCOUNT, None, &extra_name, Some(&pod)), "exactly");
        denied(
            verdict(ACCOUNT, None, &Err("garbage".into()), Some(&pod)),
            "not a valid request",
        );
    }
}
