//! The rules of a Site spec.

use std::collections::BTreeSet;

use super::{Collector, Pattern, Violations};
use crate::duration::Duration;
use crate::rules::{self, CelRule};
use crate::site::{
    BackendsSpec, CacheSpec, LinksSpec, MAX_HOSTNAMES, MAX_ORIGINS, MAX_REQUEST_TYPES, MAX_RULES,
    MAX_TCP_PORTS, OriginSpec, PRIORITY_CLASSES, QosSpec, RequestMatch, RequestTypesSpec, SiteSpec,
    TcpPortSpec,
};

static HOSTNAME: Pattern = Pattern::new(rules::HOSTNAME_PATTERN);
static OBJECT_NAME: Pattern = Pattern::new(rules::OBJECT_NAME_PATTERN);
static SERVICE_NAME: Pattern = Pattern::new(rules::SERVICE_NAME_PATTERN);
static LABEL: Pattern = Pattern::new(rules::LABEL_PATTERN);
static HTTP_TOKEN: Pattern = Pattern::new(rules::HTTP_TOKEN_PATTERN);
static ORIGIN_URL: Pattern = Pattern::new(rules::ORIGIN_URL_PATTERN);
static TYPE_NAME: Pattern = Pattern::new(rules::TYPE_NAME_PATTERN);

impl SiteSpec {
    /// Checks the rules the types alone cannot; returns every violation found.
    ///
    /// These are the rules the API server applies through the CRD (schema and CEL), plus a
    /// few it cannot check, such as whether a regular expression compiles.
    pub fn validate(&self) -> Result<(), Violations> {
        let mut c = Collector::new();
        check_hostnames(&mut c, &self.hostnames);
        check_origins(&mut c, self);
        check_request_types(&mut c, &self.request_types);
        check_priority(&mut c, self);

        positive_duration(&mut c, self.queue.timeout, "spec.queue.timeout");
        positive_duration(
            &mut c,
            self.queue.aging_interval,
            "spec.queue.agingInterval",
        );
        positive_duration(
            &mut c,
            self.queue.standing_after,
            "spec.queue.standingAfter",
        );
        positive_duration(&mut c, self.queue.standing_wait, "spec.queue.standingWait");
        c.rule(
            is_fraction(self.retries.budget_ratio),
            "spec.retries.budgetRatio",
            rules::FRACTION,
        );
        if let Some(hc) = &self.health_check {
            c.rule(
                hc.path.starts_with('/'),
                "spec.healthCheck.path",
                rules::ABSOLUTE_PATH,
            );
            positive_duration(&mut c, hc.interval, "spec.healthCheck.interval");
            positive_duration(&mut c, hc.timeout, "spec.healthCheck.timeout");
            c.check(
                hc.healthy_threshold >= 1,
                "spec.healthCheck.healthyThreshold",
                "must be at least 1",
            );
            c.check(
                hc.unhealthy_threshold >= 1,
                "spec.healthCheck.unhealthyThreshold",
                "must be at least 1",
            );
        }
        let od = &self.outlier_detection;
        c.rule(
            od.base_ejection_time <= od.max_ejection_time,
            "spec.outlierDetection",
            rules::EJECTION_TIMES,
        );
        c.rule(
            od.max_ejected_percent <= 100,
            "spec.outlierDetection.maxEjectedPercent",
            rules::PERCENT,
        );
        positive_duration(
            &mut c,
            self.limits.connect_timeout,
            "spec.limits.connectTimeout",
        );
        positive_duration(
            &mut c,
            self.limits.response_timeout,
            "spec.limits.responseTimeout",
        );

        check_backends(&mut c, &self.backends);
        check_links(&mut c, &self.links);
        check_qos(&mut c, &self.qos);
        check_cache(&mut c, &self.cache);
        if let Some(tls) = &self.tls {
            c.matches(
                &tls.secret_name,
                &OBJECT_NAME,
                253,
                "spec.tls.secretName",
                "a Secret name (lower-case letters, digits, '-' and '.')",
            );
        }
        check_tcp_ports(&mut c, &self.tcp_ports);
        c.finish()
    }
}

fn check_hostnames(c: &mut Collector, hostnames: &[String]) {
    c.check(
        !hostnames.is_empty(),
        "spec.hostnames",
        "at least one hostname is required",
    );
    c.at_most(hostnames.len(), MAX_HOSTNAMES, "spec.hostnames");
    let mut seen = BTreeSet::new();
    for (i, host) in hostnames.iter().enumerate() {
        let at = format!("spec.hostnames[{i}]");
        c.matches(
            host,
            &HOSTNAME,
            255,
            at.clone(),
            "a valid DNS host name (letters, digits, '-', '.'; an optional leading '*.')",
        );
        c.check(
            seen.insert(host.as_str()),
            at,
            format!("{host:?} is listed twice"),
        );
    }
}

fn check_origins(c: &mut Collector, spec: &SiteSpec) {
    let origins = &spec.origins;
    c.check(
        !origins.is_empty(),
        "spec.origins",
        "at least one origin is required",
    );
    c.at_most(origins.len(), MAX_ORIGINS, "spec.origins");
    let mut names = BTreeSet::new();
    for (i, origin) in origins.iter().enumerate() {
        let at = format!("spec.origins[{i}]");
        check_origin(c, origin, &at, &spec.request_types);
        c.check(
            names.insert(origin.name.as_str()),
            format!("{at}.name"),
            format!("origin name {:?} is used twice", origin.name),
        );
    }
    c.rule(
        origins.iter().filter(|o| o.primary).count() <= 1,
        "spec.origins",
        rules::ONE_PRIMARY,
    );
}

fn check_origin(c: &mut Collector, origin: &OriginSpec, at: &str, types: &RequestTypesSpec) {
    c.check(
        !origin.name.is_empty(),
        format!("{at}.name"),
        "must not be empty",
    );
    c.check(
        origin.name.chars().count() <= 63,
        format!("{at}.name"),
        "must be at most 63 characters",
    );
    c.rule(
        origin.url.is_some() != origin.service.is_some(),
        at,
        rules::ORIGIN_TARGET,
    );
    if let Some(url) = &origin.url {
        if ORIGIN_URL.is_match(url) {
            // The pattern says what the API server says; parsing says whether a client can
            // actually connect to it.
            if let Err(e) = url.parse::<http::Uri>() {
                c.check(
                    false,
                    format!("{at}.url"),
                    format!("{url:?} is not a URL: {e}"),
                );
            }
        } else {
            c.rule(false, format!("{at}.url"), rules::ORIGIN_URL);
        }
    }
    if let Some(service) = &origin.service {
        c.matches(
            &service.name,
            &SERVICE_NAME,
            63,
            format!("{at}.service.name"),
            "a Service name (lower-case letters, digits and '-', starting with a letter)",
        );
        c.check(
            service.port >= 1,
            format!("{at}.service.port"),
            "must be between 1 and 65535",
        );
    }
    c.check(
        origin.max_in_flight >= 1,
        format!("{at}.maxInFlight"),
        "must be at least 1",
    );
    c.rule(
        (1..=1000).contains(&origin.weight),
        format!("{at}.weight"),
        rules::ORIGIN_WEIGHT,
    );
    c.at_most(origin.types.len(), MAX_REQUEST_TYPES, format!("{at}.types"));
    for (j, t) in origin.types.iter().enumerate() {
        c.check(
            types.costs.contains_key(t),
            format!("{at}.types[{j}]"),
            format!("{} (found {t:?})", rules::ORIGIN_TYPES_KNOWN.message),
        );
    }
    if let Some(goal) = origin.latency_goal {
        positive_duration(c, goal, format!("{at}.latencyGoal"));
    }
}

fn check_request_types(c: &mut Collector, rt: &RequestTypesSpec) {
    c.check(
        rt.costs.contains_key(&rt.default_type),
        "spec.requestTypes.defaultType",
        format!(
            "{} (found {:?})",
            rules::DEFAULT_TYPE_KNOWN.message,
            rt.default_type
        ),
    );
    c.check(
        !rt.costs.is_empty(),
        "spec.requestTypes.costs",
        "at least one request type is required",
    );
    c.at_most(rt.costs.len(), MAX_REQUEST_TYPES, "spec.requestTypes.costs");
    for (name, cost) in &rt.costs {
        let at = format!("spec.requestTypes.costs.{name}");
        c.rule(TYPE_NAME.is_match(name), at.clone(), rules::TYPE_NAMES);
        c.rule(*cost >= 1, at, rules::COSTS_POSITIVE);
    }
    c.at_most(rt.rules.len(), MAX_RULES, "spec.requestTypes.rules");
    for (i, rule) in rt.rules.iter().enumerate() {
        let at = format!("spec.requestTypes.rules[{i}]");
        c.check(
            rt.costs.contains_key(&rule.request_type),
            format!("{at}.type"),
            format!(
                "{} (found {:?})",
                rules::RULE_TYPES_KNOWN.message,
                rule.request_type
            ),
        );
        check_match(c, &rule.matches, &format!("{at}.match"));
    }
}

fn check_priority(c: &mut Collector, spec: &SiteSpec) {
    c.rule(
        spec.priority.default_class < PRIORITY_CLASSES,
        "spec.priority.defaultClass",
        rules::PRIORITY_CLASS,
    );
    c.at_most(spec.priority.rules.len(), MAX_RULES, "spec.priority.rules");
    for (i, rule) in spec.priority.rules.iter().enumerate() {
        let at = format!("spec.priority.rules[{i}]");
        c.rule(
            rule.class < PRIORITY_CLASSES,
            format!("{at}.class"),
            rules::PRIORITY_CLASS,
        );
        check_match(c, &rule.matches, &format!("{at}.match"));
    }
}

fn check_match(c: &mut Collector, m: &RequestMatch, at: &str) {
    if let Some(prefix) = &m.path_prefix {
        c.rule(
            prefix.starts_with('/'),
            format!("{at}.pathPrefix"),
            rules::ABSOLUTE_PATH,
        );
    }
    if let Some(re) = &m.path_regex
        && let Err(e) = regex::Regex::new(re)
    {
        c.check(
            false,
            format!("{at}.pathRegex"),
            format!("not a valid regular expression: {e}"),
        );
    }
    for (i, method) in m.methods.iter().enumerate() {
        c.check(
            HTTP_TOKEN.is_match(method) && http::Method::from_bytes(method.as_bytes()).is_ok(),
            format!("{at}.methods[{i}]"),
            format!("{method:?} is not an HTTP method"),
        );
    }
    for (kind, list) in [("headers", &m.headers), ("cookies", &m.cookies)] {
        for (i, vm) in list.iter().enumerate() {
            let here = format!("{at}.{kind}[{i}]");
            c.check(
                !vm.name.is_empty(),
                format!("{here}.name"),
                "must not be empty",
            );
            if kind == "headers" {
                c.check(
                    http::HeaderName::from_bytes(vm.name.as_bytes()).is_ok(),
                    format!("{here}.name"),
                    format!("{:?} is not a valid header name", vm.name),
                );
            }
            c.rule(
                !(vm.value.is_some() && vm.regex.is_some()),
                here.clone(),
                rules::VALUE_OR_REGEX,
            );
            if let Some(re) = &vm.regex
                && let Err(e) = regex::Regex::new(re)
            {
                c.check(
                    false,
                    format!("{here}.regex"),
                    format!("not a valid regular expression: {e}"),
                );
            }
        }
    }
}

fn check_backends(c: &mut Collector, b: &BackendsSpec) {
    c.check(
        b.replicas >= 1,
        "spec.backends.replicas",
        "must be at least 1",
    );
    for (value, name) in [
        (b.min_replicas, "minReplicas"),
        (b.max_replicas, "maxReplicas"),
    ] {
        if let Some(value) = value {
            c.check(
                value >= 1,
                format!("spec.backends.{name}"),
                "must be at least 1",
            );
        }
    }
    let check = |c: &mut Collector, ok: Option<bool>, rule: CelRule| {
        c.rule(ok.unwrap_or(true), "spec.backends", rule);
    };
    check(
        c,
        b.min_replicas.map(|min| min <= b.replicas),
        rules::MIN_REPLICAS,
    );
    check(
        c,
        b.max_replicas.map(|max| b.replicas <= max),
        rules::MAX_REPLICAS,
    );
    check(
        c,
        b.min_replicas
            .zip(b.max_replicas)
            .map(|(min, max)| min <= max),
        rules::MIN_MAX_REPLICAS,
    );
}

fn check_links(c: &mut Collector, links: &LinksSpec) {
    c.check(
        links.subset_size >= 1,
        "spec.links.subsetSize",
        "must be at least 1",
    );
}

fn check_qos(c: &mut Collector, qos: &QosSpec) {
    if let Some(goal) = qos.latency_p99 {
        positive_duration(c, goal, "spec.qos.latencyP99");
    }
    if let Some(loss) = qos.max_loss {
        c.rule(is_fraction(loss), "spec.qos.maxLoss", rules::FRACTION);
    }
    if let Some(rtt) = qos.max_link_rtt {
        positive_duration(c, rtt, "spec.qos.maxLinkRtt");
    }
}

fn check_cache(c: &mut Collector, cache: &CacheSpec) {
    c.check(
        cache.max_size_bytes >= 1,
        "spec.cache.maxSizeBytes",
        "must be at least 1",
    );
    c.check(
        cache.max_object_bytes >= 1,
        "spec.cache.maxObjectBytes",
        "must be at least 1",
    );
    c.rule(
        cache.max_object_bytes <= cache.max_size_bytes,
        "spec.cache",
        rules::CACHE_OBJECT_FITS,
    );
    c.check(
        cache.refresh_ahead.min_hits >= 1,
        "spec.cache.refreshAhead.minHits",
        "must be at least 1",
    );
    c.check(
        (1..=90).contains(&cache.refresh_ahead.window_percent),
        "spec.cache.refreshAhead.windowPercent",
        "must be between 1 and 90",
    );
}

fn check_tcp_ports(c: &mut Collector, ports: &[TcpPortSpec]) {
    c.at_most(ports.len(), MAX_TCP_PORTS, "spec.tcpPorts");
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut duplicate_port = false;
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.tcpPorts[{i}]");
        c.matches(
            &port.name,
            &LABEL,
            63,
            format!("{at}.name"),
            "a port name (lower-case letters, digits and '-')",
        );
        c.check(
            names.insert(port.name.as_str()),
            format!("{at}.name"),
            format!("port name {:?} is used twice", port.name),
        );
        c.check(
            port.port >= 1,
            format!("{at}.port"),
            "must be between 1 and 65535",
        );
        c.check(
            port.target_port >= 1,
            format!("{at}.targetPort"),
            "must be between 1 and 65535",
        );
        duplicate_port |= !numbers.insert(port.port);
    }
    c.rule(!duplicate_port, "spec.tcpPorts", rules::TCP_PORTS_UNIQUE);
}

fn positive_duration(c: &mut Collector, d: Duration, field: impl Into<String>) {
    c.rule(!d.get().is_zero(), field, rules::POSITIVE_DURATION);
}

fn is_fraction(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::{PriorityRule, ServiceRef, TlsSpec, ValueMatch};

    fn origin(name: &str, url: &str) -> OriginSpec {
        OriginSpec {
            name: name.into(),
            url: Some(url.into()),
            service: None,
            primary: false,
            max_in_flight: 10,
            types: vec![],
            weight: 100,
            latency_goal: None,
        }
    }

    fn spec() -> SiteSpec {
        SiteSpec {
            hostnames: vec!["shop.example.com".into()],
            origins: vec![
                origin("a", "http://127.0.0.1:9001"),
                origin("b", "http://127.0.0.1:9002"),
            ],
            load_balancing: Default::default(),
            queue: Default::default(),
            retries: Default::default(),
            health_check: None,
            outlier_detection: Default::default(),
            priority: Default::default(),
            request_types: RequestTypesSpec::default(),
            limits: Default::default(),
            backends: Default::default(),
            links: Default::default(),
            qos: Default::default(),
            cache: Default::default(),
            tls: None,
            tcp_ports: vec![],
        }
    }

    fn fields(spec: &SiteSpec) -> Vec<String> {
        spec.validate()
            .err()
            .map(|v| v.0.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    }

    fn reasons(spec: &SiteSpec) -> Vec<String> {
        spec.validate()
            .err()
            .map(|v| v.0.into_iter().map(|v| v.reason).collect())
            .unwrap_or_default()
    }

    #[test]
    fn links_subset_size_defaults_to_three_and_is_at_least_one() {
        let parsed: LinksSpec = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.subset_size, 3);
        let mut s = spec();
        s.links.subset_size = 0;
        assert_eq!(fields(&s), ["spec.links.subsetSize"]);
    }

    #[test]
    fn a_sound_spec_passes() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        let mut s = spec();
        s.origins[1].name = "a".into();
        s.origins[0].url = Some("ftp://x".into());
        s.origins[0].types = vec!["video".into()];
        s.priority.default_class = 7;
        s.hostnames.push("bad host".into());
        assert_eq!(
            fields(&s),
            [
                "spec.hostnames[1]",
                "spec.origins[0].url",
                "spec.origins[0].types[0]",
                "spec.origins[1].name",
                "spec.priority.defaultClass"
            ]
        );
    }

    #[test]
    fn url_and_service_are_exclusive() {
        let mut s = spec();
        s.origins[0].service = Some(ServiceRef {
            name: "web".into(),
            port: 80,
        });
        let v = s.validate().expect_err("both set");
        assert_eq!(v.0[0].field, "spec.origins[0]");
        assert_eq!(v.0[0].reason, rules::ORIGIN_TARGET.message);

        s.origins[0].url = None;
        assert_eq!(s.validate(), Ok(()), "a Service alone is an origin");
        s.origins[0].service = None;
        assert_eq!(fields(&s), ["spec.origins[0]"], "neither is refused");
    }

    #[test]
    fn origin_urls_are_a_scheme_host_and_port() {
        for good in [
            "http://10.0.0.1:8080",
            "http://mirror.example.net/",
            "http://[::1]:80",
        ] {
            let mut s = spec();
            s.origins[0].url = Some(good.into());
            assert_eq!(s.validate(), Ok(()), "{good}");
        }
        for bad in [
            "https://x",
            "http://x/path",
            "http://x?q=1",
            "http://",
            "x:80",
            "http://a b",
        ] {
            let mut s = spec();
            s.origins[0].url = Some(bad.into());
            assert_eq!(fields(&s), ["spec.origins[0].url"], "{bad}");
        }
    }

    #[test]
    fn bad_regex_is_reported() {
        let mut s = spec();
        s.priority.rules.push(PriorityRule {
            class: 0,
            matches: RequestMatch {
                path_regex: Some("(".into()),
                ..Default::default()
            },
        });
        assert_eq!(fields(&s), ["spec.priority.rules[0].match.pathRegex"]);
    }

    #[test]
    fn value_and_regex_are_exclusive() {
        let mut s = spec();
        s.priority.rules.push(PriorityRule {
            class: 1,
            matches: RequestMatch {
                headers: vec![ValueMatch {
                    name: "x-tier".into(),
                    value: Some("gold".into()),
                    regex: Some("g.*".into()),
                }],
                ..Default::default()
            },
        });
        assert_eq!(reasons(&s), [rules::VALUE_OR_REGEX.message]);
    }

    #[test]
    fn replica_bounds_hold_in_order() {
        let mut s = spec();
        s.backends = BackendsSpec {
            replicas: 3,
            min_replicas: Some(2),
            max_replicas: Some(6),
        };
        assert_eq!(s.validate(), Ok(()));
        assert_eq!((s.backends.min(), s.backends.max()), (2, 6));

        s.backends.min_replicas = Some(5);
        s.backends.max_replicas = Some(4);
        assert_eq!(
            reasons(&s),
            [rules::MIN_REPLICAS.message, rules::MIN_MAX_REPLICAS.message]
        );

        s.backends = BackendsSpec {
            replicas: 2,
            min_replicas: None,
            max_replicas: Some(1),
        };
        assert_eq!(reasons(&s), [rules::MAX_REPLICAS.message]);
        assert_eq!(BackendsSpec::default().min(), 2);
    }

    #[test]
    fn qos_cache_tls_and_ports_are_checked() {
        let mut s = spec();
        s.qos.max_loss = Some(1.5);
        s.qos.latency_p99 = Some(Duration::default());
        s.cache.max_object_bytes = s.cache.max_size_bytes + 1;
        s.tls = Some(TlsSpec {
            secret_name: "Shop_TLS".into(),
        });
        s.tcp_ports = vec![
            TcpPortSpec {
                name: "mqtt".into(),
                port: 1883,
                target_port: 1883,
            },
            TcpPortSpec {
                name: "mqtt-2".into(),
                port: 1883,
                target_port: 0,
            },
        ];
        assert_eq!(
            fields(&s),
            [
                "spec.qos.latencyP99",
                "spec.qos.maxLoss",
                "spec.cache",
                "spec.tls.secretName",
                "spec.tcpPorts[1].targetPort",
                "spec.tcpPorts"
            ]
        );
    }

    #[test]
    fn request_types_must_be_defined() {
        let mut s = spec();
        s.request_types.default_type = "video".into();
        s.request_types.costs.insert("Bad_Name".into(), 0);
        assert_eq!(
            fields(&s),
            [
                "spec.requestTypes.defaultType",
                "spec.requestTypes.costs.Bad_Name",
                "spec.requestTypes.costs.Bad_Name"
            ]
        );
    }

    #[test]
    fn at_most_one_primary() {
        let mut s = spec();
        s.origins[0].primary = true;
        s.origins[1].primary = true;
        assert_eq!(reasons(&s), [rules::ONE_PRIMARY.message]);
    }
}
