//! The QoS contract across the two sides that share it: what a gateway pod serves at
//! `/qos/pod`, read back from its JSON, is what the operator's figures are computed from.
//! It lives here because this crate is the one that links both the gateway and the operator.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use causeway_api::contract::qos::PodReport;
use causeway_api::status::PodRole;
use causeway_gateway::admin::Admin;
use causeway_gateway::metrics::Metrics;
use causeway_operator::qos::figures::{Interval, Scope, pod_qos};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The report `admin` serves, as the operator reads it: through its JSON.
fn served(admin: &Admin) -> PodReport {
    let json = admin.pod_report().to_json().expect("the report serializes");
    PodReport::from_json(&json).expect("the operator reads what the gateway serves")
}

#[test]
fn the_operator_computes_its_figures_from_two_served_reports() {
    let metrics = Metrics::new().expect("metrics register");
    let site = metrics.site("web/shop", &["main".to_owned()]);
    site.origins[0].healthy.set(1);
    let admin = Admin::new(
        metrics.clone(),
        Arc::new(AtomicBool::new(true)),
        Arc::new(|| serde_json::json!({ "sites": [] })),
    );
    let before = served(&admin);
    for _ in 0..90 {
        site.record_request(2, 200, 0.004);
    }
    for _ in 0..10 {
        site.record_request(2, 503, 0.4);
    }
    let now = served(&admin);
    let qos = pod_qos(
        "backend-0",
        PodRole::Backend,
        Scope::Site("web/shop"),
        Interval {
            before: Some(&before),
            now: &now,
            seconds: 10.0,
        },
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    assert_eq!((qos.request_rate, qos.error_rate), (10.0, 1.0));
    assert!(qos.p50_ms > 2.5 && qos.p50_ms <= 5.0, "{}", qos.p50_ms);
    assert!(qos.p99_ms > 250.0 && qos.p99_ms <= 500.0, "{}", qos.p99_ms);
    assert_eq!(qos.origins.len(), 1);
    assert!(qos.origins[0].healthy);
}
