//! Causeway's operator: reconciles `Site` resources into back-end gateway Deployments and
//! `Frontend` resources into front-end gateway Deployments, with their configuration, TMP
//! link certificates and status. `causeway operator` runs it.
//!
//! How the pieces fit: [`leader`] makes sure one replica writes; [`certificates`] keeps the
//! link CA and issues certificate Secrets; [`endpoints`] resolves Service origins;
//! [`desired`] computes every object as a pure function; [`reconcile`] applies them with
//! server-side apply; [`status`] writes what it saw; [`metrics`] counts it all.
#![forbid(unsafe_code)]

pub mod admin;
pub mod certificates;
pub mod desired;
pub mod endpoints;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod qos;
pub mod reconcile;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use causeway_api::contract::signing::LINK_SIGNER;
use causeway_api::{Frontend, Site};
use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

pub use error::{Error, Result};

use crate::desired::PodSettings;
use crate::metrics::Metrics;
use crate::names::{COMPONENT_LABEL, Tier};
use crate::reconcile::Context;

/// `causeway operator`'s flags.
#[derive(clap::Args, Clone, Debug)]
pub struct OperatorOptions {
    /// Watch only this namespace [default: every namespace].
    #[arg(long, env = "CAUSEWAY_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "causeway-operator")]
    pub lease_name: String,
    /// Namespace of the Lease and of the link CA Secret (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease [default: the host name].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Name of the Secret holding the TMP link CA (made when missing).
    #[arg(long, default_value = "causeway-link-ca")]
    pub ca_secret: String,
    /// The image of gateway pods (it must hold the `causeway` binary as its entrypoint).
    #[arg(
        long,
        env = "CAUSEWAY_IMAGE",
        default_value = "ghcr.io/causeway-dev/causeway:0.1.0"
    )]
    pub image: String,
    /// The ServiceAccount gateway pods run as (made in each namespace when missing).
    #[arg(long, default_value = "causeway-sidecar")]
    pub sidecar_service_account: String,
    /// The ClusterRole letting gateways ask for their link certificates (create and read
    /// CertificateSigningRequests); the operator binds it to the gateways' ServiceAccount
    /// of each namespace it serves.
    #[arg(long, default_value = "causeway-gateway-csr")]
    pub gateway_csr_role: String,
    /// How often the QoS loop scrapes the gateway pods and refreshes the Sites' and
    /// Frontends' `status.qos` (also the most often one object's status is written by it).
    #[arg(long, default_value = "10s")]
    pub qos_interval: causeway_api::Duration,
}

/// An API for `K` in `namespace`, or in every namespace.
fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs the operator until SIGTERM or SIGINT: waits for the leader Lease, then reconciles
/// Sites and Frontends while it holds it.
///
/// # Errors
/// When no cluster is found, the admin address cannot be bound, the link CA cannot be loaded,
/// or leadership is lost (the process should exit and restart as a follower).
pub async fn run(options: OperatorOptions) -> Result<()> {
    let client = kube::Client::try_default().await?;
    let metrics = Metrics::new();
    let admin = admin::serve(options.metrics_listen, metrics.clone()).await?;
    let identity = options.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("causeway-operator-{}", std::process::id()))
    });
    let elector = leader::Elector::new(
        client.clone(),
        &options.lease_namespace,
        &options.lease_name,
        &identity,
    );
    tracing::info!(identity, lease = %options.lease_name, namespace = %options.lease_namespace, "waiting for the leader Lease");

    let outcome = tokio::select! {
        acquired = elector.acquire() => match acquired {
            Ok(()) => lead(&options, client, metrics.clone(), &elector).await,
            Err(error) => Err(error),
        },
        () = terminated() => Ok(()),
    };
    metrics.set_leader(false);
    elector.release().await;
    admin.abort();
    outcome
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the controllers while this replica leads.
async fn lead(
    options: &OperatorOptions,
    client: kube::Client,
    metrics: Metrics,
    elector: &leader::Elector,
) -> Result<()> {
    metrics.set_leader(true);
    tracing::info!(
        identity = elector.identity(),
        "leading: starting the controllers"
    );
    let authority =
        certificates::load_or_create_ca(&client, &options.lease_namespace, &options.ca_secret)
            .await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: names::FIELD_MANAGER.to_owned(),
            instance: Some(elector.identity().to_owned()),
        },
    );
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            metrics.clone(),
            recorder,
            authority,
            PodSettings {
                image: options.image.clone(),
                service_account: options.sidecar_service_account.clone(),
                csr_cluster_role: options.gateway_csr_role.clone(),
            },
        )
        .watching(options.watch_namespace.clone()),
    );
    let namespace = options.watch_namespace.as_deref();
    let backend_labels = format!("{COMPONENT_LABEL}={}", Tier::Backend.as_str());
    let frontend_labels = format!("{COMPONENT_LABEL}={}", Tier::Frontend.as_str());

    let sites = Controller::new(
        scoped::<Site>(&client, namespace),
        watcher::Config::default(),
    );
    let site_store = sites.store();
    let slice_sites = site_store.clone();
    let sites = sites
        .owns(
            scoped::<Deployment>(&client, namespace),
            watcher::Config::default().labels(&backend_labels),
        )
        .owns(
            scoped::<ConfigMap>(&client, namespace),
            watcher::Config::default().labels(&backend_labels),
        )
        .watches(
            scoped::<EndpointSlice>(&client, namespace),
            watcher::Config::default(),
            move |slice| {
                let service = slice.labels().get(endpoints::SERVICE_NAME_LABEL).cloned();
                let namespace = slice.namespace();
                slice_sites
                    .state()
                    .into_iter()
                    .filter(|site| site.namespace() == namespace)
                    .filter(|site| {
                        service
                            .as_ref()
                            .is_some_and(|s| endpoints::referenced_services(&site.spec).contains(s))
                    })
                    .map(|site| ObjectRef::from_obj(site.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .run(
            reconcile::site::reconcile,
            |site, error, ctx| reconcile::error_policy(site, error, ctx, metrics::Controller::Site),
            ctx.clone(),
        )
        .for_each(|outcome| async move {
            if let Err(error) = outcome {
                tracing::debug!(%error, "site controller");
            }
        });

    let frontends = Controller::new(
        scoped::<Frontend>(&client, namespace),
        watcher::Config::default(),
    );
    let frontend_store = frontends.store();
    // A Frontend created, deleted or pointed at other Sites changes the link subsets of the
    // others serving those Sites (their rank among them): reconcile every Frontend then.
    let mut membership = reconcile::peers::Membership::default();
    let membership_changes = watcher::watcher(
        scoped::<Frontend>(&client, namespace),
        watcher::Config::default(),
    )
    // Backoff, so that an API server refusing the watch is not asked again in a tight loop.
    .default_backoff()
    .filter_map(|event| std::future::ready(event.ok()))
    .filter_map(move |event| std::future::ready(membership.changed(&event).then_some(())));
    let (by_site, by_pod, by_backends) = (
        frontend_store.clone(),
        frontend_store.clone(),
        frontend_store.clone(),
    );
    let frontends = frontends
        .reconcile_all_on(membership_changes)
        .owns(
            scoped::<Deployment>(&client, namespace),
            watcher::Config::default().labels(&frontend_labels),
        )
        .watches(
            scoped::<Site>(&client, namespace),
            watcher::Config::default(),
            move |site| same_namespace(&by_site, site.namespace()),
        )
        .watches(
            scoped::<Deployment>(&client, namespace),
            watcher::Config::default().labels(&backend_labels),
            move |deployment| same_namespace(&by_backends, deployment.namespace()),
        )
        .watches(
            scoped::<Pod>(&client, namespace),
            watcher::Config::default().labels(&backend_labels),
            move |pod| same_namespace(&by_pod, pod.namespace()),
        )
        .run(
            reconcile::frontend::reconcile,
            |frontend, error, ctx| {
                reconcile::error_policy(frontend, error, ctx, metrics::Controller::Frontend)
            },
            ctx.clone(),
        )
        .for_each(|outcome| async move {
            if let Err(error) = outcome {
                tracing::debug!(%error, "frontend controller");
            }
        });

    // Gateways' certificate requests: only those under our signer (a field selector the API
    // server supports for CSRs), so other signers' requests never reach the operator.
    let signer = Controller::new(
        Api::<CertificateSigningRequest>::all(client.clone()),
        watcher::Config::default().fields(&format!("spec.signerName={LINK_SIGNER}")),
    )
    .run(
        reconcile::signer::reconcile,
        |request, error, ctx| {
            reconcile::error_policy(request, error, ctx, metrics::Controller::Signer)
        },
        ctx.clone(),
    )
    .for_each(|outcome| async move {
        if let Err(error) = outcome {
            tracing::debug!(%error, "signer controller");
        }
    });

    let gauges = {
        let metrics = metrics.clone();
        async move {
            loop {
                metrics.set_managed(metrics::Controller::Site, site_store.state().len());
                metrics.set_managed(metrics::Controller::Frontend, frontend_store.state().len());
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };

    let collector = qos::collector::Collector::new(
        client.clone(),
        options.watch_namespace.clone(),
        metrics.clone(),
    )
    .run(options.qos_interval.get());

    tokio::select! {
        () = sites => Ok(()),
        () = frontends => Ok(()),
        () = signer => Ok(()),
        () = gauges => Ok(()),
        () = collector => Ok(()),
        lost = elector.hold() => Err(lost),
        () = terminated() => {
            tracing::info!("terminating: releasing the leader Lease");
            Ok(())
        }
    }
}

/// References to every Frontend in `namespace`: a change of a Site or a back-end pod there
/// may change what they serve.
fn same_namespace(
    store: &kube::runtime::reflector::Store<Frontend>,
    namespace: Option<String>,
) -> Vec<ObjectRef<Frontend>> {
    store
        .state()
        .into_iter()
        .filter(|frontend| frontend.namespace() == namespace)
        .map(|frontend| ObjectRef::from_obj(frontend.as_ref()))
        .collect()
}
