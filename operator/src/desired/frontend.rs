//! A Frontend's front-end gateways: a ConfigMap with the gateway configuration document (each
//! Site served, its back-ends, the link CA), a Service for clients, and a Deployment running
//! `causeway frontend` placed in the Frontend's region.
//!
//! Front-ends reach back-ends by pod IP (each Site's ready back-end pods at `IP:4433` in the
//! document's `backends`): the test bed has no kube-proxy, and a front-end keeps one
//! TMP link per listed back-end anyway, which a headless Service gives in a real cluster too.
//! Each Site lists the Frontend's subset of its ready back-ends (`spec.links.subsetSize`,
//! chosen by [`super::subset`] in the reconciler), not all of them. The front-ends watch the
//! ConfigMap, so a back-end coming or going reaches them live.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use causeway_api::Frontend;
use causeway_api::contract::GatewayConfig;
use causeway_api::frontend::ServiceType;
use causeway_api::site::SiteSpec;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, SecretVolumeSource, Service, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{
    GatewayDeployment, PodSettings, config_data, container_port, data_hash, gateway_deployment,
    link_args, meta, service_port,
};
use crate::error::{Error, Result};
use crate::names::{self, FRONTEND_ADMIN_PORT, FRONTEND_HTTP_PORT, FRONTEND_HTTPS_PORT, Tier};

/// The node label holding a node's region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// One Site a Frontend serves, with its ready back-ends.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedSite {
    /// The Site's name.
    pub name: String,
    /// Its spec.
    pub spec: SiteSpec,
    /// TMP addresses of its ready back-end pods, sorted.
    pub backends: Vec<SocketAddr>,
}

/// Everything a Frontend's objects are computed from.
#[derive(Clone, Debug)]
pub struct FrontendInputs<'a> {
    /// The Frontend.
    pub frontend: &'a Frontend,
    /// The Sites it serves, by name.
    pub sites: &'a [ServedSite],
    /// The owner reference to the Frontend.
    pub owner: OwnerReference,
    /// Image and ServiceAccount.
    pub pod: &'a PodSettings,
    /// The TMP link CA certificate (PEM): published in the ConfigMap; a new CA rolls the pods,
    /// which then ask for certificates under it.
    pub link_ca: &'a str,
}

/// The front-end objects of one Frontend.
#[derive(Clone, Debug)]
pub struct FrontendObjects {
    /// The gateway configuration document: the Sites and their back-ends.
    pub config_map: ConfigMap,
    /// The client-facing Service.
    pub service: Service,
    /// The gateways; `None` while no served Site has a ready back-end (a front-end needs one).
    pub deployment: Option<Deployment>,
    /// The hash of the published configuration (the ConfigMap's data).
    pub config_hash: String,
    /// What could not be done as the spec asks (for a Warning event).
    pub warnings: Vec<String>,
}

/// Where client TLS material is mounted in front-end pods.
pub const TLS_DIR: &str = "/etc/causeway/tls";

/// The TLS Secret front-ends serve HTTPS with, and warnings. A front-end process serves one
/// certificate in v1: the first served Site's (by name) that has `tls`; a Site naming another
/// Secret gets a warning (its certificate should cover every HTTPS host name).
pub fn client_tls(sites: &[&ServedSite], https_port: Option<u16>) -> (Option<String>, Vec<String>) {
    let with_tls: Vec<(&str, &str)> = sites
        .iter()
        .filter_map(|site| {
            Some((
                site.name.as_str(),
                site.spec.tls.as_ref()?.secret_name.as_str(),
            ))
        })
        .collect();
    let mut warnings = Vec::new();
    if https_port.is_none() {
        if let Some((site, _)) = with_tls.first() {
            warnings.push(format!(
                "Site {site} has tls but the Frontend has no service.httpsPort: HTTPS is not served"
            ));
        }
        return (None, warnings);
    }
    let Some((_, secret)) = with_tls.first() else {
        warnings.push(
            "service.httpsPort is set but no served Site has tls: HTTPS is not served".to_owned(),
        );
        return (None, warnings);
    };
    let others: Vec<&str> = with_tls
        .iter()
        .filter(|(_, other)| other != secret)
        .map(|(site, _)| *site)
        .collect();
    if !others.is_empty() {
        warnings.push(format!(
            "front-ends serve one certificate: Secret {secret} is used for every HTTPS Site, also for {}",
            others.join(", ")
        ));
    }
    (Some((*secret).to_owned()), warnings)
}

/// The front-end objects of `inputs.frontend`.
///
/// # Errors
/// When the Frontend has no name or namespace, or a Site file cannot be rendered.
pub fn objects(inputs: &FrontendInputs<'_>) -> Result<FrontendObjects> {
    let frontend = inputs.frontend;
    let (name, namespace) = match (&frontend.metadata.name, &frontend.metadata.namespace) {
        (Some(name), Some(namespace)) => (name.as_str(), namespace.as_str()),
        _ => {
            return Err(Error::MissingField {
                kind: "Frontend",
                field: "metadata.name or metadata.namespace",
            });
        }
    };
    let workload = names::workload(name, Tier::Frontend);
    let labels = names::labels(name, Tier::Frontend);
    let selector = names::selector(name, Tier::Frontend);

    let mut sites: Vec<&ServedSite> = inputs.sites.iter().collect();
    sites.sort_by(|a, b| a.name.cmp(&b.name));
    // Only Sites with a ready back-end are published: a front-end cannot serve the others.
    let serving: Vec<&ServedSite> = sites
        .iter()
        .copied()
        .filter(|s| !s.backends.is_empty())
        .collect();
    let mut config = GatewayConfig {
        sites: Vec::with_capacity(serving.len()),
        backends: BTreeMap::new(),
        link_ca: Some(inputs.link_ca.to_owned()),
    };
    for site in &serving {
        let origins = super::site_file::frontend_origins(namespace, &site.spec);
        config.sites.push(super::site_file::render(
            &site.name, namespace, &site.spec, origins,
        )?);
        config
            .backends
            .insert(site.name.clone(), site.backends.clone());
    }
    let data = config_data(&config)?;
    let https_port = frontend.spec.service.https_port;
    let (tls_secret, warnings) = client_tls(&sites, https_port);
    let config_hash = data_hash(&data);
    let restart_hash = names::content_hash([
        inputs.link_ca.as_bytes(),
        tls_secret.as_deref().unwrap_or_default().as_bytes(),
    ]);
    let config_map = ConfigMap {
        metadata: meta(&workload, namespace, labels.clone(), &inputs.owner),
        data: Some(data),
        ..ConfigMap::default()
    };

    let spec = &frontend.spec;
    let service_type = match spec.service.service_type {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let mut ports = vec![service_port(
        "http",
        "TCP",
        spec.service.http_port,
        FRONTEND_HTTP_PORT,
    )];
    if let (Some(port), Some(_)) = (https_port, &tls_secret) {
        ports.push(service_port("https", "TCP", port, FRONTEND_HTTPS_PORT));
    }
    let service = Service {
        metadata: meta(&workload, namespace, labels.clone(), &inputs.owner),
        spec: Some(ServiceSpec {
            type_: Some(service_type.to_owned()),
            selector: Some(selector.clone()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let deployment = if serving.is_empty() {
        None
    } else {
        // `--blender-weights` takes exactly five values, class 0 first; a shorter list (the
        // schema allows it) is completed with the defaults.
        let weights = causeway_api::frontend::DEFAULT_WEIGHTS
            .iter()
            .enumerate()
            .map(|(class, default)| {
                spec.blender
                    .weights
                    .get(class)
                    .unwrap_or(default)
                    .to_string()
            });
        let mut args = vec![
            "frontend".to_owned(),
            "--listen".to_owned(),
            format!("$(POD_IP):{FRONTEND_HTTP_PORT}"),
            "--admin-listen".to_owned(),
            format!("$(POD_IP):{FRONTEND_ADMIN_PORT}"),
            "--tunnel-ip".to_owned(),
            "$(POD_IP)".to_owned(),
            "--sub-packet-bytes".to_owned(),
            spec.blender.sub_packet_bytes.to_string(),
            "--blender-weights".to_owned(),
        ];
        args.extend(weights);
        if tls_secret.is_some() {
            args.extend([
                "--tls-listen".to_owned(),
                format!("$(POD_IP):{FRONTEND_HTTPS_PORT}"),
                "--tls-cert".to_owned(),
                format!("{TLS_DIR}/tls.crt"),
                "--tls-key".to_owned(),
                format!("{TLS_DIR}/tls.key"),
            ]);
        }
        args.extend(link_args());
        args.extend(["--config-map".to_owned(), workload.clone()]);
        let mut container_ports = vec![
            container_port("http", FRONTEND_HTTP_PORT, "TCP"),
            container_port("admin", FRONTEND_ADMIN_PORT, "TCP"),
        ];
        let mut mounts = Vec::new();
        let mut volumes = Vec::new();
        if let Some(secret) = &tls_secret {
            volumes.push(Volume {
                name: "tls".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(VolumeMount {
                name: "tls".to_owned(),
                mount_path: TLS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            container_ports.push(container_port("https", FRONTEND_HTTPS_PORT, "TCP"));
        }
        Some(gateway_deployment(GatewayDeployment {
            name: &workload,
            namespace,
            labels,
            selector,
            owner: &inputs.owner,
            pod: inputs.pod,
            tier: "frontend",
            args,
            ports: container_ports,
            admin_port: FRONTEND_ADMIN_PORT,
            replicas: spec.replicas,
            config_hash: &config_hash,
            restart_hash,
            min_ready_seconds: None,
            node_selector: Some(BTreeMap::from([(
                REGION_LABEL.to_owned(),
                spec.region.clone(),
            )])),
            volumes: Some(volumes),
            mounts: Some(mounts),
            resources: spec.resources.clone(),
        }))
    };
    Ok(FrontendObjects {
        config_map,
        service,
        deployment,
        config_hash,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::site_file::tests_support::{document, shop};
    use crate::names::RESTART_HASH_ANNOTATION;

    fn frontend() -> Frontend {
        let mut frontend: Frontend = serde_yaml_ng::from_str(
            r#"
apiVersion: causeway.dev/v1alpha1
kind: Frontend
metadata: { name: edge, namespace: web, uid: uid-2 }
spec:
  region: eu-west
  replicas: 3
  sites: [shop]
  service: { type: ClusterIP, httpPort: 80 }
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        frontend.spec.blender.sub_packet_bytes = 4096;
        frontend
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "causeway.dev/v1alpha1".into(),
            kind: "Frontend".into(),
            name: "edge".into(),
            uid: "uid-2".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn pod() -> PodSettings {
        PodSettings {
            image: "causeway:dev".into(),
            service_account: "causeway-sidecar".into(),
            csr_cluster_role: "causeway-gateway-csr".into(),
        }
    }

    fn served(backends: &[&str]) -> Vec<ServedSite> {
        vec![ServedSite {
            name: "shop".into(),
            spec: shop(),
            backends: backends.iter().filter_map(|b| b.parse().ok()).collect(),
        }]
    }

    fn render(sites: &[ServedSite]) -> Result<FrontendObjects> {
        let frontend = frontend();
        let pod = pod();
        objects(&FrontendInputs {
            frontend: &frontend,
            sites,
            owner: owner(),
            pod: &pod,
            link_ca: "ca",
        })
    }

    #[test]
    fn lists_each_ready_backend_and_places_pods_in_the_region() -> Result<()> {
        let sites = served(&["127.64.1.7:4433", "127.64.2.3:4433"]);
        let objects = render(&sites)?;
        let value = serde_json::to_value(objects.deployment.as_ref()).unwrap_or_default();
        assert_eq!(value["spec"]["replicas"], 3);
        let pod = &value["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"][REGION_LABEL], "eu-west");
        let args: Vec<String> =
            serde_json::from_value(pod["containers"][0]["args"].clone()).unwrap_or_default();
        assert!(args.contains(&"4096".to_owned()));
        let weights = args
            .iter()
            .position(|a| a == "--blender-weights")
            .unwrap_or(0);
        assert_eq!(args[weights + 1..weights + 6], ["16", "8", "4", "2", "1"]);
        assert_eq!(
            args[args.len() - 2..],
            ["--config-map".to_owned(), "edge-frontend".to_owned()]
        );
        assert_eq!(pod["automountServiceAccountToken"], true);
        let published = document(&objects.config_map)?;
        assert_eq!(
            published.backends,
            BTreeMap::from([(
                "shop".to_owned(),
                vec![
                    SocketAddr::from(([127, 64, 1, 7], 4433)),
                    SocketAddr::from(([127, 64, 2, 3], 4433)),
                ]
            )])
        );
        assert_eq!(published.link_ca.as_deref(), Some("ca"));
        assert_eq!(published.sites[0].metadata.name.as_deref(), Some("shop"));
        assert_eq!(
            published.sites[0].spec.origins[0].url.as_deref(),
            Some("http://shop-origin.web.svc:80")
        );
        let service = serde_json::to_value(&objects.service).unwrap_or_default();
        assert_eq!(service["spec"]["ports"][0]["port"], 80);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
        Ok(())
    }

    #[test]
    fn https_uses_the_first_tls_site_and_warns_about_others() -> Result<()> {
        let mut sites = served(&["127.64.1.7:4433"]);
        sites[0].spec.tls = Some(causeway_api::site::TlsSpec {
            secret_name: "shop-tls".into(),
        });
        let mut blog = sites[0].clone();
        blog.name = "blog".into();
        blog.spec.tls = Some(causeway_api::site::TlsSpec {
            secret_name: "blog-tls".into(),
        });
        sites.push(blog);
        let mut frontend = frontend();
        frontend.spec.service.https_port = Some(443);
        let pod = pod();
        let objects = objects(&FrontendInputs {
            frontend: &frontend,
            sites: &sites,
            owner: owner(),
            pod: &pod,
            link_ca: "ca",
        })?;
        let value = serde_json::to_value(objects.deployment.as_ref()).unwrap_or_default();
        let pod_spec = &value["spec"]["template"]["spec"];
        // "blog" sorts first, so its Secret serves; "shop" gets a warning.
        assert_eq!(pod_spec["volumes"][0]["secret"]["secretName"], "blog-tls");
        let args: Vec<String> =
            serde_json::from_value(pod_spec["containers"][0]["args"].clone()).unwrap_or_default();
        assert!(args.contains(&"$(POD_IP):8443".to_owned()), "{args:?}");
        assert!(
            objects.warnings[0].contains("shop"),
            "{:?}",
            objects.warnings
        );
        let service = serde_json::to_value(&objects.service).unwrap_or_default();
        assert_eq!(service["spec"]["ports"][1]["port"], 443);
        assert_eq!(service["spec"]["ports"][1]["targetPort"], 8443);

        // Without httpsPort: no TLS listener, a warning.
        frontend.spec.service.https_port = None;
        let plain = objects_for(&frontend, &sites)?;
        assert!(plain.warnings[0].contains("no service.httpsPort"));
        let value = serde_json::to_value(plain.deployment.as_ref()).unwrap_or_default();
        assert!(
            value["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .is_some_and(Vec::is_empty)
        );
        Ok(())
    }

    fn objects_for(frontend: &Frontend, sites: &[ServedSite]) -> Result<FrontendObjects> {
        let pod = pod();
        objects(&FrontendInputs {
            frontend,
            sites,
            owner: owner(),
            pod: &pod,
            link_ca: "ca",
        })
    }

    #[test]
    fn pods_invite_prometheus_to_scrape_the_admin_port() -> Result<()> {
        let objects = render(&served(&["127.64.1.7:4433"]))?;
        let value = serde_json::to_value(objects.deployment.as_ref()).unwrap_or_default();
        let annotations = &value["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "9901");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        let ports = &value["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert!(
            ports
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "admin" && p["containerPort"] == 9901),
            "the annotated port is the admin port: {ports}"
        );
        Ok(())
    }

    #[test]
    fn no_deployment_until_a_backend_is_ready() -> Result<()> {
        assert!(render(&served(&[]))?.deployment.is_none());
        Ok(())
    }

    fn restart_hash(objects: &FrontendObjects) -> Option<String> {
        let template = objects.deployment.as_ref()?.spec.template.clone();
        template
            .metadata?
            .annotations?
            .get(RESTART_HASH_ANNOTATION)
            .cloned()
    }

    #[test]
    fn new_backends_are_published_live_without_rolling_the_pods() -> Result<()> {
        let one = render(&served(&["127.64.1.7:4433"]))?;
        let same = render(&served(&["127.64.1.7:4433"]))?;
        let moved = render(&served(&["127.64.1.8:4433"]))?;
        assert_eq!(one.config_hash, same.config_hash);
        assert_ne!(one.config_hash, moved.config_hash);
        assert!(restart_hash(&one).is_some());
        assert_eq!(restart_hash(&one), restart_hash(&moved));
        Ok(())
    }

    #[test]
    fn sites_without_a_ready_backend_are_not_published() -> Result<()> {
        let mut sites = served(&["127.64.1.7:4433"]);
        let mut blog = sites[0].clone();
        blog.name = "blog".into();
        blog.backends.clear();
        sites.push(blog);
        let published = document(&render(&sites)?.config_map)?;
        let names: Vec<Option<&str>> = published
            .sites
            .iter()
            .map(|s| s.metadata.name.as_deref())
            .collect();
        assert_eq!(names, [Some("shop")]);
        assert!(!published.backends.contains_key("blog"));
        Ok(())
    }
}
