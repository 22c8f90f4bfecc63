//! Checks on a Site spec that the type system cannot express. The same rules are enforced
//! by the API server through the CRD's CEL validations; this is the copy for `causeway local`
//! and for configuration handed to sidecars.

use std::collections::BTreeSet;
use std::fmt;

use crate::site::{PRIORITY_CLASSES, RequestMatch, SiteSpec};

/// One rule a spec breaks: the field's path and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the field, such as `spec.origins[1].url`.
    pub field: String,
    /// What is wrong, in words a person understands.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every rule a spec breaks, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

struct Collector(Vec<Violation>);

impl Collector {
    fn check(&mut self, ok: bool, field: impl Into<String>, reason: impl Into<String>) {
        if !ok {
            self.0.push(Violation {
                field: field.into(),
                reason: reason.into(),
            });
        }
    }
}

impl SiteSpec {
    /// Checks the rules the schema alone cannot; returns every violation found.
    pub fn validate(&self) -> Result<(), Violations> {
        let mut c = Collector(Vec::new());
        c.check(
            !self.hostnames.is_empty(),
            "spec.hostnames",
            "at least one hostname is required",
        );
        for (i, host) in self.hostnames.iter().enumerate() {
            c.check(
                is_hostname(host),
                format!("spec.hostnames[{i}]"),
                format!("{host:?} is not a valid DNS host name (letters, digits, '-', '.'; an optional leading '*.')"),
            );
        }

        c.check(
            !self.origins.is_empty(),
            "spec.origins",
            "at least one origin is required",
        );
        let mut names = BTreeSet::new();
        for (i, origin) in self.origins.iter().enumerate() {
            let at = format!("spec.origins[{i}]");
            c.check(
                !origin.name.is_empty(),
                format!("{at}.name"),
                "must not be empty",
            );
            c.check(
                names.insert(origin.name.as_str()),
                format!("{at}.name"),
                format!("origin name {:?} is used twice", origin.name),
            );
            c.check(
                origin.url.is_some() != origin.service.is_some(),
                at.clone(),
                "exactly one of url and service must be set",
            );
            if let Some(url) = &origin.url
                && let Err(reason) = check_origin_url(url)
            {
                c.check(false, format!("{at}.url"), reason);
            }
            c.check(
                origin.max_in_flight >= 1,
                format!("{at}.maxInFlight"),
                "must be at least 1",
            );
            c.check(
                (1..=1000).contains(&origin.weight),
                format!("{at}.weight"),
                "must be between 1 and 1000",
            );
            for (j, t) in origin.types.iter().enumerate() {
                c.check(
                    self.request_types.costs.contains_key(t),
                    format!("{at}.types[{j}]"),
                    format!("request type {t:?} is not listed in spec.requestTypes.costs"),
                );
            }
        }
        c.check(
            self.origins.iter().filter(|o| o.primary).count() <= 1,
            "spec.origins",
            "at most one origin may be primary",
        );

        let rt = &self.request_types;
        c.check(
            rt.costs.contains_key(&rt.default_type),
            "spec.requestTypes.defaultType",
            format!(
                "{:?} is not listed in spec.requestTypes.costs",
                rt.default_type
            ),
        );
        for (name, cost) in &rt.costs {
            c.check(
                is_type_name(name),
                format!("spec.requestTypes.costs.{name}"),
                "type names are lower-case letters, digits and '-', starting with a letter",
            );
            c.check(
                *cost >= 1,
                format!("spec.requestTypes.costs.{name}"),
                "cost must be at least 1",
            );
        }
        for (i, rule) in rt.rules.iter().enumerate() {
            let at = format!("spec.requestTypes.rules[{i}]");
            c.check(
                rt.costs.contains_key(&rule.request_type),
                format!("{at}.type"),
                format!(
                    "{:?} is not listed in spec.requestTypes.costs",
                    rule.request_type
                ),
            );
            check_match(&mut c, &rule.matches, &format!("{at}.match"));
        }

        c.check(
            self.priority.default_class < PRIORITY_CLASSES,
            "spec.priority.defaultClass",
            "classes are 0 (highest) to 4 (lowest)",
        );
        for (i, rule) in self.priority.rules.iter().enumerate() {
            let at = format!("spec.priority.rules[{i}]");
            c.check(
                rule.class < PRIORITY_CLASSES,
                format!("{at}.class"),
                "classes are 0 (highest) to 4 (lowest)",
            );
            check_match(&mut c, &rule.matches, &format!("{at}.match"));
        }

        c.check(
            !self.queue.timeout.get().is_zero(),
            "spec.queue.timeout",
            "must be longer than 0s",
        );
        c.check(
            !self.queue.aging_interval.get().is_zero(),
            "spec.queue.agingInterval",
            "must be longer than 0s",
        );
        c.check(
            (0.0..=1.0).contains(&self.retries.budget_ratio),
            "spec.retries.budgetRatio",
            "must be between 0 and 1",
        );
        if let Some(hc) = &self.health_check {
            c.check(
                hc.path.starts_with('/'),
                "spec.healthCheck.path",
                "must start with '/'",
            );
            c.check(
                !hc.interval.get().is_zero(),
                "spec.healthCheck.interval",
                "must be longer than 0s",
            );
            c.check(
                !hc.timeout.get().is_zero(),
                "spec.healthCheck.timeout",
                "must be longer than 0s",
            );
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
        c.check(
            od.base_ejection_time <= od.max_ejection_time,
            "spec.outlierDetection.baseEjectionTime",
            "must not be longer than maxEjectionTime",
        );
        c.check(
            od.max_ejected_percent <= 100,
            "spec.outlierDetection.maxEjectedPercent",
            "must be between 0 and 100",
        );
        c.check(
            !self.limits.connect_timeout.get().is_zero(),
            "spec.limits.connectTimeout",
            "must be longer than 0s",
        );
        c.check(
            !self.limits.response_timeout.get().is_zero(),
            "spec.limits.responseTimeout",
            "must be longer than 0s",
        );

        if c.0.is_empty() {
            Ok(())
        } else {
            Err(Violations(c.0))
        }
    }
}

fn check_match(c: &mut Collector, m: &RequestMatch, at: &str) {
    if let Some(prefix) = &m.path_prefix {
        c.check(
            prefix.starts_with('/'),
            format!("{at}.pathPrefix"),
            "must start with '/'",
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
            http::Method::from_bytes(method.as_bytes()).is_ok(),
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
            c.check(
                !(vm.value.is_some() && vm.regex.is_some()),
                here.clone(),
                "give value or regex, not both",
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

fn check_origin_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("scheme {other:?} is not supported; use http://")),
        None => return Err(format!("{url:?} has no scheme; write http://host:port")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str() != "/" && !pq.as_str().is_empty())
    {
        return Err(format!(
            "{url:?} has a path; an origin is a scheme, host and port"
        ));
    }
    Ok(())
}

fn is_hostname(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_type_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::{OriginSpec, RequestTypesSpec};

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
        }
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
        let fields: Vec<_> = s
            .validate()
            .expect_err("broken")
            .0
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
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
        s.origins[0].service = Some(crate::site::ServiceRef {
            name: "web".into(),
            port: 80,
        });
        let v = s.validate().expect_err("both set");
        assert_eq!(v.0[0].field, "spec.origins[0]");
    }

    #[test]
    fn bad_regex_is_reported() {
        let mut s = spec();
        s.priority.rules.push(crate::site::PriorityRule {
            class: 0,
            matches: RequestMatch {
                path_regex: Some("(".into()),
                ..Default::default()
            },
        });
        let v = s.validate().expect_err("bad regex");
        assert_eq!(v.0[0].field, "spec.priority.rules[0].match.pathRegex");
    }
}
