//! The `Site` resource: one web site — its hostnames, its redundant origins, the rules that
//! classify and balance its requests, and the back-ends, cache and QoS goals that serve it.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::rules::{
    self, HOSTNAME_PATTERN, HTTP_TOKEN_PATTERN, LABEL_PATTERN, OBJECT_NAME_PATTERN,
    SERVICE_NAME_PATTERN,
};
use crate::status::SiteStatus;

/// The number of priority classes; class 0 is the most urgent.
pub const PRIORITY_CLASSES: u8 = 5;

/// Most hostnames one Site may have.
pub const MAX_HOSTNAMES: usize = 64;

/// Most origins one Site may have.
pub const MAX_ORIGINS: usize = 32;

/// Most tunnelled TCP ports one Site may have.
pub const MAX_TCP_PORTS: usize = 32;

/// Most request types one Site may define, and most types one origin may list.
pub const MAX_REQUEST_TYPES: usize = 32;

/// Most priority or request-type rules one Site may have, of each kind.
pub const MAX_RULES: usize = 64;

/// One web site served by Causeway.
// Each printcolumn(...) repeats the keys name, type_ and json_path, which clippy takes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "causeway.dev",
    version = "v1alpha1",
    kind = "Site",
    namespaced,
    shortname = "cws",
    category = "causeway",
    status = "SiteStatus",
    doc = "A web site served by Causeway: hostnames, redundant origins, classification and balancing rules, back-ends, cache and QoS goals.",
    printcolumn(
        name = "Hostnames",
        type_ = "string",
        json_path = ".spec.hostnames",
        description = "Host names clients use for the site"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyBackends",
        description = "Back-end pods ready to serve the site"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredBackends",
        description = "Back-end pods the operator wants, between minReplicas and maxReplicas"
    ),
    printcolumn(
        name = "P99",
        type_ = "string",
        json_path = ".status.latencyP99",
        description = "Worst 99th-percentile response time among the pods serving the site"
    ),
    printcolumn(
        name = "Goal",
        type_ = "string",
        json_path = ".spec.qos.latencyP99",
        description = "The site's 99th-percentile latency goal",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = rules::ORIGIN_TYPES_KNOWN)]
pub struct SiteSpec {
    /// Host names clients use for this site (the HTTP `Host`, without port); a leading `*.`
    /// matches every name one level below.
    #[schemars(
        length(min = 1, max = MAX_HOSTNAMES),
        inner(pattern(HOSTNAME_PATTERN), length(max = 255))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub hostnames: Vec<String>,
    /// The redundant origin servers that can answer this site's requests.
    #[schemars(length(min = 1, max = MAX_ORIGINS))]
    #[x_kube(
        validation = rules::ONE_PRIMARY,
        merge_strategy = ListMerge::Map(vec!["name".into()])
    )]
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
    /// The back-end gateway pods that end the front-ends' TMP links and balance this site's
    /// requests over its origins.
    #[serde(default)]
    pub backends: BackendsSpec,
    /// The TMP links between this site's front-ends and back-ends: each Frontend links to a
    /// subset of the back-ends rather than to all of them, so the mesh stays bounded.
    #[serde(default)]
    pub links: LinksSpec,
    /// Quality-of-service goals. A front-end moves traffic off a TMP link whose RTT or loss
    /// exceeds them, and the operator adds back-ends (up to `backends.maxReplicas`) while the
    /// response time exceeds its goal.
    #[serde(default)]
    pub qos: QosSpec,
    /// Response caching at the front-ends.
    #[serde(default)]
    pub cache: CacheSpec,
    /// TLS for clients; absent means the front-ends serve this site over plain HTTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Plain TCP ports tunnelled through the TMP links: a front-end listens on `port` and each
    /// connection is carried to an origin's `targetPort`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TCP_PORTS))]
    #[x_kube(
        validation = rules::TCP_PORTS_UNIQUE,
        merge_strategy = ListMerge::Map(vec!["name".into()])
    )]
    pub tcp_ports: Vec<TcpPortSpec>,
}

/// One origin server of a site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = rules::ORIGIN_TARGET)]
pub struct OriginSpec {
    /// A name unique within the site; used in metrics and logs.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// An origin outside the cluster, as `http://host:port`. Exactly one of `url` and `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::ORIGIN_URL)]
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
    #[schemars(range(min = 1))]
    pub max_in_flight: u32,
    /// Request types this origin can serve (keys of `requestTypes.costs`); empty means every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_REQUEST_TYPES), inner(length(max = 63)))]
    pub types: Vec<String>,
    /// Relative capacity used by weighted policies; 1 to 1000.
    #[serde(default = "default_weight")]
    #[x_kube(validation = rules::ORIGIN_WEIGHT)]
    pub weight: u32,
    /// Latency goal for a primary origin: above it, overflow goes to the mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
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
    #[schemars(pattern(SERVICE_NAME_PATTERN), length(max = 63))]
    pub name: String,
    /// The Service port number.
    #[schemars(range(min = 1))]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSpec {
    /// Most requests waiting at once; one more is answered 503.
    #[serde(default = "default_queue_length")]
    pub max_length: u32,
    /// Longest wait before a queued request is answered 503.
    #[serde(default = "default_queue_timeout")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub timeout: Duration,
    /// Each full interval waited raises a request by one class, up to class 1, so no class
    /// waits forever behind classes 1–3; class 0 always goes first.
    #[serde(default = "default_aging_interval")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub aging_interval: Duration,
    /// A queue that has not been empty for this long is overloaded, not absorbing a burst.
    #[serde(default = "default_standing_after")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub standing_after: Duration,
    /// While the queue is overloaded, the longest wait (then 503 + Retry-After), so that
    /// requests are shed at once instead of each waiting the whole timeout; the newest
    /// request always stays, so no slot goes idle for it. At `timeout` or above: off.
    #[serde(default = "default_standing_wait")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub standing_wait: Duration,
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

fn default_standing_after() -> Duration {
    Duration::from_secs(1)
}

fn default_standing_wait() -> Duration {
    Duration::from_secs(1)
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            max_length: default_queue_length(),
            timeout: default_queue_timeout(),
            aging_interval: default_aging_interval(),
            standing_after: default_standing_after(),
            standing_wait: default_standing_wait(),
        }
    }
}

/// Retries of idempotent requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Extra attempts after the first, each on another origin when one is available.
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    /// Retries allowed as a fraction of recent requests (0 to 1).
    #[serde(default = "default_budget_ratio")]
    #[x_kube(validation = rules::FRACTION)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// Path requested with GET; any 2xx or 3xx answer is healthy.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::ABSOLUTE_PATH)]
    pub path: String,
    /// Time between checks.
    #[serde(default = "default_check_interval")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub interval: Duration,
    /// A check not answered within this is a failure.
    #[serde(default = "default_check_timeout")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy origin healthy.
    #[serde(default = "default_healthy_threshold")]
    #[schemars(range(min = 1))]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy origin unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    #[schemars(range(min = 1))]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = rules::EJECTION_TIMES)]
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
    #[x_kube(validation = rules::PERCENT)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrioritySpec {
    /// Class of a request no rule matches (0 highest … 4 lowest).
    #[serde(default = "default_class")]
    #[x_kube(validation = rules::PRIORITY_CLASS)]
    pub default_class: u8,
    /// Rules tried in order; the first that matches gives the class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RULES))]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityRule {
    /// The class given to matching requests (0 highest … 4 lowest).
    #[x_kube(validation = rules::PRIORITY_CLASS)]
    pub class: u8,
    /// What a request must look like; every condition given must hold.
    #[serde(rename = "match")]
    pub matches: RequestMatch,
}

/// Request-type classification and costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = rules::DEFAULT_TYPE_KNOWN,
    validation = rules::RULE_TYPES_KNOWN
)]
pub struct RequestTypesSpec {
    /// Type of a request no rule matches.
    #[serde(default = "default_request_type")]
    #[schemars(length(max = 63))]
    pub default_type: String,
    /// What one request of each type costs an origin, in load units (at least 1).
    #[serde(default = "default_costs")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = MAX_REQUEST_TYPES))]
    #[x_kube(validation = rules::TYPE_NAMES, validation = rules::COSTS_POSITIVE)]
    pub costs: BTreeMap<String, u32>,
    /// Rules tried in order; the first that matches gives the type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RULES))]
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
    #[schemars(length(max = 63))]
    pub request_type: String,
    /// What a request must look like; every condition given must hold.
    #[serde(rename = "match")]
    pub matches: RequestMatch,
}

/// Conditions on a request; all that are given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatch {
    /// The path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = rules::ABSOLUTE_PATH)]
    pub path_prefix: Option<String>,
    /// The path matches this regular expression (RE2 syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub path_regex: Option<String>,
    /// The path ends in one of these extensions (without the dot, case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 32)))]
    pub extensions: Vec<String>,
    /// The method is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(pattern(HTTP_TOKEN_PATTERN), length(max = 32)))]
    pub methods: Vec<String>,
    /// Each of these headers is present (and matches, when a value or regex is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<ValueMatch>,
    /// Each of these cookies is present (and matches, when a value or regex is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub cookies: Vec<ValueMatch>,
}

/// A named header or cookie, optionally with the value it must have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = rules::VALUE_OR_REGEX)]
pub struct ValueMatch {
    /// Header or cookie name (headers case-insensitive).
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Exact value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// Regular expression the value matches (RE2 syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub regex: Option<String>,
}

/// Limits and timeouts for a site's requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteLimitsSpec {
    /// Largest request body accepted; larger ones are answered 413. Absent means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// Longest time to connect to an origin.
    #[serde(default = "default_connect_timeout")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub connect_timeout: Duration,
    /// Longest wait for an origin's response headers, per attempt.
    #[serde(default = "default_response_timeout")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
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

/// How many back-end pods serve a site. Absent bounds mean the count stays at `replicas`;
/// with bounds, the operator adds back-ends while the site misses its QoS goals and gives idle
/// ones back after a cool-down, never leaving `minReplicas`..`maxReplicas`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = rules::MIN_REPLICAS,
    validation = rules::MAX_REPLICAS,
    validation = rules::MIN_MAX_REPLICAS
)]
pub struct BackendsSpec {
    /// Back-end pods to start with.
    #[serde(default = "default_backend_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// Fewest back-end pods the operator may scale down to; absent means `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    /// Most back-end pods the operator may scale up to; absent means `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
}

/// How front-ends link to this site's back-ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinksSpec {
    /// How many of the site's ready back-ends each Frontend links to (deterministic
    /// subsetting): the Frontends serving the site spread their links evenly over the
    /// back-ends, and one Frontend or back-end more or less moves few links. A back-end that
    /// stops being ready is replaced in the subsets by the next one. A value at least the
    /// number of back-ends links every front-end to every back-end. Default 3.
    #[serde(default = "default_subset_size")]
    #[schemars(range(min = 1))]
    pub subset_size: u32,
}

/// Back-ends each Frontend links to when `links.subsetSize` is not given.
pub const DEFAULT_SUBSET_SIZE: u32 = 3;

fn default_subset_size() -> u32 {
    DEFAULT_SUBSET_SIZE
}

impl Default for LinksSpec {
    fn default() -> Self {
        Self {
            subset_size: default_subset_size(),
        }
    }
}

fn default_backend_replicas() -> i32 {
    2
}

impl Default for BackendsSpec {
    fn default() -> Self {
        Self {
            replicas: default_backend_replicas(),
            min_replicas: None,
            max_replicas: None,
        }
    }
}

impl BackendsSpec {
    /// The fewest back-ends allowed: `minReplicas`, or `replicas` when it is absent.
    pub fn min(&self) -> i32 {
        self.min_replicas.unwrap_or(self.replicas)
    }

    /// The most back-ends allowed: `maxReplicas`, or `replicas` when it is absent.
    pub fn max(&self) -> i32 {
        self.max_replicas.unwrap_or(self.replicas)
    }
}

/// A site's quality-of-service goals; each absent goal is not enforced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QosSpec {
    /// The 99th-percentile response time the site should keep, measured at the front-ends.
    /// Above it, the operator adds back-ends while `backends.maxReplicas` allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub latency_p99: Option<Duration>,
    /// The largest packet-loss fraction (0 to 1) a TMP link may have before front-ends move
    /// this site's traffic to another link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::FRACTION)]
    pub max_loss: Option<f64>,
    /// The longest round-trip time a TMP link may have before front-ends move this site's
    /// traffic to another link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub max_link_rtt: Option<Duration>,
    /// The 99th-percentile wait in the back-ends' release queues the site should keep.
    /// Above it, the operator adds back-ends while `backends.maxReplicas` allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub max_queue_wait: Option<Duration>,
    /// How long a goal must be missed without a break before the operator adds a pod (and
    /// the least time between two additions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub scale_up_window: Option<Duration>,
    /// How long every goal must be met, with room to spare, before the operator gives back
    /// a pod it added (and the least time between two removals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::POSITIVE_DURATION)]
    pub cool_down: Option<Duration>,
}

impl QosSpec {
    /// The scale-up window, 30 s unless set.
    pub fn scale_up_window(&self) -> std::time::Duration {
        self.scale_up_window
            .map_or(std::time::Duration::from_secs(30), |d| d.get())
    }

    /// The cool-down, 5 minutes unless set.
    pub fn cool_down(&self) -> std::time::Duration {
        self.cool_down
            .map_or(std::time::Duration::from_secs(300), |d| d.get())
    }
}

/// Response caching at the front-ends (and the single-tier gateway), as a shared HTTP cache
/// (RFC 9111): responses are kept as their `Cache-Control`, `Expires` and `Vary` allow;
/// `private` and `no-store` responses never are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = rules::CACHE_OBJECT_FITS)]
pub struct CacheSpec {
    /// Whether front-ends cache this site's responses.
    #[serde(default)]
    pub enabled: bool,
    /// Most bytes of this site's responses one front-end pod keeps; when full, the entries
    /// least likely to be asked for again go first.
    #[serde(default = "default_cache_size")]
    #[schemars(range(min = 1))]
    pub max_size_bytes: u64,
    /// Largest single response body that is cached; larger ones stream through uncached.
    #[serde(default = "default_cache_object")]
    #[schemars(range(min = 1))]
    pub max_object_bytes: u64,
    /// Heuristic freshness for cacheable responses that do not say how long they stay fresh:
    /// a tenth of the time since their `Last-Modified`, at most this long. 0s (the default)
    /// keeps only responses that say so, or that can be revalidated.
    #[serde(default = "default_cache_ttl")]
    pub default_ttl: Duration,
    /// Store and share responses that carry `Set-Cookie`. Off by default: a cookie is usually
    /// one visitor's session, and sharing it hands that session to the next visitor.
    #[serde(default)]
    pub share_set_cookie: bool,
    /// Store and share responses to requests with `Authorization` even when the response
    /// does not allow it (`public`, `s-maxage`, `must-revalidate`). Off by default.
    #[serde(default)]
    pub share_authorized: bool,
    /// Refresh-ahead: entries asked for often are fetched again shortly before they expire,
    /// so hot content never goes stale for a client.
    #[serde(default)]
    pub refresh_ahead: RefreshAheadSpec,
}

fn default_cache_size() -> u64 {
    256 * 1024 * 1024
}

fn default_cache_object() -> u64 {
    8 * 1024 * 1024
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(0)
}

impl Default for CacheSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            max_size_bytes: default_cache_size(),
            max_object_bytes: default_cache_object(),
            default_ttl: default_cache_ttl(),
            share_set_cookie: false,
            share_authorized: false,
            refresh_ahead: RefreshAheadSpec::default(),
        }
    }
}

/// When a hot cache entry is refreshed before it expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshAheadSpec {
    /// Whether hot entries are refreshed ahead of expiry.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Hits since an entry was stored (or last refreshed) that make it hot.
    #[serde(default = "default_refresh_hits")]
    #[schemars(range(min = 1))]
    pub min_hits: u32,
    /// The last part of an entry's lifetime, in percent, in which a hot entry is refreshed.
    #[serde(default = "default_refresh_percent")]
    #[schemars(range(min = 1, max = 90))]
    pub window_percent: u8,
}

fn default_true() -> bool {
    true
}

fn default_refresh_hits() -> u32 {
    10
}

fn default_refresh_percent() -> u8 {
    10
}

impl Default for RefreshAheadSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_hits: default_refresh_hits(),
            window_percent: default_refresh_percent(),
        }
    }
}

/// TLS for the site's clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSpec {
    /// A Secret of type `kubernetes.io/tls` in the site's namespace holding the certificate
    /// (for every hostname) and key the front-ends present.
    #[schemars(pattern(OBJECT_NAME_PATTERN), length(min = 1, max = 253))]
    pub secret_name: String,
}

/// A plain TCP port tunnelled through the TMP links.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpPortSpec {
    /// A name unique within the site, used in metrics and logs.
    #[schemars(pattern(LABEL_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The port front-ends listen on (1 to 65535).
    #[schemars(range(min = 1))]
    pub port: u16,
    /// The port on the origins (a Service's port or a URL's host) that back-ends connect to.
    #[schemars(range(min = 1))]
    pub target_port: u16,
}
