//! The `Site` resource: one web site — its hostnames, its redundant origins and the rules
//! that classify and balance its requests.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// The number of priority classes; class 0 is the most urgent.
pub const PRIORITY_CLASSES: u8 = 5;

/// One web site served by Causeway.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "causeway.dev",
    version = "v1alpha1",
    kind = "Site",
    namespaced,
    shortname = "cws",
    category = "causeway",
    doc = "A web site served by Causeway: hostnames, redundant origins, classification and balancing rules."
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteSpec {
    /// Host names clients use for this site (the HTTP `Host`, without port).
    pub hostnames: Vec<String>,
    /// The redundant origin servers that can answer this site's requests.
    pub origins: Vec<OriginSpec>,
    /// How an origin is chosen for each request.
    #[serde(default)]
    pub load_balancing: LoadBalancingSpec,
    /// The release queue used when every capable origin is at its high-water mark.
    #[serde(default)]
    pub queue: QueueSpec,
    /// Retries of idempotent requests on another origin.
    #[serde(default)]
    pub retries: RetrySpec,
    /// Active health checks; absent means origins are judged by traffic alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Passive ejection of origins that fail consecutive requests.
    #[serde(default)]
    pub outlier_detection: OutlierDetectionSpec,
    /// Rules giving each request a priority class.
    #[serde(default)]
    pub priority: PrioritySpec,
    /// Rules giving each request a type, and what each type costs an origin.
    #[serde(default)]
    pub request_types: RequestTypesSpec,
    /// Limits and timeouts applied to this site's requests.
    #[serde(default)]
    pub limits: SiteLimitsSpec,
}

/// One origin server of a site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OriginSpec {
    /// A name unique within the site; used in metrics and logs.
    pub name: String,
    /// An origin outside the cluster, as `http://host:port`. Exactly one of `url` and `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An origin inside the cluster, as a Service and port. Exactly one of `url` and `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// The origin holding the freshest copy: it takes the traffic until it reaches its
    /// high-water mark or its latency goal; the others take the overflow.
    #[serde(default)]
    pub primary: bool,
    /// High-water mark: the most requests this origin may have in flight at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Request types this origin can serve; empty means every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Relative capacity used by weighted policies; 1 to 1000.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Latency goal for a primary origin: above it, overflow goes to the mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_goal: Option<Duration>,
}

fn default_max_in_flight() -> u32 {
    100
}

fn default_weight() -> u32 {
    100
}

/// A reference to a Kubernetes Service port in the site's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRef {
    /// The Service name.
    pub name: String,
    /// The Service port number.
    pub port: u16,
}

/// The balancing policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Power of two choices over peak-EWMA latency × (cost in flight + 1), with error penalties.
    #[default]
    Qos,
    /// The origin with the least cost in flight.
    LeastRequest,
    /// Each origin in turn.
    RoundRobin,
}

/// How an origin is chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancingSpec {
    /// The policy.
    #[serde(default)]
    pub policy: Policy,
    /// How quickly the latency average forgets old samples.
    #[serde(default = "default_ewma_decay")]
    pub ewma_decay: Duration,
    /// The latency recorded for a failed or timed-out request, so failing origins look slow.
    #[serde(default = "default_failure_penalty")]
    pub failure_penalty: Duration,
}

fn default_ewma_decay() -> Duration {
    Duration::from_secs(10)
}

fn default_failure_penalty() -> Duration {
    Duration::from_secs(1)
}

impl Default for LoadBalancingSpec {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            ewma_decay: default_ewma_decay(),
            failure_penalty: default_failure_penalty(),
        }
    }
}

/// The bounded release queue (claim 19).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSpec {
    /// Most requests waiting at once; one more is answered 503.
    #[serde(default = "default_queue_length")]
    pub max_length: u32,
    /// Longest wait before a queued request is answered 503.
    #[serde(default = "default_queue_timeout")]
    pub timeout: Duration,
    /// Each full interval waited raises a request by one class, so no class waits forever.
    #[serde(default = "default_aging_interval")]
    pub aging_interval: Duration,
}

fn default_queue_length() -> u32 {
    1024
}

fn default_queue_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_aging_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            max_length: default_queue_length(),
            timeout: default_queue_timeout(),
            aging_interval: default_aging_interval(),
        }
    }
}

/// Retries of idempotent requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Extra attempts after the first, each on another origin when one is available.
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    /// Retries allowed as a fraction of recent requests (0 to 1).
    #[serde(default = "default_budget_ratio")]
    pub budget_ratio: f64,
    /// Retries per second always allowed, whatever the ratio.
    #[serde(default = "default_min_retries_per_second")]
    pub min_retries_per_second: u32,
}

fn default_retry_attempts() -> u32 {
    2
}

fn default_budget_ratio() -> f64 {
    0.2
}

fn default_min_retries_per_second() -> u32 {
    10
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            attempts: default_retry_attempts(),
            budget_ratio: default_budget_ratio(),
            min_retries_per_second: default_min_retries_per_second(),
        }
    }
}

/// Active HTTP health checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// Path requested with GET; any 2xx or 3xx answer is healthy.
    pub path: String,
    /// Time between checks.
    #[serde(default = "default_check_interval")]
    pub interval: Duration,
    /// A check not answered within this is a failure.
    #[serde(default = "default_check_timeout")]
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy origin healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy origin unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_healthy_threshold() -> u32 {
    2
}

fn default_unhealthy_threshold() -> u32 {
    3
}

/// Passive ejection of failing origins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionSpec {
    /// Consecutive failed requests (connect errors, resets, timeouts, 502/503/504) that eject
    /// an origin; 0 turns passive ejection off.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// Time out of rotation after a first ejection; doubles with each further one.
    #[serde(default = "default_base_ejection_time")]
    pub base_ejection_time: Duration,
    /// Longest time out of rotation.
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time: Duration,
    /// Most origins out of rotation at once, in percent of the site's origins.
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u32,
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_base_ejection_time() -> Duration {
    Duration::from_secs(10)
}

fn default_max_ejection_time() -> Duration {
    Duration::from_secs(300)
}

fn default_max_ejected_percent() -> u32 {
    50
}

impl Default for OutlierDetectionSpec {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            base_ejection_time: default_base_ejection_time(),
            max_ejection_time: default_max_ejection_time(),
            max_ejected_percent: default_max_ejected_percent(),
        }
    }
}

/// Priority classification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrioritySpec {
    /// Class of a request no rule matches (0 highest … 4 lowest).
    #[serde(default = "default_class")]
    pub default_class: u8,
    /// Rules tried in order; the first that matches gives the class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<PriorityRule>,
}

fn default_class() -> u8 {
    2
}

impl Default for PrioritySpec {
    fn default() -> Self {
        Self {
            default_class: default_class(),
            rules: Vec::new(),
        }
    }
}

/// One priority rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityRule {
    /// The class given to matching requests (0 highest … 4 lowest).
    pub class: u8,
    /// What a request must look like; every condition given must hold.
    #[serde(rename = "match")]
    pub matches: RequestMatch,
}

/// Request-type classification and costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestTypesSpec {
    /// Type of a request no rule matches.
    #[serde(default = "default_request_type")]
    pub default_type: String,
    /// What one request of each type costs an origin, in load units (at least 1).
    #[serde(default = "default_costs")]
    pub costs: BTreeMap<String, u32>,
    /// Rules tried in order; the first that matches gives the type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RequestTypeRule>,
}

fn default_request_type() -> String {
    "dynamic".to_owned()
}

fn default_costs() -> BTreeMap<String, u32> {
    [("static", 1), ("dynamic", 2), ("db", 4), ("media", 8)]
        .into_iter()
        .map(|(name, cost)| (name.to_owned(), cost))
        .collect()
}

impl Default for RequestTypesSpec {
    fn default() -> Self {
        Self {
            default_type: default_request_type(),
            costs: default_costs(),
            rules: Vec::new(),
        }
    }
}

/// One request-type rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestTypeRule {
    /// The type given to matching requests; must be a key of `costs`.
    #[serde(rename = "type")]
    pub request_type: String,
    /// What a request must look like; every condition given must hold.
    #[serde(rename = "match")]
    pub matches: RequestMatch,
}

/// Conditions on a request; all that are given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatch {
    /// The path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The path matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// The path ends in one of these extensions (without the dot, case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// The method is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Each of these headers is present (and matches, when a value or regex is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Each of these cookies is present (and matches, when a value or regex is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<ValueMatch>,
}

/// A named header or cookie, optionally with the value it must have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatch {
    /// Header or cookie name (headers case-insensitive).
    pub name: String,
    /// Exact value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Regular expression the value matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Limits and timeouts for a site's requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteLimitsSpec {
    /// Largest request body accepted; larger ones are answered 413. Absent means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// Longest time to connect to an origin.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Longest wait for an origin's response headers, per attempt.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_response_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for SiteLimitsSpec {
    fn default() -> Self {
        Self {
            max_request_body_bytes: None,
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
        }
    }
}
