//! Failing origins through the real gateway: a dead origin under load costs no idempotent
//! request, passive ejection takes a failing origin out and lets it back, and active health
//! checks do the same from their own probes.

use std::time::Duration;

use causeway_test_support::{
    client::{client, full, get_request, send},
    gateway::Gateway,
    load::load,
    metrics::metric,
    origin::Origin,
    site::{SiteYaml, manifest},
    wait::eventually,
};
use http::Request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_origin_under_load_costs_no_failed_get() {
    let mut origins = Origin::start_many("dead", 3).await;
    // Slow enough that every client has a request at an origin most of the time.
    for origin in &origins {
        origin.state.set_delay(Duration::from_millis(20));
    }
    let gateway = Gateway::start(&manifest(&[SiteYaml::new("dead", "dead.test")
        .origins(&origins, "")
        .spec("outlierDetection: { consecutiveFailures: 3, baseEjectionTime: 30s }")]))
    .await;
    let client = client();
    let addr = gateway.addr;

    let mut victim = origins.remove(1);
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let before = victim.state.requests();
        victim.kill().await;
        (victim, before)
    });
    let gets = load(&client, 8, Duration::from_secs(3), move |_| {
        get_request(addr, "dead.test", "/")
    });
    let posts = load(&client, 2, Duration::from_secs(3), move |n| {
        Request::post(format!("http://{addr}/form"))
            .header(http::header::HOST, "dead.test")
            .body(full(format!("order={n}")))
            .expect("request")
    });
    let (gets, posts) = tokio::join!(gets, posts);
    let (victim, before_kill) = killer.await.expect("killer task");

    eprintln!(
        "GET {:?} errors {:?}; POST {:?} errors {:?} refusals {:?}; victim took {before_kill} before its death",
        gets.statuses,
        gets.errors.first(),
        posts.statuses,
        posts.errors.first(),
        posts.refusals
    );
    assert!(before_kill > 0, "the victim served traffic before it died");
    assert!(gets.total() > 100, "enough load to mean something");
    assert_eq!(
        gets.failures(),
        0,
        "GETs failed: {:?} {:?}",
        gets.statuses,
        gets.errors
    );
    // A POST cannot be replayed once sent: only the ones in flight at the kill may fail
    // (two POST clients, so at most two). One whose connection was refused never reached
    // the origin and must be sent elsewhere.
    assert!(
        posts.failures() <= 2,
        "POSTs failed beyond those in flight: {:?} {:?}",
        posts.statuses,
        posts.errors
    );
    assert!(
        posts
            .refusals
            .iter()
            .all(|(_, body)| !body.contains("cannot connect")),
        "a POST that never reached an origin failed: {:?}",
        posts.refusals
    );
    // The kill must have hit traffic, or the test proved nothing: a GET in flight on the
    // victim (or sent to it before the balancer learnt) was retried, or a POST in flight on
    // it was lost. Which of the two happens depends on timing, so either counts.
    let metrics = gateway.metrics().await;
    let retries = metric(&metrics, "causeway_retries_total", &[("site", "dead")]);
    assert!(
        retries >= 1.0 || posts.failures() >= 1,
        "the kill hit no request in flight (no retry, no lost POST)"
    );
    drop(victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_origin_is_ejected_avoided_and_readmitted() {
    let origins = Origin::start_many("ej", 3).await;
    let bad = &origins[2];
    bad.state.set_status(503);
    let gateway = Gateway::start(&manifest(&[SiteYaml::new("ej", "ej.test")
        .origins(&origins, "")
        // Round-robin, because qos shuns a failing origin by its latency penalty before it
        // fails enough times in a row to be ejected: only ejection keeps it out here.
        .spec(
            "outlierDetection: { consecutiveFailures: 3, baseEjectionTime: 2s }
loadBalancing: { policy: round-robin }",
        )]))
    .await;
    let client = client();
    let addr = gateway.addr;
    let make = move |_| get_request(addr, "ej.test", "/");

    // The 503s are retried on the healthy origins and the bad one is ejected.
    let first = load(&client, 2, Duration::from_millis(500), make).await;
    assert_eq!(
        first.failures(),
        0,
        "503s are retried elsewhere: {:?}",
        first.statuses
    );
    assert!(bad.state.requests() >= 3, "the bad origin was tried");
    let metrics = gateway.metrics().await;
    assert!(
        metric(
            &metrics,
            "causeway_origin_ejections_total",
            &[("site", "ej"), ("origin", "ej2")]
        ) >= 1.0,
        "ejection counted"
    );
    assert!(
        !gateway.in_rotation("ej", "ej2").await,
        "/status shows it out"
    );

    // While ejected it gets nothing.
    let during = bad.state.requests();
    let avoided = load(&client, 2, Duration::from_millis(500), make).await;
    assert_eq!(avoided.failures(), 0);
    assert_eq!(
        bad.state.requests(),
        during,
        "an ejected origin got traffic"
    );

    // Healthy again: once the ejection runs out it is back in rotation and served.
    bad.state.set_status(200);
    assert!(
        eventually(Duration::from_secs(5), || gateway.in_rotation("ej", "ej2")).await,
        "re-admitted after baseEjectionTime"
    );
    let after = bad.state.requests();
    let back = load(&client, 4, Duration::from_secs(2), make).await;
    assert_eq!(back.failures(), 0);
    assert!(
        bad.state.requests() > after + 10,
        "the re-admitted origin takes traffic again: {:?}",
        back.by_origin
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_an_origin_out_and_back() {
    let origins = Origin::start_many("hc", 2).await;
    let gateway = Gateway::start(&manifest(&[SiteYaml::new("hc", "hc.test")
        .origins(&origins, "")
        .spec(
            "healthCheck: { path: /health, interval: 100ms, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 2 }
loadBalancing: { policy: round-robin }",
        )]))
    .await;
    let client = client();
    let addr = gateway.addr;
    let make = move |_| get_request(addr, "hc.test", "/");
    assert!(
        eventually(Duration::from_secs(5), || async {
            origins[1]
                .state
                .health_checks
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 2
        })
        .await,
        "the origin is probed"
    );

    origins[1].state.set_health_status(500);
    assert!(
        eventually(Duration::from_secs(5), || async {
            !gateway.in_rotation("hc", "hc1").await
        })
        .await,
        "failed checks take it out"
    );
    let before = origins[1].state.requests();
    let out = load(&client, 2, Duration::from_millis(500), make).await;
    assert_eq!(out.failures(), 0);
    assert_eq!(origins[1].state.requests(), before, "traffic avoids it");
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "causeway_origin_healthy",
            &[("site", "hc"), ("origin", "hc1")]
        ),
        0.0
    );

    origins[1].state.set_health_status(200);
    assert!(
        eventually(Duration::from_secs(5), || gateway.in_rotation("hc", "hc1")).await,
        "passing checks bring it back"
    );
    let before = origins[1].state.requests();
    let back = load(&client, 2, Duration::from_millis(500), make).await;
    assert_eq!(back.failures(), 0);
    assert!(
        origins[1].state.requests() > before,
        "it takes traffic again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_origin_is_ejected_and_readmitted_once_restarted() {
    let mut origins = Origin::start_many("rf", 3).await;
    let gateway = Gateway::start(&manifest(&[SiteYaml::new("rf", "rf.test")
        .origins(&origins, "")
        // Round-robin keeps offering the dead origin, so only ejection keeps it out.
        .spec(
            "outlierDetection: { consecutiveFailures: 2, baseEjectionTime: 1s }
loadBalancing: { policy: round-robin }",
        )]))
    .await;
    let client = client();
    let addr = gateway.addr;
    let make = move |_| get_request(addr, "rf.test", "/");

    origins[0].kill().await;
    // Connections refused are retried on the others, then the origin is ejected.
    let down = load(&client, 2, Duration::from_millis(700), make).await;
    assert_eq!(
        down.failures(),
        0,
        "{:?} {:?}",
        down.statuses,
        down.errors.first()
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            metric(
                &gateway.metrics().await,
                "causeway_origin_ejections_total",
                &[("site", "rf"), ("origin", "rf0")],
            ) >= 1.0
        })
        .await,
        "a refusing origin is ejected"
    );

    origins[0].restart().await;
    assert!(
        eventually(Duration::from_secs(10), || gateway.in_rotation("rf", "rf0")).await,
        "back in rotation after its ejection time"
    );
    // An ejection may be renewed if a probe lands while it is still down; with it up, the
    // restarted origin is served again within a few ejection times.
    let mut served = false;
    for _ in 0..8 {
        let back = load(&client, 2, Duration::from_millis(500), make).await;
        assert_eq!(back.failures(), 0, "{:?}", back.statuses);
        if origins[0].state.requests() > 0 {
            served = true;
            break;
        }
    }
    assert!(served, "the restarted origin got no traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_refused_by_a_dead_origin_is_sent_to_another() {
    let mut origins = Origin::start_many("post", 2).await;
    let gateway = Gateway::start(&manifest(&[SiteYaml::new("post", "post.test")
        .origins(&origins, "")
        // Round-robin and no ejection: every other POST is offered to the dead origin.
        .spec(
            "outlierDetection: { consecutiveFailures: 0 }
loadBalancing: { policy: round-robin }
retries: { attempts: 1, budgetRatio: 1.0 }",
        )]))
    .await;
    origins[0].kill().await;
    let client = client();
    for n in 0..10 {
        let body = format!("order={n}&{}", "x".repeat(1000));
        let request = Request::post(format!("http://{}/form", gateway.addr))
            .header(http::header::HOST, "post.test")
            .body(full(body.clone()))
            .expect("request");
        let answer = send(&client, request).await.expect("answer");
        assert_eq!(answer.status, 200, "POST {n}: {}", answer.text());
        assert_eq!(answer.text().trim(), format!("received {}", body.len()));
    }
    assert_eq!(origins[1].state.requests(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_error_is_never_retried_on_the_origin_that_gave_it() {
    let origins = Origin::start_many("lone", 2).await;
    let (lone, other) = (&origins[0], &origins[1]);
    lone.state.set_status(503);
    let gateway = Gateway::start(&manifest(&[
        SiteYaml::new("lone", "lone.test").origin(lone, "").spec(
            "outlierDetection: { consecutiveFailures: 0 }
retries: { attempts: 2, budgetRatio: 1.0 }",
        ),
        SiteYaml::new("pair", "pair.test")
            .origin(lone, "")
            .origin(other, "")
            .spec(
                "outlierDetection: { consecutiveFailures: 0 }
loadBalancing: { policy: round-robin }
retries: { attempts: 2, budgetRatio: 1.0 }",
            ),
    ]))
    .await;
    let client = client();
    for n in 0..5 {
        let answer = send(&client, get_request(gateway.addr, "lone.test", "/"))
            .await
            .expect("answer");
        assert_eq!(answer.status, 503, "GET {n} gets the only origin's answer");
    }
    assert_eq!(
        lone.state.requests(),
        5,
        "one origin request per client request: a retry never goes back to the same origin"
    );
    for n in 0..6 {
        let answer = send(&client, get_request(gateway.addr, "pair.test", "/"))
            .await
            .expect("answer");
        assert_eq!(answer.status, 200, "GET {n} is retried on the other origin");
    }
}
