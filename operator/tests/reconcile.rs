//! The reconcilers against an in-process fake API server (a tower service keeping objects in
//! memory; no network, no processes): a Site makes its back-end ConfigMap (the configuration
//! document, with the link CA), Service and Deployment, owned by it, lets the gateways read their ConfigMaps and ask for
//! certificates, and writes its status once — a second
//! reconciliation of the same state writes no status; a Frontend lists the ready back-ends
//! of its Site and reports the scale selector.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use causeway_api::contract::{CONFIG_KEY, GatewayConfig};
use causeway_api::{Frontend, Site};
use causeway_operator::certificates::Authority;
use causeway_operator::desired::PodSettings;
use causeway_operator::metrics::Metrics;
use causeway_operator::reconcile::{self, Context};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

/// Objects by path (`/api/v1/namespaces/web/configmaps/shop-backend`), and every request.
#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<(Method, String)>,
    version: u64,
}

type Shared = Arc<Mutex<State>>;

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

fn not_found() -> Response<Full<Bytes>> {
    reply(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// Whether `object`'s labels match `selector` (`k=v,k2=v2` only).
fn matches(object: &Value, selector: Option<&str>) -> bool {
    selector.is_none_or(|selector| {
        selector.split(',').filter(|s| !s.is_empty()).all(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            object["metadata"]["labels"][key].as_str() == Some(value)
        })
    })
}

fn label_selector(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
        .map(|s| {
            s.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
        })
}

/// The fake API server: GET (object or list), POST (create), PUT (replace), PATCH (apply,
/// also of `/status`).
async fn serve(
    state: Shared,
    request: Request<kube::client::Body>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let body = request
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.requests.push((method.clone(), path.clone()));
    let segments: Vec<&str> = path.split('/').collect();
    // The index of RESOURCE in namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]], or, for
    // cluster-scoped objects, in /api/v1/RESOURCE… and /apis/GROUP/VERSION/RESOURCE….
    let resource = match segments.iter().position(|s| *s == "namespaces") {
        Some(at) => at + 2,
        None if segments.get(1) == Some(&"api") => 3,
        None => 4,
    };
    let collection = segments[..(resource + 1).min(segments.len())].join("/");
    let name = segments.get(resource + 1).copied();
    let status = segments.get(resource + 2) == Some(&"status");
    let key = name.map(|n| format!("{collection}/{n}"));
    state.version += 1;
    let version = state.version.to_string();
    let response = match (method, key) {
        (Method::GET, None) => {
            let selector = label_selector(query.as_deref());
            let items: Vec<Value> = state
                .objects
                .iter()
                .filter(|(k, _)| k.rsplit_once('/').is_some_and(|(c, _)| c == collection))
                .map(|(_, v)| v.clone())
                .filter(|v| matches(v, selector.as_deref()))
                .collect();
            reply(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": version}, "items": items}),
            )
        }
        (Method::GET, Some(key)) => match state.objects.get(&key) {
            Some(object) => reply(StatusCode::OK, object),
            None => not_found(),
        },
        (Method::POST, None) => {
            let mut object = body;
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("generated")
                .to_owned();
            object["metadata"]["resourceVersion"] = json!(version);
            state
                .objects
                .insert(format!("{collection}/{name}"), object.clone());
            reply(StatusCode::CREATED, &object)
        }
        (Method::PUT | Method::PATCH, Some(key)) => {
            let mut object = if status {
                let mut stored = state.objects.get(&key).cloned().unwrap_or(Value::Null);
                stored["status"] = body["status"].clone();
                stored
            } else {
                let mut object = body;
                let old = state.objects.get(&key);
                object["metadata"]["uid"] = old.map_or(json!(format!("uid-{version}")), |o| {
                    o["metadata"]["uid"].clone()
                });
                object
            };
            object["metadata"]["resourceVersion"] = json!(version);
            state.objects.insert(key, object.clone());
            reply(StatusCode::OK, &object)
        }
        _ => not_found(),
    };
    Ok(response)
}

/// A context on the fake, and the fake's state.
fn context() -> (Arc<Context>, Shared) {
    let state = Shared::default();
    let service = tower::service_fn({
        let state = state.clone();
        move |request| serve(state.clone(), request)
    });
    let client = kube::Client::new(service, "web");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "causeway-operator".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Context::new(
        client,
        Metrics::new(),
        recorder,
        Authority::generate().expect("a CA"),
        PodSettings {
            image: "causeway:dev".into(),
            service_account: "causeway-sidecar".into(),
            csr_cluster_role: "causeway-gateway-csr".into(),
        },
    );
    (Arc::new(ctx), state)
}

fn site() -> Site {
    serde_json::from_value(json!({
        "apiVersion": "causeway.dev/v1alpha1", "kind": "Site",
        "metadata": {"name": "shop", "namespace": "web", "uid": "site-uid", "generation": 1},
        "spec": {
            "hostnames": ["shop.example.com"],
            "origins": [{"name": "a", "url": "http://192.0.2.1:8080"}, {"name": "b", "url": "http://192.0.2.2:8080"}],
        },
    }))
    .expect("a Site")
}

/// The configuration document a stored ConfigMap publishes: its one key, read as the gateways
/// read it.
fn published(config_map: &Value) -> GatewayConfig {
    let keys: Vec<&String> = config_map["data"]
        .as_object()
        .into_iter()
        .flat_map(|data| data.keys())
        .collect();
    assert_eq!(
        keys,
        [CONFIG_KEY],
        "the ConfigMap holds exactly the document"
    );
    let text = config_map["data"][CONFIG_KEY].as_str().unwrap_or_default();
    GatewayConfig::from_yaml(text).expect("a valid configuration document")
}

fn put(state: &Shared, key: &str, object: Value) {
    if let Ok(mut state) = state.lock() {
        state.objects.insert(key.to_owned(), object);
    }
}

fn stored(state: &Shared, key: &str) -> Option<Value> {
    state.lock().ok()?.objects.get(key).cloned()
}

fn count(state: &Shared, method: &Method, suffix: &str) -> usize {
    state.lock().map_or(0, |s| {
        s.requests
            .iter()
            .filter(|(m, p)| m == method && p.ends_with(suffix))
            .count()
    })
}

#[tokio::test]
async fn a_site_makes_owned_backends_and_writes_status_only_on_change() {
    let (ctx, state) = context();
    put(
        &state,
        "/apis/causeway.dev/v1alpha1/namespaces/web/sites/shop",
        serde_json::to_value(site()).expect("JSON"),
    );
    let first = Arc::new(site());
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reconcile::site::reconcile(first, ctx.clone()),
    )
    .await
    .expect("in time")
    .expect("the reconciliation succeeds");

    let base = "/api/v1/namespaces/web";
    let config = stored(&state, &format!("{base}/configmaps/shop-backend")).expect("the ConfigMap");
    let published = published(&config);
    let urls: Vec<&str> = published
        .sites
        .iter()
        .flat_map(|s| s.spec.origins.iter().filter_map(|o| o.url.as_deref()))
        .collect();
    assert!(
        urls.contains(&"http://192.0.2.1:8080") && urls.contains(&"http://192.0.2.2:8080"),
        "{urls:?}"
    );
    let deployment = stored(
        &state,
        "/apis/apps/v1/namespaces/web/deployments/shop-backend",
    )
    .expect("the Deployment");
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        "site-uid"
    );
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    assert!(stored(&state, &format!("{base}/services/shop-backend")).is_some());
    assert!(
        published
            .link_ca
            .as_deref()
            .is_some_and(|ca| ca.contains("BEGIN CERTIFICATE")),
        "the ConfigMap carries the link CA"
    );
    assert!(stored(&state, &format!("{base}/serviceaccounts/causeway-sidecar")).is_some());
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    let role = stored(
        &state,
        &format!("{rbac}/namespaces/web/roles/causeway-gateway-config"),
    )
    .expect("the gateways' Role");
    assert_eq!(role["rules"][0]["resources"][0], "configmaps");
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list", "watch"]));
    assert!(
        stored(
            &state,
            &format!("{rbac}/namespaces/web/rolebindings/causeway-gateway-config")
        )
        .is_some()
    );
    let csr_binding = stored(
        &state,
        &format!("{rbac}/clusterrolebindings/causeway-gateway-csr:web"),
    )
    .expect("the gateways' CSR binding");
    assert_eq!(csr_binding["subjects"][0]["name"], "causeway-sidecar");
    assert_eq!(csr_binding["subjects"][0]["namespace"], "web");

    let written = stored(
        &state,
        "/apis/causeway.dev/v1alpha1/namespaces/web/sites/shop",
    )
    .expect("the status");
    assert_eq!(written["status"]["observedGeneration"], 1);
    assert_eq!(written["status"]["desiredBackends"], 2);
    let reasons: Vec<&str> = written["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        ["Unavailable", "RollingOut", "ReplicasUnavailable"]
    );
    assert_eq!(count(&state, &Method::PATCH, "/sites/shop/status"), 1);
    let events = count(&state, &Method::POST, "/events");
    assert!(events >= 1, "a configuration event: {events}");

    // The same state again: the status would not change, so it is not written.
    let mut again = site();
    again.status = serde_json::from_value(written["status"].clone()).ok();
    reconcile::site::reconcile(Arc::new(again), ctx)
        .await
        .expect("the second reconciliation succeeds");
    assert_eq!(
        count(&state, &Method::PATCH, "/sites/shop/status"),
        1,
        "no status write"
    );
}

#[tokio::test]
async fn a_frontend_lists_the_ready_backends_of_its_site() {
    let (ctx, state) = context();
    {
        let mut s = state.lock().expect("state");
        let site = serde_json::to_value(site()).expect("JSON");
        s.objects.insert(
            "/apis/causeway.dev/v1alpha1/namespaces/web/sites/shop".into(),
            site,
        );
        for (name, ip, ready) in [
            ("b1", "127.64.1.9", "True"),
            ("b2", "127.64.2.9", "True"),
            ("b3", "127.64.3.9", "False"),
        ] {
            s.objects.insert(
                format!("/api/v1/namespaces/web/pods/{name}"),
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "web", "labels": {"app.kubernetes.io/component": "backend", "causeway.dev/site": "shop"}},
                    "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]},
                }),
            );
        }
        s.objects.insert(
            "/apis/apps/v1/namespaces/web/deployments/shop-backend".into(),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "shop-backend", "namespace": "web", "generation": 1,
                             "labels": {"app.kubernetes.io/component": "backend", "causeway.dev/site": "shop"}},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2},
            }),
        );
    }
    let frontend: Frontend = serde_json::from_value(json!({
        "apiVersion": "causeway.dev/v1alpha1", "kind": "Frontend",
        "metadata": {"name": "edge", "namespace": "web", "uid": "fe-uid", "generation": 1},
        "spec": {"region": "eu-west", "replicas": 2, "sites": ["shop"]},
    }))
    .expect("a Frontend");
    put(
        &state,
        "/apis/causeway.dev/v1alpha1/namespaces/web/frontends/edge",
        serde_json::to_value(&frontend).expect("JSON"),
    );
    reconcile::frontend::reconcile(Arc::new(frontend), ctx)
        .await
        .expect("the reconciliation succeeds");

    let deployment = stored(
        &state,
        "/apis/apps/v1/namespaces/web/deployments/edge-frontend",
    )
    .expect("the Deployment");
    let args: Vec<String> = serde_json::from_value(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
    )
    .unwrap_or_default();
    assert_eq!(
        args[args.len() - 2..],
        ["--config-map".to_owned(), "edge-frontend".to_owned()],
        "the front-ends watch their ConfigMap"
    );
    let config =
        stored(&state, "/api/v1/namespaces/web/configmaps/edge-frontend").expect("the ConfigMap");
    assert_eq!(
        published(&config).backends,
        BTreeMap::from([(
            "shop".to_owned(),
            vec![
                "127.64.1.9:4433".parse().expect("an address"),
                "127.64.2.9:4433".parse().expect("an address"),
            ]
        )])
    );
    let status = stored(
        &state,
        "/apis/causeway.dev/v1alpha1/namespaces/web/frontends/edge",
    );
    let status = status.map(|s| s["status"].clone()).unwrap_or_default();
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/component=frontend,causeway.dev/frontend=edge"
    );
    assert_eq!(status["sites"], json!(["shop"]));
}
