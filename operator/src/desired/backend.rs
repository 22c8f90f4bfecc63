//! A Site's back-end gateways: a ConfigMap with the gateway configuration document (the Site,
//! origins resolved to endpoint URLs, and the link CA), a headless Service for the TMP port (UDP), and a Deployment running
//! `causeway backend`, which watches the ConfigMap and has the link certificate mounted.

use std::collections::BTreeMap;

use causeway_api::Site;
use causeway_api::contract::GatewayConfig;
use causeway_api::site::OriginSpec;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{
    GatewayDeployment, PodSettings, config_data, container_port, data_hash, gateway_deployment,
    link_args, meta, service_port,
};
use crate::error::{Error, Result};
use crate::names::{self, BACKEND_ADMIN_PORT, LINK_PORT, Tier};

/// Seconds a new back-end pod must be ready before the roll stops an old one: long enough
/// for the front-ends, whose back-end list the new pod changed, to roll onto it first.
pub const BACKEND_MIN_READY_SECONDS: i32 = 5;

/// Everything a Site's back-end objects are computed from.
#[derive(Clone, Debug)]
pub struct BackendInputs<'a> {
    /// The Site.
    pub site: &'a Site,
    /// Its origins, Service origins resolved to endpoint URLs.
    pub origins: Vec<OriginSpec>,
    /// The owner reference to the Site (it carries the Site's uid).
    pub owner: OwnerReference,
    /// Image and ServiceAccount.
    pub pod: &'a PodSettings,
    /// The TMP link CA certificate (PEM): published in the ConfigMap; a new CA rolls the pods,
    /// which then ask for certificates under it.
    pub link_ca: &'a str,
}

/// The back-end objects of one Site.
#[derive(Clone, Debug)]
pub struct BackendObjects {
    /// The gateway configuration document.
    pub config_map: ConfigMap,
    /// The headless TMP Service.
    pub service: Service,
    /// The gateways.
    pub deployment: Deployment,
    /// The hash of the published configuration (the ConfigMap's data, without the link CA).
    pub config_hash: String,
}

/// The back-end pods wanted now: `replicas` held between `minReplicas` and `maxReplicas`.
pub fn desired_replicas(site: &Site) -> i32 {
    let backends = &site.spec.backends;
    let (low, high) = (backends.min(), backends.max().max(backends.min()));
    backends.replicas.clamp(low, high)
}

/// The back-end objects of `inputs.site`.
///
/// # Errors
/// [`Error::Render`] when the Site has no name or namespace, or no origin has an address.
pub fn objects(inputs: &BackendInputs<'_>) -> Result<BackendObjects> {
    let site = inputs.site;
    let (name, namespace) = match (&site.metadata.name, &site.metadata.namespace) {
        (Some(name), Some(namespace)) => (name.as_str(), namespace.as_str()),
        _ => {
            return Err(Error::MissingField {
                kind: "Site",
                field: "metadata.name or metadata.namespace",
            });
        }
    };
    let site_for_gateways =
        super::site_file::render(name, namespace, &site.spec, inputs.origins.clone())?;
    let workload = names::workload(name, Tier::Backend);
    let labels = names::labels(name, Tier::Backend);
    let selector = names::selector(name, Tier::Backend);
    let mut config = GatewayConfig {
        sites: vec![site_for_gateways],
        backends: BTreeMap::new(),
        link_ca: None,
    };
    // The CA is left out of the configuration hash: the back-ends read it only at start, and
    // a new one rolls them through the restart hash, not as a live change.
    let config_hash = data_hash(&config_data(&config)?);
    config.link_ca = Some(inputs.link_ca.to_owned());
    let restart_hash = names::content_hash([inputs.link_ca.as_bytes()]);

    let config_map = ConfigMap {
        metadata: meta(&workload, namespace, labels.clone(), &inputs.owner),
        data: Some(config_data(&config)?),
        ..ConfigMap::default()
    };

    let service = Service {
        metadata: meta(&workload, namespace, labels.clone(), &inputs.owner),
        spec: Some(ServiceSpec {
            // Headless: each front-end keeps a TMP link to every back-end pod.
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector.clone()),
            ports: Some(vec![service_port("tmp", "UDP", LINK_PORT, LINK_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let mut args = vec![
        "backend".to_owned(),
        "--link-listen".to_owned(),
        format!("$(POD_IP):{LINK_PORT}"),
        "--admin-listen".to_owned(),
        format!("$(POD_IP):{BACKEND_ADMIN_PORT}"),
    ];
    args.extend(link_args());
    args.extend(["--config-map".to_owned(), workload.clone()]);

    let deployment = gateway_deployment(GatewayDeployment {
        name: &workload,
        namespace,
        labels,
        selector,
        owner: &inputs.owner,
        pod: inputs.pod,
        tier: "backend",
        args,
        ports: vec![
            container_port("tmp", LINK_PORT, "UDP"),
            container_port("admin", BACKEND_ADMIN_PORT, "TCP"),
        ],
        admin_port: BACKEND_ADMIN_PORT,
        replicas: desired_replicas(site),
        config_hash: &config_hash,
        restart_hash,
        // A new back-end counts as available only after this long, so a roll keeps the
        // old back-ends while the front-ends roll onto the new list.
        min_ready_seconds: Some(BACKEND_MIN_READY_SECONDS),
        node_selector: None,
        volumes: None,
        mounts: None,
        resources: None,
    });
    Ok(BackendObjects {
        config_map,
        service,
        deployment,
        config_hash,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::desired::site_file;
    use crate::names::RESTART_HASH_ANNOTATION;

    pub(crate) fn site(name: &str) -> Site {
        let mut site = Site::new(name, crate::desired::site_file::tests_support::shop());
        site.metadata.namespace = Some("web".into());
        site.metadata.uid = Some("uid-1".into());
        site
    }

    pub(crate) fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "causeway.dev/v1alpha1".into(),
            kind: "Site".into(),
            name: "shop".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn pod() -> PodSettings {
        PodSettings {
            image: "ghcr.io/causeway-dev/causeway:0.1.0".into(),
            service_account: "causeway-sidecar".into(),
            csr_cluster_role: "causeway-gateway-csr".into(),
        }
    }

    fn origins() -> Vec<OriginSpec> {
        let mut origin = site("shop").spec.origins[1].clone();
        origin.name = "main-10-0-0-1".into();
        origin.url = Some("http://10.0.0.1:8080".into());
        vec![origin]
    }

    #[test]
    fn renders_a_deployment_that_watches_its_config_map() -> Result<()> {
        let site = site("shop");
        let pod = pod();
        let objects = objects(&BackendInputs {
            site: &site,
            origins: origins(),
            owner: owner(),
            pod: &pod,
            link_ca: "ca-1",
        })?;
        let deployment = serde_json::to_value(&objects.deployment).map_err(|e| Error::Render {
            what: "test".into(),
            reason: e.to_string(),
        })?;
        assert_eq!(deployment["metadata"]["name"], "shop-backend");
        assert_eq!(deployment["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(deployment["spec"]["replicas"], 2);
        let template = &deployment["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["causeway.dev/site"], "shop");
        let args: Vec<String> =
            serde_json::from_value(template["spec"]["containers"][0]["args"].clone())
                .unwrap_or_default();
        assert_eq!(args[0], "backend");
        assert!(args.contains(&"$(POD_IP):4433".to_owned()));
        assert_eq!(
            args[args.len() - 2..],
            ["--config-map".to_owned(), "shop-backend".to_owned()]
        );
        assert!(
            template["spec"]["volumes"].is_null(),
            "no certificate Secret is mounted: the pod asks for its own"
        );
        let published = site_file::tests_support::document(&objects.config_map)?;
        assert_eq!(published.link_ca.as_deref(), Some("ca-1"));
        assert_eq!(template["spec"]["automountServiceAccountToken"], true);
        let env = template["spec"]["containers"][0]["env"].to_string();
        assert!(env.contains("POD_NAMESPACE"), "{env}");

        assert_eq!(published.sites.len(), 1);
        assert_eq!(published.sites[0].metadata.name.as_deref(), Some("shop"));
        assert_eq!(published.sites[0].spec.origins, origins());
        assert!(published.backends.is_empty(), "back-ends dial no back-end");
        assert_eq!(
            objects
                .service
                .spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref()),
            Some("None")
        );
        Ok(())
    }

    fn restart_hash(objects: &BackendObjects) -> Option<String> {
        objects
            .deployment
            .spec
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(RESTART_HASH_ANNOTATION)
            .cloned()
    }

    #[test]
    fn new_origins_are_published_live_and_only_a_new_ca_rolls_the_pods() -> Result<()> {
        let site = site("shop");
        let pod = pod();
        let inputs = BackendInputs {
            site: &site,
            origins: origins(),
            owner: owner(),
            pod: &pod,
            link_ca: "ca-1",
        };
        let first = objects(&inputs)?;
        let again = objects(&inputs)?;
        assert_eq!(first.config_hash, again.config_hash, "stable");
        assert_eq!(restart_hash(&first), restart_hash(&again), "stable");

        let mut moved = origins();
        moved[0].url = Some("http://10.0.0.2:8080".into());
        let new_origins = objects(&BackendInputs {
            origins: moved,
            ..inputs.clone()
        })?;
        assert_ne!(first.config_hash, new_origins.config_hash);
        assert_eq!(
            restart_hash(&first),
            restart_hash(&new_origins),
            "the pods apply new origins live: the template must not change"
        );

        let new_cert = objects(&BackendInputs {
            link_ca: "ca-2",
            ..inputs
        })?;
        assert_eq!(first.config_hash, new_cert.config_hash);
        assert_eq!(
            site_file::tests_support::document(&new_cert.config_map)?
                .link_ca
                .as_deref(),
            Some("ca-2"),
            "the new CA is published all the same"
        );
        assert!(restart_hash(&first).is_some());
        assert_ne!(restart_hash(&first), restart_hash(&new_cert));
        Ok(())
    }

    #[test]
    fn pods_invite_prometheus_to_scrape_the_admin_port() -> Result<()> {
        let site = site("shop");
        let pod = pod();
        let objects = objects(&BackendInputs {
            site: &site,
            origins: origins(),
            owner: owner(),
            pod: &pod,
            link_ca: "ca-1",
        })?;
        let template = objects.deployment.spec.template;
        let annotations = template
            .metadata
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "9902");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        let admin = template.spec.as_ref().and_then(|spec| {
            spec.containers[0]
                .ports
                .as_ref()?
                .iter()
                .find(|p| p.name.as_deref() == Some("admin"))
                .map(|p| p.container_port)
        });
        assert_eq!(admin, Some(9902), "the annotated port is the admin port");
        Ok(())
    }

    #[test]
    fn replicas_stay_within_min_and_max() {
        let mut site = site("shop");
        site.spec.backends.replicas = 9;
        site.spec.backends.min_replicas = Some(2);
        site.spec.backends.max_replicas = Some(4);
        assert_eq!(desired_replicas(&site), 4);
        site.spec.backends.replicas = 1;
        assert_eq!(desired_replicas(&site), 2);
    }
}
