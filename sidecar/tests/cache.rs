//! The Site cache through the real `causeway gateway`, against an origin that counts every
//! request it gets: "served from the cache" is proven by the origin's count, never by a
//! header alone. One test per `Cache-Control` directive and cache feature.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use causeway_test_support::{
    client::{Answer, TestClient, client, empty, full, send},
    gateway::Gateway,
    metrics::metric,
    scratch,
    wait::eventually,
};
use http::header::{
    ACCEPT_LANGUAGE, AUTHORIZATION, CACHE_CONTROL, HOST, IF_MODIFIED_SINCE, IF_NONE_MATCH, RANGE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const HOST_NAME: &str = "cache.test";

/// What the origin answers on one path.
#[derive(Clone, Debug, Default)]
struct Resource {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// Validator the origin compares `If-None-Match` with (and sends).
    etag: Option<String>,
    /// Validator the origin compares `If-Modified-Since` with (and sends).
    last_modified: Option<SystemTime>,
    /// Answer with a body naming the request's `Accept-Language` and `Vary` on it.
    vary_language: bool,
    delay: Duration,
}

impl Resource {
    fn new(cache_control: &str, body: &str) -> Self {
        Self {
            status: 200,
            headers: vec![("cache-control".to_owned(), cache_control.to_owned())],
            body: Bytes::from(body.to_owned()),
            ..Self::default()
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn etag(mut self, etag: &str) -> Self {
        self.etag = Some(etag.to_owned());
        self
    }
}

/// A real HTTP/1.1 origin whose answers each test sets per path, counting every request and
/// every `304` it gives.
#[derive(Default)]
struct OriginState {
    resources: Mutex<HashMap<String, Resource>>,
    requests: Mutex<HashMap<String, u64>>,
    conditional: AtomicU64,
    not_modified: AtomicU64,
    /// Answer everything 503.
    failing: AtomicBool,
}

struct CountingOrigin {
    addr: SocketAddr,
    state: Arc<OriginState>,
    task: Option<JoinHandle<()>>,
}

impl CountingOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let state = Arc::new(OriginState::default());
        let served = state.clone();
        // Connections live in the accept task's set: aborting the task (a kill) drops the
        // listener and every pooled connection at once.
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let state = served.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            task: Some(task),
        }
    }

    fn set(&self, path: &str, resource: Resource) {
        self.state
            .resources
            .lock()
            .expect("resources")
            .insert(path.to_owned(), resource);
    }

    /// Requests received for `path` (any method).
    fn count(&self, path: &str) -> u64 {
        let requests = self.state.requests.lock().expect("requests");
        requests.get(path).copied().unwrap_or(0)
    }

    fn not_modified(&self) -> u64 {
        self.state.not_modified.load(Ordering::SeqCst)
    }

    fn conditional(&self) -> u64 {
        self.state.conditional.load(Ordering::SeqCst)
    }

    /// Stops listening and answering: the origin is down.
    fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn answer(state: &OriginState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    *state
        .requests
        .lock()
        .expect("requests")
        .entry(path.clone())
        .or_default() += 1;
    let resource = state
        .resources
        .lock()
        .expect("resources")
        .get(&path)
        .cloned();
    let Some(resource) = resource else {
        return reply(404, &[], Bytes::from_static(b"no such resource\n"));
    };
    tokio::time::sleep(resource.delay).await;
    if state.failing.load(Ordering::SeqCst) {
        return reply(503, &[], Bytes::from_static(b"origin failing\n"));
    }
    let headers = request.headers();
    if headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE) {
        state.conditional.fetch_add(1, Ordering::SeqCst);
    }
    let mut out: Vec<(String, String)> = resource.headers.clone();
    if let Some(etag) = &resource.etag {
        out.push(("etag".to_owned(), etag.clone()));
    }
    if let Some(modified) = resource.last_modified {
        out.push((
            "last-modified".to_owned(),
            httpdate::fmt_http_date(modified),
        ));
    }
    let etag_matches = resource.etag.as_ref().is_some_and(|etag| {
        headers
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|given| given.split(',').any(|t| t.trim() == etag))
    });
    let unmodified = resource.last_modified.is_some_and(|modified| {
        headers
            .get(IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| modified <= since)
    });
    if request.method() == Method::GET && resource.status == 200 && (etag_matches || unmodified) {
        state.not_modified.fetch_add(1, Ordering::SeqCst);
        return reply(304, &out, Bytes::new());
    }
    let mut body = resource.body.clone();
    if resource.vary_language {
        let language = headers
            .get(ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        body = Bytes::from(format!("{}:{language}", String::from_utf8_lossy(&body)));
        out.push(("vary".to_owned(), "accept-language".to_owned()));
    }
    if request.method() == Method::HEAD {
        body = Bytes::new();
    }
    reply(resource.status, &out, body)
}

fn reply(status: u16, headers: &[(String, String)], body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response.body(Full::new(body)).expect("origin response")
}

/// An origin and a gateway in front of it whose Site's cache section is `cache`.
struct Bed {
    origin: CountingOrigin,
    gateway: Gateway,
    client: TestClient,
}

impl Bed {
    async fn start(cache: &str) -> Self {
        Self::start_with(cache, &[]).await
    }

    async fn start_with(cache: &str, args: &[&str]) -> Self {
        let origin = CountingOrigin::start().await;
        let manifest = format!(
            "apiVersion: causeway.dev/v1alpha1\nkind: Site\nmetadata:\n  name: cached\nspec:\n  hostnames: [{HOST_NAME}]\n  origins:\n    - {{ name: o, url: \"http://{}\" }}\n  cache: {cache}\n",
            origin.addr
        );
        let gateway = Gateway::start_with(&manifest, args).await;
        Self {
            origin,
            gateway,
            client: client(),
        }
    }

    fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.gateway.addr))
            .header(HOST, HOST_NAME)
    }

    async fn send(&self, request: http::request::Builder) -> Answer {
        send(&self.client, request.body(empty()).expect("request"))
            .await
            .expect("an answer")
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    async fn metric(&self, name: &str) -> f64 {
        metric(&self.gateway.metrics().await, name, &[("site", "cached")])
    }
}

const ON: &str = "{ enabled: true }";

fn cache_status(answer: &Answer) -> String {
    answer
        .headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn max_age_serves_from_the_cache_until_it_expires() {
    let bed = Bed::start(ON).await;
    bed.origin.set("/a", Resource::new("max-age=2", "alpha"));
    let first = bed.get("/a").await;
    assert_eq!(first.text(), "alpha");
    assert!(cache_status(&first).contains("fwd=uri-miss"), "{first:?}");
    for _ in 0..5 {
        let again = bed.get("/a").await;
        assert_eq!(again.text(), "alpha");
        assert!(cache_status(&again).contains("hit"), "{again:?}");
        assert!(again.headers.contains_key("age"));
    }
    assert_eq!(
        bed.origin.count("/a"),
        1,
        "five repeats never reached the origin"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(bed.get("/a").await.text(), "alpha");
    assert_eq!(bed.origin.count("/a"), 2, "expired: fetched again");
    assert_eq!(bed.metric("causeway_cache_hits_total").await, 5.0);
    // The expired copy had no validator: it was dropped, so that was a miss too.
    assert_eq!(bed.metric("causeway_cache_misses_total").await, 2.0);
}

#[tokio::test]
async fn s_maxage_rules_a_shared_cache_over_max_age() {
    let bed = Bed::start(ON).await;
    bed.origin
        .set("/s", Resource::new("max-age=0, s-maxage=60", "shared"));
    for _ in 0..3 {
        assert_eq!(bed.get("/s").await.text(), "shared");
    }
    assert_eq!(bed.origin.count("/s"), 1);
}

#[tokio::test]
async fn expires_gives_freshness_and_a_past_date_none() {
    let bed = Bed::start(ON).await;
    let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
    bed.origin.set(
        "/future",
        Resource::new("public", "f").header("expires", &future),
    );
    bed.origin.set(
        "/past",
        Resource::new("public", "p").header("expires", &past),
    );
    for _ in 0..3 {
        bed.get("/future").await;
        bed.get("/past").await;
    }
    assert_eq!(bed.origin.count("/future"), 1);
    assert_eq!(bed.origin.count("/past"), 3);
}

#[tokio::test]
async fn an_age_from_upstream_counts_against_the_lifetime() {
    let bed = Bed::start(ON).await;
    bed.origin.set(
        "/aged",
        Resource::new("max-age=60", "old").header("age", "60"),
    );
    bed.origin.set(
        "/young",
        Resource::new("max-age=60", "new").header("age", "10"),
    );
    for _ in 0..3 {
        bed.get("/aged").await;
        bed.get("/young").await;
    }
    assert_eq!(bed.origin.count("/aged"), 3, "arrived already stale");
    assert_eq!(bed.origin.count("/young"), 1);
    let answer = bed.get("/young").await;
    let age: u64 = answer.headers["age"]
        .to_str()
        .expect("age")
        .parse()
        .expect("a number");
    assert!(
        (10..=13).contains(&age),
        "age {age} carries the upstream's 10 s"
    );
}

#[tokio::test]
async fn no_store_is_never_stored() {
    let bed = Bed::start(ON).await;
    bed.origin
        .set("/n", Resource::new("no-store, max-age=60", "n"));
    for _ in 0..3 {
        assert_eq!(bed.get("/n").await.text(), "n");
    }
    assert_eq!(bed.origin.count("/n"), 3);
    // A request's own no-store: fetched, and not stored for the next one either.
    bed.origin.set("/r", Resource::new("max-age=60", "r"));
    bed.send(
        bed.request(Method::GET, "/r")
            .header(CACHE_CONTROL, "no-store"),
    )
    .await;
    bed.get("/r").await;
    assert_eq!(bed.origin.count("/r"), 2);
}

#[tokio::test]
async fn no_cache_revalidates_every_use() {
    let bed = Bed::start(ON).await;
    bed.origin
        .set("/nc", Resource::new("no-cache", "body").etag("\"v1\""));
    for _ in 0..3 {
        let answer = bed.get("/nc").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.text(), "body", "the stored body answers after a 304");
    }
    assert_eq!(bed.origin.count("/nc"), 3, "every use asks the origin");
    assert_eq!(
        bed.origin.not_modified(),
        2,
        "but only the first moved the body"
    );
}

#[tokio::test]
async fn private_responses_are_not_shared() {
    let bed = Bed::start(ON).await;
    bed.origin
        .set("/p", Resource::new("private, max-age=60", "mine"));
    for _ in 0..3 {
        bed.get("/p").await;
    }
    assert_eq!(bed.origin.count("/p"), 3);
}

#[tokio::test]
async fn public_lets_an_authorized_response_be_shared_and_nothing_else_does() {
    let bed = Bed::start(ON).await;
    bed.origin
        .set("/pub", Resource::new("public, max-age=60", "open"));
    bed.origin
        .set("/auth", Resource::new("max-age=60", "closed"));
    for path in ["/pub", "/auth"] {
        for _ in 0..2 {
            bed.send(
                bed.request(Method::GET, path)
                    .header(AUTHORIZATION, "Bearer a"),
            )
            .await;
        }
    }
    assert_eq!(bed.origin.count("/pub"), 1, "public: shared");
    assert_eq!(
        bed.origin.count("/auth"),
        2,
        "authorized without public: not stored"
    );
}

#[tokio::test]
async fn a_site_may_share_authorized_responses() {
    let bed = Bed::start("{ enabled: true, shareAuthorized: true }").await;
    bed.origin
        .set("/auth", Resource::new("max-age=60", "closed"));
    for _ in 0..2 {
        bed.send(
            bed.request(Method::GET, "/auth")
                .header(AUTHORIZATION, "Bearer a"),
        )
        .await;
    }
    assert_eq!(bed.origin.count("/auth"), 1);
}

/// `must-revalidate` and `proxy-revalidate`: once stale, never served without the origin's
/// word, not even when it is down and `stale-if-error` would allow it.
async fn stale_is_never_served_under(directive: &str) {
    let mut bed = Bed::start(ON).await;
    let cache_control = format!("max-age=1, stale-if-error=60, {directive}");
    bed.origin.set("/m", Resource::new(&cache_control, "m"));
    assert_eq!(bed.get("/m").await.text(), "m");
    assert_eq!(bed.get("/m").await.text(), "m");
    assert_eq!(bed.origin.count("/m"), 1);
    bed.origin.kill();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = bed.get("/m").await;
    assert!(
        answer.status.is_server_error(),
        "{directive}: stale served with the origin down: {answer:?}"
    );
}

#[tokio::test]
async fn must_revalidate_forbids_stale_answers() {
    stale_is_never_served_under("must-revalidate").await;
}

#[tokio::test]
async fn proxy_revalidate_forbids_stale_answers_in_a_shared_cache() {
    stale_is_never_served_under("proxy-revalidate").await;
}

#[tokio::test]
async fn stale_if_error_serves_the_stored_copy_while_the_origin_is_down() {
    let mut bed = Bed::start(ON).await;
    bed.origin.set(
        "/e",
        Resource::new("max-age=1, stale-if-error=60", "still here"),
    );
    assert_eq!(bed.get("/e").await.text(), "still here");
    bed.origin.kill();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = bed.get("/e").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.text(), "still here");
    assert!(
        cache_status(&answer).contains("stale-if-error"),
        "{answer:?}"
    );
    // Without the directive the dead origin's error goes through.
    let mut plain = Bed::start(ON).await;
    plain.origin.set("/e", Resource::new("max-age=1", "gone"));
    plain.get("/e").await;
    plain.origin.kill();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(plain.get("/e").await.status.is_server_error());
}

#[tokio::test]
async fn stale_if_error_covers_an_origin_answering_503() {
    let bed = Bed::start(ON).await;
    bed.origin.set(
        "/e",
        Resource::new("max-age=1, stale-if-error=60", "cached"),
    );
    bed.get("/e").await;
    bed.origin.state.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = bed.get("/e").await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (StatusCode::OK, "cached")
    );
    assert!(
        bed.origin.count("/e") >= 2,
        "the origin was asked, and failed"
    );
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let bed = Bed::start(ON).await;
    bed.origin.set(
        "/w",
        Resource::new("max-age=1, stale-while-revalidate=30", "v1").etag("\"1\""),
    );
    bed.get("/w").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The origin now takes three seconds: a stale answer must not wait for it. (A second of
    // margin below that delay, so that a busy host's slow answer is not taken for waiting.)
    let mut slow = Resource::new("max-age=60", "v2").etag("\"2\"");
    slow.delay = Duration::from_secs(3);
    bed.origin.set("/w", slow);
    let started = Instant::now();
    let stale = bed.get("/w").await;
    assert_eq!(stale.text(), "v1");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the origin"
    );
    assert!(cache_status(&stale).contains("stale-while-revalidate"));
    assert!(
        eventually(Duration::from_secs(20), || async {
            bed.origin.count("/w") == 2
        })
        .await,
        "revalidated in the background"
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            bed.get("/w").await.text() == "v2"
        })
        .await
    );
    assert_eq!(bed.origin.count("/w"), 2, "one background fetch, then hits");
}

#[tokio::test]
async fn etag_revalidation_updates_the_stored_headers() {
    let bed = Bed::start(ON).await;
    bed.origin.set(
        "/v",
        Resource::new("max-age=1", "body")
            .etag("\"e1\"")
            .header("x-version", "1"),
    );
    bed.get("/v").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bed.origin.set(
        "/v",
        Resource::new("max-age=60", "body")
            .etag("\"e1\"")
            .header("x-version", "2"),
    );
    let answer = bed.get("/v").await;
    assert_eq!(answer.text(), "body");
    assert_eq!(
        answer.headers["x-version"], "2",
        "the 304's headers replace the stored"
    );
    assert!(
        cache_status(&answer).contains("fwd-status=304"),
        "{answer:?}"
    );
    assert_eq!(bed.origin.not_modified(), 1);
    bed.get("/v").await;
    assert_eq!(bed.origin.count("/v"), 2, "fresh again after the 304");
    assert_eq!(bed.metric("causeway_cache_revalidations_total").await, 1.0);
}

#[tokio::test]
async fn last_modified_revalidation_uses_if_modified_since() {
    let bed = Bed::start(ON).await;
    let mut dated = Resource::new("max-age=1", "dated");
    dated.last_modified = Some(whole_seconds(SystemTime::now() - Duration::from_secs(3600)));
    bed.origin.set("/d", dated);
    bed.get("/d").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = bed.get("/d").await;
    assert_eq!(answer.text(), "dated", "{answer:?}");
    assert_eq!(bed.origin.conditional(), 1);
    assert_eq!(bed.origin.not_modified(), 1);
}

/// HTTP dates have whole seconds: an origin comparing validators must too.
fn whole_seconds(time: SystemTime) -> SystemTime {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

#[tokio::test]
async fn heuristic_freshness_only_when_the_site_configures_it() {
    let off = Bed::start(ON).await;
    let on = Bed::start("{ enabled: true, defaultTtl: 60s }").await;
    for bed in [&off, &on] {
        let mut dated = Resource {
            status: 200,
            body: Bytes::from_static(b"h"),
            ..Resource::default()
        };
        dated.last_modified = Some(whole_seconds(
            SystemTime::now() - Duration::from_secs(36_000),
        ));
        bed.origin.set("/h", dated);
        for _ in 0..3 {
            bed.get("/h").await;
        }
    }
    assert_eq!(
        off.origin.count("/h"),
        3,
        "no heuristic: validated each time"
    );
    assert_eq!(on.origin.count("/h"), 1, "heuristic: fresh for a while");
}

#[tokio::test]
async fn vary_keeps_two_variants_apart() {
    let bed = Bed::start(ON).await;
    let mut varying = Resource::new("max-age=60", "hello");
    varying.vary_language = true;
    bed.origin.set("/lang", varying);
    for _ in 0..3 {
        for language in ["en", "fr"] {
            let answer = bed
                .send(
                    bed.request(Method::GET, "/lang")
                        .header(ACCEPT_LANGUAGE, language),
                )
                .await;
            assert_eq!(answer.text(), format!("hello:{language}"));
        }
    }
    assert_eq!(bed.origin.count("/lang"), 2, "one fetch per variant");
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let bed = Bed::start(ON).await;
    bed.origin
        .set("/g", Resource::new("max-age=60", "0123456789"));
    bed.get("/g").await;
    let head = bed.send(bed.request(Method::HEAD, "/g")).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], "10");
    assert_eq!(bed.origin.count("/g"), 1);
}

#[tokio::test]
async fn ranges_are_cut_from_a_stored_full_response() {
    let bed = Bed::start(ON).await;
    bed.origin
        .set("/r", Resource::new("max-age=60", "0123456789"));
    // A range on a miss: the cache fetches it all, the client gets its part.
    let first = bed
        .send(bed.request(Method::GET, "/r").header(RANGE, "bytes=0-3"))
        .await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(first.text(), "0123");
    assert!(
        eventually(Duration::from_secs(20), || async {
            let hit = bed
                .send(bed.request(Method::GET, "/r").header(RANGE, "bytes=2-5"))
                .await;
            hit.text() == "2345" && cache_status(&hit).contains("hit")
        })
        .await
    );
    let answer = bed
        .send(bed.request(Method::GET, "/r").header(RANGE, "bytes=-2"))
        .await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (StatusCode::PARTIAL_CONTENT, "89")
    );
    assert_eq!(answer.headers["content-range"], "bytes 8-9/10");
    let beyond = bed
        .send(bed.request(Method::GET, "/r").header(RANGE, "bytes=50-"))
        .await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        bed.origin.count("/r"),
        1,
        "every range from the one full fetch"
    );
}

#[tokio::test]
async fn a_clients_conditional_is_answered_304_from_the_store() {
    let bed = Bed::start(ON).await;
    bed.origin
        .set("/c", Resource::new("max-age=60", "c").etag("\"c1\""));
    bed.get("/c").await;
    let answer = bed
        .send(
            bed.request(Method::GET, "/c")
                .header(IF_NONE_MATCH, "\"c1\""),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
    assert_eq!(bed.origin.count("/c"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_origin_request() {
    let bed = Arc::new(Bed::start(ON).await);
    let mut slow = Resource::new("max-age=60", "collapsed");
    slow.delay = Duration::from_millis(500);
    bed.origin.set("/slow", slow);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let bed = bed.clone();
        clients.push(tokio::spawn(async move { bed.get("/slow").await }));
    }
    for client in clients {
        let answer = client.await.expect("client task");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.text(), "collapsed");
    }
    assert_eq!(bed.origin.count("/slow"), 1, "twenty misses, one fetch");
    assert_eq!(
        bed.metric("causeway_cache_collapsed_requests_total").await,
        19.0
    );
}

#[tokio::test]
async fn set_cookie_responses_are_shared_only_when_the_site_says_so() {
    let strict = Bed::start(ON).await;
    let sharing = Bed::start("{ enabled: true, shareSetCookie: true }").await;
    for bed in [&strict, &sharing] {
        bed.origin.set(
            "/cookie",
            Resource::new("max-age=60", "c").header("set-cookie", "session=1"),
        );
        for _ in 0..2 {
            bed.get("/cookie").await;
        }
    }
    assert_eq!(strict.origin.count("/cookie"), 2);
    assert_eq!(sharing.origin.count("/cookie"), 1);
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_uri_and_its_location() {
    let bed = Bed::start(ON).await;
    bed.origin.set("/cart", Resource::new("max-age=60", "cart"));
    bed.origin
        .set("/cart/1", Resource::new("max-age=60", "item"));
    let mut created = Resource::new("no-store", "created");
    created.status = 201;
    created = created.header("location", "/cart/1");
    bed.get("/cart").await;
    bed.get("/cart/1").await;
    // The POST answers from the same path: give it its own answer there, then put the GET
    // resource back.
    bed.origin.set("/cart", created);
    let posted = bed.send(bed.request(Method::POST, "/cart")).await;
    assert_eq!(posted.status, StatusCode::CREATED);
    bed.origin.set("/cart", Resource::new("max-age=60", "cart"));
    bed.get("/cart").await;
    bed.get("/cart/1").await;
    assert_eq!(
        bed.origin.count("/cart"),
        3,
        "GET, POST, GET after invalidation"
    );
    assert_eq!(
        bed.origin.count("/cart/1"),
        2,
        "the Location was invalidated too"
    );
}

#[tokio::test]
async fn the_byte_bound_holds_while_filling_past_it() {
    // 1 MiB of cache, filled with 3 MiB of 32 KiB objects; one object over the per-object
    // limit streams through whole, uncached.
    let bed = Bed::start("{ enabled: true, maxSizeBytes: 1048576, maxObjectBytes: 65536 }").await;
    let object = "x".repeat(32 * 1024);
    for i in 0..96 {
        bed.origin
            .set(&format!("/o{i}"), Resource::new("max-age=600", &object));
    }
    for i in 0..96 {
        let answer = bed.get(&format!("/o{i}")).await;
        assert_eq!(answer.body.len(), object.len());
    }
    let stored = bed.metric("causeway_cache_stored_bytes").await;
    assert!(
        stored > 0.0 && stored <= 1_048_576.0,
        "stored {stored} bytes against a bound of 1 MiB"
    );
    assert!(bed.metric("causeway_cache_evictions_total").await > 0.0);

    let big = "y".repeat(200 * 1024);
    bed.origin.set("/big", Resource::new("max-age=600", &big));
    for _ in 0..2 {
        let answer = bed.get("/big").await;
        assert_eq!(answer.text(), big, "an object over the limit arrives whole");
    }
    assert_eq!(bed.origin.count("/big"), 2, "and is not stored");
}

#[tokio::test]
async fn purge_needs_the_token_and_removes_a_url_or_a_prefix() {
    let token = scratch::write_scratch("token", "s3cret\n");
    let token_arg = token.to_string_lossy().into_owned();
    let bed = Bed::start_with(ON, &["--admin-token-file", &token_arg]).await;
    for path in ["/img/a", "/img/b", "/page"] {
        bed.origin.set(path, Resource::new("max-age=600", path));
        bed.get(path).await;
    }
    let purge = |token: &str, body: &str| {
        Request::post(format!("http://{}/cache/purge", bed.gateway.admin))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(full(body.to_owned()))
            .expect("purge request")
    };
    let refused = send(
        &bed.client,
        purge("wrong", r#"{"url":"http://cache.test/page"}"#),
    )
    .await
    .expect("answer");
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let url = send(
        &bed.client,
        purge("s3cret", r#"{"url":"http://cache.test/page"}"#),
    )
    .await
    .expect("answer");
    assert_eq!(
        (url.status, url.text()),
        (StatusCode::OK, r#"{"purged":1}"#.to_owned())
    );
    let prefix = send(
        &bed.client,
        purge("s3cret", r#"{"prefix":"http://cache.test/img/"}"#),
    )
    .await
    .expect("answer");
    assert_eq!(prefix.text(), r#"{"purged":2}"#);
    let unknown = send(
        &bed.client,
        purge("s3cret", r#"{"url":"http://other.test/"}"#),
    )
    .await
    .expect("answer");
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let malformed = send(&bed.client, purge("s3cret", "{not json"))
        .await
        .expect("answer");
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    for path in ["/img/a", "/img/b", "/page"] {
        bed.get(path).await;
        assert_eq!(
            bed.origin.count(path),
            2,
            "{path} was fetched again after the purge"
        );
    }
}

#[tokio::test]
async fn purge_is_refused_without_a_configured_token() {
    let bed = Bed::start(ON).await;
    let request = Request::post(format!("http://{}/cache/purge", bed.gateway.admin))
        .header(AUTHORIZATION, "Bearer anything")
        .body(full(r#"{"url":"http://cache.test/"}"#))
        .expect("purge request");
    let answer = send(&bed.client, request).await.expect("answer");
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn hot_entries_are_refreshed_before_they_expire() {
    let bed =
        Bed::start("{ enabled: true, refreshAhead: { minHits: 2, windowPercent: 50 } }").await;
    // The origin's Date header (whole seconds) may already age a copy by up to one: the
    // first copy expires between 9 and 10 s after it was fetched. The lifetime is long
    // enough that a busy host's slow requests still fall in the windows below.
    bed.origin.set("/hot", Resource::new("max-age=10", "hot"));
    let fetched = Instant::now();
    bed.get("/hot").await;
    bed.get("/hot").await;
    bed.get("/hot").await;
    assert_eq!(bed.origin.count("/hot"), 1);
    // In the last half of its lifetime, a hit starts a background refresh.
    tokio::time::sleep_until((fetched + Duration::from_secs(6)).into()).await;
    bed.get("/hot").await;
    let expiry = fetched + Duration::from_secs(9);
    assert!(
        eventually(expiry.saturating_duration_since(Instant::now()), || async {
            bed.origin.count("/hot") == 2
        })
        .await,
        "refreshed ahead of expiry"
    );
    // Past the first copy's expiry, clients still get hits: it never went stale.
    tokio::time::sleep_until((fetched + Duration::from_millis(10_500)).into()).await;
    let answer = bed.get("/hot").await;
    assert!(cache_status(&answer).contains("hit"), "{answer:?}");
    assert!(!cache_status(&answer).contains("fwd"), "{answer:?}");
}

#[tokio::test]
async fn only_if_cached_never_reaches_the_origin() {
    let bed = Bed::start(ON).await;
    bed.origin.set("/x", Resource::new("max-age=60", "x"));
    let answer = bed
        .send(
            bed.request(Method::GET, "/x")
                .header(CACHE_CONTROL, "only-if-cached"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(bed.origin.count("/x"), 0);
}

#[tokio::test]
async fn a_site_without_a_cache_reaches_the_origin_every_time() {
    let bed = Bed::start("{ enabled: false }").await;
    bed.origin.set("/a", Resource::new("max-age=60", "a"));
    for _ in 0..3 {
        let answer = bed.get("/a").await;
        assert!(!answer.headers.contains_key("cache-status"));
    }
    assert_eq!(bed.origin.count("/a"), 3);
}
