//! The redirector end to end on the test bed: `helm install` the chart with the redirector
//! enabled (two replicas, from the same image: the test kubelet runs its command,
//! `/usr/local/bin/causeway-redirector`, as the local build next to `CAUSEWAY_BIN`), with the
//! operator, an origin, a Site and a Frontend; `dig` against each redirector pod answers the
//! Site's hostname with the ready front-end pods; `kubectl scale frontend/edge` to two and back
//! to one, and the answers follow within 2 s each way.
//!
//! Needs the test bed's binaries and `dig` (Debian bind9-dnsutils); run with
//! `CAUSEWAY_BIN=target/debug/causeway CAUSEWAY_K8S_BIN=$(tests/testbed/provision.sh
//! --print-bin-dir) cargo test -p causeway-redirector --test e2e` after building both binaries
//! into the same target dir (`scripts/test.sh` does all of this).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use causeway_testbed::pods::ready_ips;
use causeway_testbed::shop::{
    FRONTEND, FRONTEND_PODS, HOST, origins, site, wait_site_and_frontend_ready,
};
use causeway_testbed::testbed::{chart, wait_for};
use causeway_testbed::{TestBed, TestNamespace};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use support::{Scratch, have};

/// How long a step that starts pods may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// How soon the answers must follow a change.
const FOLLOW: Duration = Duration::from_secs(2);

/// The redirector's DNS port in the pods (the chart's default, unprivileged).
const DNS_PORT: u16 = 1053;

const REDIRECTOR_PODS: &str = "app.kubernetes.io/component=redirector";

/// The chart's values for this test: the operator and the redirector watch the test
/// namespace; the redirector serves example.com. A ClusterIP Service, since the test bed has
/// no load balancer (helm --wait would wait for its address).
fn values(namespace: &str) -> String {
    format!(
        r#"image: {{ repository: causeway, tag: dev }}
operator: {{ replicas: 1, watchNamespace: {namespace}, logFormat: text }}
redirector:
  enabled: true
  replicas: 2
  logFormat: text
  answerCount: 4
  extraArgs: [--threads=1]
  service: {{ type: ClusterIP }}
  zones:
    - name: example.com
      nameservers: [{{ name: ns1.example.com, addresses: [192.0.2.53] }}]
"#
    )
}

/// `helm install` of the chart as release `cw` into `ns` with the redirector enabled.
async fn install(ns: &TestNamespace) {
    let scratch = Scratch::new("e2e-values");
    let file = scratch.path("values.yaml");
    std::fs::write(&file, values(ns.name())).expect("values file");
    let values = file.display().to_string();
    ns.helm_install("cw", &chart(), &["--values", &values])
        .await
        .unwrap_or_else(|e| panic!("helm install: {e}"));
}

/// The addresses `server` answers for the Site's hostname (sorted), or `None` when it does
/// not answer NOERROR.
async fn answer(server: SocketAddr) -> Option<Vec<IpAddr>> {
    let dig = tokio::task::spawn_blocking(move || support::try_dig(server, &[HOST, "A"]))
        .await
        .expect("dig task")?;
    if dig.status != "NOERROR" {
        return None;
    }
    let mut addresses: Vec<IpAddr> = dig
        .addresses()
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    addresses.sort();
    Some(addresses)
}

/// What every redirector answers, if they all answer the same.
async fn agreed_answer(redirectors: &[SocketAddr]) -> Option<Vec<IpAddr>> {
    let mut agreed: Option<Vec<IpAddr>> = None;
    for server in redirectors {
        let got = answer(*server).await?;
        match &agreed {
            Some(known) if *known != got => return None,
            _ => agreed = Some(got),
        }
    }
    agreed
}

/// Polls every 50 ms until the ready front-end pods number `count` and every redirector
/// answers exactly them. Returns (when the API first showed `count` ready front-ends, when
/// the answers first matched, the addresses), both instants measured on this clock.
async fn follow(
    ns: &TestNamespace,
    redirectors: &[SocketAddr],
    count: usize,
    timeout: Duration,
) -> (Instant, Instant, Vec<IpAddr>) {
    let deadline = Instant::now() + timeout;
    let mut ready_since: Option<(Instant, Vec<IpAddr>)> = None;
    let mut last = None;
    loop {
        let ips = ready_ips(ns, FRONTEND_PODS).await;
        if ips.len() == count {
            if ready_since.as_ref().is_none_or(|(_, known)| *known != ips) {
                ready_since = Some((Instant::now(), ips.clone()));
            }
        } else {
            ready_since = None;
        }
        let answered = agreed_answer(redirectors).await;
        if let Some((since, ips)) = &ready_since
            && answered.as_ref() == Some(ips)
        {
            return (*since, Instant::now(), ips.clone());
        }
        last = answered.or(last);
        assert!(
            Instant::now() < deadline,
            "the answers did not reach {count} front-end(s) within {timeout:?}: ready {ready_since:?}, answered {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kubectl auth can-i` as `account`.
async fn can_i(ns: &TestNamespace, account: &str, verb: &str, resource: &str) -> bool {
    let mut kubectl = ns.bed().kubectl_command();
    kubectl
        .args([
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns.name(),
            "--as",
            account,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = kubectl.output().await.expect("kubectl runs");
    String::from_utf8_lossy(&output.stdout).trim() == "yes"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_follow_kubectl_scale_frontend_within_two_seconds() {
    if !have("dig", "bind9-dnsutils") {
        return;
    }
    let started = Instant::now();
    let step = |what: &str| eprintln!("e2e: {:>6.1} s  {what}", started.elapsed().as_secs_f64());
    let bed = TestBed::shared().await.expect("the test bed starts");
    // The test kubelet runs the chart's command, /usr/local/bin/causeway-redirector, as the
    // binary of that name beside the `causeway` it runs: it must be this build.
    let sibling = bed
        .causeway_bin()
        .parent()
        .expect("CAUSEWAY_BIN's dir")
        .join("causeway-redirector");
    let this = std::path::Path::new(env!("CARGO_BIN_EXE_causeway-redirector"));
    assert_eq!(
        sibling.canonicalize().ok(),
        this.canonicalize().ok(),
        "the test kubelet would run {} for the redirector's pods, not this build ({}): set \
         CAUSEWAY_BIN to the `causeway` of this target dir",
        sibling.display(),
        this.display()
    );
    let ns = bed.namespace("dns-e2e").await.expect("a test namespace");

    install(&ns).await;
    step("helm install done (operator and two redirectors ready)");
    let redirectors: Vec<SocketAddr> = ready_ips(&ns, REDIRECTOR_PODS)
        .await
        .into_iter()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect();
    assert_eq!(redirectors.len(), 2, "two redirector pods: {redirectors:?}");

    // The Service's EndpointSlices carry the pods on the DNS port, UDP and TCP.
    let slice_api: Api<EndpointSlice> = ns.api();
    let service = "cw-causeway-redirector";
    let slices = wait_for("the redirector Service's endpoints", TIMEOUT, || async {
        let list = slice_api
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
            .await
            .ok()?;
        let ready: usize = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        (ready == 2).then_some(list.items)
    })
    .await
    .expect("the redirector Service has both pods");
    let mut ports: Vec<(String, i32)> = slices
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| (p.protocol.clone().unwrap_or_default(), p.port.unwrap_or(0)))
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        [("TCP".to_owned(), 1053), ("UDP".to_owned(), 1053)],
        "{slices:?}"
    );

    // Its account reads what it watches and nothing else.
    let account = format!("system:serviceaccount:{}:{service}", ns.name());
    for resource in [
        "sites.causeway.dev",
        "frontends.causeway.dev",
        "services",
        "endpointslices.discovery.k8s.io",
    ] {
        assert!(can_i(&ns, &account, "watch", resource).await, "{resource}");
        assert!(
            !can_i(&ns, &account, "update", resource).await,
            "read only: {resource}"
        );
    }
    assert!(!can_i(&ns, &account, "get", "secrets").await, "no Secrets");

    // Authority before any Site: SOA at the apex, and names elsewhere refused.
    let first = redirectors[0];
    let soa = tokio::task::spawn_blocking(move || support::dig(first, &["example.com", "SOA"]))
        .await
        .expect("dig");
    assert_eq!(soa.status, "NOERROR", "{}", soa.raw);
    assert!(soa.has_flag("aa"), "{}", soa.raw);
    let refused = tokio::task::spawn_blocking(move || support::dig(first, &["example.org", "A"]))
        .await
        .expect("dig");
    assert_eq!(refused.status, "REFUSED", "{}", refused.raw);

    // One origin, a Site on it with one back-end, and a Frontend with one front-end.
    let workload = [origins(1, &[]), site(1), FRONTEND.to_owned()].join("---\n");
    ns.apply(&workload)
        .await
        .expect("origin, Site and Frontend");
    wait_site_and_frontend_ready(&ns)
        .await
        .unwrap_or_else(|e| panic!("the Site and the Frontend become Ready: {e}"));
    step("Site and Frontend Ready");
    let (_, _, one) = follow(&ns, &redirectors, 1, TIMEOUT).await;
    step(&format!("both redirectors answer {HOST} with {one:?}"));

    // Up: a second front-end; the answers hold both within 2 s of it being ready.
    let asked = Instant::now();
    ns.kubectl(&["scale", "frontend/edge", "--replicas=2"], None)
        .await
        .expect("kubectl scale up");
    let (ready, answered, two) = follow(&ns, &redirectors, 2, TIMEOUT).await;
    let lag = answered.saturating_duration_since(ready);
    step(&format!(
        "scaled up: answers {two:?} {:.2} s after the new front-end was ready ({:.2} s after kubectl scale)",
        lag.as_secs_f64(),
        answered.duration_since(asked).as_secs_f64()
    ));
    assert!(two.contains(&one[0]), "the first front-end stays: {two:?}");
    assert!(
        lag <= FOLLOW,
        "the answers followed the new front-end after {lag:?}"
    );

    // Down: back to one; the front-end going away leaves the answers within 2 s of the
    // scale (its endpoint turns terminating as soon as the pod is being deleted).
    let asked = Instant::now();
    ns.kubectl(&["scale", "frontend/edge", "--replicas=1"], None)
        .await
        .expect("kubectl scale down");
    let (_, answered, left) = follow(&ns, &redirectors, 1, TIMEOUT).await;
    let lag = answered.duration_since(asked);
    step(&format!(
        "scaled down: answers {left:?} {:.2} s after kubectl scale",
        lag.as_secs_f64()
    ));
    assert!(two.contains(&left[0]), "{left:?} is one of {two:?}");
    assert!(
        lag <= FOLLOW,
        "the answers dropped the front-end after {lag:?}"
    );

    // The queries were counted under the Site's NAMESPACE/NAME.
    let admin = SocketAddr::new(redirectors[0].ip(), 9053);
    let metrics = tokio::task::spawn_blocking(move || support::http_get(admin, "/metrics"))
        .await
        .expect("metrics task")
        .expect("metrics");
    let label = format!(r#"site="{}/shop""#, ns.name());
    assert!(metrics.1.contains(&label), "{}", metrics.1);
    step("done");
}
