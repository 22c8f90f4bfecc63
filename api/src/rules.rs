//! The cross-field rules of Site and Frontend, written once: each has the CEL expression the
//! API server evaluates (`x-kubernetes-validations` in the CRD) and the message both the API
//! server and [`crate::validate`] give when it is broken, so the two copies cannot drift apart.

/// One CEL validation rule and the message shown when it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CelRule {
    /// The CEL expression; `self` is the value the rule is attached to.
    pub rule: &'static str,
    /// What a person reads when the rule fails.
    pub message: &'static str,
}

impl From<CelRule> for kube::core::Rule {
    fn from(rule: CelRule) -> Self {
        kube::core::Rule::new(rule.rule).message(rule.message)
    }
}

const fn rule(rule: &'static str, message: &'static str) -> CelRule {
    CelRule { rule, message }
}

/// On an origin: it names a Service or a URL, never both.
pub const ORIGIN_TARGET: CelRule = rule(
    "has(self.url) != has(self.service)",
    "exactly one of url and service must be set",
);

macro_rules! origin_url_pattern {
    () => {
        r"^http://[^/?#\s]+/?$"
    };
}

/// The form of an origin URL: `http://`, a host and port, and at most a `/`.
pub const ORIGIN_URL_PATTERN: &str = origin_url_pattern!();

/// On an origin's URL: only a scheme, host and port.
pub const ORIGIN_URL: CelRule = rule(
    concat!("self.matches(r'", origin_url_pattern!(), "')"),
    "an origin URL is http://host:port, without a path, query or fragment",
);

/// On an origin's weight.
pub const ORIGIN_WEIGHT: CelRule = rule(
    "self >= 1 && self <= 1000",
    "weight must be between 1 and 1000",
);

/// On a site's origins: one primary at most.
pub const ONE_PRIMARY: CelRule = rule(
    "self.filter(o, has(o.primary) && o.primary).size() <= 1",
    "at most one origin may be primary",
);

/// On a site spec: every type an origin serves has a cost.
pub const ORIGIN_TYPES_KNOWN: CelRule = rule(
    "!has(self.requestTypes) || self.origins.all(o, !has(o.types) || o.types.all(t, t in self.requestTypes.costs))",
    "every type listed in an origin's types must be a key of spec.requestTypes.costs",
);

/// On the request types: the default type has a cost.
pub const DEFAULT_TYPE_KNOWN: CelRule = rule(
    "self.defaultType in self.costs",
    "defaultType must be a key of costs",
);

/// On the request types: every rule's type has a cost.
pub const RULE_TYPES_KNOWN: CelRule = rule(
    "!has(self.rules) || self.rules.all(r, r.type in self.costs)",
    "the type of every rule must be a key of costs",
);

macro_rules! type_name_pattern {
    () => {
        r"^[a-z][a-z0-9-]*$"
    };
}

/// The form of a request type's name.
pub const TYPE_NAME_PATTERN: &str = type_name_pattern!();

/// On the request-type costs: names are lower-case words.
pub const TYPE_NAMES: CelRule = rule(
    concat!(
        "self.all(name, name.matches(r'",
        type_name_pattern!(),
        "'))"
    ),
    "type names are lower-case letters, digits and '-', starting with a letter",
);

/// On the request-type costs: every cost counts.
pub const COSTS_POSITIVE: CelRule = rule(
    "self.all(name, self[name] >= 1)",
    "every cost must be at least 1",
);

/// On a priority class number.
pub const PRIORITY_CLASS: CelRule = rule("self <= 4", "classes are 0 (highest) to 4 (lowest)");

/// On a header or cookie match.
pub const VALUE_OR_REGEX: CelRule = rule(
    "!(has(self.value) && has(self.regex))",
    "give value or regex, not both",
);

/// On a path or path prefix.
pub const ABSOLUTE_PATH: CelRule = rule("self.startsWith('/')", "must start with '/'");

/// On a duration that must not be zero (the schema's pattern already checks the form, so a
/// duration is longer than 0s exactly when it has a digit other than 0).
pub const POSITIVE_DURATION: CelRule = rule("self.matches('[1-9]')", "must be longer than 0s");

/// On a fraction such as a loss rate or a budget ratio.
pub const FRACTION: CelRule = rule("self >= 0.0 && self <= 1.0", "must be between 0 and 1");

/// On a percentage.
pub const PERCENT: CelRule = rule("self <= 100", "must be between 0 and 100");

/// On outlier detection: the first ejection is not longer than the longest.
pub const EJECTION_TIMES: CelRule = rule(
    "duration(self.baseEjectionTime) <= duration(self.maxEjectionTime)",
    "baseEjectionTime must not be longer than maxEjectionTime",
);

/// On the back-end counts: the floor is not above the count.
pub const MIN_REPLICAS: CelRule = rule(
    "!has(self.minReplicas) || self.minReplicas <= self.replicas",
    "minReplicas must not be greater than replicas",
);

/// On the back-end counts: the count is not above the ceiling.
pub const MAX_REPLICAS: CelRule = rule(
    "!has(self.maxReplicas) || self.replicas <= self.maxReplicas",
    "replicas must not be greater than maxReplicas",
);

/// On the back-end counts: the floor is not above the ceiling.
pub const MIN_MAX_REPLICAS: CelRule = rule(
    "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
    "minReplicas must not be greater than maxReplicas",
);

/// On the cache: one object fits in the cache.
pub const CACHE_OBJECT_FITS: CelRule = rule(
    "self.maxObjectBytes <= self.maxSizeBytes",
    "maxObjectBytes must not be greater than maxSizeBytes",
);

/// On the TCP ports: each front-end port carries one tunnel.
pub const TCP_PORTS_UNIQUE: CelRule = rule(
    "self.all(p, self.exists_one(q, q.port == p.port))",
    "each port may be listed only once",
);

/// On a Frontend spec: the Sites are named or selected, not both.
pub const SITES_OR_SELECTOR: CelRule = rule(
    "(has(self.sites) && size(self.sites) > 0) != has(self.siteSelector)",
    "set exactly one of sites (a list of Site names) and siteSelector",
);

/// On the client subnets.
pub const CLIENT_SUBNETS: CelRule = rule(
    "self.all(c, isCIDR(c))",
    "each client subnet must be an IPv4 or IPv6 CIDR such as 203.0.113.0/24 or 2001:db8::/32",
);

/// On the blender weights: one per priority class.
pub const BLENDER_WEIGHT_COUNT: CelRule = rule(
    "size(self) == 5",
    "exactly 5 weights are needed, one per priority class from 0 to 4",
);

/// On the blender weights: every class gets a share.
pub const BLENDER_WEIGHTS_POSITIVE: CelRule = rule(
    "self.all(w, w > 0)",
    "every weight must be greater than 0, so that no class starves",
);

/// On the front-end Service: the two ports differ.
pub const DISTINCT_SERVICE_PORTS: CelRule = rule(
    "!has(self.httpsPort) || self.httpsPort != self.httpPort",
    "httpsPort must differ from httpPort",
);

/// Every rule, for tests that check each one compiles and agrees with [`crate::validate`].
pub const ALL: &[CelRule] = &[
    ORIGIN_TARGET,
    ORIGIN_URL,
    ORIGIN_WEIGHT,
    ONE_PRIMARY,
    ORIGIN_TYPES_KNOWN,
    DEFAULT_TYPE_KNOWN,
    RULE_TYPES_KNOWN,
    TYPE_NAMES,
    COSTS_POSITIVE,
    PRIORITY_CLASS,
    VALUE_OR_REGEX,
    ABSOLUTE_PATH,
    POSITIVE_DURATION,
    FRACTION,
    PERCENT,
    EJECTION_TIMES,
    MIN_REPLICAS,
    MAX_REPLICAS,
    MIN_MAX_REPLICAS,
    CACHE_OBJECT_FITS,
    TCP_PORTS_UNIQUE,
    SITES_OR_SELECTOR,
    CLIENT_SUBNETS,
    BLENDER_WEIGHT_COUNT,
    BLENDER_WEIGHTS_POSITIVE,
    DISTINCT_SERVICE_PORTS,
];

/// A DNS host name as clients send it in `Host`, optionally a `*.` wildcard; at most 255
/// characters in all.
pub const HOSTNAME_PATTERN: &str = r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$";

/// A Kubernetes object name (DNS subdomain, RFC 1123): Sites, Secrets; at most 253 characters.
pub const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A Service name (DNS label, RFC 1035); at most 63 characters.
pub const SERVICE_NAME_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// A short lower-case name (DNS label, RFC 1123), such as a region or a port name; at most 63
/// characters.
pub const LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// An HTTP token (RFC 9110), the form of methods and header names.
pub const HTTP_TOKEN_PATTERN: &str = r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";
