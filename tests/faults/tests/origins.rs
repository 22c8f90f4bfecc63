//! Origins failing behind the single-tier gateway, three origins, under steady GET + POST
//! load: one killed and restarted, one that accepts connections but never answers, one
//! answering 503 half the time.

use std::time::{Duration, Instant};

use causeway_faults::load::LoadSpec;
use causeway_faults::report::{Expect, Fault};
use causeway_faults::{build_causeway, one_at_a_time, steady_load, window};
use causeway_test_support::{
    gateway::Gateway,
    origin::Origin,
    site::{SiteYaml, manifest},
};
use http::Method;

const HOST: &str = "faults.test";

/// Three origins with a little work each (so requests are in flight at every origin), behind
/// a gateway with health checks and passive ejection tuned for a test's time scale.
async fn site() -> (Vec<Origin>, Gateway) {
    build_causeway().await;
    let origins = Origin::start_many("o", 3).await;
    for origin in &origins {
        origin.state.set_delay(Duration::from_millis(20));
    }
    let site = SiteYaml::new("faults", HOST).origins(&origins, "").spec(
        "healthCheck: { path: /health, interval: 200ms, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 2 }\n\
         outlierDetection: { consecutiveFailures: 3, baseEjectionTime: 2s }\n\
         limits: { responseTimeout: 1s }",
    );
    let gateway = Gateway::start(&manifest(&[site])).await;
    (origins, gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_killed_then_restarted() {
    let _serial = one_at_a_time().await;
    let (mut origins, gateway) = site().await;
    let load = steady_load(LoadSpec::new(gateway.addr, HOST)).await;

    let fault_at = Instant::now();
    let in_flight = origins[0]
        .state
        .in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    origins[0].kill().await;
    tokio::time::sleep(window(Duration::from_secs(3), Duration::from_secs(30))).await;
    origins[0].restart().await;
    let repaired = Instant::now();
    let restored = load
        .wait_served_by("o0", repaired, Duration::from_secs(30))
        .await;
    assert!(
        restored.is_some(),
        "the restarted origin never served again"
    );
    tokio::time::sleep(window(Duration::from_secs(2), Duration::from_secs(20))).await;
    let outcomes = load.stop().await;

    Fault::new("origin-killed", &outcomes, in_flight, fault_at, restored).check(
        &outcomes,
        &Expect {
            idempotent_survive: true,
            non_idempotent_max: in_flight,
            recovery_max: window(Duration::from_secs(15), Duration::from_secs(45)),
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_accepts_but_never_answers() {
    let _serial = one_at_a_time().await;
    let (origins, gateway) = site().await;
    let load = steady_load(LoadSpec::new(gateway.addr, HOST)).await;

    let hung = &origins[0].state;
    let seen_before = hung.seen().len();
    let fault_at = Instant::now();
    hung.set_delay(Duration::from_secs(3600));
    tokio::time::sleep(window(Duration::from_secs(4), Duration::from_secs(60))).await;
    hung.set_delay(Duration::from_millis(20));
    let repaired = Instant::now();
    // Every request the hung origin took during the fault was stuck there: in flight on it.
    let stuck = hung.seen()[seen_before..]
        .iter()
        .filter(|s| s.at < repaired)
        .map(|s| s.method.clone())
        .collect::<Vec<_>>();
    let stuck_posts = stuck.iter().filter(|m| **m == Method::POST).count();
    let restored = load
        .wait_served_by("o0", repaired, Duration::from_secs(30))
        .await;
    assert!(
        restored.is_some(),
        "the origin never served again once it answered"
    );
    tokio::time::sleep(window(Duration::from_secs(2), Duration::from_secs(20))).await;
    let outcomes = load.stop().await;

    Fault::new("origin-hung", &outcomes, stuck.len(), fault_at, restored).check(
        &outcomes,
        &Expect {
            idempotent_survive: true,
            non_idempotent_max: stuck_posts,
            recovery_max: window(Duration::from_secs(20), Duration::from_secs(90)),
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_answering_503_half_the_time() {
    let _serial = one_at_a_time().await;
    let (origins, gateway) = site().await;
    let load = steady_load(LoadSpec::new(gateway.addr, HOST)).await;

    let flaky = &origins[0].state;
    let fault_at = Instant::now();
    flaky.set_fail_every(2);
    tokio::time::sleep(window(Duration::from_secs(4), Duration::from_secs(60))).await;
    flaky.set_fail_every(0);
    // A POST the origin itself answered 503 reaches the client as it is: it may have been
    // processed, so it is not sent again. Those are the POSTs the broken origin failed.
    let failed_posts = flaky.injected_failures(&Method::POST) as usize;
    let failed_all = failed_posts + flaky.injected_failures(&Method::GET) as usize;
    tokio::time::sleep(window(Duration::from_secs(2), Duration::from_secs(20))).await;
    let outcomes = load.stop().await;

    Fault::new("origin-5xx-half", &outcomes, failed_all, fault_at, None).check(
        &outcomes,
        &Expect {
            idempotent_survive: true,
            non_idempotent_max: failed_posts,
            recovery_max: window(Duration::from_secs(10), Duration::from_secs(70)),
        },
    );
}
