//! The QoS loop end to end on the test bed's real control plane: with traffic flowing, every
//! gateway pod's figures reach `kubectl get site -o yaml` within 15 s; an origin that turns
//! slow makes the Site Degraded with `LatencyGoalMissed` and the operator adds a back-end
//! within the window; once the origin is fast again the back-end is given back after the
//! cool-down, with exactly one step each way (no flapping); and over two minutes the QoS
//! loop's status writes stay within one per object per interval.
//!
//! Needs the test bed's binaries; run with
//! `CAUSEWAY_K8S_BIN=$(tests/testbed/provision.sh --print-bin-dir) cargo test -p causeway-operator --test qos`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use causeway_testbed::TestBed;
use causeway_testbed::testbed::wait_for;
use support::{FRONTEND, HOST, TIMEOUT, get, origins};

/// The origin's arguments that make it answer 400 ms late from 70 s after it starts, for 50 s.
const SLOW_SPELL: [&str; 6] = [
    "--slow-after",
    "70s",
    "--slow-for",
    "50s",
    "--slow-delay",
    "400ms",
];

/// A Site with a 250 ms p99 goal, one back-end that may grow to two, a short window and
/// cool-down so the test sees both directions.
const GOAL_SITE: &str = r#"
apiVersion: causeway.dev/v1alpha1
kind: Site
metadata:
  name: shop
spec:
  hostnames: [shop.example.com]
  origins:
    - name: main
      service: { name: shop-origin, port: 80 }
      maxInFlight: 64
  backends:
    replicas: 1
    minReplicas: 1
    maxReplicas: 2
  qos:
    latencyP99: 250ms
    scaleUpWindow: 10s
    coolDown: 20s
"#;

async fn site_json(ns: &causeway_testbed::TestNamespace) -> serde_json::Value {
    let text = ns
        .kubectl(&["get", "site/shop", "-o", "json"], None)
        .await
        .unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

fn degraded(site: &serde_json::Value) -> Option<(String, String)> {
    site["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Degraded" && c["status"] == "True")
        .map(|c| {
            (
                c["reason"].as_str().unwrap_or_default().to_owned(),
                c["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// The operator's `causeway_operator_qos_status_writes_total`, summed over kinds, from the
/// replica that leads (the only one that writes).
async fn qos_writes(ns: &causeway_testbed::TestNamespace) -> f64 {
    let mut total = 0.0;
    for ip in support::ready_ips(ns, "app.kubernetes.io/component=operator").await {
        let Ok(answer) = get(SocketAddr::new(ip, 9090), "operator", "/metrics").await else {
            continue;
        };
        total += answer
            .body
            .lines()
            .filter(|l| l.starts_with("causeway_operator_qos_status_writes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// `causeway top --once` for the test namespace, against the test bed's API server.
async fn top(bed: &TestBed, ns: &causeway_testbed::TestNamespace) -> String {
    let binary = std::env::var("CAUSEWAY_BIN").expect("CAUSEWAY_BIN names the causeway binary");
    let output = tokio::process::Command::new(binary)
        .args(["top", "--once", "--namespace", ns.name()])
        .env("KUBECONFIG", bed.kubeconfig())
        .output()
        .await
        .expect("causeway top runs");
    assert!(
        output.status.success(),
        "causeway top: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn qos_reaches_status_degrades_scales_up_and_gives_back() {
    let bed = TestBed::shared().await.expect("the test bed starts");
    let ns = bed.namespace("qos-e2e").await.expect("a test namespace");
    let started = Instant::now();
    let step = |what: &str| eprintln!("qos: {:>6.1} s  {what}", started.elapsed().as_secs_f64());
    support::install(&ns, 1).await;
    ns.apply(&origins(1, &SLOW_SPELL))
        .await
        .expect("the origin applies");
    ns.apply(GOAL_SITE).await.expect("the Site applies");
    ns.apply(FRONTEND).await.expect("the Frontend applies");
    let frontends = support::frontends_serving(&ns, 1, TIMEOUT).await;
    step("a front-end serves");

    // Steady traffic: 8 clients in a loop through the front-end.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, answered) = (stop.clone(), answered.clone());
        let addr = SocketAddr::new(frontends[0], 8080);
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if get(addr, HOST, "/item")
                    .await
                    .is_ok_and(|a| a.status == 200)
                {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let traffic_started = Instant::now();
    let writes_before = qos_writes(&ns).await;

    // Figures of both tiers in the Site's status within 15 s of traffic.
    let figures = wait_for(
        "QoS figures in the Site status",
        Duration::from_secs(15),
        || async {
            let site = site_json(&ns).await;
            let qos = site["status"]["qos"].as_array()?.clone();
            let roles: Vec<&str> = qos.iter().filter_map(|p| p["role"].as_str()).collect();
            let busy = qos
                .iter()
                .any(|p| p["requestRate"].as_f64().unwrap_or(0.0) > 0.0);
            (roles.contains(&"Backend") && roles.contains(&"Frontend") && busy).then_some(qos)
        },
    )
    .await
    .expect("figures within 15 s");
    step(&format!(
        "figures after {:.1} s: {}",
        traffic_started.elapsed().as_secs_f64(),
        serde_json::to_string(&figures).unwrap_or_default()
    ));

    // The origin turns slow: Degraded naming the latency goal, then a second back-end.
    let (reason, message) = wait_for("the Site Degraded by latency", TIMEOUT, || async {
        degraded(&site_json(&ns).await).filter(|(reason, _)| reason == "LatencyGoalMissed")
    })
    .await
    .expect("the Site turns Degraded");
    step(&format!("Degraded: {reason}: {message}"));
    assert!(message.contains("over the goal of 250ms"), "{message}");
    wait_for("a back-end added", Duration::from_secs(60), || async {
        (site_json(&ns).await["status"]["desiredBackends"] == 2).then_some(())
    })
    .await
    .expect("the operator adds a back-end within the window");
    let ready = wait_for("two back-ends ready", TIMEOUT, || async {
        let names = support::ready_names(&ns, support::BACKEND_PODS).await;
        (names.len() == 2).then_some(names)
    })
    .await
    .expect("the added back-end becomes ready");
    step(&format!("scaled up: {ready:?}"));
    // The live view shows it too.
    let view = top(&bed, &ns).await;
    eprintln!("qos: causeway top --once:\n{view}");
    assert!(view.contains("added a pod (1 → 2)"), "{view}");
    assert!(view.contains("/shop  back-ends"), "{view}");

    // The origin is fast again: the back-end goes back after the cool-down, once.
    wait_for(
        "the back-end given back",
        Duration::from_secs(150),
        || async { (site_json(&ns).await["status"]["desiredBackends"] == 1).then_some(()) },
    )
    .await
    .expect("the operator gives the back-end back");
    let site = site_json(&ns).await;
    step(&format!(
        "scaled down; last decision: {}",
        site["status"]["scaling"]["lastDecision"]
    ));
    assert!(degraded(&site).is_none(), "healthy again: {site}");

    // Keep the traffic to two minutes in all, then count the QoS loop's writes.
    let span = Duration::from_secs(120);
    if let Some(left) = span.checked_sub(traffic_started.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let elapsed = traffic_started.elapsed().as_secs_f64();
    let writes = qos_writes(&ns).await - writes_before;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    // Two objects (the Site, the Frontend), at most one write each per 10 s interval.
    let bound = 2.0 * (elapsed / 10.0).ceil() + 2.0;
    step(&format!(
        "{writes} QoS status writes in {elapsed:.0} s (bound {bound}); {} requests answered",
        answered.load(Ordering::Relaxed)
    ));
    assert!(writes > 0.0, "the loop wrote figures");
    assert!(writes <= bound, "{writes} writes in {elapsed:.0} s");

    // Exactly one step up and one down: the events say so.
    let events = ns
        .kubectl(
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=Site,involvedObject.name=shop",
                "-o",
                "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
            ],
            None,
        )
        .await
        .unwrap_or_default();
    let ups = events.lines().filter(|l| *l == "ScaledUp").count();
    let downs = events.lines().filter(|l| *l == "ScaledDown").count();
    assert_eq!((ups, downs), (1, 1), "no flapping:\n{events}");
}
