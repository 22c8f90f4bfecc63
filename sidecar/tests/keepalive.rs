//! Kept-alive origin connections that the origin closes: a request written on a connection as
//! the origin closes it is sent again, whatever its method, and costs the client nothing —
//! on a single-tier gateway and behind a front-end (the back-end learns from the channel head
//! that a GET has no body, so it can replay it).
//!
//! The origins here are raw TCP servers, so the tests decide exactly when a connection closes:
//! after an answer, at random and without `Connection: close`, as an origin whose keep-alive
//! timeout fires does; or, for one origin, right after reading a request head, as an origin
//! that crashes under a request does. A request that origin read may have been acted on, so a
//! POST it hangs up on may fail; nothing else may.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use causeway_test_support::{
    client::{TestBody, TestClient, client, empty, full, send},
    gateway::Gateway,
    load::LoadReport,
    metrics::metric,
    tiers::TwoTier,
};
use http::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Requests each test sends: one in four a POST.
const REQUESTS: u64 = 20_000;
/// Requests in flight at once.
const CONCURRENCY: u64 = 16;

/// How a raw origin treats its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Manners {
    /// Answers every request, then closes the connection after one answer in three, a moment
    /// later and without a word.
    ClosesAtRandom,
    /// Reads a request's head and hangs up without answering.
    HangsUp,
}

/// What a raw origin saw.
#[derive(Debug, Default)]
struct Counts {
    answered: AtomicU64,
    closed_after_answer: AtomicU64,
    hung_up_gets: AtomicU64,
    hung_up_posts: AtomicU64,
}

struct RawOrigin {
    name: String,
    addr: SocketAddr,
    counts: Arc<Counts>,
}

impl RawOrigin {
    async fn start(name: &str, manners: Manners) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let counts = Arc::new(Counts::default());
        let (task_name, task_counts) = (name.to_owned(), counts.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(
                    stream,
                    manners,
                    task_name.clone(),
                    task_counts.clone(),
                ));
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            counts,
        }
    }
}

/// Serves one connection: HTTP/1.1 requests with Content-Length bodies, answered in turn.
async fn serve(mut stream: TcpStream, manners: Manners, name: String, counts: Arc<Counts>) {
    let mut buffer = Vec::new();
    loop {
        let Some((method, head_len, body_len)) = read_head(&mut stream, &mut buffer).await else {
            return;
        };
        if manners == Manners::HangsUp {
            let hung_up = if method == "POST" {
                &counts.hung_up_posts
            } else {
                &counts.hung_up_gets
            };
            hung_up.fetch_add(1, Ordering::SeqCst);
            return;
        }
        while buffer.len() < head_len + body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_len + body_len);
        let body = format!("{name}\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-origin: {name}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        counts.answered.fetch_add(1, Ordering::SeqCst);
        if fastrand::u8(..3) == 0 {
            // Long enough for the gateway to have put the connection back in its pool, and
            // sometimes to have written the next request on it.
            tokio::time::sleep(Duration::from_micros(fastrand::u64(..2_000))).await;
            counts.closed_after_answer.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// Reads up to the end of a request head: the method, the head's length and the body's.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, usize, usize)> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut fields);
        let parsed = match request.parse(buffer) {
            // What is not a request gets the connection closed, as a real origin's 400 would:
            // a wrong request then fails visibly instead of hanging the exchange.
            Err(error) => {
                eprintln!("origin: unparsable request head ({error}): {buffer:?}");
                return None;
            }
            Ok(parsed) => parsed,
        };
        if let httparse::Status::Complete(head_len) = parsed {
            let body_len = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            return Some((request.method?.to_owned(), head_len, body_len));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn site_manifest(origins: &[RawOrigin]) -> String {
    let origins: Vec<String> = origins
        .iter()
        .map(|o| format!("    - {{ name: {}, url: \"http://{}\" }}", o.name, o.addr))
        .collect();
    format!(
        "apiVersion: causeway.dev/v1alpha1\nkind: Site\nmetadata:\n  name: keep\nspec:\n  hostnames: [keep.test]\n  origins:\n{}\n",
        origins.join("\n")
    )
}

async fn start_origins() -> Vec<RawOrigin> {
    let mut origins = Vec::new();
    for i in 0..3 {
        origins.push(RawOrigin::start(&format!("closer-{i}"), Manners::ClosesAtRandom).await);
    }
    origins.push(RawOrigin::start("hangs-up", Manners::HangsUp).await);
    origins
}

/// GETs and POSTs (one in four) from `CONCURRENCY` closed-loop clients until `REQUESTS` are
/// done, reported apart.
async fn drive(addr: SocketAddr) -> (LoadReport, LoadReport) {
    let client = client();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, next) = (client.clone(), next.clone());
        workers.spawn(async move {
            let (mut gets, mut posts) = (LoadReport::default(), LoadReport::default());
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= REQUESTS {
                    return (gets, posts);
                }
                let post = n % 4 == 3;
                let (report, method, body) = if post {
                    (&mut posts, Method::POST, full(format!("order={n}")))
                } else {
                    (&mut gets, Method::GET, empty())
                };
                let request = Request::builder()
                    .method(method)
                    .uri(format!("http://{addr}/item/{n}"))
                    .header(http::header::HOST, "keep.test")
                    .body(body)
                    .expect("request");
                record(report, &client, request).await;
            }
        });
    }
    let (mut gets, mut posts) = (LoadReport::default(), LoadReport::default());
    while let Some(done) = workers.join_next().await {
        let (g, p) = done.expect("load worker");
        merge(&mut gets, g);
        merge(&mut posts, p);
    }
    (gets, posts)
}

async fn record(report: &mut LoadReport, client: &TestClient, request: Request<TestBody>) {
    match send(client, request).await {
        Ok(answer) => {
            *report.statuses.entry(answer.status.as_u16()).or_default() += 1;
            if !answer.status.is_success() {
                report
                    .refusals
                    .push((answer.status.as_u16(), answer.text()));
            }
        }
        Err(error) => report.errors.push(error),
    }
}

fn merge(into: &mut LoadReport, from: LoadReport) {
    into.errors.extend(from.errors);
    into.refusals.extend(from.refusals);
    for (status, n) in from.statuses {
        *into.statuses.entry(status).or_default() += n;
    }
}

/// What both tiers must show: every GET answered, and a POST lost only where the origin
/// that hangs up read it; the races the test is about did happen, and were resent.
fn assert_nothing_lost(
    origins: &[RawOrigin],
    gets: &LoadReport,
    posts: &LoadReport,
    metrics: &str,
) {
    let closes: u64 = origins
        .iter()
        .map(|o| o.counts.closed_after_answer.load(Ordering::SeqCst))
        .sum();
    let hangs_up = &origins[3].counts;
    let hung_up_posts = hangs_up.hung_up_posts.load(Ordering::SeqCst);
    let resent: f64 = origins
        .iter()
        .map(|o| {
            metric(
                metrics,
                "causeway_origin_responses_total",
                &[("origin", &o.name), ("result", "closed")],
            )
        })
        .sum();
    let unsent: f64 = origins
        .iter()
        .map(|o| {
            metric(
                metrics,
                "causeway_origin_responses_total",
                &[("origin", &o.name), ("result", "unsent")],
            )
        })
        .sum();
    eprintln!(
        "GET {:?} POST {:?}; origins closed {closes} connections after answers; {resent} requests resent after a close, {unsent} after a connection never wrote them; the hang-up origin took {} GETs and {hung_up_posts} POSTs",
        gets.statuses,
        posts.statuses,
        hangs_up.hung_up_gets.load(Ordering::SeqCst)
    );
    assert_eq!(gets.total() + posts.total(), REQUESTS as usize);
    assert_eq!(
        gets.failures(),
        0,
        "GETs failed: {:?} {:?}",
        gets.errors.first(),
        gets.refusals.first()
    );
    assert!(
        posts.failures() as u64 <= hung_up_posts,
        "{} POSTs failed but the origin that hangs up read only {hung_up_posts}: {:?} {:?}",
        posts.failures(),
        posts.errors.first(),
        posts.refusals.first()
    );
    assert!(closes > 1_000, "the origins closed kept-alive connections");
    assert!(
        resent > 0.0,
        "some requests went out on a connection as its origin closed it, and were resent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_resends_what_a_closing_keep_alive_connection_lost() {
    let origins = start_origins().await;
    let gateway = Gateway::start(&site_manifest(&origins)).await;
    let (gets, posts) = drive(gateway.addr).await;
    assert_nothing_lost(&origins, &gets, &posts, &gateway.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_end_resends_what_a_closing_keep_alive_connection_lost() {
    let origins = start_origins().await;
    let tiers = TwoTier::start(&site_manifest(&origins), 1, &[]).await;
    let (gets, posts) = drive(tiers.frontend.addr).await;
    assert_nothing_lost(&origins, &gets, &posts, &tiers.backends[0].metrics().await);
}
