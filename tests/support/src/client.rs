//! Test clients and bodies: keep-alive HTTP/1.1 and h2c clients, request bodies (empty, whole,
//! generated on the fly), and [`send`] / [`get`], which read a whole [`Answer`] within
//! [`REQUEST_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A boxed error, for bodies and results.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type every test client sends.
pub type TestBody = BoxBody<Bytes, BoxError>;
/// An HTTP client for talking to the gateway.
pub type TestClient = Client<HttpConnector, TestBody>;

/// The longest any single request made by a helper may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// An empty request body.
pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body holding `data`.
pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body of `total` bytes made on the fly in 64 KiB chunks, never held in memory
/// at once.
pub fn generated(total: u64) -> TestBody {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(chunk.len() as u64);
            let frame = Frame::data(chunk.slice(..n as usize));
            Some((Ok::<_, BoxError>(frame), left - n))
        }
    });
    StreamBody::new(stream).boxed()
}

/// A keep-alive HTTP/1.1 client.
pub fn client() -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// A GET request for `path` with `Host: host`, aimed at `addr`.
pub fn get_request(addr: SocketAddr, host: &str, path: &str) -> Request<TestBody> {
    Request::get(format!("http://{addr}{path}"))
        .header(http::header::HOST, host)
        .body(empty())
        .expect("a valid request")
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` and reads the whole answer, within [`REQUEST_TIMEOUT`].
pub async fn send(client: &TestClient, request: Request<TestBody>) -> Result<Answer, String> {
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (head, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        Ok(Answer {
            status: head.status,
            headers: head.headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// GET `path` on `addr` with `Host: host`.
pub async fn get(client: &TestClient, addr: SocketAddr, host: &str, path: &str) -> Answer {
    send(client, get_request(addr, host, path))
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
}

/// Sends `request` over a fresh h2c (prior knowledge) connection to `addr`; the status.
pub async fn h2c_status(addr: SocketAddr, request: Request<TestBody>) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect over TCP");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(connection);
    let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .expect("h2c answer in time")
        .expect("h2c response");
    response.status().as_u16()
}
