//! The operator's benchmark, run by `bench/run operator` (ignored by `cargo test`): on the
//! test bed, the time from `kubectl apply` of a Site and a Frontend to the first request a
//! front-end pod serves from an origin, and from `kubectl scale frontend` to three replicas
//! serving. The test kubelet's own start time of a pod (apply of a bare origin pod → it
//! answers HTTP) is measured separately, since a real kubelet's differs.
//!
//! Prints one `BENCH key=value ...` line per round; `CAUSEWAY_BENCH_ROUNDS` sets the rounds.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use causeway_testbed::{TestBed, TestNamespace};
use support::{HOST, TIMEOUT, get, ready_ips};

/// Polls `check` every 20 ms until it is true; the time it took.
async fn time_until<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `count` pods match `selector`, are ready and each answers for the Site.
async fn serving(ns: &TestNamespace, selector: &str, count: usize) -> bool {
    let ips = ready_ips(ns, selector).await;
    if ips.len() < count {
        return false;
    }
    for ip in ips {
        match get(SocketAddr::new(ip, 8080), HOST, "/").await {
            Ok(answer) if answer.status == 200 && answer.headers.contains_key("x-origin") => {}
            _ => return false,
        }
    }
    true
}

/// Whether any pod matching `selector` answers for the Site from an origin.
async fn any_serving(ns: &TestNamespace, selector: &str) -> bool {
    for ip in ready_ips(ns, selector).await {
        if let Ok(answer) = get(SocketAddr::new(ip, 8080), HOST, "/").await
            && answer.status == 200
            && answer.headers.contains_key("x-origin")
        {
            return true;
        }
    }
    false
}

#[tokio::test]
#[ignore = "a benchmark: bench/run operator runs it"]
async fn apply_to_first_request_and_scale_to_serving() {
    let rounds: u32 = std::env::var("CAUSEWAY_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let bed = TestBed::shared().await.expect("the test bed starts");
    let ns = bed.namespace("operator-bench").await.expect("a namespace");
    support::install(&ns, 1).await;
    ns.apply(&support::origins(3, &[]))
        .await
        .expect("origins apply");
    time_until("the origins", || async {
        ready_ips(&ns, "app=shop-origin").await.len() == 3
    })
    .await;

    for round in 0..rounds {
        // The test kubelet alone: a bare origin pod from apply to answering HTTP.
        let pod = format!("probe-{round}");
        let manifest = format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{ name: {pod}, labels: {{ bench-probe: "{pod}" }} }}
spec:
  containers:
    - name: origin
      image: causeway:dev
      args: ["origin", "--listen", "$(POD_IP):8080", "--name", "probe"]
      env:
        - name: POD_IP
          valueFrom: {{ fieldRef: {{ fieldPath: status.podIP }} }}
"#
        );
        let started = Instant::now();
        ns.apply(&manifest).await.expect("the probe pod applies");
        time_until("the probe pod", || async {
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = ns.api();
            let Ok(found) = pods.get(&pod).await else {
                return false;
            };
            let Some(ip) = found
                .status
                .and_then(|s| s.pod_ip)
                .and_then(|ip| ip.parse().ok())
            else {
                return false;
            };
            get(SocketAddr::new(ip, 8080), "probe", "/").await.is_ok()
        })
        .await;
        let kubelet_start = started.elapsed();

        // Site + Frontend → the first request served through both tiers.
        let (site, frontend) = (format!("shop{round}"), format!("edge{round}"));
        let manifests = format!(
            "{}\n---\n{}",
            support::site(2).replace("name: shop\n", &format!("name: {site}\n")),
            support::FRONTEND
                .replace("name: edge\n", &format!("name: {frontend}\n"))
                .replace("sites: [shop]", &format!("sites: [{site}]"))
        );
        let pods = format!("app.kubernetes.io/component=frontend,causeway.dev/frontend={frontend}");
        let started = Instant::now();
        ns.apply(&manifests).await.expect("Site and Frontend apply");
        time_until("the first request served", || any_serving(&ns, &pods)).await;
        let apply_to_first = started.elapsed();

        // kubectl scale → three front-ends serving.
        let started = Instant::now();
        ns.kubectl(
            &["scale", &format!("frontend/{frontend}"), "--replicas=3"],
            None,
        )
        .await
        .expect("kubectl scale");
        time_until("three front-ends serving", || serving(&ns, &pods, 3)).await;
        let scale_to_serving = started.elapsed();

        println!(
            "BENCH round={round} apply_to_first_request_s={:.3} scale_to_serving_s={:.3} kubelet_pod_start_s={:.3}",
            apply_to_first.as_secs_f64(),
            scale_to_serving.as_secs_f64(),
            kubelet_start.as_secs_f64()
        );
        ns.kubectl(
            &[
                "delete",
                &format!("frontend/{frontend}"),
                &format!("site/{site}"),
                &format!("pod/{pod}"),
                "--wait=false",
            ],
            None,
        )
        .await
        .expect("kubectl delete");
    }
}
