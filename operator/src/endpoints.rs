//! Service origins resolved through EndpointSlices: a Site origin that names a Service and
//! port becomes one URL origin per ready endpoint, because back-end gateways dial origins by
//! address (the test bed has no kube-proxy, and a gateway balances better over endpoints it
//! sees than over one virtual IP). The Site controller watches EndpointSlices, so the
//! back-end configuration follows endpoint changes.
//!
//! Each endpoint origin is named `ORIGIN-ADDRESS` and keeps the origin's settings
//! (`maxInFlight`, `types`, `weight`, `latencyGoal` — each endpoint is one server). A primary
//! Service origin marks only its first endpoint (by address) primary, because a Site may
//! have at most one primary origin; the others serve as its mirrors.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use causeway_api::site::{OriginSpec, ServiceRef, SiteSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;

use crate::error::Result;
use crate::names;

/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service and its EndpointSlices, as read from the API.
#[derive(Clone, Debug, Default)]
pub struct ServiceEndpoints {
    /// The Service, when it exists.
    pub service: Option<Service>,
    /// Its EndpointSlices.
    pub slices: Vec<EndpointSlice>,
}

/// The origins of a Site with every Service origin replaced by its ready endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResolvedOrigins {
    /// URL origins, in the Site's order, endpoints sorted by address within each origin.
    pub origins: Vec<OriginSpec>,
    /// A sentence per Service origin that resolved to no endpoint.
    pub unresolved: Vec<String>,
}

/// The Services `spec`'s origins name.
pub fn referenced_services(spec: &SiteSpec) -> BTreeSet<String> {
    spec.origins
        .iter()
        .filter_map(|o| o.service.as_ref().map(|s| s.name.clone()))
        .collect()
}

/// Resolves `spec`'s origins against `services` (by Service name). Pure: the caller reads
/// the Services and slices.
pub fn resolve(spec: &SiteSpec, services: &BTreeMap<String, ServiceEndpoints>) -> ResolvedOrigins {
    let mut resolved = ResolvedOrigins::default();
    for origin in &spec.origins {
        let Some(reference) = &origin.service else {
            resolved.origins.push(origin.clone());
            continue;
        };
        let found = services.get(&reference.name).cloned().unwrap_or_default();
        match endpoint_addresses(reference, &found) {
            Ok(addresses) if !addresses.is_empty() => {
                for (index, (ip, port)) in addresses.iter().enumerate() {
                    let mut endpoint = origin.clone();
                    endpoint.service = None;
                    endpoint.url = Some(match ip {
                        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
                        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
                    });
                    endpoint.name = names::bounded(&origin.name, &address_label(ip));
                    endpoint.primary = origin.primary && index == 0;
                    resolved.origins.push(endpoint);
                }
            }
            Ok(_) => resolved.unresolved.push(format!(
                "origin {:?}: Service {:?} has no ready endpoint for port {}",
                origin.name, reference.name, reference.port
            )),
            Err(reason) => resolved
                .unresolved
                .push(format!("origin {:?}: {reason}", origin.name)),
        }
    }
    resolved
}

/// The ready endpoint addresses of `reference`, sorted and without duplicates.
fn endpoint_addresses(
    reference: &ServiceRef,
    found: &ServiceEndpoints,
) -> Result<BTreeSet<(IpAddr, u16)>, String> {
    let Some(service) = &found.service else {
        return Err(format!("Service {:?} does not exist", reference.name));
    };
    let port = service
        .spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .find(|p| p.port == i32::from(reference.port))
        .ok_or_else(|| {
            format!(
                "Service {:?} has no port {}",
                reference.name, reference.port
            )
        })?;
    let port_name = port.name.clone().unwrap_or_default();
    let mut addresses = BTreeSet::new();
    for slice in &found.slices {
        let Some(target) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            // An absent `ready` means ready, as the EndpointSlice API defines it.
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    addresses.insert((ip, target));
                }
            }
        }
    }
    Ok(addresses)
}

/// An address as a name part: `10-0-0-7`, `fd00--7`.
fn address_label(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Reads the Services `spec` names in `namespace` and their EndpointSlices.
///
/// # Errors
/// When the API server cannot be read.
pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    spec: &SiteSpec,
) -> Result<BTreeMap<String, ServiceEndpoints>> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let mut found = BTreeMap::new();
    for name in referenced_services(spec) {
        let service = services.get_opt(&name).await?;
        let listed = slices
            .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name}")))
            .await?;
        found.insert(
            name,
            ServiceEndpoints {
                service,
                slices: listed.items,
            },
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> SiteSpec {
        serde_json::from_value(json!({
            "hostnames": ["shop.example.com"],
            "origins": [
                {"name": "main", "service": {"name": "shop", "port": 80}, "primary": true},
                {"name": "mirror", "url": "http://192.0.2.1:8080"},
            ],
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "shop"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "shop-abc"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_service_origin_becomes_one_origin_per_ready_endpoint() {
        let services = BTreeMap::from([(
            "shop".to_owned(),
            ServiceEndpoints {
                service: Some(service()),
                slices: vec![slice(json!([
                    {"addresses": ["127.64.1.9"], "conditions": {"ready": true}},
                    {"addresses": ["127.64.1.3"]},
                    {"addresses": ["127.64.1.5"], "conditions": {"ready": false}},
                    {"addresses": ["127.64.1.6"], "conditions": {"ready": true, "terminating": true}},
                ]))],
            },
        )]);
        let resolved = resolve(&spec(), &services);
        assert!(resolved.unresolved.is_empty(), "{:?}", resolved.unresolved);
        let urls: Vec<_> = resolved
            .origins
            .iter()
            .map(|o| (o.name.as_str(), o.url.as_deref().unwrap_or(""), o.primary))
            .collect();
        assert_eq!(
            urls,
            [
                ("main-127-64-1-3", "http://127.64.1.3:8080", true),
                ("main-127-64-1-9", "http://127.64.1.9:8080", false),
                ("mirror", "http://192.0.2.1:8080", false),
            ]
        );
        assert!(resolved.origins.iter().all(|o| o.service.is_none()));
    }

    #[test]
    fn a_missing_service_or_port_is_reported_not_fatal() {
        let resolved = resolve(&spec(), &BTreeMap::new());
        assert_eq!(resolved.origins.len(), 1);
        assert!(resolved.unresolved[0].contains("does not exist"));

        let mut other_port = spec();
        other_port.origins[0].service = Some(ServiceRef {
            name: "shop".into(),
            port: 81,
        });
        let services = BTreeMap::from([(
            "shop".to_owned(),
            ServiceEndpoints {
                service: Some(service()),
                slices: Vec::new(),
            },
        )]);
        let resolved = resolve(&other_port, &services);
        assert!(resolved.unresolved[0].contains("no port 81"));
    }

    #[test]
    fn no_ready_endpoint_is_reported() {
        let services = BTreeMap::from([(
            "shop".to_owned(),
            ServiceEndpoints {
                service: Some(service()),
                slices: vec![slice(json!([]))],
            },
        )]);
        let resolved = resolve(&spec(), &services);
        assert!(resolved.unresolved[0].contains("no ready endpoint"));
        assert_eq!(referenced_services(&spec()).len(), 1);
    }
}
