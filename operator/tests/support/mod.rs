//! What the operator's end-to-end tests and its benchmark share: installing the chart into a
//! test namespace, small HTTP helpers, and — from the test bed, where the redirector's tests
//! find them too — the demo Site's manifests and pod readiness.

// Each test binary (and the fault suite, which includes this file) uses part of it.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use causeway_testbed::TestNamespace;
pub use causeway_testbed::pods::{ready_ips, ready_names};
pub use causeway_testbed::shop::{BACKEND_PODS, FRONTEND, FRONTEND_PODS, HOST, origins, site};
pub use causeway_testbed::testbed::chart;
use causeway_testbed::testbed::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a step may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// `helm install`s the chart into `ns` as release `cw`, watching only `ns`, with an image
/// the test kubelet maps to the local `causeway` build, and waits for the operator pods.
pub async fn install(ns: &TestNamespace, replicas: u32) {
    install_as(ns, "cw", replicas).await;
}

/// [`install`] as release `release` (cluster-scoped RBAC is named after it, so two tests of
/// one test bed need two release names).
pub async fn install_as(ns: &TestNamespace, release: &str, replicas: u32) {
    let replicas = format!("operator.replicas={replicas}");
    let watch = format!("operator.watchNamespace={}", ns.name());
    let options = [
        "--set",
        "image.repository=causeway",
        "--set",
        "image.tag=dev",
        "--set",
        &replicas,
        "--set",
        &watch,
        "--set",
        "operator.logFormat=text",
    ];
    ns.helm_install(release, &chart(), &options)
        .await
        .unwrap_or_else(|e| panic!("helm install: {e}"));
}

/// Waits until Site `shop` and Frontend `edge` are Ready, or fails the test.
pub async fn wait_site_and_frontend_ready(ns: &TestNamespace) {
    causeway_testbed::shop::wait_site_and_frontend_ready(ns)
        .await
        .unwrap_or_else(|e| panic!("the Site and the Frontend become Ready: {e}"));
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
