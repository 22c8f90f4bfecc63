//! The Helm chart without a cluster: `helm lint --strict` passes, and `helm template`
//! renders the operator Deployment running `causeway operator` with the gateway image, the
//! least-privilege RBAC (no cluster-wide Secret access, the signer limited to its signer
//! name, the gateways' CSR role only creating and reading CSRs) and both ServiceAccounts. Needs the test bed's helm
//! (`CAUSEWAY_K8S_BIN=$(tests/testbed/provision.sh --print-bin-dir)`).

mod support;

use std::process::Command;

use causeway_testbed::Binaries;
use serde_json::Value;
use support::{chart, dashboard_queries};

fn helm(args: &[&str]) -> String {
    let binaries = Binaries::locate().expect("the test bed's binaries (provision.sh)");
    let output = Command::new(binaries.path("helm"))
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("causeway-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("causeway-helm-config"),
        )
        .output()
        .expect("helm runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "helm {args:?}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

fn documents(text: &str) -> Vec<Value> {
    text.split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .filter(|doc| doc.is_object())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name_part: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(name_part)
        })
        .unwrap_or_else(|| panic!("no {kind} named like {name_part}"))
}

#[test]
fn the_chart_lints_and_renders_least_privilege() {
    let chart = chart();
    let chart = chart.to_str().expect("a UTF-8 path");
    helm(&["lint", "--strict", chart]);
    let rendered = helm(&[
        "template",
        "cw",
        chart,
        "--namespace",
        "causeway-system",
        "--set",
        "image.tag=1.2.3",
        "--set",
        "operator.watchNamespace=web",
    ]);
    let docs = documents(&rendered);

    let deployment = find(&docs, "Deployment", "operator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/causeway-dev/causeway:1.2.3");
    let args: Vec<&str> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "operator");
    assert!(args.contains(&"--watch-namespace=web"), "{args:?}");
    let env = container["env"].as_array().cloned().unwrap_or_default();
    let image = env
        .iter()
        .find(|e| e["name"] == "CAUSEWAY_IMAGE")
        .map(|e| e["value"].clone());
    assert_eq!(
        image,
        Some(Value::from("ghcr.io/causeway-dev/causeway:1.2.3"))
    );

    let operator = find(&docs, "ClusterRole", "operator");
    for rule in operator["rules"].as_array().into_iter().flatten() {
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !verbs.contains(&"*") && !resources.contains(&"*"),
            "no wildcards: {rule}"
        );
        assert!(
            !resources.contains(&"secrets"),
            "no Secret access outside the operator's namespace: {rule}"
        );
        if resources.contains(&"signers") {
            assert_eq!(
                rule["resourceNames"],
                serde_json::json!(["causeway.dev/tmp-link"]),
                "approve and sign only our signer: {rule}"
            );
        }
    }
    let leader = find(&docs, "Role", "operator-leader");
    let secret_rules: Vec<&Value> = leader["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["resources"][0] == "secrets")
        .collect();
    assert!(
        secret_rules
            .iter()
            .all(|r| r["verbs"] == serde_json::json!(["create"]) || r["resourceNames"].is_array()),
        "the CA Secret: create, and get by name: {secret_rules:?}"
    );
    let csr = find(&docs, "ClusterRole", "gateway-csr");
    assert_eq!(csr["rules"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        csr["rules"][0]["resources"][0],
        "certificatesigningrequests"
    );
    assert_eq!(
        csr["rules"][0]["verbs"],
        serde_json::json!(["create", "get", "list", "watch"])
    );
    assert!(
        args.contains(&"--gateway-csr-role=cw-causeway-gateway-csr"),
        "{args:?}"
    );
    assert_eq!(
        find(&docs, "ServiceAccount", "causeway-sidecar")["automountServiceAccountToken"],
        false,
        "only gateway pods mount a token of this account"
    );
}

#[test]
fn the_chart_offers_a_service_monitor_a_pod_monitor_and_the_dashboard() {
    let chart = chart();
    let chart = chart.to_str().expect("a UTF-8 path");
    let kinds = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .filter_map(|d| d["kind"].as_str().map(str::to_owned))
            .collect()
    };

    // Off by default: no monitoring.coreos.com objects (their CRDs may be missing) and no
    // dashboard; the operator pod carries the scrape annotations.
    let plain = documents(&helm(&[
        "template",
        "cw",
        chart,
        "--namespace",
        "cw-system",
    ]));
    let plain_kinds = kinds(&plain);
    assert!(
        !plain_kinds
            .iter()
            .any(|k| k == "ServiceMonitor" || k == "PodMonitor"),
        "{plain_kinds:?}"
    );
    assert!(
        !plain.iter().any(
            |d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1"
        )
    );
    let operator = plain
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the operator Deployment");
    let annotations = &operator["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9090");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let args = [
        "template",
        "cw",
        chart,
        "--namespace",
        "cw-system",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=kps",
        "--set",
        "dashboards.enabled=true",
        "--set",
        "dashboards.namespace=grafana",
        "--set",
        "operator.watchNamespace=web",
    ];
    helm(&[&["lint", "--strict", chart][..], &args[5..]].concat());
    let docs = documents(&helm(&args));
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(&docs)))
    };

    // The operator through its metrics Service.
    let service_monitor = find("ServiceMonitor");
    assert_eq!(service_monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(service_monitor["metadata"]["labels"]["release"], "kps");
    assert_eq!(service_monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(service_monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("the operator's metrics Service");
    for (key, value) in service_monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the ServiceMonitor selects the metrics Service by {key}"
        );
    }
    assert!(
        service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "metrics")
    );

    // The gateways by pod, on their admin ports, where the operator makes them.
    let pod_monitor = find("PodMonitor");
    assert_eq!(pod_monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pod_monitor["metadata"]["labels"]["release"], "kps");
    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "admin");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(
        pod_monitor["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!(["web"])
    );
    let selector = &pod_monitor["spec"]["selector"];
    assert_eq!(
        selector["matchLabels"]["app.kubernetes.io/managed-by"],
        "causeway-operator"
    );
    assert_eq!(
        selector["matchExpressions"][0]["values"],
        serde_json::json!(["frontend", "backend"])
    );

    // The dashboard, labelled for Grafana's sidecar, the same JSON as the file.
    let config_map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard ConfigMap");
    assert_eq!(config_map["metadata"]["namespace"], "grafana");
    let shipped: Value = serde_json::from_str(
        config_map["data"]["causeway.json"]
            .as_str()
            .expect("causeway.json"),
    )
    .expect("the shipped dashboard is JSON");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::PathBuf::from(chart).join("dashboards/causeway.json"))
            .expect("the dashboard file"),
    )
    .expect("the dashboard file is JSON");
    assert_eq!(shipped, file);
    let exprs: Vec<String> = dashboard_queries("web", "15s")
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    for metric in [
        "causeway_requests_total",
        "causeway_request_duration_seconds_bucket",
        "causeway_origin_in_flight",
        "causeway_queue_depth",
        "causeway_origin_latency_ewma_seconds",
        "causeway_origin_healthy",
        "causeway_link_rtt_seconds",
        "causeway_link_loss_ratio",
        "causeway_cache_hits_total",
        "causeway_cache_misses_total",
        "causeway_operator_reconciliations_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "the dashboard shows {metric}"
        );
    }
}
