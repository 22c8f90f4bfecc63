//! Large bodies stream through the real gateway in both directions with bounded memory: the
//! gateway's resident set barely moves while a body far larger than any buffer goes through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use causeway_test_support::{
    client::{TestClient, client, generated, get_request, send},
    gateway::{self, Gateway},
    origin::Origin,
    site::{SiteYaml, manifest},
};
use http::Request;
use http_body_util::BodyExt;

const MIB: u64 = 1024 * 1024;

/// Bytes sent each way. A full GiB each way (2 GiB through a debug build) fits the time
/// budget; `CAUSEWAY_STREAM_MIB` lowers it on a slow machine.
fn body_size() -> u64 {
    std::env::var("CAUSEWAY_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
        * MIB
}

/// Most the gateway's resident set may grow by while the bodies pass.
const GROWTH_LIMIT: u64 = 32 * MIB;

async fn download(client: &TestClient, addr: std::net::SocketAddr, bytes: u64) -> u64 {
    let response = client
        .request(get_request(
            addr,
            "big.test",
            &format!("/download?bytes={bytes}"),
        ))
        .await
        .expect("download response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("download frame");
        if let Some(data) = frame.data_ref() {
            received += data.len() as u64;
        }
    }
    received
}

async fn upload(client: &TestClient, addr: std::net::SocketAddr, bytes: u64) -> String {
    let request = Request::post(format!("http://{addr}/upload"))
        .header(http::header::HOST, "big.test")
        .body(generated(bytes))
        .expect("upload request");
    let answer = tokio::time::timeout(Duration::from_secs(120), send(client, request))
        .await
        .expect("upload within two minutes")
        .expect("upload answer");
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gib_up_and_down_streams_with_bounded_memory() {
    let origin = Origin::start("big").await;
    let gateway = Gateway::start(&manifest(&[
        SiteYaml::new("big", "big.test").origin(&origin, "")
    ]))
    .await;
    let client = client();
    let addr = gateway.addr;

    // Warm up pools, buffers and the allocator so the baseline is a serving process.
    for _ in 0..3 {
        assert_eq!(download(&client, addr, 8 * MIB).await, 8 * MIB);
        upload(&client, addr, 8 * MIB).await;
    }
    assert_eq!(
        send(&client, get_request(addr, "big.test", "/"))
            .await
            .map(|a| a.status),
        Ok(http::StatusCode::OK)
    );
    let baseline = gateway.rss_bytes();
    let received_before = origin.state.bytes_received.load(Ordering::SeqCst);

    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), gateway.pid());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                if let Some(rss) = gateway::rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let size = body_size();
    let started = Instant::now();
    let (down, up) = tokio::join!(download(&client, addr, size), upload(&client, addr, size));
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    sampler.await.expect("sampler");

    assert_eq!(down, size, "every downloaded byte arrived");
    assert_eq!(
        up.trim(),
        format!("received {size}"),
        "the origin got every byte"
    );
    assert_eq!(
        origin.state.bytes_received.load(Ordering::SeqCst) - received_before,
        size
    );
    let growth = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    eprintln!(
        "{} MiB each way in {took:?}; gateway RSS {} MiB at rest, grew by at most {:.1} MiB",
        size / MIB,
        baseline / MIB,
        growth as f64 / MIB as f64
    );
    assert!(
        growth <= GROWTH_LIMIT,
        "the gateway grew by {} MiB while streaming {} MiB each way",
        growth / MIB,
        size / MIB
    );
}

/// Reads a response body to its end or its first error; the bytes read (counting on from
/// `received`) and whether it ended cleanly.
async fn drain(mut body: hyper::body::Incoming, mut received: u64) -> (u64, bool) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                received += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Ok(Some(Err(_))) | Err(_) => return (received, false),
            Ok(None) => return (received, true),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_dying_mid_body_is_not_passed_off_as_a_complete_answer() {
    let mut origin = Origin::start("cut").await;
    let gateway = Gateway::start(&manifest(&[
        SiteYaml::new("cut", "cut.test").origin(&origin, "")
    ]))
    .await;
    let client = client();
    // One chunked and one Content-Length answer, each cut off part-way by the origin's death.
    let mut responses = Vec::new();
    for length in [0, 1] {
        let path = format!(
            "/download?bytes={}&chunk_delay=50&length={length}",
            64 * MIB
        );
        let response = client
            .request(get_request(gateway.addr, "cut.test", &path))
            .await
            .expect("response head");
        assert_eq!(response.status(), 200);
        // Mid-body: the origin dies once part of each body has come through.
        let mut body = response.into_body();
        let first = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .expect("the body's first bytes")
            .expect("a first frame")
            .expect("a first frame without error");
        let received = first.data_ref().map_or(0, |data| data.len() as u64);
        responses.push((body, received));
    }
    origin.kill().await;
    for ((body, received), framing) in responses.into_iter().zip(["chunked", "content-length"]) {
        let (received, clean) = drain(body, received).await;
        assert!(
            received < 64 * MIB,
            "{framing}: the whole body cannot have come"
        );
        assert!(
            !clean,
            "{framing}: a body cut off after {received} bytes ended as if complete"
        );
    }
}
