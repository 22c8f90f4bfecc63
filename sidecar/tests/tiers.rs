//! The two-tier shape with real processes: clients → `causeway frontend` → TMP link →
//! `causeway backend` → origins. Bodies arrive whole (compressed on the link or not), a
//! back-end that dies mid-request costs a prompt answer and the link comes back, idempotent
//! requests move to another back-end, a tunnelled TCP port carries any bytes, and the origin
//! gets the host the front-end routed on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use causeway_test_support::{
    client::{TestClient, client, empty, full, get, get_request, h2c_status, send},
    metrics,
    origin::{self, Origin},
    raw::{RawOrigin, raw_exchange, raw_status},
    scratch,
    site::{SiteYaml, manifest},
    tiers::TwoTier,
    wait,
};
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cross_the_link_and_bodies_arrive_whole() {
    let origins = Origin::start_many("tier", 3).await;
    let tiers = TwoTier::start(
        &manifest(&[SiteYaml::new("tier", "tier.test").origins(&origins, "")]),
        1,
        &[],
    )
    .await;
    let client = client();
    let addr = tiers.frontend.addr;

    let plain = get(&client, addr, "tier.test", "/").await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(
        plain.headers.contains_key("x-origin"),
        "answered by an origin"
    );

    // A compressible body (zstd on the link) and an incompressible one, several MB each.
    for path in ["/pattern/json?bytes=3000000", "/pattern?bytes=3000000"] {
        let answer = get(&client, addr, "tier.test", path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(
            answer.body == origin::pattern(3_000_000),
            "{path}: body differs"
        );
    }

    // A request body too large to buffer streams through to the origin.
    let upload = Request::post(format!("http://{addr}/upload"))
        .header(http::header::HOST, "tier.test")
        .body(full(vec![b'u'; 2_000_000]))
        .expect("request");
    let answer = send(&client, upload).await.expect("upload");
    assert_eq!(answer.text(), "received 2000000\n");

    // The JSON body crossed the link compressed: far fewer link bytes than body bytes. Link
    // metrics are copied once a second.
    let blended_bytes = || async {
        let metrics = tiers.backends[0].metrics().await;
        metrics::metric(&metrics, "causeway_link_blended_bytes_total", &[])
    };
    wait::eventually(Duration::from_secs(20), || async {
        blended_bytes().await >= 3_000_000.0
    })
    .await;
    let blended = blended_bytes().await;
    assert!(
        blended > 3_000_000.0 && blended < 5_000_000.0,
        "the back-end sent {blended} bytes for 6 MB of answers, half of them compressible"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_end_answers_repeat_requests_from_its_cache_without_crossing_the_link() {
    let origin = Origin::start("cached").await;
    let tiers = TwoTier::start(
        &manifest(&[SiteYaml::new("cached", "cached.test")
            .origin(&origin, "")
            .spec("cache: { enabled: true }")]),
        1,
        &[],
    )
    .await;
    let client = client();
    let addr = tiers.frontend.addr;
    let first = get(&client, addr, "cached.test", "/page?max_age=60").await;
    assert_eq!(first.status, StatusCode::OK);
    for _ in 0..5 {
        let again = get(&client, addr, "cached.test", "/page?max_age=60").await;
        assert_eq!(again.body, first.body);
        let status = again.headers["cache-status"].to_str().expect("ascii");
        assert!(status.starts_with("causeway; hit"), "{status}");
    }
    assert_eq!(origin.state.requests(), 1, "repeats never crossed the link");
    let backend_requests = metrics::metric(
        &tiers.backends[0].metrics().await,
        "causeway_requests_total",
        &[],
    );
    assert_eq!(backend_requests, 1.0, "the back-end saw one request");
    // The back-end keeps no cache of its own: uncacheable answers still go through.
    get(&client, addr, "cached.test", "/page").await;
    get(&client, addr, "cached.test", "/page").await;
    assert_eq!(origin.state.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_request_answers_promptly_and_the_link_returns() {
    let origins = Origin::start_many("restart", 2).await;
    for origin in &origins {
        origin.state.set_delay(Duration::from_secs(20));
    }
    let mut tiers = TwoTier::start(
        &manifest(&[SiteYaml::new("restart", "restart.test")
            .origins(&origins, "")
            .spec("limits: { responseTimeout: 30s }")]),
        1,
        &[],
    )
    .await;
    let client = client();
    let addr = tiers.frontend.addr;
    let mut in_flight = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        in_flight.push(tokio::spawn(async move {
            let started = Instant::now();
            let answer = send(&client, get_request(addr, "restart.test", "/slow")).await;
            (answer.map(|a| a.status), started.elapsed())
        }));
    }
    let reached = wait::eventually(Duration::from_secs(5), || async {
        origins
            .iter()
            .map(|o| o.state.in_flight.load(Ordering::SeqCst))
            .sum::<usize>()
            == 4
    })
    .await;
    assert!(reached, "the requests reached the origins");
    let killed = Instant::now();
    tiers.backends[0].restart().await;
    for task in in_flight {
        let (status, elapsed) = task.await.expect("joined");
        let status = status.expect("the client got an answer, not a dropped connection");
        // 502 when the link broke under the request; 503 when the retry found no link up.
        assert!(
            matches!(
                status,
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
            ),
            "{status}"
        );
        // The front-end learns of the dead link within its idle timeout (3 s here), far
        // sooner than the 20 s the origin would have taken or the 30 s response timeout.
        assert!(
            elapsed < Duration::from_secs(8),
            "answered after {elapsed:?}"
        );
    }
    eprintln!(
        "in-flight requests answered {:?} after the kill",
        killed.elapsed()
    );
    for origin in &origins {
        origin.state.set_delay(Duration::ZERO);
    }
    // The front-end redials the restarted back-end and serves again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = send(&client, get_request(addr, "restart.test", "/")).await;
        if matches!(&answer, Ok(a) if a.status == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_move_to_another_backend_when_one_dies() {
    let origins = Origin::start_many("move", 2).await;
    for origin in &origins {
        origin.state.set_delay(Duration::from_millis(1500));
    }
    let mut tiers = TwoTier::start(
        &manifest(&[SiteYaml::new("move", "move.test").origins(&origins, "")]),
        2,
        &[],
    )
    .await;
    let client = client();
    let addr = tiers.frontend.addr;
    let mut tasks = Vec::new();
    for n in 0..12 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let request = if n % 4 == 3 {
                Request::post(format!("http://{addr}/order"))
                    .header(http::header::HOST, "move.test")
                    .body(full(format!("order={n}")))
                    .expect("request")
            } else {
                get_request(addr, "move.test", "/page")
            };
            (n % 4 == 3, send(&client, request).await.map(|a| a.status))
        }));
    }
    // The back-end dies once every request has reached an origin (each takes 1.5 s there).
    assert!(
        wait::eventually(Duration::from_secs(20), || async {
            origins.iter().map(|o| o.state.requests()).sum::<u64>() >= 12
        })
        .await,
        "the twelve requests reach the origins"
    );
    tiers.backends[0].restart().await;
    let (mut gets_ok, mut gets, mut posts_failed) = (0, 0, 0);
    for task in tasks {
        let (post, status) = task.await.expect("joined");
        let status = status.expect("an answer");
        if post {
            if status != StatusCode::OK {
                posts_failed += 1;
            }
        } else {
            gets += 1;
            if status == StatusCode::OK {
                gets_ok += 1;
            }
        }
    }
    assert_eq!(gets_ok, gets, "every GET survives the back-end's death");
    eprintln!("{posts_failed} POSTs in flight on the dead back-end failed (not repeatable)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnelled_tcp_port_carries_any_bytes() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let echo_port = echo.local_addr().expect("echo address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    let origins = Origin::start_many("tcp", 1).await;
    let front_port = scratch::free_addr().port();
    let site = SiteYaml::new("tcp", "tcp.test")
        .origins(&origins, "")
        .spec(&format!(
            "tcpPorts: [{{ name: echo, port: {front_port}, targetPort: {echo_port} }}]"
        ));
    let _tiers = TwoTier::start(&manifest(&[site]), 1, &["--tunnel-ip", "127.0.0.1"]).await;

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", front_port))
        .await
        .expect("connect to the tunnelled port");
    let sent: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
        .collect();
    let (mut read, mut write) = stream.split();
    let writer = async {
        write.write_all(&sent).await.expect("write");
        write.shutdown().await.expect("half-close");
    };
    let reader = async {
        let mut received = Vec::new();
        read.read_to_end(&mut received).await.expect("read");
        received
    };
    let ((), received) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("the echo completes");
    assert!(
        received == sent,
        "echo differs: {} of {} bytes",
        received.len(),
        sent.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_end_without_a_live_link_says_it_is_not_ready() {
    let origins = Origin::start_many("ready", 1).await;
    let mut tiers = TwoTier::start(
        &manifest(&[SiteYaml::new("ready", "ready.test").origins(&origins, "")]),
        1,
        &[],
    )
    .await;
    let admin = client();
    let readyz = |admin: &TestClient, addr| {
        let request = get_request(addr, "admin", "/readyz");
        let admin = admin.clone();
        async move { send(&admin, request).await }
    };
    let ready = readyz(&admin, tiers.frontend.admin).await.expect("/readyz");
    assert_eq!(ready.status, StatusCode::OK, "ready with its link up");

    // The only back-end goes away: once the link is declared dead the front-end could only
    // answer 503, so it asks to be taken out of rotation, saying why.
    tiers.backends[0].terminate();
    assert!(
        tiers.backends[0]
            .wait_exit(Duration::from_secs(10))
            .is_some()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        let answer = readyz(&admin, tiers.frontend.admin).await.expect("/readyz");
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            break answer.text();
        }
        assert!(Instant::now() < deadline, "still ready without a link");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reason.contains("no TMP link up"), "{reason}");

    // The back-end returns: the link is redialled and the front-end is ready again.
    tiers.backends[0].restart().await;
    tiers.wait_links(1, Duration::from_secs(15)).await;
    let ready = readyz(&admin, tiers.frontend.admin).await.expect("/readyz");
    assert_eq!(ready.status, StatusCode::OK, "ready again");
    assert_eq!(
        get(&client(), tiers.frontend.addr, "ready.test", "/")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_end_stopping_finishes_its_requests_and_front_ends_move_on() {
    let origins = Origin::start_many("drain", 1).await;
    let mut tiers = TwoTier::start(
        &manifest(&[SiteYaml::new("drain", "drain.test").origins(&origins, "")]),
        2,
        &[],
    )
    .await;
    let addr = tiers.frontend.addr;

    // Slow POSTs in flight on both back-ends: not idempotent, so a front-end may not send
    // them again elsewhere — only a drain that lets them finish saves them.
    let before = origins[0].state.requests();
    origins[0].state.set_delay(Duration::from_millis(1500));
    let slow: Vec<_> = (0..6)
        .map(|i| {
            let client = client();
            let request = Request::post(format!("http://{addr}/slow/{i}"))
                .header("host", "drain.test")
                .body(full("order"))
                .expect("a request");
            tokio::spawn(async move { send(&client, request).await })
        })
        .collect();
    assert!(
        origins[0]
            .state
            .wait_in_flight(6, Duration::from_secs(5))
            .await,
        "six slow requests reach the origin"
    );
    origins[0].state.set_delay(Duration::ZERO);

    // Back-end 0 is told to stop: it tells the front-end it is draining, finishes what it
    // has, and only then closes its links.
    let stopping = Instant::now();
    tiers.backends[0].terminate();
    let client = client();
    for i in 0..20 {
        let answer = send(
            &client,
            get_request(addr, "drain.test", &format!("/during/{i}")),
        )
        .await
        .expect("an answer while a back-end drains");
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "request {i} during the drain"
        );
    }
    for request in slow {
        let answer = request.await.expect("task").expect("an answer");
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "a request in flight on the draining back-end completes: {}",
            answer.text()
        );
    }
    let exit = tiers.backends[0].wait_exit(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "back-end exits cleanly: {exit:?}"
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(6),
        "it stops once its channels are done, not at the drain timeout: {:?}",
        stopping.elapsed()
    );
    let log = tiers.backends[0].log_text();
    assert!(log.contains("links drained"), "{log}");
    assert_eq!(
        origins[0].state.requests(),
        before + 26,
        "every request reached the origin exactly once"
    );
}

/// The Host integrity rules of the single-tier gateway (`tests/protocol.rs`) hold through
/// front-end → TMP → back-end: what the origin receives is what the front-end routed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_integrity_holds_through_both_tiers() {
    let a = Origin::start("origin-a").await;
    let b = Origin::start("origin-b").await;
    let both = RawOrigin::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          b\r\nhello world\r\n6\r\n, more\r\n0\r\n\r\n",
    )
    .await;
    let tiers = TwoTier::start(
        &manifest(&[
            SiteYaml::new("a", "a.test").origin(&a, ""),
            SiteYaml::new("b", "b.test").origin(&b, ""),
            SiteYaml::new("both", "both.test").origin_at("raw", &both.url(), ""),
        ]),
        1,
        &[],
    )
    .await;
    let addr = tiers.frontend.addr;
    let seen_at = |origin: &Origin, path: &str| {
        origin
            .state
            .seen()
            .into_iter()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("{path} did not reach {}", origin.name))
    };

    // Two Host fields: 400 at the front-end, nothing crosses.
    let raw = raw_exchange(
        addr,
        b"GET /two HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    );
    assert_eq!(raw_status(&raw), Some(400), "{raw}");

    // Absolute form: routed on the target, which the origin gets as Host.
    let raw = raw_exchange(
        addr,
        b"GET http://a.test/absolute HTTP/1.1\r\nHost: b.test\r\nX-Forwarded-Host: b.test\r\n\
          Connection: close\r\n\r\n",
    );
    assert_eq!(raw_status(&raw), Some(200), "{raw}");
    let seen = seen_at(&a, "/absolute");
    assert_eq!(seen.only("host"), "a.test");
    assert_eq!(seen.only("x-forwarded-host"), "a.test");
    assert!(seen.only("forwarded").ends_with("host=\"a.test\""));

    // HTTP/2 :authority over a different host field; cookies split across fields.
    let mut request = Request::get("http://a.test/authority")
        .version(http::Version::HTTP_2)
        .body(empty())
        .expect("request");
    request
        .headers_mut()
        .insert("host", "b.test".parse().expect("value"));
    for cookie in ["a=1", "b=2"] {
        request
            .headers_mut()
            .append("cookie", cookie.parse().expect("value"));
    }
    assert_eq!(h2c_status(addr, request).await, 200);
    let seen = seen_at(&a, "/authority");
    assert_eq!(seen.only("host"), "a.test");
    assert_eq!(seen.only("cookie"), "a=1; b=2");
    assert_eq!(
        seen.only("via"),
        "2 causeway",
        "Via names the client's HTTP/2"
    );

    // Connection naming Host and forwarding fields strips none of them.
    let raw = raw_exchange(
        addr,
        b"GET /named HTTP/1.1\r\nHost: a.test\r\nConnection: host, x-forwarded-for, close\r\n\
          X-Forwarded-For: 192.0.2.9\r\n\r\n",
    );
    assert_eq!(raw_status(&raw), Some(200), "{raw}");
    let seen = seen_at(&a, "/named");
    assert_eq!(seen.only("host"), "a.test");
    assert_eq!(seen.only("x-forwarded-for"), "192.0.2.9, 127.0.0.1");
    assert_eq!(seen.only("via"), "1.1 causeway");

    // An unknown transfer coding: 501 at the front-end.
    let raw = raw_exchange(
        addr,
        b"POST /coded HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(raw_status(&raw), Some(501), "{raw}");

    // The origin's Content-Length beside chunked: the chunked body, whole, without it.
    let answer = get(&client(), addr, "both.test", "/both").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "hello world, more");
    assert!(
        answer
            .headers
            .get("content-length")
            .is_none_or(|v| v == "17"),
        "{:?}",
        answer.headers
    );

    let refused = ["/two", "/coded"];
    for origin in [&a, &b] {
        let paths: Vec<String> = origin.state.seen().into_iter().map(|s| s.path).collect();
        assert!(
            paths.iter().all(|p| !refused.contains(&p.as_str())),
            "a refused request reached {}: {paths:?}",
            origin.name
        );
    }
    assert!(b.state.seen().is_empty(), "nothing was routed to b.test");
}
