//! The Helm chart without a cluster: `helm lint --strict` passes, and `helm template`
//! renders the operator Deployment running `causeway operator` with the gateway image, the
//! least-privilege RBAC (no cluster-wide Secret access, the signer limited to its signer
//! name, the gateways' CSR role only creating and reading CSRs) and both ServiceAccounts. Needs the test bed's helm
//! (`CAUSEWAY_K8S_BIN=$(tests/testbed/provision.sh --print-bin-dir)`).

use std::path::PathBuf;
use std::process::Command;

use causeway_testbed::Binaries;
use serde_json::Value;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/causeway")
}

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
