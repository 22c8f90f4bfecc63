//! The Kubernetes source against a real API server (the test bed's kube-apiserver): the real
//! `causeway-redirector --kubernetes` answers from Sites, Frontends, their Services and
//! EndpointSlices, and a front-end going unready reaches its answers within 2 s.
//!
//! Needs the test bed's binaries (`tests/testbed/provision.sh`), as every test-bed test does;
//! `scripts/test.sh` provides them.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod support;

use std::time::Duration;

use causeway_api::Frontend;
use causeway_testbed::{TestBed, TestNamespace};
use kube::ResourceExt;
use support::{Redirector, Scratch, have, within};

/// A namespace in the test bed, with Causeway's CRDs installed.
async fn namespace() -> TestNamespace {
    let bed = TestBed::shared().await.expect("the test bed starts");
    let crds = causeway_api::crd::render().expect("the CRDs render");
    bed.install_crds(crds.into_iter().map(|crd| crd.yaml))
        .await
        .expect("the CRDs apply and are established");
    bed.namespace("dns").await.expect("a namespace")
}

/// The Service the operator would make for `frontend`, and one EndpointSlice for it.
fn front_ends(frontend: &Frontend, addresses: &[&str], ready: bool) -> String {
    let name = frontend.name_any();
    let uid = frontend.uid().expect("uid");
    let endpoints: String = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "  - {{ addresses: [{a}], conditions: {{ ready: {ready} }}, targetRef: {{ kind: Pod, name: {name}-frontend-{i} }} }}\n"
            )
        })
        .collect();
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}-frontend
  labels: {{ app.kubernetes.io/component: frontend, causeway.dev/frontend: {name} }}
  ownerReferences: [{{ apiVersion: causeway.dev/v1alpha1, kind: Frontend, name: {name}, uid: {uid} }}]
spec:
  ports: [{{ name: http, port: 80, targetPort: 8080 }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-frontend-manual
  labels:
    kubernetes.io/service-name: {name}-frontend
    app.kubernetes.io/component: frontend
addressType: IPv4
ports: [{{ name: http, port: 8080, protocol: TCP }}]
endpoints:
{endpoints}"#
    )
}

#[tokio::test]
async fn answers_follow_frontends_and_readiness_in_the_cluster() {
    if !have("dig", "bind9-dnsutils") {
        return;
    }
    let ns = namespace().await;
    ns.apply(
        r#"apiVersion: causeway.dev/v1alpha1
kind: Site
metadata: { name: shop }
spec:
  hostnames: [shop.example.com]
  origins: [{ name: main, url: "http://127.0.0.1:9" }]
---
apiVersion: causeway.dev/v1alpha1
kind: Frontend
metadata: { name: edge-eu }
spec: { region: eu, sites: [shop], clientSubnets: [10.1.0.0/16] }
---
apiVersion: causeway.dev/v1alpha1
kind: Frontend
metadata: { name: edge-us }
spec: { region: us, sites: [shop], clientSubnets: [10.2.0.0/16] }
"#,
    )
    .await
    .expect("Site and Frontends apply");
    let frontends = ns.api::<Frontend>();
    let eu = frontends.get("edge-eu").await.expect("edge-eu");
    let us = frontends.get("edge-us").await.expect("edge-us");
    ns.apply(&front_ends(&eu, &["127.0.1.1", "127.0.1.2"], true))
        .await
        .expect("eu front-ends");
    ns.apply(&front_ends(&us, &["127.0.2.1"], true))
        .await
        .expect("us front-ends");

    let scratch = Scratch::new("kubernetes");
    let zones = scratch.path("zones.yaml");
    std::fs::write(
        &zones,
        "zones: [{ name: example.com, nameservers: [{ name: ns1.example.com }] }]\n",
    )
    .expect("zones file");
    let kubeconfig = ns.bed().kubeconfig().display().to_string();
    let redirector = Redirector::start_with_env(
        &zones,
        &[
            "--kubernetes",
            "--namespace",
            ns.name(),
            "--answer-count",
            "4",
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    let eu_answer = |redirector: &Redirector| {
        let mut got = redirector
            .dig(&["shop.example.com", "A", "+subnet=10.1.0.0/24"])
            .addresses();
        got.sort();
        got
    };
    assert_eq!(eu_answer(&redirector), ["127.0.1.1", "127.0.1.2"]);
    assert_eq!(
        redirector
            .dig(&["shop.example.com", "A", "+subnet=10.2.0.0/24"])
            .addresses(),
        ["127.0.2.1"]
    );

    // The eu front-ends go unready: eu clients fail over to us within 2 s.
    ns.apply(&front_ends(&eu, &["127.0.1.1", "127.0.1.2"], false))
        .await
        .expect("eu unready");
    let took = within(Duration::from_secs(2), || {
        eu_answer(&redirector) == ["127.0.2.1"]
    });
    assert!(
        took.is_some(),
        "failover did not reach the answers within 2 s"
    );

    // One comes back: eu clients return to it within 2 s.
    ns.apply(&front_ends(&eu, &["127.0.1.2"], true))
        .await
        .expect("eu back");
    let took = within(Duration::from_secs(2), || {
        eu_answer(&redirector) == ["127.0.1.2"]
    });
    assert!(
        took.is_some(),
        "the returning front-end did not reach the answers within 2 s"
    );

    // The metric label is NAMESPACE/NAME.
    let metrics = redirector.metrics();
    let label = format!(r#"site="{}/shop""#, ns.name());
    assert!(metrics.contains(&label), "{metrics}");
}
