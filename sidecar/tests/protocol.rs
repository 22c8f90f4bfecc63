//! HTTP behaviour of the real gateway: malformed and smuggling requests are refused without
//! harming other clients, h2c works, Host picks the Site, forwarding headers are added and
//! hop-by-hop ones dropped, a bad Site file is refused by name, and SIGTERM drains.

use std::time::Duration;

use causeway_test_support::{
    binary::run_causeway,
    client::{
        Answer, TestBody, client, empty, full, generated, get, get_request, h2c_status, send,
    },
    gateway::Gateway,
    metrics,
    origin::Origin,
    raw::{raw_exchange, raw_status},
    scratch::{self, write_scratch},
    site::{SiteYaml, manifest},
    wait,
};
use http::{Request, Version};

/// A plain request on a fresh connection still gets through.
async fn still_serving(gateway: &Gateway, after: &str) {
    let answer = send(&client(), get_request(gateway.addr, "raw.test", "/after"))
        .await
        .unwrap_or_else(|e| panic!("after {after}: {e}"));
    assert_eq!(answer.status, 200, "after {after}");
}

/// What a hostile client attacks: a gateway with one Site, `raw.test`, in front of one origin.
struct Target {
    origin: Origin,
    gateway: Gateway,
}

impl Target {
    /// Starts an origin called `origin` and a gateway in front of it, run with `args`.
    async fn start(origin: &str, args: &[&str]) -> Self {
        let origin = Origin::start(origin).await;
        let gateway = Gateway::start_with(
            &manifest(&[SiteYaml::new("raw", "raw.test").origin(&origin, "")]),
            args,
        )
        .await;
        Self { origin, gateway }
    }

    /// A fresh connection to the gateway.
    async fn connect(&self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(self.gateway.addr)
            .await
            .expect("connect to the gateway")
    }

    /// Asserts that after `what` the gateway still serves a plain request, and that nothing
    /// but such plain requests (`still_serving`'s `/after`) has reached the origin.
    async fn assert_unharmed_by(&self, what: &str) {
        still_serving(&self.gateway, what).await;
        let seen = self.origin.state.seen();
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert!(
            paths.iter().all(|p| *p == "/after"),
            "{what}: a hostile request reached the origin: {paths:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_or_a_closed_connection_and_others_are_still_served() {
    let target = Target::start("raw", &["--max-header-bytes", "8192"]).await;
    still_serving(&target.gateway, "start").await;

    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: raw.test\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: raw.test\r\n{}\r\n",
        (0..300)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let malformed: [(&str, &[u8]); 6] = [
        ("garbage request line", b"GARBAGE\r\n\r\n"),
        ("no version", b"GET /\r\nHost: raw.test\r\n\r\n"),
        (
            "space in the target",
            b"GET /a b HTTP/1.1\r\nHost: raw.test\r\n\r\n",
        ),
        (
            "control byte in a header",
            b"GET / HTTP/1.1\r\nHost: raw.test\r\nX-A: a\x01b\r\n\r\n",
        ),
        (
            "header larger than --max-header-bytes",
            huge_header.as_bytes(),
        ),
        ("too many headers", many_headers.as_bytes()),
    ];
    for (what, bytes) in malformed {
        let raw = raw_exchange(target.gateway.addr, bytes);
        match raw_status(&raw) {
            None => assert!(raw.is_empty(), "{what}: not HTTP: {raw:?}"),
            Some(status) => assert!((400..500).contains(&status), "{what}: got {status}"),
        }
        target.assert_unharmed_by(what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused_as_smuggling() {
    let target = Target::start("smuggle", &[]).await;

    // Each would let a front proxy and the origin disagree about where the body ends: the
    // tail ("GET /smuggled ...") would become a second request on the origin connection.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: raw.test\r\n\r\n";
    let attempts = [
        (
            "CL then TE",
            format!(
                "POST /cl-te HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE then CL",
            format!(
                "POST /te-cl HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE with chunked not alone, and CL",
            format!(
                "POST /te-list HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 6\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE not ending in chunked",
            format!(
                "POST /te-gzip HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: gzip\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE in HTTP/1.0",
            format!(
                "POST /te-10 HTTP/1.0\r\nHost: raw.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "Transfer-Encoding folded onto a second line (obs-fold)",
            format!(
                "POST /fold HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /cl-cl HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello{smuggled}"
            ),
        ),
    ];
    for (what, text) in attempts {
        let raw = raw_exchange(target.gateway.addr, text.as_bytes());
        assert_eq!(raw_status(&raw), Some(400), "{what}: {raw:?}");
        target.assert_unharmed_by(what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_requests_are_proxied() {
    let origin = Origin::start("h2").await;
    let gateway = Gateway::start(&manifest(&[
        SiteYaml::new("h2", "h2.test").origin(&origin, "")
    ]))
    .await;
    // Prior knowledge over a plain connection to the gateway, with the site in :authority
    // as a browser-less client (curl --http2-prior-knowledge) sends it.
    let stream = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect to the gateway");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(connection);
    let request = Request::get("http://h2.test/over-h2")
        .version(Version::HTTP_2)
        .body(empty())
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("h2c answer in time")
        .expect("h2c response");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let seen = origin.state.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/over-h2");
    let host = seen[0].headers.get("host").and_then(|v| v.to_str().ok());
    assert_eq!(
        host,
        Some("h2.test"),
        "the origin hop gets Host from :authority"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_header_picks_the_site() {
    let shop = Origin::start("shop0").await;
    let blog = Origin::start("blog0").await;
    let gateway = Gateway::start(&manifest(&[
        SiteYaml::new("shop", "shop.test").origin(&shop, ""),
        SiteYaml::new("blog", "blog.test").origin(&blog, ""),
    ]))
    .await;
    let client = client();
    let origin_of = |answer: &Answer| {
        answer
            .headers
            .get("x-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    for _ in 0..3 {
        let answer = get(&client, gateway.addr, "shop.test", "/").await;
        assert_eq!(origin_of(&answer).as_deref(), Some("shop0"));
        let answer = get(&client, gateway.addr, "BLOG.test:8080", "/").await;
        assert_eq!(origin_of(&answer).as_deref(), Some("blog0"));
    }
    let unknown = get(&client, gateway.addr, "nobody.test", "/").await;
    assert_eq!(unknown.status, 421, "an unknown host is not served");
    assert_eq!(shop.state.requests(), 3);
    assert_eq!(blog.state.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_reach_the_origin_and_hop_by_hop_headers_do_not() {
    let origin = Origin::start("fwd").await;
    let gateway = Gateway::start(&manifest(&[
        SiteYaml::new("fwd", "fwd.test").origin(&origin, "")
    ]))
    .await;
    let request = Request::get(format!("http://{}/headers", gateway.addr))
        .header("host", "fwd.test")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "connection-scoped")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "198.51.100.2")
        .header("x-end-to-end", "kept")
        .body(empty())
        .expect("request");
    let answer = send(&client(), request).await.expect("answer");
    assert_eq!(answer.status, 200);
    let via = answer.headers.get("via").and_then(|v| v.to_str().ok());
    assert!(
        via.is_some_and(|v| v.contains("causeway")),
        "response Via: {via:?}"
    );

    let seen = origin.state.seen();
    let headers = &seen
        .first()
        .expect("the request reached the origin")
        .headers;
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert_eq!(value("host"), "fwd.test", "Host is kept");
    assert_eq!(
        value("x-forwarded-for"),
        "203.0.113.7, 198.51.100.2, 127.0.0.1",
        "every earlier hop is kept, then the client"
    );
    assert_eq!(value("x-forwarded-proto"), "http");
    assert!(
        value("forwarded").contains("for=127.0.0.1") && value("forwarded").contains("proto=http"),
        "Forwarded: {:?}",
        value("forwarded")
    );
    assert!(value("via").contains("causeway"), "Via: {:?}", value("via"));
    assert_eq!(value("x-end-to-end"), "kept");
    for hop in ["x-private", "keep-alive", "proxy-connection", "te"] {
        assert!(
            !headers.contains_key(hop),
            "hop-by-hop {hop} reached the origin: {headers:?}"
        );
    }
    assert!(
        headers
            .get_all("connection")
            .iter()
            .all(|v| !v.to_str().unwrap_or("").contains("x-private")),
        "the client's Connection header reached the origin"
    );
}

#[test]
fn a_bad_site_file_stops_the_gateway_with_a_message_naming_the_field() {
    let cases = [
        (
            "wrong type",
            "spec:\n  hostnames: [a.test]\n  origins:\n    - { name: a, url: \"http://127.0.0.1:1\", maxInFlight: lots }\n",
            "maxInFlight",
        ),
        (
            "unknown field",
            "spec:\n  hostnames: [a.test]\n  origins:\n    - { name: a, url: \"http://127.0.0.1:1\", maxInFlite: 3 }\n",
            "maxInFlite",
        ),
        (
            "bad duration",
            "spec:\n  hostnames: [a.test]\n  origins:\n    - { name: a, url: \"http://127.0.0.1:1\" }\n  queue: { timeout: soon }\n",
            "timeout",
        ),
    ];
    for (what, spec, field) in cases {
        let file = write_scratch(
            "bad-site.yaml",
            &format!(
                "apiVersion: causeway.dev/v1alpha1\nkind: Site\nmetadata: {{ name: bad }}\n{spec}"
            ),
        );
        let listen = scratch::free_addr().to_string();
        let admin = scratch::free_addr().to_string();
        let exit = run_causeway(
            &[
                "gateway",
                "--listen",
                &listen,
                "--admin-listen",
                &admin,
                file.to_str().expect("utf-8 path"),
            ],
            Duration::from_secs(10),
        );
        let _ = std::fs::remove_file(&file);
        assert!(
            exit.code.is_some_and(|c| c != 0),
            "{what}: exit {:?}\n{}",
            exit.code,
            exit.output
        );
        assert!(
            exit.output.contains(field),
            "{what}: the message does not name {field}:\n{}",
            exit.output
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish() {
    let origin = Origin::start("drain").await;
    let mut gateway = Gateway::start_with(
        &manifest(&[SiteYaml::new("drain", "drain.test").origin(&origin, "")]),
        &["--drain-timeout", "10s"],
    )
    .await;
    let client = client();
    let slow = {
        let (client, addr) = (client.clone(), gateway.addr);
        tokio::spawn(async move {
            send(&client, get_request(addr, "drain.test", "/slow?sleep=1500")).await
        })
    };
    assert!(
        origin.state.wait_in_flight(1, Duration::from_secs(5)).await,
        "the slow request reached the origin"
    );
    gateway.terminate();
    // New connections are refused soon after the signal, while the slow one drains.
    assert!(
        wait::eventually(Duration::from_secs(3), || async {
            std::net::TcpStream::connect(gateway.addr).is_err()
        })
        .await,
        "the listener closed on SIGTERM"
    );
    let answer = slow
        .await
        .expect("slow task")
        .expect("the in-flight request finished");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text().trim(), "drain");
    let status = tokio::task::block_in_place(|| gateway.wait_exit(Duration::from_secs(10)))
        .expect("the gateway exits after draining");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    use std::io::{Read, Write};
    let target = Target::start("raw", &["--header-read-timeout", "1s"]).await;
    let addr = target.gateway.addr;
    // A head trickled one header at a time never completes; the gateway must hang up.
    let trickle = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(250)))
            .expect("read timeout");
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: raw.test\r\n");
        let mut buffer = [0u8; 1024];
        while started.elapsed() < Duration::from_secs(8) {
            if stream.write_all(b"X-Slow: 1\r\n").is_err() {
                return Some(started.elapsed());
            }
            match stream.read(&mut buffer) {
                Ok(_) => return Some(started.elapsed()), // 408 or close
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Some(started.elapsed()),
            }
        }
        None
    });
    target
        .assert_unharmed_by("a slowloris client connected")
        .await;
    let cut_after = trickle.await.expect("trickle task");
    assert!(
        cut_after.is_some_and(|t| t < Duration::from_secs(5)),
        "a never-ending head was not cut off (header read timeout 1s): {cut_after:?}"
    );
    target.assert_unharmed_by("the slowloris client").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_site_limit_gets_413() {
    let origin = Origin::start("lim").await;
    let gateway = Gateway::start(&manifest(&[SiteYaml::new("lim", "lim.test")
        .origin(&origin, "")
        .spec("limits: { maxRequestBodyBytes: 100000 }")]))
    .await;
    let client = client();
    let post = |body: TestBody| {
        Request::post(format!("http://{}/upload", gateway.addr))
            .header(http::header::HOST, "lim.test")
            .body(body)
            .expect("request")
    };
    // Declared too large, streamed too large (chunked, no length), and just within.
    let declared = send(&client, post(full(vec![b'x'; 100_001])))
        .await
        .expect("answer");
    assert_eq!(declared.status, 413, "{}", declared.text());
    match send(&client, post(generated(1_000_000))).await {
        Ok(answer) => assert_eq!(answer.status, 413, "{}", answer.text()),
        // Refusing mid-upload may also reset the stream before the client reads the answer.
        Err(error) => assert!(!error.contains("timed out"), "{error}"),
    }
    let within = send(&client, post(generated(100_000)))
        .await
        .expect("answer");
    assert_eq!(within.status, 200, "{}", within.text());
    assert_eq!(within.text().trim(), "received 100000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_honoured_for_small_and_large_bodies() {
    use std::io::{Read, Write};
    let origin = Origin::start("cont").await;
    let gateway = Gateway::start(&manifest(&[
        SiteYaml::new("cont", "cont.test").origin(&origin, "")
    ]))
    .await;
    let addr = gateway.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut results = Vec::new();
        for size in [5usize, 200_000] {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            write!(
                stream,
                "POST /up HTTP/1.1\r\nHost: cont.test\r\nContent-Length: {size}\r\nExpect: 100-continue\r\n\r\n"
            )
            .expect("write head");
            // The client waits for the interim answer before sending its body.
            let mut interim = [0u8; 25];
            let n = stream.read(&mut interim).unwrap_or(0);
            let interim = String::from_utf8_lossy(&interim[..n]).into_owned();
            stream.write_all(&vec![b'z'; size]).expect("write body");
            let mut rest = Vec::new();
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&buffer[..n]);
                if rest.windows(9).any(|w| w == b"received ") && rest.ends_with(b"\n") {
                    break;
                }
            }
            results.push((size, interim, String::from_utf8_lossy(&rest).into_owned()));
        }
        results
    })
    .await
    .expect("client thread");
    for (size, interim, rest) in outcome {
        assert!(
            interim.starts_with("HTTP/1.1 100"),
            "{size} bytes: no 100 Continue before the body: {interim:?}"
        );
        assert!(
            rest.contains(&format!("received {size}")),
            "{size} bytes: {interim}{rest}"
        );
    }
}

/// Opens a TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind a loopback source");
    socket.connect(addr).await.expect("connect")
}

/// Whether the peer closed `stream` (EOF or reset) within `limit`, reading and dropping
/// whatever it sends first.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Sends a plain `GET path` for `raw.test` on `stream`, asking the gateway to close after it.
async fn write_get(stream: &mut tokio::net::TcpStream, path: &str) {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET {path} HTTP/1.1\r\nHost: raw.test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
}

/// Asserts that `answer`, an HTTP/1.1 response as read from the socket, is a 200.
fn assert_ok(answer: &[u8]) {
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_connection() {
    let target = Target::start("limit", &["--max-connections-per-ip", "4"]).await;
    let gateway = &target.gateway;
    // 127.0.0.1 holds four idle connections; its fifth is closed at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from([127, 0, 0, 1], gateway.addr).await);
    }
    let mut fifth = connect_from([127, 0, 0, 1], gateway.addr).await;
    assert!(
        closed_within(&mut fifth, Duration::from_secs(2)).await,
        "the fifth connection from one address is closed"
    );
    // Another client is served meanwhile.
    use tokio::io::AsyncReadExt;
    let mut other = connect_from([127, 0, 0, 2], gateway.addr).await;
    write_get(&mut other, "/").await;
    let mut answer = Vec::new();
    other.read_to_end(&mut answer).await.expect("read");
    assert_ok(&answer);
    // Once the held connections close, the first client gets in again (as soon as the
    // gateway has seen them close: until then it is still refused).
    drop(held);
    let client = client();
    assert!(
        wait::eventually(Duration::from_secs(20), || async {
            send(&client, get_request(gateway.addr, "raw.test", "/after"))
                .await
                .is_ok_and(|answer| answer.status == 200)
        })
        .await,
        "the first client is served again once its held connections closed"
    );
    // The listener's counters reach the metric families once a second.
    assert!(
        wait::eventually(Duration::from_secs(20), || async {
            let metrics = gateway.metrics().await;
            metrics::metric(&metrics, "causeway_client_connections_refused_total", &[]) >= 1.0
        })
        .await,
        "the refusal is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_global_connection_limit_new_clients_wait_until_one_leaves() {
    use tokio::io::AsyncReadExt;
    let target = Target::start(
        "global",
        &["--max-connections", "4", "--max-connections-per-ip", "0"],
    )
    .await;
    let gateway = &target.gateway;
    // Four idle clients hold every slot...
    let mut held = Vec::new();
    for n in 0..4u8 {
        held.push(connect_from([127, 0, 0, 10 + n], gateway.addr).await);
    }
    // The gateway has taken all four (the open-connection gauge is copied once a second).
    assert!(
        wait::eventually(Duration::from_secs(20), || async {
            metrics::metric(&gateway.metrics().await, "causeway_client_connections", &[]) == 4.0
        })
        .await,
        "the gateway holds the four connections"
    );
    // ...so a fifth waits in the kernel's backlog, unanswered but not refused...
    let mut waiting = connect_from([127, 0, 0, 20], gateway.addr).await;
    write_get(&mut waiting, "/waiting").await;
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(800), waiting.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "served past the limit of four: {}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(target.origin.state.requests(), 0);
    // ...and is served as soon as one of them leaves.
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(20), waiting.read_to_end(&mut answer))
        .await
        .expect("served once a slot is free")
        .expect("read");
    assert_ok(&answer);
}

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The client preface and an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(0x4, 0, 0, &[]));
    bytes
}

/// A HEADERS block for `GET /` on `raw.test` (HPACK static-table entries and one literal).
fn h2_get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 8];
    block.extend_from_slice(b"raw.test");
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_bounded_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let target = Target::start("reset", &[]).await;
    target.origin.state.set_delay(Duration::from_millis(50));
    let mut stream = target.connect().await;
    let mut flood = h2_preface();
    let streams = 20_000u32;
    for n in 0..streams {
        let id = 2 * n + 1;
        // HEADERS with END_STREAM|END_HEADERS, then RST_STREAM(CANCEL) at once.
        flood.extend(h2_frame(0x1, 0x5, id, &h2_get_block()));
        flood.extend(h2_frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    // The server may close the connection part-way, or stop reading: either is the point.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&flood)).await;
    let closed = closed_within(&mut stream, Duration::from_secs(10)).await;
    still_serving(&target.gateway, "an HTTP/2 rapid-reset flood").await;
    let reached = target.origin.state.requests();
    assert!(
        closed || reached < u64::from(streams) / 10,
        "{reached} of {streams} reset streams reached the origin and the connection stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut_off_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let target = Target::start("continuation", &[]).await;
    let mut stream = target.connect().await;
    let mut opening = h2_preface();
    // HEADERS without END_HEADERS: the block goes on in CONTINUATION frames...
    opening.extend(h2_frame(0x1, 0x1, 1, &h2_get_block()));
    stream.write_all(&opening).await.expect("send the opening");
    // ...16 KiB of literal headers each, far past the 64 KiB header limit in all.
    let mut header = vec![0x00, 0x01, b'x', 0x7f];
    let value_length = 16_000usize;
    // HPACK integer: 127 prefix then the rest in 7-bit groups.
    let mut rest = value_length - 127;
    while rest >= 128 {
        header.push(u8::try_from(rest % 128).expect("7 bits") | 0x80);
        rest /= 128;
    }
    header.push(u8::try_from(rest).expect("7 bits"));
    header.extend(std::iter::repeat_n(b'a', value_length));
    let continuation = h2_frame(0x9, 0, 1, &header);
    let mut sent = 0usize;
    for _ in 0..2_000 {
        // A server that stops reading leaves the write pending: that is a cut-off too.
        match tokio::time::timeout(Duration::from_secs(2), stream.write_all(&continuation)).await {
            Ok(Ok(())) => sent += continuation.len(),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    assert!(
        sent < 32 << 20,
        "the server read {sent} bytes of one header block without cutting it off"
    );
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
    target.assert_unharmed_by("a CONTINUATION flood").await;
}

/// Two Sites, `a.test` and `b.test`, each in front of its own logging origin: what reaches
/// which origin shows where a request was routed and what Host it carried there.
struct TwoHosts {
    a: Origin,
    b: Origin,
    gateway: Gateway,
}

impl TwoHosts {
    async fn start() -> Self {
        let a = Origin::start("origin-a").await;
        let b = Origin::start("origin-b").await;
        let gateway = Gateway::start(&manifest(&[
            SiteYaml::new("a", "a.test").origin(&a, ""),
            SiteYaml::new("b", "b.test").origin(&b, ""),
        ]))
        .await;
        Self { a, b, gateway }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_fields_are_refused_whether_equal_or_not() {
    let target = Target::start("hosts", &[]).await;
    for (what, head) in [
        ("equal", "Host: raw.test\r\nHost: raw.test"),
        ("different", "Host: raw.test\r\nHost: other.test"),
        ("absolute form", "Host: raw.test\r\nHost: raw.test"),
    ] {
        let target_form = if what == "absolute form" {
            "http://raw.test/two"
        } else {
            "/two"
        };
        let raw = raw_exchange(
            target.gateway.addr,
            format!("GET {target_form} HTTP/1.1\r\n{head}\r\n\r\n").as_bytes(),
        );
        assert_eq!(raw_status(&raw), Some(400), "{what}: {raw:?}");
        assert!(
            raw.to_ascii_lowercase().contains("connection: close"),
            "{raw}"
        );
        target.assert_unharmed_by(what).await;
    }
    // HTTP/2: two host fields beside :authority.
    let mut request = Request::get("http://raw.test/two-h2")
        .version(Version::HTTP_2)
        .body(empty())
        .expect("request");
    request
        .headers_mut()
        .append("host", "raw.test".parse().expect("value"));
    request
        .headers_mut()
        .append("host", "other.test".parse().expect("value"));
    assert_eq!(h2c_status(target.gateway.addr, request).await, 400);
    target.assert_unharmed_by("two host fields over h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_is_routed_on_and_sent_as_host() {
    let sites = TwoHosts::start().await;
    let raw = raw_exchange(
        sites.gateway.addr,
        b"GET http://a.test/absolute HTTP/1.1\r\nHost: b.test\r\nX-Forwarded-Host: b.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(raw_status(&raw), Some(200), "{raw}");
    assert!(sites.b.state.seen().is_empty(), "routed on the Host field");
    let seen = sites.a.state.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/absolute");
    assert_eq!(seen[0].only("host"), "a.test");
    assert_eq!(seen[0].only("x-forwarded-host"), "a.test");
    let forwarded = seen[0].only("forwarded");
    assert!(forwarded.ends_with("host=\"a.test\""), "{forwarded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_authority_is_routed_on_and_sent_as_host_over_a_different_host_field() {
    let sites = TwoHosts::start().await;
    let mut request = Request::get("http://a.test/authority")
        .version(Version::HTTP_2)
        .body(empty())
        .expect("request");
    request
        .headers_mut()
        .insert("host", "b.test".parse().expect("value"));
    assert_eq!(h2c_status(sites.gateway.addr, request).await, 200);
    assert!(sites.b.state.seen().is_empty());
    let seen = sites.a.state.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].only("host"), "a.test");
    assert_eq!(seen[0].only("x-forwarded-host"), "a.test");
    assert!(seen[0].only("forwarded").ends_with("host=\"a.test\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_strip_host_framing_or_forwarding_fields() {
    let target = Target::start("conn", &[]).await;
    let raw = raw_exchange(
        target.gateway.addr,
        b"POST /named HTTP/1.1\r\nHost: raw.test\r\n\
          Connection: host, content-length, transfer-encoding, x-forwarded-for, forwarded, via, x-private\r\n\
          X-Forwarded-For: 192.0.2.9\r\nForwarded: for=192.0.2.9\r\nVia: 1.1 corporate\r\n\
          X-Private: hop\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(raw_status(&raw), Some(200), "{raw}");
    assert!(raw.contains("received 5"), "{raw}");
    let seen = target.origin.state.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].only("host"), "raw.test");
    assert_eq!(seen[0].only("content-length"), "5");
    assert_eq!(seen[0].only("x-forwarded-for"), "192.0.2.9, 127.0.0.1");
    let forwarded: Vec<_> = seen[0].headers.get_all("forwarded").iter().collect();
    assert_eq!(
        forwarded.len(),
        2,
        "the earlier hop's and ours: {forwarded:?}"
    );
    assert_eq!(seen[0].headers.get_all("via").iter().count(), 2);
    assert!(!seen[0].headers.contains_key("x-private"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_transfer_coding_gets_501() {
    let target = Target::start("coding", &[]).await;
    for coding in ["gzip, chunked", "deflate,chunked", "x-custom, chunked"] {
        let raw = raw_exchange(
            target.gateway.addr,
            format!(
                "POST /coded HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: {coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(raw_status(&raw), Some(501), "{coding}: {raw:?}");
        target.assert_unharmed_by(coding).await;
    }
    // Chunked alone is served.
    let raw = raw_exchange(
        target.gateway.addr,
        b"POST /after HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(raw_status(&raw), Some(200), "{raw}");
    assert!(raw.contains("received 5"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_answer_with_length_and_chunked_is_read_chunked_and_sent_without_the_length() {
    let origin = causeway_test_support::raw::RawOrigin::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          b\r\nhello world\r\n6\r\n, more\r\n0\r\n\r\n",
    )
    .await;
    let gateway = Gateway::start(&manifest(&[SiteYaml::new("both", "both.test").origin_at(
        "raw",
        &origin.url(),
        "",
    )]))
    .await;
    let answer = get(&client(), gateway.addr, "both.test", "/both").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.text(),
        "hello world, more",
        "the chunked framing wins"
    );
    assert!(
        answer
            .headers
            .get("content-length")
            .is_none_or(|v| v == "17"),
        "the origin's overridden length reached the client: {:?}",
        answer.headers
    );
    // On the wire too, where a client library's own checks cannot hide it.
    let raw = raw_exchange(
        gateway.addr,
        b"GET /both HTTP/1.1\r\nHost: both.test\r\nConnection: close\r\n\r\n",
    );
    assert!(
        !raw.to_ascii_lowercase().contains("content-length: 5\r\n"),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_cookie_fields_reach_an_http11_origin_as_one() {
    let target = Target::start("cookies", &[]).await;
    let mut request = Request::get("http://raw.test/cookies")
        .version(Version::HTTP_2)
        .body(empty())
        .expect("request");
    for cookie in ["a=1", "b=2", "c=3; d=4"] {
        request
            .headers_mut()
            .append("cookie", cookie.parse().expect("value"));
    }
    assert_eq!(h2c_status(target.gateway.addr, request).await, 200);
    let seen = target.origin.state.seen();
    assert_eq!(seen[0].only("cookie"), "a=1; b=2; c=3; d=4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_names_the_protocol_the_client_spoke() {
    let target = Target::start("via", &[]).await;
    let raw = raw_exchange(
        target.gateway.addr,
        b"GET /v10 HTTP/1.0\r\nHost: raw.test\r\n\r\n",
    );
    assert_eq!(raw_status(&raw).map(|s| s / 100), Some(2), "{raw}");
    get(&client(), target.gateway.addr, "raw.test", "/v11").await;
    let request = Request::get("http://raw.test/v2")
        .version(Version::HTTP_2)
        .body(empty())
        .expect("request");
    assert_eq!(h2c_status(target.gateway.addr, request).await, 200);
    let seen = target.origin.state.seen();
    let via_of = |path: &str| {
        let seen = seen
            .iter()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("{path} did not reach the origin"));
        seen.only("via")
    };
    assert_eq!(via_of("/v10"), "1.0 causeway");
    assert_eq!(via_of("/v11"), "1.1 causeway");
    assert_eq!(via_of("/v2"), "2 causeway");
}

/// What a server sends a client whose HTTP/2 preface is wrong: an empty SETTINGS frame,
/// then GOAWAY with last stream 0 and PROTOCOL_ERROR (RFC 9113 §3.4, §6.8).
const SETTINGS_THEN_GOAWAY: [u8; 26] = [
    0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_h2_preface_gets_goaway_not_an_http11_400() {
    let target = Target::start("preface", &[]).await;
    let raw = raw_exchange(target.gateway.addr, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
    assert!(!raw.contains("HTTP/1.1"), "answered in HTTP/1.1: {raw:?}");
    assert_eq!(raw.as_bytes(), SETTINGS_THEN_GOAWAY, "{raw:?}");
    target.assert_unharmed_by("a broken HTTP/2 preface").await;
    // The right preface still opens HTTP/2 on the same listener.
    let request = Request::get("http://raw.test/after")
        .version(Version::HTTP_2)
        .body(empty())
        .expect("request");
    assert_eq!(h2c_status(target.gateway.addr, request).await, 200);
}
