//! What the operator's end-to-end tests and its benchmark share: installing the chart into a
//! test namespace, the origin, Site and Frontend manifests, and small HTTP and pod helpers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use causeway_testbed::TestNamespace;
use causeway_testbed::testbed::wait_for;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a step may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The host name of the test Site.
pub const HOST: &str = "shop.example.com";

/// The chart: `charts/causeway` in the workspace above this crate (the operator's, or the
/// fault suite's, which includes this module).
pub fn chart() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("charts/causeway"))
        .find(|chart| chart.is_dir())
        .expect("charts/causeway above the crate")
}

/// `helm install`s the chart into `ns` as release `cw`, watching only `ns`, with an image
/// the test kubelet maps to the local `causeway` build, and waits for the operator pods.
pub async fn install(ns: &TestNamespace, replicas: u32) -> String {
    install_as(ns, "cw", replicas).await
}

/// [`install`] as release `release` (cluster-scoped RBAC is named after it, so two tests of
/// one test bed need two release names).
pub async fn install_as(ns: &TestNamespace, release: &str, replicas: u32) -> String {
    let chart = chart();
    let mut helm = ns.bed().helm_command();
    helm.args([
        "install",
        release,
        &chart.display().to_string(),
        "--namespace",
        ns.name(),
        "--set",
        "image.repository=causeway",
        "--set",
        "image.tag=dev",
        "--set",
        &format!("operator.replicas={replicas}"),
        "--set",
        &format!("operator.watchNamespace={}", ns.name()),
        "--set",
        "operator.logFormat=text",
        "--wait",
        "--timeout",
        "120s",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let output = helm.output().await.expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "helm install: {text}");
    text
}

/// Three demo origins behind the Service `shop-origin` (port 80 → 8080).
pub const ORIGINS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop-origin
spec:
  replicas: 3
  selector:
    matchLabels: { app: shop-origin }
  template:
    metadata:
      labels: { app: shop-origin }
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: origin
          image: causeway:dev
          args: ["origin", "--listen", "$(POD_IP):8080", "--name", "$(POD_NAME)"]
          env:
            - name: POD_IP
              valueFrom: { fieldRef: { fieldPath: status.podIP } }
            - name: POD_NAME
              valueFrom: { fieldRef: { fieldPath: metadata.name } }
          ports:
            - { name: http, containerPort: 8080 }
          readinessProbe:
            httpGet: { path: /healthz, port: http }
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: shop-origin
spec:
  selector: { app: shop-origin }
  ports:
    - { name: http, port: 80, targetPort: http }
"#;

/// A Site whose origins are the endpoints of `shop-origin`, with two back-ends.
pub const SITE: &str = r#"
apiVersion: causeway.dev/v1alpha1
kind: Site
metadata:
  name: shop
spec:
  hostnames: [shop.example.com]
  origins:
    - name: main
      service: { name: shop-origin, port: 80 }
      primary: true
  backends:
    replicas: 2
"#;

/// A Frontend in eu-west serving `shop`.
pub const FRONTEND: &str = r#"
apiVersion: causeway.dev/v1alpha1
kind: Frontend
metadata:
  name: edge
spec:
  region: eu-west
  replicas: 1
  sites: [shop]
  service: { type: ClusterIP, httpPort: 80 }
"#;

/// Waits until Site `shop` and Frontend `edge` are Ready (`kubectl wait`, 120 s).
pub async fn wait_site_and_frontend_ready(ns: &TestNamespace) {
    ns.kubectl(
        &[
            "wait",
            "--for=condition=Ready",
            "site/shop",
            "frontend/edge",
            "--timeout=120s",
        ],
        None,
    )
    .await
    .expect("the Site and the Frontend become Ready");
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: String,
}

/// `GET path` from `addr` with `Host: host`, over a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Answer, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no head")?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or("no status")?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Answer {
            status,
            headers,
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("GET {path} from {addr} timed out"))?
}

/// Whether the pod is Running and Ready and not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The IPs of the ready pods matching `selector`.
pub async fn ready_ips(ns: &TestNamespace, selector: &str) -> Vec<IpAddr> {
    let pods: Api<Pod> = ns.api();
    let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = list
        .items
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
        .collect();
    ips.sort();
    ips
}

/// The names of the ready pods matching `selector`, sorted.
pub async fn ready_names(ns: &TestNamespace, selector: &str) -> Vec<String> {
    let pods: Api<Pod> = ns.api();
    let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else {
        return Vec::new();
    };
    let mut names: Vec<String> = list
        .items
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// Selector of the front-end pods of Frontend `edge`.
pub const FRONTEND_PODS: &str = "app.kubernetes.io/component=frontend,causeway.dev/frontend=edge";

/// Selector of the back-end pods of Site `shop`.
pub const BACKEND_PODS: &str = "app.kubernetes.io/component=backend,causeway.dev/site=shop";

/// Waits until `count` front-end pods are ready and each answers `GET /` for the Site from
/// an origin; returns their IPs.
pub async fn frontends_serving(ns: &TestNamespace, count: usize, timeout: Duration) -> Vec<IpAddr> {
    wait_for(&format!("{count} front-ends serving"), timeout, || async {
        let ips = ready_ips(ns, FRONTEND_PODS).await;
        if ips.len() != count {
            return None;
        }
        for ip in &ips {
            let answer = get(SocketAddr::new(*ip, 8080), HOST, "/").await.ok()?;
            if answer.status != 200 || !answer.headers.contains_key("x-origin") {
                return None;
            }
        }
        Some(ips)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Every query of the dashboard, as `("panel title/refId", expr)`, with the dashboard's
/// variables replaced for this namespace: all Sites, its hidden pod-name patterns.
pub fn dashboard_queries(namespace: &str, rate_interval: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(chart().join("dashboards/causeway.json"))
        .expect("the dashboard file");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut variables: Vec<(String, String)> = vec![
        ("$__rate_interval".to_owned(), rate_interval.to_owned()),
        ("$namespace".to_owned(), namespace.to_owned()),
        ("$site".to_owned(), ".+".to_owned()),
    ];
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "constant" {
            variables.push((
                format!("${}", variable["name"].as_str().unwrap_or_default()),
                variable["query"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let mut expr = target["expr"].as_str().unwrap_or_default().to_owned();
            for (name, value) in &variables {
                expr = expr.replace(name, value);
            }
            assert!(
                !expr.contains('$'),
                "a dashboard variable the test does not know: {expr}"
            );
            queries.push((
                format!(
                    "{}/{}",
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default()
                ),
                expr,
            ));
        }
    }
    queries
}
