//! The two tiers failing under steady GET + POST load: a back-end killed and restarted
//! (one front-end, two back-ends), and a front-end killed (clients go on at the other one).

use std::time::{Duration, Instant};

use causeway_faults::load::{Kind, LoadSpec};
use causeway_faults::report::{Expect, Fault};
use causeway_faults::{build_causeway, one_at_a_time, steady_load, window};
use causeway_test_support::{
    metrics::metric,
    origin::Origin,
    site::{SiteYaml, manifest},
    tiers::TwoTier,
    wait::eventually,
};

const HOST: &str = "tiers.test";

async fn two_tiers() -> (Vec<Origin>, TwoTier) {
    build_causeway().await;
    let origins = Origin::start_many("o", 3).await;
    for origin in &origins {
        origin.state.set_delay(Duration::from_millis(20));
    }
    let site = SiteYaml::new("tiers", HOST).origins(&origins, "");
    let tiers = TwoTier::start(&manifest(&[site]), 2, &[]).await;
    (origins, tiers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_then_restarted() {
    let _serial = one_at_a_time().await;
    let (_origins, mut tiers) = two_tiers().await;
    let load = steady_load(LoadSpec::new(tiers.frontend.addr, HOST)).await;
    let victim = &mut tiers.backends[0];
    assert!(
        metric(&victim.metrics().await, "causeway_requests_total", &[]) > 0.0,
        "both back-ends carry load before the fault"
    );

    // The load cannot see which back-end a request crossed, and the back-end's gauges miss
    // the channels between its link and the origins: every request in flight is the bound.
    let posts = load.in_flight(Kind::NonIdempotent);
    let in_flight = posts + load.in_flight(Kind::Idempotent);
    let fault_at = Instant::now();
    victim.kill();
    tokio::time::sleep(window(Duration::from_secs(5), Duration::from_secs(30))).await;
    victim.restart().await;
    let victim = &tiers.backends[0];
    let carrying = eventually(Duration::from_secs(30), || async {
        metric(&victim.metrics().await, "causeway_requests_total", &[]) > 0.0
    })
    .await;
    let restored = carrying.then(Instant::now);
    assert!(
        carrying,
        "the front-end never sent to the restarted back-end"
    );
    tokio::time::sleep(window(Duration::from_secs(2), Duration::from_secs(20))).await;
    let outcomes = load.stop().await;

    // Until the front-end sees the link die (its idle timeout), it still sends there.
    let posts = posts.max(outcomes.open_until_seen(Kind::NonIdempotent, None, fault_at));
    Fault::new(
        "backend-killed",
        &outcomes,
        in_flight.max(posts),
        fault_at,
        restored,
    )
    .check(
        &outcomes,
        &Expect {
            idempotent_survive: true,
            non_idempotent_max: posts,
            recovery_max: window(Duration::from_secs(20), Duration::from_secs(60)),
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_killed() {
    let _serial = one_at_a_time().await;
    let (_origins, mut tiers) = two_tiers().await;
    let second = tiers.another_frontend("fe-1").await;
    let spec =
        LoadSpec::new(tiers.frontend.addr, HOST).targets(vec![tiers.frontend.addr, second.addr]);
    let load = steady_load(spec).await;

    let posts = load.in_flight_at(0, Kind::NonIdempotent);
    let in_flight = posts + load.in_flight_at(0, Kind::Idempotent);
    let fault_at = Instant::now();
    tiers.frontend.kill();
    // The other front-end takes every client: a run of answers after the fault shows it.
    assert!(
        load.wait_answered(200, Duration::from_secs(20)).await,
        "the other front-end did not keep serving"
    );
    tokio::time::sleep(window(Duration::from_secs(3), Duration::from_secs(30))).await;
    let outcomes = load.stop().await;
    let after: Vec<_> = outcomes
        .records
        .iter()
        .filter(|r| r.started > fault_at + Duration::from_secs(1))
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|r| r.target == 1),
        "clients still reached the dead front-end a second after it died"
    );

    // The snapshot above misses POSTs sent between it and the process's death (SIGKILL is
    // not instant): those were on the dying front-end too.
    let posts = posts.max(outcomes.open_until_seen(Kind::NonIdempotent, Some(0), fault_at));
    Fault::new(
        "frontend-killed",
        &outcomes,
        in_flight.max(posts),
        fault_at,
        None,
    )
    .check(
        &outcomes,
        &Expect {
            idempotent_survive: true,
            non_idempotent_max: posts,
            recovery_max: window(Duration::from_secs(5), Duration::from_secs(10)),
        },
    );
}
