//! What the operator reports on Sites and Frontends: observed generation, conditions, pod
//! counts and per-pod quality of service.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// The observed state of a Site.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, with a reason and a message each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Back-end pods the operator wants now, between the spec's minReplicas and maxReplicas.
    #[serde(default)]
    pub desired_backends: i32,
    /// Back-end pods ready to serve.
    #[serde(default)]
    pub ready_backends: i32,
    /// The worst 99th-percentile response time among the pods in `qos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<Duration>,
    /// The latest quality-of-service figures of each pod serving the site (its back-ends
    /// and the front-ends of the Frontends serving it), refreshed by the operator about every
    /// 10 s; pods that are gone drop out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pod".into()]))]
    pub qos: Vec<PodQos>,
    /// What the QoS loop decided last, and since when the goals are missed or met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingStatus>,
}

/// The QoS loop's memory of a Site, kept in its status so an operator restart or a new
/// leader carries on where the last one stopped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStatus {
    /// Since when a goal has been missed without a break; absent while goals are met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_since: Option<Time>,
    /// Since when every goal has been met without a break; absent while one is missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub met_since: Option<Time>,
    /// When the QoS loop last changed a replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<Time>,
    /// The last decision, with the figures that caused it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_decision: String,
}

/// Which tier a pod belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodRole {
    /// A front-end: takes client connections and carries them over TMP links.
    Frontend,
    /// A back-end: ends TMP links and balances requests over the origins.
    Backend,
}

/// One pod's quality of service for one site, as it last reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodQos {
    /// The pod's name.
    pub pod: String,
    /// Whether the pod is a front-end or a back-end.
    pub role: PodRole,
    /// Smoothed round-trip time of the pod's TMP links, in milliseconds (the worst link).
    pub rtt_ms: f64,
    /// Packet-loss fraction (0 to 1) of the pod's TMP links (the worst link).
    pub loss: f64,
    /// Median response time, in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile response time, in milliseconds.
    pub p99_ms: f64,
    /// Requests per second.
    pub request_rate: f64,
    /// Answers with a 5xx status per second.
    #[serde(default)]
    pub error_rate: f64,
    /// Requests in flight at the time of the report.
    pub in_flight: u32,
    /// Requests waiting in the release queue at the time of the report.
    pub queued: u32,
    /// 99th-percentile wait in the release queue, in milliseconds (back-ends).
    #[serde(default)]
    pub queue_wait_p99_ms: f64,
    /// Each TMP link of the pod: peer, round-trip time and loss.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkQos>,
    /// Each origin of the site, on a back-end: health, latency estimate and load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<OriginQos>,
    /// When the operator took these figures from the pod.
    pub updated: Time,
}

/// One TMP link as a pod measures it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkQos {
    /// The pod at the other end (its link address or name).
    pub peer: String,
    /// Smoothed round-trip time, in milliseconds.
    pub rtt_ms: f64,
    /// Smoothed packet-loss fraction (0 to 1).
    pub loss: f64,
}

/// One origin as a back-end sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OriginQos {
    /// The origin's name in the Site.
    pub name: String,
    /// In rotation (neither failing its health checks nor ejected).
    pub healthy: bool,
    /// The peak-EWMA latency estimate, in milliseconds.
    pub latency_ms: f64,
    /// Requests in flight to it.
    pub in_flight: u32,
}

/// The worst 99th-percentile response time among `qos`, rounded up to a whole millisecond;
/// `None` when there is no report. Used for `status.latencyP99`.
pub fn worst_p99(qos: &[PodQos]) -> Option<Duration> {
    qos.iter()
        .map(|entry| entry.p99_ms)
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .max_by(f64::total_cmp)
        // Truncation is intended: the value is finite, non-negative and rounded up first.
        .map(|ms| Duration::from_millis(ms.ceil() as u64))
}

/// The observed state of a Frontend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrontendStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, with a reason and a message each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Front-end pods that exist (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Front-end pods ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The label selector of the front-end pods, in `kubectl get -l` form (the scale
    /// subresource's selector, used by autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The Sites these front-ends serve, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// Front-end pods the operator runs now: `replicas` (the floor set by `kubectl scale` or
    /// an autoscaler) plus what the QoS loop added, at most `maxReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// The latest quality-of-service figures of each front-end pod, all its Sites together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pod".into()]))]
    pub qos: Vec<PodQos>,
    /// The QoS loop's memory of this Frontend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn report(pod: &str, p99_ms: f64) -> PodQos {
        PodQos {
            pod: pod.into(),
            role: PodRole::Backend,
            rtt_ms: 20.0,
            loss: 0.0,
            p50_ms: 5.0,
            p99_ms,
            request_rate: 100.0,
            error_rate: 0.0,
            in_flight: 3,
            queued: 0,
            queue_wait_p99_ms: 0.0,
            links: Vec::new(),
            origins: Vec::new(),
            updated: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn worst_p99_takes_the_slowest_pod_and_rounds_up() {
        assert_eq!(worst_p99(&[]), None);
        let qos = [report("a", 12.2), report("b", 48.01), report("c", f64::NAN)];
        assert_eq!(worst_p99(&qos), Some(Duration::from_millis(49)));
    }

    #[test]
    fn status_serializes_in_camel_case() {
        let status = SiteStatus {
            observed_generation: Some(3),
            ready_backends: 2,
            desired_backends: 2,
            latency_p99: Some(Duration::from_millis(40)),
            qos: vec![report("backend-0", 40.0)],
            ..Default::default()
        };
        let json = serde_json::to_value(&status).expect("serializes");
        assert_eq!(json["observedGeneration"], 3);
        assert_eq!(json["readyBackends"], 2);
        assert_eq!(json["latencyP99"], "40ms");
        assert_eq!(json["qos"][0]["p99Ms"], 40.0);
        assert_eq!(json["qos"][0]["role"], "Backend");
        assert_eq!(json["qos"][0]["updated"], "1970-01-01T00:00:00Z");
    }
}
