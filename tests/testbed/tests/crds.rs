//! The generated CRDs in a real API server (the test bed's kube-apiserver 1.37): they are
//! accepted, the examples apply, printer columns, defaults, the status and scale subresources
//! work, and every broken rule is refused with the same message the Rust-side validation gives.
//!
//! It lives with the test bed rather than in `api/` so that `causeway-api` itself builds no
//! Kubernetes client and no test bed for its tests.
//!
//! Needs the test bed's binaries (`tests/testbed/provision.sh`); run with
//! `CAUSEWAY_K8S_BIN=$(tests/testbed/provision.sh --print-bin-dir) cargo test -p causeway-testbed --test crds`.

use causeway_api::rules::{self, CelRule};
use causeway_api::{parse_frontends, parse_sites};
use causeway_testbed::{TestBed, TestNamespace};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const SITE: &str = include_str!("../../../examples/site.yaml");
const FRONTEND: &str = include_str!("../../../examples/frontend.yaml");

static CRDS_INSTALLED: OnceCell<()> = OnceCell::const_new();

/// A namespace in a test bed where the CRDs are installed and established.
async fn namespace(prefix: &str) -> TestNamespace {
    let bed = TestBed::shared().await.expect("the test bed starts");
    CRDS_INSTALLED
        .get_or_init(|| async {
            let crds = causeway_api::crd::render().expect("the CRDs render");
            bed.install_crds(crds.into_iter().map(|crd| crd.yaml))
                .await
                .expect("the API server accepts the generated CRDs, and they become established");
        })
        .await;
    bed.namespace(prefix).await.expect("a test namespace")
}

/// The single YAML document of `text` as JSON, so that a test can break one field.
fn document(text: &str, index: usize) -> Value {
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str(doc).expect("an example document is YAML"))
        .collect();
    docs[index].clone()
}

fn to_yaml(value: &Value) -> String {
    serde_yaml_ng::to_string(value).expect("JSON is YAML")
}

#[tokio::test]
async fn the_examples_apply_and_show_in_kubectl_get() {
    let ns = namespace("crd-examples").await;
    ns.apply(SITE).await.expect("examples/site.yaml applies");
    ns.apply(FRONTEND)
        .await
        .expect("examples/frontend.yaml applies");

    // Defaults come from the schema: fields the example leaves out are filled in.
    let site: Value = serde_json::from_str(
        &ns.kubectl(&["get", "site", "shop", "-o", "json"], None)
            .await
            .expect("kubectl get site"),
    )
    .expect("JSON");
    assert_eq!(site["spec"]["queue"]["maxLength"], 1024);
    assert_eq!(site["spec"]["origins"][1]["weight"], 100);
    assert_eq!(site["spec"]["requestTypes"]["defaultType"], "dynamic");

    // The operator's status write, as the status subresource takes it.
    let status = json!({ "status": {
        "observedGeneration": 1,
        "desiredBackends": 3,
        "readyBackends": 2,
        "latencyP99": "42ms",
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Available",
            "message": "2 of 3 back-ends ready", "lastTransitionTime": "2026-01-01T00:00:00Z"
        }],
        "qos": [{
            "pod": "shop-backend-0", "role": "Backend", "rttMs": 12.5, "loss": 0.001,
            "p50Ms": 4.0, "p99Ms": 42.0, "requestRate": 120.0, "inFlight": 3, "queued": 0,
            "updated": "2026-01-01T00:00:00Z"
        }]
    }});
    ns.kubectl(
        &[
            "patch",
            "site",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
        None,
    )
    .await
    .expect("the status subresource takes a SiteStatus");

    let sites = ns
        .kubectl(&["get", "sites"], None)
        .await
        .expect("kubectl get sites");
    let header = sites.lines().next().unwrap_or_default();
    for column in ["NAME", "HOSTNAMES", "READY", "DESIRED", "P99", "AGE"] {
        assert!(header.contains(column), "column {column} in:\n{sites}");
    }
    let row = sites.lines().nth(1).unwrap_or_default();
    for cell in ["shop", "shop.example.com", "2", "3", "42ms"] {
        assert!(row.contains(cell), "{cell} in:\n{sites}");
    }

    let frontends = ns
        .kubectl(&["get", "cwf"], None)
        .await
        .expect("kubectl get frontends by short name");
    let header = frontends.lines().next().unwrap_or_default();
    for column in ["REGION", "READY", "DESIRED", "SITES", "AGE"] {
        assert!(header.contains(column), "column {column} in:\n{frontends}");
    }
    assert!(frontends.contains("eu-west"), "{frontends}");

    let all = ns
        .kubectl(&["get", "causeway", "-o", "name"], None)
        .await
        .expect("kubectl get by category");
    for name in [
        "site.causeway.dev/shop",
        "frontend.causeway.dev/edge-eu-west",
        "frontend.causeway.dev/edge-us-east",
    ] {
        assert!(all.contains(name), "{name} in:\n{all}");
    }
}

#[tokio::test]
async fn kubectl_scale_sets_frontend_replicas() {
    let ns = namespace("crd-scale").await;
    ns.apply(FRONTEND)
        .await
        .expect("examples/frontend.yaml applies");
    ns.kubectl(&["scale", "frontend/edge-eu-west", "--replicas=5"], None)
        .await
        .expect("kubectl scale works through the scale subresource");
    let replicas = ns
        .kubectl(
            &[
                "get",
                "frontend",
                "edge-eu-west",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        )
        .await
        .expect("kubectl get");
    assert_eq!(replicas.trim(), "5");

    let status = json!({ "status": {
        "replicas": 5, "readyReplicas": 4,
        "selector": "app.kubernetes.io/name=causeway-frontend,causeway.dev/frontend=edge-eu-west",
        "sites": ["shop"]
    }});
    ns.kubectl(
        &[
            "patch",
            "frontend",
            "edge-eu-west",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
        None,
    )
    .await
    .expect("the status subresource takes a FrontendStatus");
    let path = format!(
        "/apis/causeway.dev/v1alpha1/namespaces/{}/frontends/edge-eu-west/scale",
        ns.name()
    );
    let scale: Value = serde_json::from_str(
        &ns.kubectl(&["get", "--raw", &path], None)
            .await
            .expect("the scale subresource answers"),
    )
    .expect("JSON");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["replicas"], 5);
    assert_eq!(
        scale["status"]["selector"],
        "app.kubernetes.io/name=causeway-frontend,causeway.dev/frontend=edge-eu-west"
    );
}

/// One way to break a valid example, and the rule that must refuse it.
struct Broken {
    what: &'static str,
    kind: Kind,
    rule: CelRule,
    edit: fn(&mut Value),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Site,
    Frontend,
}

fn broken_specs() -> Vec<Broken> {
    use Kind::{Frontend, Site};
    let site = |what, rule, edit| Broken {
        what,
        kind: Site,
        rule,
        edit,
    };
    let frontend = |what, rule, edit| Broken {
        what,
        kind: Frontend,
        rule,
        edit,
    };
    vec![
        site(
            "an origin with both a Service and a URL",
            rules::ORIGIN_TARGET,
            |s| s["spec"]["origins"][0]["url"] = json!("http://10.0.0.1:80"),
        ),
        site("an origin with neither", rules::ORIGIN_TARGET, |s| {
            if let Some(origin) = s["spec"]["origins"][1].as_object_mut() {
                origin.remove("url");
            }
        }),
        site("an origin URL with a path", rules::ORIGIN_URL, |s| {
            s["spec"]["origins"][1]["url"] = json!("http://mirror.example.net/shop")
        }),
        site("a weight of 0", rules::ORIGIN_WEIGHT, |s| {
            s["spec"]["origins"][1]["weight"] = json!(0)
        }),
        site("two primaries", rules::ONE_PRIMARY, |s| {
            s["spec"]["origins"][1]["primary"] = json!(true)
        }),
        site(
            "an origin type without a cost",
            rules::ORIGIN_TYPES_KNOWN,
            |s| s["spec"]["origins"][2]["types"] = json!(["video"]),
        ),
        site(
            "a default type without a cost",
            rules::DEFAULT_TYPE_KNOWN,
            |s| s["spec"]["requestTypes"]["defaultType"] = json!("video"),
        ),
        site("a rule type without a cost", rules::RULE_TYPES_KNOWN, |s| {
            s["spec"]["requestTypes"]["rules"][0]["type"] = json!("video")
        }),
        site("a type name in capitals", rules::TYPE_NAMES, |s| {
            s["spec"]["requestTypes"]["costs"] =
                json!({ "Static": 1, "dynamic": 2, "db": 4, "media": 8, "static": 1 })
        }),
        site("a cost of 0", rules::COSTS_POSITIVE, |s| {
            s["spec"]["requestTypes"]["costs"] =
                json!({ "static": 0, "dynamic": 2, "db": 4, "media": 8 })
        }),
        site("priority class 5", rules::PRIORITY_CLASS, |s| {
            s["spec"]["priority"]["rules"][0]["class"] = json!(5)
        }),
        site("a header value and regex", rules::VALUE_OR_REGEX, |s| {
            s["spec"]["priority"]["rules"][0]["match"]["headers"] =
                json!([{ "name": "x-tier", "value": "gold", "regex": "g.*" }])
        }),
        site("a relative path prefix", rules::ABSOLUTE_PATH, |s| {
            s["spec"]["priority"]["rules"][0]["match"]["pathPrefix"] = json!("checkout")
        }),
        site("a queue timeout of 0s", rules::POSITIVE_DURATION, |s| {
            s["spec"]["queue"] = json!({ "timeout": "0s" })
        }),
        site("a loss above 1", rules::FRACTION, |s| {
            s["spec"]["qos"]["maxLoss"] = json!(1.5)
        }),
        site("an ejected percentage above 100", rules::PERCENT, |s| {
            s["spec"]["outlierDetection"] = json!({ "maxEjectedPercent": 150 })
        }),
        site(
            "a first ejection longer than the longest",
            rules::EJECTION_TIMES,
            |s| {
                s["spec"]["outlierDetection"] =
                    json!({ "baseEjectionTime": "10m", "maxEjectionTime": "5m" })
            },
        ),
        site("minReplicas above replicas", rules::MIN_REPLICAS, |s| {
            s["spec"]["backends"] = json!({ "replicas": 2, "minReplicas": 3, "maxReplicas": 6 })
        }),
        site("replicas above maxReplicas", rules::MAX_REPLICAS, |s| {
            s["spec"]["backends"] = json!({ "replicas": 8, "maxReplicas": 6 })
        }),
        site(
            "minReplicas above maxReplicas",
            rules::MIN_MAX_REPLICAS,
            |s| {
                s["spec"]["backends"] = json!({ "replicas": 4, "minReplicas": 6, "maxReplicas": 3 })
            },
        ),
        site(
            "a cached object larger than the cache",
            rules::CACHE_OBJECT_FITS,
            |s| s["spec"]["cache"]["maxObjectBytes"] = json!(1_073_741_824_u64),
        ),
        site("one TCP port twice", rules::TCP_PORTS_UNIQUE, |s| {
            s["spec"]["tcpPorts"] = json!([
                { "name": "mqtt", "port": 1883, "targetPort": 1883 },
                { "name": "mqtt-tls", "port": 1883, "targetPort": 8883 }
            ])
        }),
        frontend("both sites and a selector", rules::SITES_OR_SELECTOR, |f| {
            f["spec"]["siteSelector"] = json!({ "matchLabels": { "causeway.dev/tier": "gold" } })
        }),
        frontend(
            "neither sites nor a selector",
            rules::SITES_OR_SELECTOR,
            |f| {
                if let Some(spec) = f["spec"].as_object_mut() {
                    spec.remove("sites");
                }
            },
        ),
        frontend(
            "a client subnet without a prefix",
            rules::CLIENT_SUBNETS,
            |f| f["spec"]["clientSubnets"] = json!(["203.0.113.0"]),
        ),
        frontend("three blender weights", rules::BLENDER_WEIGHT_COUNT, |f| {
            f["spec"]["blender"]["weights"] = json!([4, 2, 1])
        }),
        frontend(
            "a blender weight of 0",
            rules::BLENDER_WEIGHTS_POSITIVE,
            |f| f["spec"]["blender"]["weights"] = json!([16, 8, 0, 2, 1]),
        ),
        frontend(
            "the same HTTP and HTTPS port",
            rules::DISTINCT_SERVICE_PORTS,
            |f| f["spec"]["service"]["httpsPort"] = json!(80),
        ),
    ]
}

#[tokio::test]
async fn broken_specs_are_refused_with_the_rule_message() {
    let ns = namespace("crd-invalid").await;
    let cases = broken_specs();
    let tested: Vec<CelRule> = cases.iter().map(|case| case.rule).collect();
    for rule in rules::ALL {
        assert!(tested.contains(rule), "no case breaks {:?}", rule.message);
    }

    let mut failures = Vec::new();
    for case in &cases {
        let mut doc = match case.kind {
            Kind::Site => document(SITE, 0),
            Kind::Frontend => document(FRONTEND, 0),
        };
        (case.edit)(&mut doc);
        let yaml = to_yaml(&doc);

        let local = match case.kind {
            Kind::Site => parse_sites(case.what, &yaml).map(drop),
            Kind::Frontend => parse_frontends(case.what, &yaml).map(drop),
        };
        match local {
            Ok(()) => failures.push(format!("{}: the Rust validation accepts it", case.what)),
            Err(err) if !err.to_string().contains(case.rule.message) => failures.push(format!(
                "{}: the Rust validation says {err}, not {:?}",
                case.what, case.rule.message
            )),
            Err(_) => {}
        }

        match ns
            .kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml))
            .await
        {
            Ok(out) => failures.push(format!("{}: the API server accepts it: {out}", case.what)),
            Err(err) if !err.to_string().contains(case.rule.message) => failures.push(format!(
                "{}: the API server refuses it without {:?}: {err}",
                case.what, case.rule.message
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_api_server_names_the_origin_and_the_bounds() {
    let ns = namespace("crd-messages").await;
    let mut site = document(SITE, 0);
    site["spec"]["origins"][0]["url"] = json!("http://10.0.0.1:80");
    site["spec"]["backends"] = json!({ "replicas": 4, "minReplicas": 6, "maxReplicas": 3 });
    let err = ns
        .apply(&to_yaml(&site))
        .await
        .expect_err("a Site with both service and url on one origin, and min > max");
    let err = err.to_string();
    assert!(
        err.contains("spec.origins[0]") && err.contains(rules::ORIGIN_TARGET.message),
        "{err}"
    );
    assert!(
        err.contains("spec.backends") && err.contains(rules::MIN_MAX_REPLICAS.message),
        "{err}"
    );

    let mut site = document(SITE, 0);
    site["spec"]["queue"] = json!({ "timeout": "5 minutes" });
    let err = ns
        .apply(&to_yaml(&site))
        .await
        .expect_err("a duration that is not one")
        .to_string();
    assert!(err.contains("spec.queue.timeout"), "{err}");
}
