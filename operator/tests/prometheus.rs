//! Prometheus sees everything, on the test bed's real control plane: a real Prometheus (the
//! Debian package's binary) discovers the pods through the API server (`kubernetes_sd_configs`,
//! role pod) and scrapes those the `prometheus.io/*` annotations invite — the operator's, set
//! by the chart, and the gateways', set by the operator — and nothing else. While traffic runs
//! through front-end → TMP → back-end → origin, PromQL through its HTTP API shows the Site's
//! request counters growing and the TMP links' RTT present and moving, and every query of the
//! Grafana dashboard answers. (`chart.rs` renders the chart's ServiceMonitor, PodMonitor and
//! dashboard ConfigMap without a cluster.)
//!
//! Needs Debian's `prometheus` (scripts/test.sh installs it; without it the cluster test says
//! so and skips, unless `CAUSEWAY_REQUIRE_TOOLS` is set) and the test bed's binaries:
//! `CAUSEWAY_K8S_BIN=$(tests/testbed/provision.sh --print-bin-dir) cargo test -p causeway-operator --test prometheus`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use causeway_testbed::process::{Guarded, Spec};
use causeway_testbed::testbed::wait_for;
use causeway_testbed::{TestBed, TestNamespace};
use serde_json::Value;
use support::{BACKEND_PODS, FRONTEND, FRONTEND_PODS, HOST, TIMEOUT, get, origins, site};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What this test's Site adds to the e2e test's (spec fields, indented to follow it): a
/// class-0 rule so latency shows two classes, and the cache on so the hit ratio has data (the
/// demo origin answers `/static/…` as cacheable).
const CLASSES_AND_CACHE: &str = r#"  priority:
    defaultClass: 2
    rules:
      - class: 0
        match: { pathPrefix: /checkout }
  cache:
    enabled: true
"#;

/// The paths the traffic cycles through: classes 2 and 0, and a cacheable asset.
const PATHS: [&str; 4] = ["/", "/checkout", "/catalogue", "/static/logo.png"];

/// Scrape interval of the test's Prometheus; the dashboard's `$__rate_interval` becomes
/// [`RATE_INTERVAL`] (Grafana makes it at least four scrape intervals).
const SCRAPE_INTERVAL: &str = "1s";
const RATE_INTERVAL: &str = "15s";

/// Dashboard queries that may rightly answer nothing here: no 5xx answers and no failed
/// reconciliation happen in a healthy run (the error counters have no series until one does).
const MAY_BE_EMPTY: [&str; 2] = ["5xx answers by site/A", "Operator reconciliations/B"];

/// The Prometheus binary, or `None` (said loudly) when it is not installed and
/// `CAUSEWAY_REQUIRE_TOOLS` is unset; with it set, a missing Prometheus fails the test.
fn prometheus_binary() -> Option<PathBuf> {
    let found = std::process::Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(PathBuf::from("prometheus"));
    }
    assert!(
        std::env::var_os("CAUSEWAY_REQUIRE_TOOLS").is_none(),
        "prometheus is missing and CAUSEWAY_REQUIRE_TOOLS is set: install Debian's prometheus (scripts/test.sh does)"
    );
    eprintln!(
        "\n!!!!!!!! SKIPPED: prometheus is not installed (Debian package prometheus); scripts/test.sh installs it !!!!!!!!\n"
    );
    None
}

/// The test's Prometheus configuration: scrape every target in `targets_file` (file
/// discovery, re-read as it changes) each [`SCRAPE_INTERVAL`].
///
/// Debian builds Prometheus without Kubernetes discovery (`kubernetes_sd_configs` is not in
/// its binary), so the test plays that part: [`discover`] lists the namespace's pods through
/// the API server and applies the `prometheus.io/*` annotations exactly as the usual
/// `kubernetes_sd_configs` relabelling does (the chart's README shows that configuration).
fn scrape_config(targets_file: &Path) -> String {
    format!(
        r#"global:
  scrape_interval: {SCRAPE_INTERVAL}
  scrape_timeout: {SCRAPE_INTERVAL}
scrape_configs:
  - job_name: kubernetes-pods
    file_sd_configs:
      - files: [{targets}]
        refresh_interval: 1s
"#,
        targets = targets_file.display(),
    )
}

/// File-discovery targets for the pods of `ns`, the way pod discovery with the common
/// relabelling finds them: running pods with an IP that say `prometheus.io/scrape: "true"`,
/// scraped at `prometheus.io/path` (default `/metrics`) on `prometheus.io/port`, labelled
/// with their namespace and pod.
async fn discover(pods: &kube::Api<k8s_openapi::api::core::v1::Pod>, namespace: &str) -> Value {
    let Ok(list) = pods.list(&kube::api::ListParams::default()).await else {
        return Value::Null;
    };
    let targets: Vec<Value> = list
        .items
        .iter()
        .filter_map(|pod| {
            let annotations = pod.metadata.annotations.as_ref()?;
            if annotations.get("prometheus.io/scrape").map(String::as_str) != Some("true") {
                return None;
            }
            let status = pod.status.as_ref()?;
            if status.phase.as_deref() != Some("Running") {
                return None;
            }
            let ip = status.pod_ip.as_deref()?;
            let port: u16 = annotations.get("prometheus.io/port")?.parse().ok()?;
            let path = annotations
                .get("prometheus.io/path")
                .map_or("/metrics", String::as_str);
            Some(serde_json::json!({
                "targets": [SocketAddr::new(ip.parse().ok()?, port).to_string()],
                "labels": {
                    "__metrics_path__": path,
                    "namespace": namespace,
                    "pod": pod.metadata.name.as_deref()?,
                },
            }))
        })
        .collect();
    Value::Array(targets)
}

/// Keeps `file` current with [`discover`] every second until `running` turns false
/// (written whole and renamed into place, as Prometheus expects of file discovery).
fn keep_discovering(
    ns: &TestNamespace,
    file: PathBuf,
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (pods, namespace) = (ns.api(), ns.name().to_owned());
    tokio::spawn(async move {
        let staged = file.with_extension("json.new");
        while running.load(Ordering::Relaxed) {
            let targets = discover(&pods, &namespace).await;
            if targets.is_array() {
                let text = serde_json::to_string_pretty(&targets).expect("JSON");
                if std::fs::write(&staged, text).is_ok() {
                    let _ = std::fs::rename(&staged, &file);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// A running Prometheus, stopped when dropped (the guard also stops it if the test binary
/// dies).
struct Prometheus {
    address: SocketAddr,
    process: Guarded,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `binary` on a free loopback port with `config`, its TSDB in `dir`, and waits
    /// until it is ready.
    async fn start(binary: &Path, dir: &Path, config: &str) -> Self {
        std::fs::create_dir_all(dir.join("data")).expect("the Prometheus dir");
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("the Prometheus config");
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let log = dir.join("prometheus.log");
        let spec = Spec::new(binary.as_os_str(), dir, &log).args([
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={address}"),
            "--storage.tsdb.retention.time=1h".to_owned(),
        ]);
        let process = Guarded::spawn(&spec).expect("Prometheus starts");
        let prometheus = Self {
            address,
            process,
            log,
        };
        wait_for(
            "Prometheus to be ready",
            Duration::from_secs(30),
            || async {
                let (status, _) = http_get(address, "/-/ready").await.ok()?;
                (status == 200).then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", prometheus.log_tail()));
        prometheus
    }

    /// The end of its log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The instant vector `query` evaluates to now: each series' labels and value.
    async fn query(&self, query: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let (status, body) = http_get(self.address, &path).await?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("{query}: HTTP {status}: {e}"))?;
        if answer["status"] != "success" {
            return Err(format!("{query}: HTTP {status}: {}", answer["error"]));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect())
    }

    /// The sum of `query`'s values (0 when it is empty), failing the test on a query error.
    async fn sum(&self, query: &str) -> f64 {
        self.query(query)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|(_, v)| v)
            .sum()
    }

    /// The values of label `label` across `query`'s series.
    async fn label_values(&self, query: &str, label: &str) -> BTreeSet<String> {
        self.query(query)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(mut labels, _)| labels.remove(label))
            .collect()
    }
}

/// `GET path` from `address` over HTTP/1.0 (so the body ends with the connection, never
/// chunked): the status and the body.
async fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no head")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no status")?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("GET {path} from {address} timed out"))?
}

/// `text` as a URL query value: everything but unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The names of the ready pods matching `selector`.
async fn pod_names(ns: &TestNamespace, selector: &str) -> BTreeSet<String> {
    support::ready_names(ns, selector)
        .await
        .into_iter()
        .collect()
}

#[tokio::test]
async fn prometheus_discovers_the_annotated_pods_and_sees_requests_and_links_move() {
    let Some(binary) = prometheus_binary() else {
        return;
    };
    let bed = TestBed::shared().await.expect("the test bed starts");
    let ns = bed.namespace("prometheus").await.expect("a test namespace");
    let started = Instant::now();
    let step = |what: &str| {
        eprintln!(
            "prometheus: {:>6.1} s  {what}",
            started.elapsed().as_secs_f64()
        )
    };

    support::install(&ns, 1).await;
    ns.apply(&origins(3, &[])).await.expect("origins apply");
    ns.apply(&format!("{}{CLASSES_AND_CACHE}", site(2)))
        .await
        .expect("the Site applies");
    ns.apply(FRONTEND).await.expect("the Frontend applies");
    support::wait_site_and_frontend_ready(&ns).await;
    let frontends = support::frontends_serving(&ns, 1, TIMEOUT).await;
    step("chart installed, Site and Frontend serving");

    let dir = bed.dir().join(format!("prometheus-{}", ns.name()));
    std::fs::create_dir_all(&dir).expect("the Prometheus dir");
    let targets_file = dir.join("targets.json");
    let discovering = Arc::new(AtomicBool::new(true));
    let discovery = keep_discovering(&ns, targets_file.clone(), discovering.clone());
    let prometheus = Prometheus::start(&binary, &dir, &scrape_config(&targets_file)).await;
    step(&format!("Prometheus ready at {}", prometheus.address));

    // Traffic through the front-end until the checks are done: classes 2 and 0, and a
    // cacheable asset asked for again and again.
    let running = Arc::new(AtomicBool::new(true));
    let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (running, sent, answered) = (running.clone(), sent.clone(), answered.clone());
        let address = SocketAddr::new(frontends[0], 8080);
        tokio::spawn(async move {
            let mut turn = 0;
            while running.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                if get(address, HOST, PATHS[turn % PATHS.len()])
                    .await
                    .is_ok_and(|a| a.status == 200)
                {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                turn += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    // Discovery through the API server, filtered by the annotations: the operator pod (the
    // chart's annotations), both back-ends and the front-end (the operator's), and not the
    // origins, whose pods carry none.
    let mut expected = pod_names(&ns, "app.kubernetes.io/component=operator").await;
    expected.extend(pod_names(&ns, BACKEND_PODS).await);
    expected.extend(pod_names(&ns, FRONTEND_PODS).await);
    assert_eq!(
        expected.len(),
        4,
        "one operator, two back-ends, one front-end"
    );
    let up = format!("up{{namespace=\"{}\"}} == 1", ns.name());
    wait_for(
        "Prometheus to scrape every annotated pod",
        TIMEOUT,
        || async {
            let scraped = prometheus.label_values(&up, "pod").await;
            (scraped == expected).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: expected {expected:?}\n{}", prometheus.log_tail()));
    let origins = pod_names(&ns, "app=shop-origin").await;
    let all_targets = prometheus
        .label_values(&format!("up{{namespace=\"{}\"}}", ns.name()), "pod")
        .await;
    assert!(
        all_targets.is_disjoint(&origins),
        "pods without the annotations are not scraped: {all_targets:?}"
    );
    step(&format!("Prometheus scrapes {expected:?}"));

    // The Site's request counters: both tiers count, and the sum grows while traffic runs.
    let site = format!("{}/shop", ns.name());
    let requests = format!(
        "causeway_requests_total{{namespace=\"{}\", site=\"{site}\"}}",
        ns.name()
    );
    let counting = wait_for("both tiers' request counters", TIMEOUT, || async {
        let pods = prometheus.label_values(&requests, "pod").await;
        let tiers = ["-frontend-", "-backend-"].map(|t| pods.iter().any(|p| p.contains(t)));
        (tiers == [true, true]).then_some(pods)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let first = prometheus.sum(&format!("sum({requests})")).await;
    let grown = wait_for(
        "the request counters to grow",
        Duration::from_secs(30),
        || async {
            let now = prometheus.sum(&format!("sum({requests})")).await;
            (now >= first + 20.0).then_some(now)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: from {first}"));
    let rate = prometheus
        .sum(&format!("sum(rate({requests}[{RATE_INTERVAL}]))"))
        .await;
    assert!(rate > 0.0, "a positive request rate: {rate}");
    step(&format!(
        "causeway_requests_total{{site=\"{site}\"}} {first} → {grown} ({rate:.1}/s) on {counting:?}"
    ));

    // TMP link RTT: the front-end reports a link to each back-end, the back-ends their link
    // to the front-end; the figures are fresh and move.
    let backends = pod_names(&ns, BACKEND_PODS).await;
    let frontend_pod = pod_names(&ns, FRONTEND_PODS)
        .await
        .into_iter()
        .next()
        .expect("the front-end pod");
    let rtt = format!("causeway_link_rtt_seconds{{namespace=\"{}\"}}", ns.name());
    let peers = wait_for("link RTT from both tiers", TIMEOUT, || async {
        let series = prometheus.query(&format!("{rtt} > 0")).await.ok()?;
        let from_frontend: BTreeSet<&str> = series
            .iter()
            .filter(|(l, _)| l.get("pod") == Some(&frontend_pod))
            .filter_map(|(l, _)| l.get("peer").map(String::as_str))
            .collect();
        let reporting: BTreeSet<String> = series
            .iter()
            .filter_map(|(l, _)| l.get("pod").cloned())
            .collect();
        (from_frontend.len() == backends.len() && backends.is_subset(&reporting)).then(|| {
            from_frontend
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>()
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let sampled = format!("max(timestamp({rtt}))");
    let before = prometheus.sum(&sampled).await;
    wait_for("link RTT to move", Duration::from_secs(45), || async {
        let fresher = prometheus.sum(&sampled).await > before + 2.0;
        let moved = prometheus.sum(&format!("sum(changes({rtt}[30s]))")).await;
        (fresher && moved > 0.0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let worst = prometheus.sum(&format!("max({rtt})")).await;
    step(&format!(
        "causeway_link_rtt_seconds from the front-end to {peers:?}, fresh and moving (worst {:.2} ms)",
        worst * 1000.0
    ));

    // Every query of the Grafana dashboard answers, with data but for the error panels.
    let mut empty = Vec::new();
    for (name, expr) in support::dashboard_queries(ns.name(), RATE_INTERVAL) {
        let series = prometheus
            .query(&expr)
            .await
            .unwrap_or_else(|e| panic!("dashboard query {name}: {e}"));
        if series.is_empty() && !MAY_BE_EMPTY.contains(&name.as_str()) {
            empty.push(format!("{name}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
    let hit_ratio = prometheus
        .sum(&format!(
            "sum(rate(causeway_cache_hits_total{{site=\"{site}\"}}[{RATE_INTERVAL}])) \
             / (sum(rate(causeway_cache_hits_total{{site=\"{site}\"}}[{RATE_INTERVAL}])) \
             + sum(rate(causeway_cache_misses_total{{site=\"{site}\"}}[{RATE_INTERVAL}])))"
        ))
        .await;
    assert!(
        hit_ratio > 0.0,
        "the repeated asset is a cache hit: {hit_ratio}"
    );
    step(&format!(
        "every dashboard query answers (cache hit ratio {hit_ratio:.2})"
    ));

    running.store(false, Ordering::Relaxed);
    traffic.await.expect("the traffic task");
    let (sent, answered) = (
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
    );
    assert!(
        answered * 100 >= sent * 99,
        "traffic was answered: {answered} of {sent}"
    );
    prometheus.process.stop(Duration::from_secs(5)).await;
    discovering.store(false, Ordering::Relaxed);
    discovery.await.expect("discovery ends");
    step(&format!("{answered} of {sent} requests answered 200; done"));
}
