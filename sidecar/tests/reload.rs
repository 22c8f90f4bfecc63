//! Live reload with real processes and real origins: a gateway under continuous load takes
//! new Site files on SIGHUP — an origin added, one removed, a mark lowered — without failing a
//! request or exceeding a mark; a configuration that does not compile is refused and the
//! running one keeps serving; a front-end given a new back-end list links to the new back-end
//! and lets a dropped one finish its slow requests; tunnelled ports follow the Sites.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use causeway_gateway::frontend::{self, BackendMap, FrontendOptions, RunningFrontend};
use causeway_gateway::gateway::GatewayOptions;
use causeway_gateway::server::ConnectionLimits;
use causeway_link::LinkSettings;
use causeway_test_support::{
    client::{client, get, get_request, send},
    gateway::Gateway,
    load::load,
    metrics::metric,
    origin::Origin,
    pki::LinkPki,
    scratch,
    site::{SiteYaml, manifest},
    wait,
};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const RELOAD_LIMIT: Duration = Duration::from_secs(10);

/// The `live` Site over `members` (origin, mark), with a deep queue so that 32 clients on a
/// few slots wait rather than fail, and fast health checks whose rate shows the loops.
fn live_site(members: &[(&Origin, u32)]) -> String {
    let mut site = SiteYaml::new("live", "live.test");
    for (origin, mark) in members {
        site = site.origin(origin, &format!("maxInFlight: {mark}"));
    }
    manifest(&[site.spec(
        "queue: { maxLength: 1000, timeout: 30s }\n\
         limits: { responseTimeout: 30s }\n\
         healthCheck: { path: /health, interval: 200ms, timeout: 1s }",
    )])
}

/// Replaces the gateway's Site file, sends SIGHUP and waits for `generation` to be in force.
async fn reload(gateway: &Gateway, manifest: &str, generation: u64) {
    gateway.rewrite_sites(manifest);
    gateway.hangup();
    assert!(
        gateway.wait_generation(generation, RELOAD_LIMIT).await,
        "generation {generation} not applied:\n{}",
        gateway.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reloads_under_load_without_failing_a_request() {
    let origins = Origin::start_many("live", 3).await;
    let (first, second, third) = (&origins[0], &origins[1], &origins[2]);
    let gateway = Gateway::start(&live_site(&[(first, 4), (second, 4)])).await;
    let client = client();
    let addr = gateway.addr;

    // 32 clients in closed loops, a third of their requests 300 ms slow, while the Site file
    // is rewritten under them three times.
    let traffic = load(&client, 32, Duration::from_secs(9), move |n| {
        let path = if n % 3 == 0 { "/slow?sleep=300" } else { "/" };
        get_request(addr, "live.test", path)
    });
    let reloads = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        reload(
            &gateway,
            &live_site(&[(first, 4), (second, 4), (third, 4)]),
            2,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;

        reload(&gateway, &live_site(&[(second, 4), (third, 4)]), 3).await;
        // The removed origin's slow requests in flight finish; then nothing more reaches it,
        // not even a health check. The pause is a lower bound, for a request chosen before
        // the reload that is still on its way; the wait is for the event itself.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            first.state.wait_in_flight(0, Duration::from_secs(20)).await,
            "the removed origin's requests never finished"
        );
        let removed_seen = (
            first.state.requests(),
            first.state.health_checks.load(Ordering::SeqCst),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;

        reload(&gateway, &live_site(&[(second, 2), (third, 4)]), 4).await;
        // Requests placed under the old mark of 4 finish (a lower bound for those on their
        // way, then the event); from then on the new mark of 2 holds.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let under_new_mark = wait::eventually(Duration::from_secs(20), || async {
            second.state.in_flight.load(Ordering::SeqCst) <= 2
        })
        .await;
        assert!(under_new_mark, "requests above the old mark never finished");
        second.state.max_in_flight.store(
            second.state.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        // One set of health check loops per origin, not one per reload: 200 ms apart, about
        // 10 in two seconds.
        let checks_before = third.state.health_checks.load(Ordering::SeqCst);
        let counting = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let checks = third.state.health_checks.load(Ordering::SeqCst) - checks_before;
        (removed_seen, (checks, counting.elapsed()))
    };
    let (report, (removed_seen, checks)) = tokio::join!(traffic, reloads);

    assert_eq!(
        report.failures(),
        0,
        "every request answered 2xx: {:?} {:?}",
        report.errors.iter().take(5).collect::<Vec<_>>(),
        report.refusals.iter().take(5).collect::<Vec<_>>()
    );
    assert!(report.total() > 300, "the load ran: {}", report.total());
    assert!(
        third.state.requests() > 50,
        "the added origin takes traffic: {:?}",
        report.by_origin
    );
    assert_eq!(
        (
            first.state.requests(),
            first.state.health_checks.load(Ordering::SeqCst)
        ),
        removed_seen,
        "the removed origin gets nothing after the reload"
    );
    for origin in [first, third] {
        assert!(
            origin.state.max_in_flight() <= 4,
            "{} had {} in flight, above its mark of 4",
            origin.name,
            origin.state.max_in_flight()
        );
    }
    assert!(
        second.state.max_in_flight() <= 2,
        "the lowered mark holds: {} in flight",
        second.state.max_in_flight()
    );
    // One loop checks every 200 ms; a loop per reload would be four. A busy host may delay
    // a loop's ticks, never add any: the count is bounded by the time it was counted over.
    let (checks, counted_over) = checks;
    let one_loop = counted_over.as_secs_f64() / 0.2;
    assert!(
        (one_loop / 3.0..=one_loop * 1.5 + 1.0).contains(&(checks as f64)),
        "{checks} health checks in {counted_over:?}: one loop makes about {one_loop:.0}"
    );

    let metrics = gateway.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "causeway_config_reloads_total",
            &[("result", "applied")]
        ),
        3.0
    );
    assert!(
        !metrics.contains(&format!("origin=\"{}\"", first.name)),
        "no series is left for the removed origin:\n{metrics}"
    );
}

/// Waits until the gateway has counted `count` refused configurations.
async fn wait_refused(gateway: &Gateway, count: u32) {
    let refused = wait::eventually(RELOAD_LIMIT, || async {
        metric(
            &gateway.metrics().await,
            "causeway_config_reloads_total",
            &[("result", "refused")],
        ) == f64::from(count)
    })
    .await;
    assert!(
        refused,
        "refusal {count} not counted:\n{}",
        gateway.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_configuration_leaves_the_running_one_serving() {
    let origin = Origin::start("kept").await;
    let running = manifest(&[SiteYaml::new("kept", "kept.test").origin(&origin, "")]);
    let gateway = Gateway::start(&running).await;
    let client = client();

    // Two Sites claiming one hostname: the whole file is refused.
    gateway.rewrite_sites(&manifest(&[
        SiteYaml::new("kept", "kept.test").origin(&origin, "maxInFlight: 1"),
        SiteYaml::new("clash", "kept.test").origin(&origin, ""),
    ]));
    gateway.hangup();
    wait_refused(&gateway, 1).await;
    let answer = get(&client, gateway.addr, "kept.test", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "kept\n");
    let metrics = gateway.metrics().await;
    assert_eq!(metric(&metrics, "causeway_config_generation", &[]), 1.0);
    assert!(
        !metrics.contains("site=\"clash\""),
        "nothing of the refused file runs"
    );
    assert!(
        gateway.log_text().contains("kept.test is claimed by both"),
        "the reason is logged:\n{}",
        gateway.log_text()
    );

    // An unreadable file is refused too; a good one then applies as generation 2.
    gateway.rewrite_sites("kind: Site\nspec: [");
    gateway.hangup();
    wait_refused(&gateway, 2).await;
    assert_eq!(
        get(&client, gateway.addr, "kept.test", "/").await.status,
        StatusCode::OK
    );
    reload(&gateway, &running, 2).await;
}

/// A front-end run in the test process, so its back-end list can be changed through
/// [`frontend::FrontendReloader::apply`] (SIGHUP keeps the `--backend` flags).
struct InProcessFrontend {
    running: RunningFrontend,
    _stop: watch::Sender<bool>,
}

impl InProcessFrontend {
    async fn start(pki: &LinkPki, sites: &[causeway_api::Site], backends: BackendMap) -> Self {
        let (stop, shutdown) = watch::channel(false);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let options = FrontendOptions {
            serve: GatewayOptions {
                listen: Some(loopback),
                tls_listen: None,
                tls_files: None,
                admin_listen: loopback,
                limits: ConnectionLimits::default(),
                drain_timeout: Duration::from_secs(30),
                admin_token: None,
            },
            backends,
            link: LinkSettings {
                name: "fe-reload".to_owned(),
                ..LinkSettings::default()
            },
            tunnel_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        };
        let running = frontend::start(sites, options, &pki.credentials("frontend"), shutdown)
            .expect("the front-end starts");
        assert!(
            running.links.wait_up(Duration::from_secs(10)).await,
            "links up"
        );
        Self {
            running,
            _stop: stop,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.running.http.expect("plain listener")
    }
}

async fn backend(pki: &LinkPki, manifest: &str, name: &str) -> Gateway {
    let mut args = pki.args("backend");
    args.extend(["--name".to_owned(), name.to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Gateway::launch("backend", "--link-listen", manifest, &args).await
}

/// Requests a back-end answered for the `two` Site.
async fn answered(backend: &Gateway) -> f64 {
    metric(
        &backend.metrics().await,
        "causeway_requests_total",
        &[("site", "two")],
    )
}

fn sites(manifest: &str) -> Vec<causeway_api::Site> {
    causeway_api::parse_sites("test", manifest).expect("valid sites")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_end_links_to_an_added_back_end_and_drains_a_removed_one() {
    let origins = Origin::start_many("two", 2).await;
    let text = manifest(&[SiteYaml::new("two", "two.test")
        .origins(&origins, "maxInFlight: 64")
        .spec("limits: { responseTimeout: 30s }")]);
    let pki = LinkPki::new();
    let first = backend(&pki, &text, "be-first").await;
    let second = backend(&pki, &text, "be-second").await;
    let only = |addresses: &[SocketAddr]| BackendMap {
        per_site: Default::default(),
        default: addresses.to_vec(),
    };
    let front = InProcessFrontend::start(&pki, &sites(&text), only(&[first.addr])).await;
    let reloader = front.running.reloader();
    let client = client();
    let addr = front.addr();

    let report = reloader
        .apply(&sites(&text), &only(&[first.addr, second.addr]))
        .expect("applied");
    assert_eq!(report.links_added, [second.addr]);
    assert_eq!(report.unchanged, Vec::<String>::new());
    assert_eq!(report.changed, ["two"], "its back-ends changed");
    assert!(front.running.links.wait_up(RELOAD_LIMIT).await);
    let before = answered(&second).await;
    let burst = load(&client, 8, Duration::from_secs(2), move |_| {
        get_request(addr, "two.test", "/")
    })
    .await;
    assert_eq!(burst.failures(), 0, "{:?}", burst.errors);
    assert!(
        answered(&second).await > before,
        "the added back-end takes traffic"
    );

    // Slow requests until the first back-end holds some; then it is dropped from the list.
    // The front-end picks the cheaper link (RTT × load), and one RTT spike on a busy host can
    // send a dozen requests to the same back-end: more slow requests follow until the other
    // link's load outweighs it, rather than a fixed dozen that may all land on one side.
    let in_flight_on_first =
        || async { metric(&first.metrics().await, "causeway_origin_in_flight", &[]) };
    let mut slow = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight_on_first().await == 0.0 {
        assert!(
            Instant::now() < deadline && slow.len() < 120,
            "{} slow requests and none went through the first back-end",
            slow.len()
        );
        for _ in 0..4 {
            let client = client.clone();
            slow.push(tokio::spawn(async move {
                send(&client, get_request(addr, "two.test", "/slow?sleep=4000")).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = reloader
        .apply(&sites(&text), &only(&[second.addr]))
        .expect("applied");
    assert_eq!(report.links_removed, [first.addr]);
    assert!(
        in_flight_on_first().await > 0.0,
        "the removed back-end still has requests to drain"
    );
    let during = load(&client, 8, Duration::from_secs(1), move |_| {
        get_request(addr, "two.test", "/")
    })
    .await;
    assert_eq!(during.failures(), 0, "{:?}", during.errors);
    for request in slow {
        let answer = request.await.expect("joined").expect("answered");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    // Its slow requests done, the dropped back-end gets nothing more.
    let first_done = answered(&first).await;
    let after = load(&client, 8, Duration::from_secs(1), move |_| {
        get_request(addr, "two.test", "/")
    })
    .await;
    assert_eq!(after.failures(), 0, "{:?}", after.errors);
    assert_eq!(answered(&first).await, first_done);
    let link_closed = wait::eventually(Duration::from_secs(5), || async {
        let qos: serde_json::Value =
            serde_json::from_str(&first.admin_get("/qos").await).expect("/qos JSON");
        qos["links"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(
        link_closed,
        "the drained link closes once its channels are done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_opens_and_closes_tunnelled_ports() {
    // The tunnel leads to the origin's own HTTP port: any bytes would do, HTTP shows them
    // arriving.
    let origins = Origin::start_many("tcp", 1).await;
    let origin_port = origins[0].addr.port();
    let port = scratch::free_addr().port();
    let plain = manifest(&[SiteYaml::new("tcp", "tcp.test").origins(&origins, "")]);
    let tunnelled =
        manifest(&[SiteYaml::new("tcp", "tcp.test")
            .origins(&origins, "")
            .spec(&format!(
                "tcpPorts: [{{ name: echo, port: {port}, targetPort: {origin_port} }}]"
            ))]);
    let pki = LinkPki::new();
    let back = backend(&pki, &tunnelled, "be-tcp").await;
    let backends = BackendMap {
        per_site: Default::default(),
        default: vec![back.addr],
    };
    let front = InProcessFrontend::start(&pki, &sites(&plain), backends.clone()).await;
    let reloader = front.running.reloader();
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", port));
    assert!(connect().await.is_err(), "no tunnel yet");

    reloader
        .apply(&sites(&tunnelled), &backends)
        .expect("applied");
    let mut stream = connect().await.expect("the added port listens");
    assert_eq!(exchange(&mut stream).await, "HTTP/1.1 200");

    reloader.apply(&sites(&plain), &backends).expect("applied");
    let closed = wait::eventually(Duration::from_secs(5), || async {
        connect().await.is_err()
    })
    .await;
    assert!(closed, "the removed port stops listening");
    // The connection carried before goes on.
    assert_eq!(exchange(&mut stream).await, "HTTP/1.1 200");
}

/// One keep-alive HTTP/1.1 request through a tunnelled connection, read to the end of the
/// origin's answer (its name, `tcp0`); the status line's start.
async fn exchange(stream: &mut tokio::net::TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: tcp.test\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read_all = async {
        let mut buffer = [0u8; 1024];
        while !answer.ends_with(b"tcp0\n") {
            let read = stream.read(&mut buffer).await.expect("read");
            assert!(read > 0, "closed mid-answer");
            answer.extend_from_slice(&buffer[..read]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("an answer in time");
    String::from_utf8_lossy(&answer[..12]).into_owned()
}
