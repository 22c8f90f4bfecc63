//! The rules of a Frontend spec.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Collector, Pattern, Violations};
use crate::frontend::{FrontendSpec, MAX_CIDR_LENGTH, MAX_CLIENT_SUBNETS, MAX_SITES};
use crate::rules;
use crate::site::PRIORITY_CLASSES;

static LABEL: Pattern = Pattern::new(rules::LABEL_PATTERN);
static OBJECT_NAME: Pattern = Pattern::new(rules::OBJECT_NAME_PATTERN);

impl FrontendSpec {
    /// Checks the rules the types alone cannot; returns every violation found.
    ///
    /// These are the rules the API server applies through the CRD (schema and CEL), plus the
    /// shape of `siteSelector`'s expressions, which the API server leaves to the operator.
    pub fn validate(&self) -> Result<(), Violations> {
        let mut c = Collector::new();
        c.matches(
            &self.region,
            &LABEL,
            63,
            "spec.region",
            "a region name (lower-case letters, digits and '-')",
        );
        c.check(self.replicas >= 0, "spec.replicas", "must not be negative");

        c.rule(
            self.sites.is_empty() == self.site_selector.is_some(),
            "spec",
            rules::SITES_OR_SELECTOR,
        );
        c.at_most(self.sites.len(), MAX_SITES, "spec.sites");
        let mut seen = BTreeSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            let at = format!("spec.sites[{i}]");
            c.matches(site, &OBJECT_NAME, 253, at.clone(), "a Site name");
            c.check(
                seen.insert(site.as_str()),
                at,
                format!("{site:?} is listed twice"),
            );
        }
        if let Some(selector) = &self.site_selector {
            check_selector(&mut c, selector, "spec.siteSelector");
        }

        c.at_most(
            self.client_subnets.len(),
            MAX_CLIENT_SUBNETS,
            "spec.clientSubnets",
        );
        for (i, subnet) in self.client_subnets.iter().enumerate() {
            c.check(
                subnet.len() <= MAX_CIDR_LENGTH && is_cidr(subnet),
                format!("spec.clientSubnets[{i}]"),
                format!("{} (found {subnet:?})", rules::CLIENT_SUBNETS.message),
            );
        }

        let weights = &self.blender.weights;
        c.rule(
            weights.len() == usize::from(PRIORITY_CLASSES),
            "spec.blender.weights",
            rules::BLENDER_WEIGHT_COUNT,
        );
        c.rule(
            weights.iter().all(|w| *w > 0),
            "spec.blender.weights",
            rules::BLENDER_WEIGHTS_POSITIVE,
        );
        c.check(
            (1024..=1_048_576).contains(&self.blender.sub_packet_bytes),
            "spec.blender.subPacketBytes",
            "must be between 1024 and 1048576",
        );

        let service = &self.service;
        c.check(
            service.http_port >= 1,
            "spec.service.httpPort",
            "must be between 1 and 65535",
        );
        if let Some(https) = service.https_port {
            c.check(
                https >= 1,
                "spec.service.httpsPort",
                "must be between 1 and 65535",
            );
        }
        c.rule(
            service.https_port != Some(service.http_port),
            "spec.service",
            rules::DISTINCT_SERVICE_PORTS,
        );
        c.finish()
    }
}

fn check_selector(c: &mut Collector, selector: &LabelSelector, at: &str) {
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let here = format!("{at}.matchExpressions[{i}]");
        let has_values = expr.values.as_ref().is_some_and(|v| !v.is_empty());
        match expr.operator.as_str() {
            "In" | "NotIn" => c.check(
                has_values,
                format!("{here}.values"),
                "In and NotIn need at least one value",
            ),
            "Exists" | "DoesNotExist" => c.check(
                !has_values,
                format!("{here}.values"),
                "Exists and DoesNotExist take no values",
            ),
            other => c.check(
                false,
                format!("{here}.operator"),
                format!("{other:?} is not one of In, NotIn, Exists and DoesNotExist"),
            ),
        }
    }
}

/// Whether `text` is an IPv4 or IPv6 CIDR the way the API server's `isCIDR` sees it: an
/// address, a slash and a prefix length in decimal without leading zeros. Host bits may be
/// set (`10.1.2.3/8` names the network `10.0.0.0/8`).
pub(crate) fn is_cidr(text: &str) -> bool {
    let Some((addr, bits)) = text.split_once('/') else {
        return false;
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return false;
    };
    let canonical_number = !bits.is_empty()
        && bits.len() <= 3
        && bits.bytes().all(|b| b.is_ascii_digit())
        && (bits == "0" || !bits.starts_with('0'));
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(v6) => {
            if v6.to_ipv4_mapped().is_some() {
                return false;
            }
            128
        }
    };
    canonical_number && bits <= max
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::{BlenderSpec, FrontendServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn spec() -> FrontendSpec {
        FrontendSpec {
            region: "eu-west".into(),
            replicas: 2,
            max_replicas: None,
            sites: vec!["shop".into()],
            site_selector: None,
            client_subnets: vec!["203.0.113.0/24".into(), "2001:db8::/32".into()],
            blender: BlenderSpec::default(),
            service: FrontendServiceSpec::default(),
            resources: None,
        }
    }

    fn reasons(spec: &FrontendSpec) -> Vec<String> {
        spec.validate()
            .err()
            .map(|v| v.0.into_iter().map(|v| v.reason).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_sound_spec_passes() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn sites_and_selector_are_exclusive() {
        let mut s = spec();
        s.site_selector = Some(LabelSelector {
            match_labels: Some([("tier".to_owned(), "gold".to_owned())].into()),
            ..Default::default()
        });
        assert_eq!(reasons(&s), [rules::SITES_OR_SELECTOR.message]);
        s.sites.clear();
        assert_eq!(s.validate(), Ok(()), "a selector alone names the sites");
        s.site_selector = None;
        assert_eq!(reasons(&s), [rules::SITES_OR_SELECTOR.message]);
    }

    #[test]
    fn selector_expressions_have_a_known_operator() {
        let mut s = spec();
        s.sites.clear();
        s.site_selector = Some(LabelSelector {
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "Matches".into(),
                    values: None,
                },
            ]),
            ..Default::default()
        });
        let fields: Vec<_> = s
            .validate()
            .expect_err("bad expressions")
            .0
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.siteSelector.matchExpressions[0].values",
                "spec.siteSelector.matchExpressions[1].operator"
            ]
        );
    }

    #[test]
    fn blender_weights_are_five_positive_numbers() {
        let mut s = spec();
        s.blender.weights = vec![4, 2, 1];
        assert_eq!(reasons(&s), [rules::BLENDER_WEIGHT_COUNT.message]);
        s.blender.weights = vec![16, 8, 0, 2, 1];
        assert_eq!(reasons(&s), [rules::BLENDER_WEIGHTS_POSITIVE.message]);
        s.blender.weights = vec![1; 5];
        s.blender.sub_packet_bytes = 100;
        assert_eq!(reasons(&s), ["must be between 1024 and 1048576"]);
    }

    #[test]
    fn service_ports_differ() {
        let mut s = spec();
        s.service.https_port = Some(80);
        assert_eq!(reasons(&s), [rules::DISTINCT_SERVICE_PORTS.message]);
        s.service.https_port = Some(443);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn client_subnets_are_cidrs() {
        let mut s = spec();
        s.client_subnets = vec!["10.0.0.0/8".into(), "10.0.0.0".into(), "fe80::/129".into()];
        let fields: Vec<_> = s
            .validate()
            .expect_err("bad subnets")
            .0
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["spec.clientSubnets[1]", "spec.clientSubnets[2]"]);
    }

    #[test]
    fn cidr_parsing_matches_the_api_server() {
        for good in [
            "0.0.0.0/0",
            "10.1.2.3/8",
            "192.0.2.0/24",
            "::/0",
            "2001:db8::/32",
        ] {
            assert!(is_cidr(good), "{good}");
        }
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "010.0.0.0/8",
            "::ffff:10.0.0.0/104",
            "2001:db8::/129",
            "example.com/24",
        ] {
            assert!(!is_cidr(bad), "{bad}");
        }
    }

    #[test]
    fn region_is_a_label() {
        let mut s = spec();
        s.region = "EU West".into();
        assert_eq!(
            s.validate().expect_err("bad region").0[0].field,
            "spec.region"
        );
    }
}
