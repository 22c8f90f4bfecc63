//! A demo origin server: the web servers `causeway local` starts for its embedded Site, and
//! the origins the benchmarks balance over. It answers every path, can be made slow for a
//! window of time, streams bodies of any size without holding them in memory, and answers
//! `/static/…` as cacheable assets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};

use crate::message::BoxError;
use crate::server::{ConnectionInfo, Handler};

/// Paths under it answer as cacheable assets (`Cache-Control: public, max-age=60` and an
/// `ETag`); every other answer says nothing about caching.
pub const STATIC_PREFIX: &str = "/static/";

/// A period during which the origin answers slowly, to imitate an origin in trouble.
#[derive(Clone, Copy, Debug)]
pub struct SlowWindow {
    /// Start of the window, from the origin's start.
    pub after: Duration,
    /// Length of the window.
    pub length: Duration,
    /// Extra delay added to every answer inside the window.
    pub delay: Duration,
}

/// How a demo origin behaves.
#[derive(Clone, Debug)]
pub struct DemoOriginConfig {
    /// Name written into answers and the `x-origin` header.
    pub name: String,
    /// Delay added to every answer.
    pub delay: Duration,
    /// An optional window of extra delay.
    pub slow: Option<SlowWindow>,
}

/// The demo origin's request handler.
#[derive(Debug)]
pub struct DemoOrigin {
    config: DemoOriginConfig,
    started: Instant,
}

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [b'x'; CHUNK];

impl DemoOrigin {
    /// A demo origin whose slow window, if any, starts counting now.
    pub fn new(config: DemoOriginConfig) -> Self {
        Self {
            config,
            started: Instant::now(),
        }
    }

    fn delay_now(&self) -> Duration {
        let mut delay = self.config.delay;
        if let Some(slow) = self.config.slow {
            let elapsed = self.started.elapsed();
            if elapsed >= slow.after && elapsed < slow.after + slow.length {
                delay += slow.delay;
            }
        }
        delay
    }
}

/// Reads `bytes=N` from a query string: the size of body the client asks for.
fn requested_size(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("bytes=")?.parse().ok())
}

fn text(status: StatusCode, name: &str, body: String) -> Response<BoxBody<Bytes, BoxError>> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = http::HeaderValue::from_str(name) {
        headers.insert("x-origin", value);
    }
    response
}

/// A body of `size` bytes generated on the fly in 64 KiB chunks.
fn generated_body(size: u64) -> BoxBody<Bytes, BoxError> {
    let chunks = stream::unfold(size, |left| async move {
        if left == 0 {
            return None;
        }
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        Some((
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(&ZEROS[..n]))),
            left - n as u64,
        ))
    });
    StreamBody::new(chunks).boxed()
}

impl Handler for DemoOrigin {
    type Body = BoxBody<Bytes, BoxError>;

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        _connection: ConnectionInfo,
    ) -> Response<Self::Body> {
        let name = self.config.name.clone();
        if request.uri().path() == "/healthz" {
            return text(StatusCode::OK, &name, "ok\n".into());
        }
        let delay = self.delay_now();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let size = requested_size(request.uri().query());
        // Read any upload to its end, counting it, so large uploads stream through.
        let mut body = request.into_body();
        let mut received: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => received += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(error) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &name,
                        format!("upload failed: {error}\n"),
                    );
                }
            }
        }
        if let Some(size) = size {
            let mut response = Response::new(generated_body(size));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, size.into());
            if let Ok(value) = http::HeaderValue::from_str(&name) {
                response.headers_mut().insert("x-origin", value);
            }
            return response;
        }
        let body = if method == Method::GET || method == Method::HEAD {
            format!("origin {name}: {method} {path}\n")
        } else {
            format!("origin {name}: {method} {path} received {received} bytes\n")
        };
        let mut response = text(StatusCode::OK, &name, body);
        if path.starts_with(STATIC_PREFIX) {
            // Like a site's assets: cacheable for a minute, revalidatable after.
            let headers = response.headers_mut();
            headers.insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("public, max-age=60"),
            );
            if let Ok(etag) = http::HeaderValue::from_str(&format!("\"{}\"", path.len())) {
                headers.insert(header::ETAG, etag);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_comes_from_the_query() {
        assert_eq!(requested_size(Some("bytes=1024")), Some(1024));
        assert_eq!(requested_size(Some("a=1&bytes=7")), Some(7));
        assert_eq!(requested_size(Some("bytes=lots")), None);
        assert_eq!(requested_size(None), None);
    }

    #[test]
    fn slow_window_adds_delay_only_inside() {
        let mut origin = DemoOrigin::new(DemoOriginConfig {
            name: "o".into(),
            delay: Duration::from_millis(1),
            slow: Some(SlowWindow {
                after: Duration::from_secs(10),
                length: Duration::from_secs(5),
                delay: Duration::from_secs(2),
            }),
        });
        assert_eq!(origin.delay_now(), Duration::from_millis(1));
        origin.started = Instant::now() - Duration::from_secs(12);
        assert_eq!(origin.delay_now(), Duration::from_millis(2001));
        origin.started = Instant::now() - Duration::from_secs(16);
        assert_eq!(origin.delay_now(), Duration::from_millis(1));
    }
}
