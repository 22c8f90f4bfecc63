//! Smoke tests of the test bed: a Deployment of Causeway's image runs as local processes on
//! loopback addresses, answers HTTP, appears in its Service's EndpointSlice and goes away on
//! delete; nodes carry topology; foreign images fail clearly; crashed containers restart;
//! pods get service-account tokens that RBAC governs.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use causeway_testbed::pods::{is_ready, pod_ip};
use causeway_testbed::testbed::{processes_matching, wait_for};
use causeway_testbed::{TestBed, TestNamespace};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;

const TIMEOUT: Duration = Duration::from_secs(90);

async fn namespace(prefix: &str) -> TestNamespace {
    let bed = TestBed::shared().await.expect("the test bed starts");
    bed.namespace(prefix).await.expect("a test namespace")
}

const ORIGIN: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: origin
spec:
  replicas: 2
  selector:
    matchLabels: { app: origin }
  template:
    metadata:
      labels: { app: origin }
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: origin
          image: causeway:dev
          command: ["causeway"]
          args: ["origin", "--listen", "$(POD_IP):8080"]
          env:
            - name: POD_IP
              valueFrom: { fieldRef: { fieldPath: status.podIP } }
            - name: POD_NAME
              valueFrom: { fieldRef: { fieldPath: metadata.name } }
            - name: POD_NAMESPACE
              valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
          ports:
            - { name: http, containerPort: 8080 }
          readinessProbe:
            httpGet: { path: /healthz, port: http }
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: origin
spec:
  selector: { app: origin }
  ports:
    - { name: http, port: 80, targetPort: http }
"#;

#[tokio::test]
async fn a_deployment_runs_as_loopback_processes_and_goes_away() {
    let ns = namespace("smoke-deployment").await;
    ns.apply(ORIGIN).await.expect("kubectl apply");

    let pods: Api<Pod> = ns.api();
    let listed = ListParams::default().labels("app=origin");
    let ready = wait_for("2 ready origin pods", TIMEOUT, || {
        let pods = pods.clone();
        let listed = listed.clone();
        async move {
            let list = pods.list(&listed).await.ok()?;
            let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
            (ready.len() == 2).then_some(ready)
        }
    })
    .await
    .expect("the Deployment's pods become Running and Ready");

    let mut ips = BTreeSet::new();
    for pod in &ready {
        let ip = pod_ip(pod).expect("a pod IP");
        assert!(ip.is_loopback(), "pod IP {ip} is on loopback");
        let addr = SocketAddr::new(ip, 8080);
        let status =
            causeway_testbed::http::get_status(addr, "origin", "/", Duration::from_secs(5))
                .await
                .expect("the pod answers HTTP");
        assert_eq!(status, 200, "GET http://{addr}/");
        assert!(
            !processes_matching(&format!("{ip}:8080")).is_empty(),
            "a local process serves {addr}"
        );
        ips.insert(ip.to_string());
    }

    let slices: Api<EndpointSlice> = ns.api();
    let by_service = ListParams::default().labels("kubernetes.io/service-name=origin");
    wait_for("the EndpointSlice to list the pod IPs", TIMEOUT, || {
        let slices = slices.clone();
        let by_service = by_service.clone();
        let ips = ips.clone();
        async move {
            let list = slices.list(&by_service).await.ok()?;
            let listed: BTreeSet<String> = list
                .items
                .iter()
                .flat_map(|slice| slice.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            (listed == ips).then_some(())
        }
    })
    .await
    .expect("the EndpointSlice lists the ready pod IPs");

    ns.kubectl(&["delete", "deployment", "origin", "--wait=true"], None)
        .await
        .expect("kubectl delete");
    wait_for("the pods and their processes to be gone", TIMEOUT, || {
        let pods = pods.clone();
        let listed = listed.clone();
        let ips = ips.clone();
        async move {
            let list = pods.list(&listed).await.ok()?;
            let processes = ips
                .iter()
                .any(|ip| !processes_matching(&format!("{ip}:8080")).is_empty());
            (list.items.is_empty() && !processes).then_some(())
        }
    })
    .await
    .expect("kubectl delete stops the processes");
    for ip in &ips {
        let addr: SocketAddr = format!("{ip}:8080").parse().expect("an address");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "nothing listens on {addr} any more"
        );
    }
}

#[tokio::test]
async fn nodes_carry_region_and_zone_labels() {
    let ns = namespace("smoke-nodes").await;
    let nodes: Api<Node> = Api::all(ns.client());
    let list = nodes.list(&ListParams::default()).await.expect("nodes");
    let zones: BTreeSet<(String, String)> = list
        .items
        .iter()
        .filter_map(|node| {
            let labels = node.metadata.labels.as_ref()?;
            Some((
                labels.get("topology.kubernetes.io/region")?.clone(),
                labels.get("topology.kubernetes.io/zone")?.clone(),
            ))
        })
        .collect();
    assert!(zones.len() >= 3, "nodes in three zones: {zones:?}");
    let regions: BTreeSet<&String> = zones.iter().map(|(region, _)| region).collect();
    assert!(regions.len() >= 2, "nodes in two regions: {regions:?}");
}

#[tokio::test]
async fn a_foreign_image_fails_with_a_clear_status() {
    let ns = namespace("smoke-foreign").await;
    ns.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: { name: web }\nspec:\n  containers:\n    - { name: web, image: nginx:1.27 }\n",
    )
    .await
    .expect("kubectl apply");
    let pods: Api<Pod> = ns.api();
    let message = wait_for("an ErrImagePull status", TIMEOUT, || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("web").await.ok()?;
            let statuses = pod.status?.container_statuses?;
            let waiting = statuses.first()?.state.as_ref()?.waiting.clone()?;
            (waiting.reason.as_deref() == Some("ErrImagePull")).then_some(waiting.message)
        }
    })
    .await
    .expect("the pod reports ErrImagePull");
    let message = message.unwrap_or_default();
    assert!(message.contains("nginx:1.27"), "{message}");
}

#[tokio::test]
async fn a_crashing_container_is_restarted() {
    let ns = namespace("smoke-restart").await;
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: { name: crash }
spec:
  containers:
    - name: crash
      image: causeway:dev
      command: ["sh", "-c", "exit 3"]
"#,
    )
    .await
    .expect("kubectl apply");
    let pods: Api<Pod> = ns.api();
    let last_exit = wait_for("two restarts", TIMEOUT, || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("crash").await.ok()?;
            let status = pod.status?.container_statuses?.first()?.clone();
            let exit = status.last_state?.terminated?.exit_code;
            (status.restart_count >= 2).then_some(exit)
        }
    })
    .await
    .expect("the container restarts per restartPolicy Always");
    assert_eq!(last_exit, 3);

    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let reasons = wait_for("Scheduled, Started and BackOff events", TIMEOUT, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            let reasons: BTreeSet<String> =
                list.items.into_iter().filter_map(|e| e.reason).collect();
            ["Scheduled", "Started", "BackOff"]
                .iter()
                .all(|r| reasons.contains(*r))
                .then_some(reasons)
        }
    })
    .await
    .expect("the kubelet records events on the pod");
    assert!(reasons.contains("BackOff"), "{reasons:?}");
}

#[tokio::test]
async fn pods_get_a_service_account_token_that_rbac_governs() {
    let ns = namespace("smoke-token").await;
    ns.apply(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: { name: reader }
---
apiVersion: v1
kind: Pod
metadata: { name: holder }
spec:
  serviceAccountName: reader
  containers:
    - name: holder
      image: causeway:dev
      command: ["sh", "-c", "echo token-holder-up && test -r \"$KUBECONFIG\" && exec sleep 600"]
      readinessProbe:
        exec: { command: ["sh", "-c", "test -r kubeconfig"] }
        periodSeconds: 1
"#,
    )
    .await
    .expect("kubectl apply");
    let pods: Api<Pod> = ns.api();
    wait_for("the holder pod to be ready", TIMEOUT, || {
        let pods = pods.clone();
        async move { pods.get("holder").await.ok().filter(is_ready) }
    })
    .await
    .expect("the pod runs with its kubeconfig");
    assert!(ns.pod_logs("holder", "holder").contains("token-holder-up"));

    // The pod's own kubeconfig, as its process sees it through KUBECONFIG.
    let pods_dir = ns.bed().dir().join("pods");
    let kubeconfig = std::fs::read_dir(&pods_dir)
        .expect("pod dirs")
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{}_holder_", ns.name()))
        })
        .map(|e| e.path().join("kubeconfig"))
        .expect("the holder's pod dir");
    let config = kube::config::Kubeconfig::read_from(&kubeconfig).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .expect("a client config");
    let as_pod = kube::Client::try_from(config).expect("a client");
    let pods_as_pod: Api<Pod> = Api::namespaced(as_pod, ns.name());
    let denied = pods_as_pod.list(&ListParams::default()).await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(status)) if status.code == 403),
        "the service account may not list pods yet: {denied:?}"
    );

    ns.kubectl(
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=list",
            "--resource=pods",
        ],
        None,
    )
    .await
    .expect("kubectl create role");
    ns.kubectl(
        &[
            "create",
            "rolebinding",
            "reader",
            "--role=pod-reader",
            &format!("--serviceaccount={}:reader", ns.name()),
        ],
        None,
    )
    .await
    .expect("kubectl create rolebinding");
    wait_for("RBAC to allow the service account", TIMEOUT, || {
        let pods_as_pod = pods_as_pod.clone();
        async move { pods_as_pod.list(&ListParams::default()).await.ok() }
    })
    .await
    .expect("the role binding lets the pod's token list pods");
}

#[tokio::test]
async fn config_map_volumes_appear_at_their_mount_paths() {
    let ns = namespace("smoke-volume").await;
    ns.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: demo }
data: { greeting: hello }
---
apiVersion: v1
kind: Pod
metadata: { name: reader }
spec:
  volumes:
    - { name: demo, configMap: { name: demo } }
  containers:
    - name: reader
      image: causeway:dev
      command: ["sh", "-c", "cat /etc/demo/greeting && exec sleep 600"]
      volumeMounts:
        - { name: demo, mountPath: /etc/demo }
      readinessProbe:
        exec: { command: ["grep", "-q", "hello", "/etc/demo/greeting"] }
        periodSeconds: 1
"#,
    )
    .await
    .expect("kubectl apply");
    let pods: Api<Pod> = ns.api();
    wait_for("the reader pod to be ready", TIMEOUT, || {
        let pods = pods.clone();
        async move { pods.get("reader").await.ok().filter(is_ready) }
    })
    .await
    .expect("the container reads the ConfigMap at its mount path");
    let restarts = pods.get("reader").await.ok().and_then(|pod| {
        pod.status?
            .container_statuses?
            .first()
            .map(|s| s.restart_count)
    });
    assert_eq!(restarts, Some(0), "the container did not crash");
    assert!(ns.pod_logs("reader", "reader").contains("hello"));
}
