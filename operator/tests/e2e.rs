//! The operator end to end, on the test bed's real control plane with the test kubelet
//! running every pod as a real `causeway` process, one test per behaviour: each test has its
//! own namespace in the one test bed of this binary, `helm install`s the chart there (its own
//! release: cluster-scoped RBAC is named after it) and, most of them, applies three origins, a
//! Site and a Frontend and waits until the Site and Frontend are Ready and a front-end pod
//! answers. Then: a front-end answers through front-end → TMP → back-end → origin;
//! `kubectl scale frontend` to three; the origins' endpoints change and the gateways apply the
//! new configuration live (same pods, no failed request); each gateway pod holds its own link
//! certificate and a forged certificate request is denied; a hand-broken ConfigMap is refused
//! and restored; an invalid Site is refused with the CEL message; an operator restart changes
//! nothing; deleting the Site removes what it made; the gateways' ServiceAccount cannot read
//! Secrets elsewhere; a leader that loses its Lease stops writing; front-ends serve HTTPS.
//!
//! Tests run in parallel threads (as many as cores, unless `--test-threads` says otherwise);
//! they share nothing but the control plane, and every wait is bounded by [`TIMEOUT`].
//!
//! Needs the test bed's binaries; run with
//! `CAUSEWAY_K8S_BIN=$(tests/testbed/provision.sh --print-bin-dir) cargo test -p causeway-operator --test e2e`.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use causeway_api::contract::{CONFIG_KEY, GatewayConfig};
use causeway_testbed::testbed::{processes_matching, wait_for};
use causeway_testbed::{TestBed, TestNamespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Api;
use kube::api::ListParams;
use support::{BACKEND_PODS, FRONTEND, FRONTEND_PODS, HOST, TIMEOUT, get, origins, site};

const MANAGED: &str = "app.kubernetes.io/managed-by=causeway-operator";

/// Origin pods every deployed test starts.
const ORIGINS: usize = 3;

/// Prints `e2e TEST: SECONDS  WHAT`, the seconds counted from this call: where a slow test
/// spent its time.
fn stepper(test: &'static str) -> impl Fn(&str) {
    let started = Instant::now();
    move |what: &str| {
        eprintln!(
            "e2e {test}: {:>6.1} s  {what}",
            started.elapsed().as_secs_f64()
        );
    }
}

/// This test's own namespace, named after `release`, with the chart installed in it as
/// release `release` (unique per test) with `operators` operator replicas.
async fn installed(release: &str, operators: u32) -> TestNamespace {
    let bed = TestBed::shared().await.expect("the test bed starts");
    let ns = bed
        .namespace(&format!("operator-{release}"))
        .await
        .expect("a test namespace");
    support::install_as(&ns, release, operators).await;
    ns
}

/// Applies three origins, the Site (two back-ends) and the Frontend in `ns`, waits until the
/// Site and the Frontend are Ready.
async fn apply_shop(ns: &TestNamespace) {
    ns.apply(&origins(ORIGINS as u32, &[]))
        .await
        .expect("origins apply");
    ns.apply(&site(2)).await.expect("the Site applies");
    ns.apply(FRONTEND).await.expect("the Frontend applies");
    support::wait_site_and_frontend_ready(ns).await;
}

/// [`installed`], then [`apply_shop`], then waits until the one front-end serves the Site;
/// returns the namespace and the front-end's IP.
async fn deployed(release: &str, operators: u32) -> (TestNamespace, IpAddr) {
    let ns = installed(release, operators).await;
    apply_shop(&ns).await;
    let frontends = support::frontends_serving(&ns, 1, TIMEOUT).await;
    (ns, frontends[0])
}

/// Waits until one operator replica holds the Lease; its identity.
async fn leader(ns: &TestNamespace) -> String {
    let leases: Api<Lease> = ns.api();
    wait_for("a leader", TIMEOUT, || async {
        leases
            .get("causeway-operator")
            .await
            .ok()?
            .spec?
            .holder_identity
    })
    .await
    .expect("one operator replica takes the Lease")
}

/// The gateways' ServiceAccount in `ns`, as `kubectl --as` names it.
fn gateway_account(ns: &TestNamespace) -> String {
    format!("system:serviceaccount:{}:causeway-sidecar", ns.name())
}

/// `kubectl auth can-i` as `account`: true for "yes".
async fn can_i(
    ns: &TestNamespace,
    account: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    let mut kubectl = ns.bed().kubectl_command();
    kubectl
        .args([
            "auth", "can-i", verb, resource, "-n", namespace, "--as", account,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = kubectl.output().await.expect("kubectl runs");
    String::from_utf8_lossy(&output.stdout).trim() == "yes"
}
/// The resourceVersion of everything the operator made in `ns`, and the Site and Frontend
/// as the reconcilers leave them (all but the QoS collector's figures).
async fn versions(ns: &TestNamespace) -> BTreeMap<String, String> {
    let by_label = ListParams::default().labels(MANAGED);
    let mut found = BTreeMap::new();
    let deployments: Api<Deployment> = ns.api();
    for d in deployments
        .list(&by_label)
        .await
        .expect("deployments")
        .items
    {
        // The deployment controller writes a Deployment's status as its pods come and go, so
        // its resourceVersion moves without any write of ours: what the operator writes is
        // the spec (which moves the generation) and the metadata.
        found.insert(
            format!("deployment/{}", d.metadata.name.unwrap_or_default()),
            format!(
                "generation {:?}, labels {:?}, annotations {:?}",
                d.metadata.generation, d.metadata.labels, d.metadata.annotations
            ),
        );
    }
    let services: Api<Service> = ns.api();
    for s in services.list(&by_label).await.expect("services").items {
        found.insert(
            format!("service/{}", s.metadata.name.unwrap_or_default()),
            s.metadata.resource_version.unwrap_or_default(),
        );
    }
    let maps: Api<ConfigMap> = ns.api();
    for c in maps.list(&by_label).await.expect("configmaps").items {
        found.insert(
            format!("configmap/{}", c.metadata.name.unwrap_or_default()),
            c.metadata.resource_version.unwrap_or_default(),
        );
    }
    let secrets: Api<Secret> = ns.api();
    for s in secrets.list(&by_label).await.expect("secrets").items {
        found.insert(
            format!("secret/{}", s.metadata.name.unwrap_or_default()),
            s.metadata.resource_version.unwrap_or_default(),
        );
    }
    for kind in ["site/shop", "frontend/edge"] {
        let text = ns
            .kubectl(&["get", kind, "-o", "json"], None)
            .await
            .expect("kubectl get");
        let mut object: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        // The QoS collector refreshes its figures (its own field manager) whatever the
        // reconciler does; what the reconciler wrote is the rest.
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
            metadata.remove("managedFields");
        }
        if let Some(status) = object["status"].as_object_mut() {
            status.remove("qos");
            status.remove("latencyP99");
        }
        found.insert(kind.to_owned(), object.to_string());
    }
    found
}

/// The origin URLs in the back-end configuration document (the ConfigMap's
/// [`CONFIG_KEY`]); none while it is missing or does not parse.
async fn backend_origin_urls(ns: &TestNamespace) -> Vec<String> {
    let maps: Api<ConfigMap> = ns.api();
    let Ok(map) = maps.get("shop-backend").await else {
        return Vec::new();
    };
    let text = map
        .data
        .unwrap_or_default()
        .remove(CONFIG_KEY)
        .unwrap_or_default();
    let Ok(config) = GatewayConfig::from_yaml(&text) else {
        return Vec::new();
    };
    let mut urls: Vec<String> = config
        .sites
        .iter()
        .flat_map(|s| s.spec.origins.iter().filter_map(|o| o.url.clone()))
        .collect();
    urls.sort();
    urls
}

/// `http://IP:8080` of each ready origin pod.
async fn origin_urls(ns: &TestNamespace) -> Vec<String> {
    let mut urls: Vec<String> = support::ready_ips(ns, "app=shop-origin")
        .await
        .iter()
        .map(|ip| format!("http://{ip}:8080"))
        .collect();
    urls.sort();
    urls
}

/// The gateways' account reads no Secrets, here or elsewhere; once a Site is reconciled the
/// operator has let it read its ConfigMaps here (nothing elsewhere) and ask for its link
/// certificate.
#[tokio::test]
async fn the_gateways_account_reads_only_its_own_config_maps_and_no_secrets() {
    let step = stepper("account");
    let ns = installed("account", 1).await;
    step("helm install done");
    let other = ns
        .bed()
        .namespace("operator-account-other")
        .await
        .expect("another namespace");
    let account = gateway_account(&ns);
    assert!(
        !can_i(&ns, &account, "get", "secrets", other.name()).await,
        "no Secrets of other namespaces"
    );
    assert!(
        !can_i(&ns, &account, "get", "secrets", ns.name()).await,
        "no Secrets here either"
    );

    apply_shop(&ns).await;
    step("Site and Frontend Ready");
    assert!(
        can_i(&ns, &account, "get", "configmaps", ns.name()).await,
        "its own ConfigMaps"
    );
    assert!(
        !can_i(&ns, &account, "get", "configmaps", other.name()).await,
        "no ConfigMaps of other namespaces"
    );
    assert!(
        can_i(
            &ns,
            &account,
            "create",
            "certificatesigningrequests",
            ns.name()
        )
        .await,
        "it may ask for its link certificate"
    );
}

/// An invalid Site is refused by the API server with the CEL message.
#[tokio::test]
async fn the_api_server_refuses_an_invalid_site_with_the_cel_message() {
    let ns = installed("cel", 1).await;
    let invalid = site(2).replace(
        "service: { name: shop-origin, port: 80 }",
        "service: { name: shop-origin, port: 80 }\n      url: http://192.0.2.1:8080",
    );
    let refused = ns
        .apply(&invalid)
        .await
        .expect_err("the API server refuses the Site");
    assert!(
        refused
            .to_string()
            .contains("exactly one of url and service must be set"),
        "{refused}"
    );
}

/// Origins, Site, Frontend → Ready, and a request through both tiers answered by an origin
/// pod; the back-end configuration lists one origin per origin endpoint.
#[tokio::test]
async fn a_front_end_answers_through_both_tiers_from_an_origin_pod() {
    let step = stepper("serve");
    let (ns, frontend) = deployed("serve", 1).await;
    step("Site and Frontend Ready, a front-end serving");
    let answer = get(SocketAddr::new(frontend, 8080), HOST, "/hello")
        .await
        .expect("the front-end answers");
    assert_eq!(answer.status, 200, "{answer:?}");
    let origin = answer.headers.get("x-origin").cloned().unwrap_or_default();
    assert!(
        origin.starts_with("shop-origin-"),
        "answered by an origin pod: {answer:?}"
    );
    assert!(answer.body.contains("/hello"), "{answer:?}");
    step(&format!("front-end {frontend} answered from {origin}"));
    assert_eq!(
        backend_origin_urls(&ns).await,
        origin_urls(&ns).await,
        "one back-end origin per origin endpoint"
    );
}

/// What a person sees: the Frontend's status, printer columns and the operator's events.
#[tokio::test]
async fn kubectl_shows_the_status_printer_columns_and_the_operators_events() {
    let (ns, _) = deployed("kubectl", 1).await;
    let status: serde_json::Value = serde_json::from_str(
        &ns.kubectl(&["get", "frontend/edge", "-o", "json"], None)
            .await
            .expect("kubectl get"),
    )
    .expect("JSON");
    assert_eq!(status["status"]["sites"][0], "shop");
    assert_eq!(status["status"]["selector"], FRONTEND_PODS);
    assert!(status["status"]["observedGeneration"].as_i64().is_some());

    let listed = ns
        .kubectl(&["get", "sites,frontends"], None)
        .await
        .expect("kubectl get sites,frontends");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("site.causeway.dev/shop") && l.contains("shop.example.com")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("frontend.causeway.dev/edge") && l.contains("eu-west")),
        "{listed}"
    );
    let events = ns
        .get_jsonpath("events", "{range .items[*]}{.reason}{\"\\n\"}{end}")
        .await
        .expect("kubectl get events");
    for reason in ["LinkCertificateIssued", "ConfigurationApplied"] {
        assert!(
            events.lines().any(|l| l == reason),
            "a {reason} event in:\n{events}"
        );
    }
}

/// The scale subresource: `kubectl scale frontend` to three gives three front-end processes
/// serving and `status.readyReplicas` 3; a HorizontalPodAutoscaler can read the scale.
#[tokio::test]
async fn kubectl_scale_frontend_runs_three_serving_front_ends_and_an_hpa_reads_the_scale() {
    let step = stepper("scale");
    let (ns, _) = deployed("scale", 1).await;
    ns.kubectl(&["scale", "frontend/edge", "--replicas=3"], None)
        .await
        .expect("kubectl scale");
    let three = support::frontends_serving(&ns, 3, TIMEOUT).await;
    for ip in &three {
        assert!(
            !processes_matching(&format!("{ip}:8080")).is_empty(),
            "a process serves {ip}:8080"
        );
    }
    step("three front-ends serving");

    // The controller-manager's HPA controller reads the scale (AbleToScale). With no
    // metrics server here it cannot compute a recommendation, so it changes nothing.
    ns.kubectl(
        &[
            "autoscale",
            "frontend/edge",
            "--min=1",
            "--max=4",
            "--cpu-percent=80",
        ],
        None,
    )
    .await
    .expect("kubectl autoscale frontend");
    wait_for("the HPA to read the Frontend's scale", TIMEOUT, || async {
        let able = ns
            .get_jsonpath(
                "hpa/edge",
                "{.status.conditions[?(@.type==\"AbleToScale\")].status}",
            )
            .await
            .ok()?;
        (able.trim() == "True").then_some(())
    })
    .await
    .expect("the HPA controller reads the scale subresource");
    ns.kubectl(&["delete", "hpa/edge"], None)
        .await
        .expect("kubectl delete hpa");
    step("an HPA reads the Frontend's scale subresource");

    wait_for("status.readyReplicas = 3", TIMEOUT, || async {
        let ready = ns
            .get_jsonpath("frontend/edge", "{.status.readyReplicas}")
            .await
            .ok()?;
        (ready.trim() == "3").then_some(())
    })
    .await
    .expect("the Frontend reports three ready replicas");
}

/// The origins' endpoints change: the back-end configuration follows, the gateways apply it
/// live (the same pods, no roll) and no request fails meanwhile.
#[tokio::test]
async fn the_back_ends_follow_the_origins_endpoints_live_without_a_failed_request() {
    let step = stepper("endpoints");
    let (ns, _) = deployed("endpoints", 1).await;
    let before = backend_origin_urls(&ns).await;
    let old_backends = support::ready_names(&ns, BACKEND_PODS).await;
    let old_frontends = support::ready_names(&ns, FRONTEND_PODS).await;
    ns.kubectl(&["scale", "deployment/shop-origin", "--replicas=2"], None)
        .await
        .expect("kubectl scale origins");
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let attempts = AtomicU32::new(0);
    let send = |ip: std::net::IpAddr| {
        let (failures, attempts) = (&failures, &attempts);
        async move {
            attempts.fetch_add(1, Ordering::Relaxed);
            let outcome = get(SocketAddr::new(ip, 8080), HOST, "/during-change").await;
            if !matches!(&outcome, Ok(a) if a.status == 200) {
                let what = match outcome {
                    Ok(answer) => format!("{ip}: HTTP {} {}", answer.status, answer.body.trim()),
                    Err(error) => format!("{ip}: {error}"),
                };
                if let Ok(mut failures) = failures.lock() {
                    failures.push(what);
                }
            }
        }
    };
    let followed = wait_for(
        "the back-end configuration to list the two remaining origins",
        TIMEOUT,
        || {
            let ns = &ns;
            async move {
                for ip in support::ready_ips(ns, FRONTEND_PODS).await {
                    send(ip).await;
                }
                let now = backend_origin_urls(ns).await;
                let live = origin_urls(ns).await;
                (now.len() == 2 && now == live).then_some(now)
            }
        },
    )
    .await
    .expect("the back-end configuration follows the endpoints");
    assert_ne!(before, followed);
    // The gateways apply the new ConfigMap live: requests keep flowing for a while after,
    // through the very same pods (no roll).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        for ip in support::ready_ips(&ns, FRONTEND_PODS).await {
            send(ip).await;
        }
    }
    let failed = failures.lock().map(|f| f.clone()).unwrap_or_default();
    step(&format!(
        "back-end config follows the endpoints live ({} requests during the change)",
        attempts.load(Ordering::Relaxed)
    ));
    assert!(
        failed.is_empty(),
        "no request fails during the change: {failed:?}"
    );
    assert_eq!(
        support::ready_names(&ns, BACKEND_PODS).await,
        old_backends,
        "the back-ends applied the change live, without a roll"
    );
    assert_eq!(
        support::ready_names(&ns, FRONTEND_PODS).await,
        old_frontends,
        "the front-ends were not rolled either"
    );
}

/// Each gateway pod holds its own link certificate, signed through a
/// CertificateSigningRequest; a request naming a pod that is no gateway is denied.
#[tokio::test]
async fn each_gateway_pod_holds_its_own_link_certificate_and_a_forged_request_is_denied() {
    let (ns, _) = deployed("certificates", 1).await;
    let account = gateway_account(&ns);
    let gateways = support::ready_names(&ns, BACKEND_PODS).await.len()
        + support::ready_names(&ns, FRONTEND_PODS).await.len();
    let requests: serde_json::Value = serde_json::from_str(
        &ns.kubectl(&["get", "csr", "-o", "json"], None)
            .await
            .expect("kubectl get csr"),
    )
    .expect("JSON");
    let ours: Vec<&serde_json::Value> = requests["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["spec"]["signerName"] == "causeway.dev/tmp-link")
        .filter(|r| {
            r["spec"]["username"]
                .as_str()
                .is_some_and(|u| u.contains(&format!(":{}:", ns.name())))
        })
        .collect();
    assert!(
        ours.len() >= gateways,
        "one request per gateway pod ({gateways}): {ours:?}"
    );
    assert!(
        ours.iter().all(|r| !r["status"]["certificate"]
            .as_str()
            .unwrap_or_default()
            .is_empty()),
        "every one signed: {ours:?}"
    );
    let forged = causeway_pki::certificate_request(
        &format!("{}/not-a-gateway", ns.name()),
        &["causeway-backend".to_owned()],
    )
    .expect("a request");
    let manifest = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": { "name": format!("forged-{}", ns.name()) },
        "spec": {
            "request": base64_encode(forged.request_pem.as_bytes()),
            "signerName": "causeway.dev/tmp-link",
            "usages": ["digital signature", "server auth", "client auth"],
        },
    });
    ns.kubectl(
        &["create", "-f", "-", "--as", &account],
        Some(&manifest.to_string()),
    )
    .await
    .expect("the gateways' account may ask");
    let denial = wait_for("the forged request to be denied", TIMEOUT, || async {
        let text = ns
            .get_jsonpath(
                &format!("csr/forged-{}", ns.name()),
                "{.status.conditions[0].type}:{.status.conditions[0].message}",
            )
            .await
            .ok()?;
        text.starts_with("Denied:").then_some(text)
    })
    .await
    .expect("the operator denies a request for a pod that is no gateway");
    assert!(denial.contains("no pod"), "{denial}");
}

/// A broken ConfigMap (edited by hand) is refused by the gateways, counted, and changes
/// nothing they serve; the operator puts its own version back.
#[tokio::test]
async fn a_broken_config_map_is_refused_and_counted_serving_goes_on_and_the_operator_restores_it() {
    let step = stepper("broken-config");
    let (ns, _) = deployed("broken-config", 1).await;
    let old_backends = support::ready_names(&ns, BACKEND_PODS).await;
    // A gateway configuration document that is not even YAML.
    let broken = serde_json::json!({ "data": { CONFIG_KEY: "version: 1\nsites: [not a Site" } });
    ns.kubectl(
        &[
            "patch",
            "configmap/shop-backend",
            "--type",
            "merge",
            "-p",
            &broken.to_string(),
        ],
        None,
    )
    .await
    .expect("kubectl patch configmap");
    let refused = wait_for(
        "the back-ends to refuse the broken version",
        TIMEOUT,
        || async {
            let mut counted = 0;
            for ip in support::ready_ips(&ns, BACKEND_PODS).await {
                let metrics = get(SocketAddr::new(ip, 9902), "admin", "/metrics")
                    .await
                    .ok()?;
                if metrics.body.lines().any(|l| {
                    l.starts_with("causeway_config_reloads_total{result=\"refused\"} ")
                        && !l.ends_with(" 0")
                }) {
                    counted += 1;
                }
            }
            (counted == old_backends.len()).then_some(counted)
        },
    )
    .await
    .expect("every back-end counts the refused version");
    for ip in support::ready_ips(&ns, FRONTEND_PODS).await {
        let answer = get(SocketAddr::new(ip, 8080), HOST, "/after-refusal")
            .await
            .expect("an answer");
        assert_eq!(answer.status, 200, "still serving: {answer:?}");
    }
    wait_for("the operator to restore the ConfigMap", TIMEOUT, || async {
        let file = backend_origin_urls(&ns).await;
        (file.len() == ORIGINS).then_some(())
    })
    .await
    .expect("the operator re-applies its ConfigMap");
    step(&format!(
        "a broken ConfigMap refused by {refused} back-ends, serving went on, the operator restored it"
    ));
}

/// Operator restart (two replicas, the leader's pods deleted): a new replica leads, and once
/// it has reconciled everything nothing was re-made and nothing flapped.
#[tokio::test]
async fn an_operator_restart_rewrites_nothing() {
    let step = stepper("restart");
    let (ns, _) = deployed("restart", 2).await;
    let leader = leader(&ns).await;
    step(&format!("leader is {leader}"));
    let leases: Api<Lease> = ns.api();
    ns.kubectl(
        &[
            "wait",
            "--for=condition=Progressing=False",
            "site/shop",
            "frontend/edge",
            "--timeout=120s",
        ],
        None,
    )
    .await
    .expect("everything settles");
    // Settled: nothing changes over 3 s (the Deployment controller's last status writes may
    // land after Progressing=False). The 3 s is the quiet window; a write in it starts again.
    let settled = wait_for("the operator's objects to settle", TIMEOUT, || async {
        let before = versions(&ns).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        (versions(&ns).await == before).then_some(before)
    })
    .await
    .expect("the operator's objects settle");
    ns.kubectl(
        &[
            "delete",
            "pod",
            "-l",
            "app.kubernetes.io/component=operator",
            "--wait=false",
        ],
        None,
    )
    .await
    .expect("kubectl delete the operator pods");
    let new_leader = wait_for("a new leader", TIMEOUT, || async {
        let holder = leases
            .get("causeway-operator")
            .await
            .ok()?
            .spec?
            .holder_identity?;
        (holder != leader).then_some(holder)
    })
    .await
    .expect("a new operator replica leads");
    let led = Instant::now();
    step(&format!("new leader {new_leader}"));
    // The new leader reconciles every object at start: compare once it has finished with
    // the Site and the Frontend (a reconciliation is timed when it ends). Only the new pods
    // are ready: the deleted ones are terminating.
    wait_for("the new leader's first reconciliations", TIMEOUT, || async {
        for ip in support::ready_ips(&ns, "app.kubernetes.io/component=operator").await {
            let Ok(answer) = get(SocketAddr::new(ip, 9090), "operator", "/metrics").await else {
                continue;
            };
            let reconciled = |controller: &str| {
                let sample = format!(
                    "causeway_operator_reconcile_duration_seconds_count{{controller=\"{controller}\"}} "
                );
                answer.body.lines().any(|line| {
                    line.strip_prefix(&sample)
                        .and_then(|n| n.trim().parse::<f64>().ok())
                        .is_some_and(|n| n >= 1.0)
                })
            };
            if answer.body.lines().any(|l| l == "causeway_operator_leader 1")
                && reconciled("site")
                && reconciled("frontend")
            {
                return Some(());
            }
        }
        None
    })
    .await
    .expect("the new leader reconciles the Site and the Frontend");
    // And no sooner than 8 s after it took the Lease: a lower bound, so that a write made
    // after those first reconciliations (a requeue, the signer) would still show.
    tokio::time::sleep_until((led + Duration::from_secs(8)).into()).await;
    let after = versions(&ns).await;
    assert_eq!(settled, after, "an operator restart rewrote nothing");
    let deployments: Api<Deployment> = ns.api();
    let count = |selector: &'static str| {
        let deployments = deployments.clone();
        async move {
            deployments
                .list(&ListParams::default().labels(selector))
                .await
                .map(|l| l.items.len())
                .unwrap_or(0)
        }
    };
    assert_eq!(count("app.kubernetes.io/component=backend").await, 1);
    assert_eq!(count("app.kubernetes.io/component=frontend").await, 1);
    step("operator restart changed nothing");
}

/// The operator's metrics (two replicas): one replica leads, the other waits, and the
/// leader counts its Site reconciliations.
#[tokio::test]
async fn the_operators_metrics_show_one_leader_one_follower_and_the_reconciliations() {
    let (ns, _) = deployed("metrics", 2).await;
    leader(&ns).await;
    // Both replicas' metrics, once the leader has counted a Site reconciliation.
    let metrics = wait_for("both operator replicas' metrics", TIMEOUT, || async {
        let operators = support::ready_ips(&ns, "app.kubernetes.io/component=operator").await;
        let mut metrics = String::new();
        let mut answered = 0;
        for ip in operators {
            if let Ok(answer) = get(SocketAddr::new(ip, 9090), "operator", "/metrics").await {
                metrics.push_str(&answer.body);
                answered += 1;
            }
        }
        let reconciled =
            metrics.contains("causeway_operator_reconciliations_total{controller=\"site\"}");
        (answered == 2 && reconciled).then_some(metrics)
    })
    .await
    .expect("both operator replicas answer /metrics");
    let leaders = |value: &str| {
        metrics
            .lines()
            .filter(|line| *line == format!("causeway_operator_leader {value}"))
            .count()
    };
    assert_eq!(leaders("1"), 1, "one replica leads:\n{metrics}");
    assert_eq!(leaders("0"), 1, "the other waits:\n{metrics}");
    assert!(
        metrics.contains("causeway_operator_reconciliations_total{controller=\"site\"}"),
        "{metrics}"
    );
}

/// Deleting the Site removes everything it made: its Deployment, Service, ConfigMap, Secret
/// and back-end pods.
#[tokio::test]
async fn deleting_the_site_removes_everything_it_made() {
    let (ns, _) = deployed("delete", 1).await;
    ns.kubectl(&["delete", "site/shop", "--wait=true"], None)
        .await
        .expect("kubectl delete site");
    wait_for(
        "the back-end objects and pods to be gone",
        TIMEOUT,
        || async {
            let by_site = ListParams::default().labels("causeway.dev/site=shop");
            let d: Api<Deployment> = ns.api();
            let s: Api<Service> = ns.api();
            let c: Api<ConfigMap> = ns.api();
            let k: Api<Secret> = ns.api();
            let empty = d.list(&by_site).await.ok()?.items.is_empty()
                && s.list(&by_site).await.ok()?.items.is_empty()
                && c.list(&by_site).await.ok()?.items.is_empty()
                && k.list(&by_site).await.ok()?.items.is_empty()
                && support::ready_ips(&ns, BACKEND_PODS).await.is_empty();
            empty.then_some(())
        },
    )
    .await
    .expect("garbage collection follows the owner references");
}

/// A leader that finds another identity in the Lease stops writing (the process exits and
/// restarts as a follower), waits for that lease to run out, and takes over again; while it
/// does not hold the Lease, nothing is reconciled.
#[tokio::test]
async fn a_leader_that_loses_the_lease_stops_writing_until_it_holds_it_again() {
    let bed = TestBed::shared().await.expect("the test bed starts");
    let ns = bed
        .namespace("operator-lease")
        .await
        .expect("a test namespace");
    support::install_as(&ns, "lease", 1).await;
    let leases: Api<Lease> = ns.api();
    let leader = wait_for("a leader", TIMEOUT, || async {
        leases
            .get("causeway-operator")
            .await
            .ok()?
            .spec?
            .holder_identity
    })
    .await
    .expect("the operator takes the Lease");

    // Another identity writes itself into the Lease for 20 s.
    let now = k8s_openapi::jiff::Timestamp::now();
    let taken = serde_json::json!({ "spec": {
        "holderIdentity": "intruder",
        "leaseDurationSeconds": 20,
        "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
    }});
    ns.kubectl(
        &[
            "patch",
            "lease",
            "causeway-operator",
            "--type=merge",
            "-p",
            &taken.to_string(),
        ],
        None,
    )
    .await
    .expect("kubectl patch lease");
    let taken_at = Instant::now();

    // The leader notices at its next renewal and steps down: the process exits.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    let operator_pods = ListParams::default().labels("app.kubernetes.io/component=operator");
    wait_for("the leader to step down", TIMEOUT, || async {
        let restarts: i32 = pods
            .list(&operator_pods)
            .await
            .ok()?
            .items
            .iter()
            .filter_map(|p| {
                p.status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .first()
                    .map(|s| s.restart_count)
            })
            .sum();
        (restarts >= 1).then_some(())
    })
    .await
    .expect("the operator process exits when another identity holds the Lease");

    // A Site applied now is not reconciled while the intruder holds the Lease.
    let solo = site(2).replace("name: shop\n", "name: solo\n").replace(
        "service: { name: shop-origin, port: 80 }\n      primary: true",
        "url: http://192.0.2.1:8080",
    );
    ns.apply(&solo).await.expect("the Site applies");
    let deployments: Api<Deployment> = ns.api();
    while taken_at.elapsed() < Duration::from_secs(17) {
        assert!(
            deployments
                .get_opt("solo-backend")
                .await
                .ok()
                .flatten()
                .is_none(),
            "no writes while another replica holds the Lease"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The lease runs out and the operator leads again, and reconciles the Site.
    let back = wait_for("the operator to lead again", TIMEOUT, || async {
        let holder = leases
            .get("causeway-operator")
            .await
            .ok()?
            .spec?
            .holder_identity?;
        (holder != "intruder").then_some(holder)
    })
    .await
    .expect("the operator takes the Lease back after it ran out");
    assert_eq!(
        back, leader,
        "the same pod, restarted as a follower, leads again"
    );
    assert!(
        taken_at.elapsed() >= Duration::from_secs(19),
        "not before the lease ran out"
    );
    wait_for("the Site's back-ends", TIMEOUT, || async {
        deployments.get_opt("solo-backend").await.ok().flatten()
    })
    .await
    .expect("the new term reconciles the Site");
}

/// A Site with `tls` on a Frontend with `service.httpsPort`: the front-ends mount the Site's
/// `kubernetes.io/tls` Secret and answer HTTPS on their pod IP with its certificate.
#[tokio::test]
async fn front_ends_serve_https_with_the_sites_tls_secret() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let bed = TestBed::shared().await.expect("the test bed starts");
    let ns = bed
        .namespace("operator-tls")
        .await
        .expect("a test namespace");
    support::install_as(&ns, "tls", 1).await;

    let certified =
        rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).expect("a certificate");
    let dir = bed.dir().join(format!("{}-tls", ns.name()));
    std::fs::create_dir_all(&dir).expect("a dir");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    ns.kubectl(
        &[
            "create",
            "secret",
            "tls",
            "shop-tls",
            "--cert",
            &cert.display().to_string(),
            "--key",
            &key.display().to_string(),
        ],
        None,
    )
    .await
    .expect("kubectl create secret tls");

    ns.apply(&origins(3, &[])).await.expect("origins apply");
    ns.apply(&format!("{}  tls: {{ secretName: shop-tls }}\n", site(2)))
        .await
        .expect("the Site applies");
    ns.apply(&FRONTEND.replace(
        "service: { type: ClusterIP, httpPort: 80 }",
        "service: { type: ClusterIP, httpPort: 80, httpsPort: 443 }",
    ))
    .await
    .expect("the Frontend applies");
    let ips = support::frontends_serving(&ns, 1, TIMEOUT).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(certified.cert.pem().as_bytes()).expect("PEM"))
        .expect("a root");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let answer = wait_for("an HTTPS answer", TIMEOUT, || {
        let connector = connector.clone();
        let address = SocketAddr::new(ips[0], 8443);
        async move {
            let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
            let name = ServerName::try_from(HOST).ok()?;
            let mut tls = connector.connect(name, tcp).await.ok()?;
            let request =
                format!("GET /secure HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
            tls.write_all(request.as_bytes()).await.ok()?;
            let mut raw = Vec::new();
            let _ = tls.read_to_end(&mut raw).await;
            let text = String::from_utf8_lossy(&raw).into_owned();
            text.starts_with("HTTP/1.1 200").then_some(text)
        }
    })
    .await
    .expect("the front-end answers HTTPS with the Site's certificate");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-origin: shop-origin-"),
        "{answer}"
    );
    let service: Service = ns
        .api::<Service>()
        .get("edge-frontend")
        .await
        .expect("the Service");
    let ports: Vec<i32> = service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [80, 443]);
}

/// Standard base64 with padding (what `[]byte` fields take in JSON).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
