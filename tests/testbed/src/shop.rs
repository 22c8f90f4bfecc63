//! The demo Site the Kubernetes end-to-end tests serve: `shop.example.com`, from the demo
//! origins behind the Service `shop-origin`, through back-ends of Site `shop` and front-ends of
//! Frontend `edge`. The operator's tests, the redirector's and the fault suite apply these
//! manifests, so they agree on names, labels and selectors.

use crate::{Result, TestNamespace};

/// The host name of Site `shop`.
pub const HOST: &str = "shop.example.com";

/// Selector of the front-end pods of Frontend `edge`.
pub const FRONTEND_PODS: &str = "app.kubernetes.io/component=frontend,causeway.dev/frontend=edge";

/// Selector of the back-end pods of Site `shop`.
pub const BACKEND_PODS: &str = "app.kubernetes.io/component=backend,causeway.dev/site=shop";

/// `replicas` demo origins (`causeway origin`, each answering with its pod name) behind the
/// Service `shop-origin` (port 80 → 8080), with `extra_args` appended to the origin's
/// arguments (for example `--slow-after`).
pub fn origins(replicas: u32, extra_args: &[&str]) -> String {
    let extra_args: String = extra_args.iter().map(|arg| format!(", {arg:?}")).collect();
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop-origin
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{ app: shop-origin }}
  template:
    metadata:
      labels: {{ app: shop-origin }}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: origin
          image: causeway:dev
          args: ["origin", "--listen", "$(POD_IP):8080", "--name", "$(POD_NAME)"{extra_args}]
          env:
            - name: POD_IP
              valueFrom: {{ fieldRef: {{ fieldPath: status.podIP }} }}
            - name: POD_NAME
              valueFrom: {{ fieldRef: {{ fieldPath: metadata.name }} }}
          ports:
            - {{ name: http, containerPort: 8080 }}
          readinessProbe:
            httpGet: {{ path: /healthz, port: http }}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: shop-origin
spec:
  selector: {{ app: shop-origin }}
  ports:
    - {{ name: http, port: 80, targetPort: http }}
"#
    )
}

/// Site `shop` whose one (primary) origin is the Service `shop-origin`, with `backends`
/// back-ends. More of the spec can follow it, indented by two spaces.
pub fn site(backends: u32) -> String {
    format!(
        r#"
apiVersion: causeway.dev/v1alpha1
kind: Site
metadata:
  name: shop
spec:
  hostnames: [{HOST}]
  origins:
    - name: main
      service: {{ name: shop-origin, port: 80 }}
      primary: true
  backends:
    replicas: {backends}
"#
    )
}

/// Frontend `edge` in region eu-west, one front-end serving `shop`.
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

/// Waits until Site `shop` and Frontend `edge` are Ready (`kubectl wait`, 120 s): the
/// operator has reconciled both.
///
/// # Errors
/// [`crate::Error::Command`] with kubectl's complaint when they are not Ready in time.
pub async fn wait_site_and_frontend_ready(ns: &TestNamespace) -> Result<String> {
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
}
