//! What the Kubernetes cases share: the chart installed in a test namespace with one
//! operator, a Site whose origins are the suite's echo origins on 127.0.0.1 (the back-end
//! pods reach them over loopback) with two back-ends, a Frontend with one front-end, and what
//! "nothing torn down" means: every gateway pod still there, same uid, not restarted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use causeway_testbed::TestNamespace;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::cluster::{self, BACKEND_PODS, FRONTEND, FRONTEND_PODS, HOST};
use causeway_test_support::{origin::Origin, site::SiteYaml};

/// A Site and a Frontend serving, and the origins behind them.
pub struct Deployed {
    /// The origins (the Site's `url` origins).
    pub origins: Vec<Origin>,
    /// The front-end pod's client address.
    pub frontend: SocketAddr,
}

/// Installs the chart (one operator), starts three origins, applies the Site (two
/// back-ends) and the Frontend, and waits until the front-end serves.
pub async fn deploy(ns: &TestNamespace) -> Deployed {
    cluster::install(ns, 1).await;
    let origins = Origin::start_many("o", 3).await;
    for origin in &origins {
        origin.state.set_delay(Duration::from_millis(20));
    }
    let site = SiteYaml::new("shop", HOST)
        .origins(&origins, "")
        .spec("backends:\n  replicas: 2");
    ns.apply(&site.render()).await.expect("the Site applies");
    ns.apply(FRONTEND).await.expect("the Frontend applies");
    cluster::wait_site_and_frontend_ready(ns).await;
    let ips = cluster::frontends_serving(ns, 1, cluster::TIMEOUT).await;
    Deployed {
        origins,
        frontend: SocketAddr::new(ips[0], 8080),
    }
}

/// Every gateway pod (back-ends and front-ends): name → (uid, restarts of its containers).
pub async fn gateway_pods(ns: &TestNamespace) -> BTreeMap<String, (String, i32)> {
    let pods: Api<Pod> = ns.api();
    let mut found = BTreeMap::new();
    for selector in [BACKEND_PODS, FRONTEND_PODS] {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list gateway pods");
        for pod in list.items {
            let restarts = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
            found.insert(
                pod.metadata.name.clone().unwrap_or_default(),
                (pod.metadata.uid.clone().unwrap_or_default(), restarts),
            );
        }
    }
    found
}

/// Asserts that every pod of `before` is in `after` with the same uid and no more restarts.
pub fn assert_nothing_torn_down(
    before: &BTreeMap<String, (String, i32)>,
    after: &BTreeMap<String, (String, i32)>,
) {
    for (name, was) in before {
        assert_eq!(
            after.get(name),
            Some(was),
            "gateway pod {name} was torn down or restarted (before {before:?}, after {after:?})"
        );
    }
}

/// The pids of the `causeway` processes (not their guards) whose command line has `needle`.
pub fn causeway_processes(needle: &str) -> Vec<u32> {
    causeway_testbed::testbed::processes_matching(needle)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .next()
                    .is_some_and(|program| program.ends_with(b"causeway"))
            })
        })
        .collect()
}

/// Sends SIGKILL to `pid` (through `kill(1)`: the suite has no unsafe code).
pub fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid}");
}
