//! Pod readiness as the tests see it: which pods may be sent traffic, and their addresses.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use crate::TestNamespace;

/// Whether the pod is Running and Ready and not being deleted (a terminating pod may still
/// report Ready until its containers stop, but is no longer an endpoint).
pub fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's IP, once it has one.
pub fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// The ready pods of `ns` matching the label `selector`; none when the list fails (callers
/// poll, and a failed list is one more round).
async fn ready(ns: &TestNamespace, selector: &str) -> Vec<Pod> {
    let pods = ns.api::<Pod>();
    let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else {
        return Vec::new();
    };
    list.items.into_iter().filter(is_ready).collect()
}

/// The IPs of the ready pods of `ns` matching `selector`, sorted.
pub async fn ready_ips(ns: &TestNamespace, selector: &str) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = ready(ns, selector)
        .await
        .iter()
        .filter_map(pod_ip)
        .collect();
    ips.sort();
    ips
}

/// The names of the ready pods of `ns` matching `selector`, sorted.
pub async fn ready_names(ns: &TestNamespace, selector: &str) -> Vec<String> {
    let mut names: Vec<String> = ready(ns, selector)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}
