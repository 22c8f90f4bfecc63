//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (a first directory is in force, so answers are real).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::source::Published;

/// Binds `address`; the returned future serves the admin endpoints.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Listen { address, source })
}

/// Serves the admin endpoints on `listener` until the process stops.
pub async fn serve(listener: TcpListener, metrics: Metrics, published: Arc<Published>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let published = Arc::clone(&published);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(request.uri().path(), &metrics, &published);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(path: &str, metrics: &Metrics, published: &Published) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if published.ready() => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "no directory loaded yet\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{AnswerPolicy, Directory};

    #[test]
    fn ready_once_a_directory_is_published() {
        let metrics = Metrics::new();
        let published = Published::new();
        assert_eq!(
            answer("/readyz", &metrics, &published).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let index = Directory::default()
            .compile(AnswerPolicy::default(), 1)
            .expect("compiles");
        published.publish(index);
        assert_eq!(
            answer("/readyz", &metrics, &published).status(),
            StatusCode::OK
        );
        assert_eq!(
            answer("/metrics", &metrics, &published).status(),
            StatusCode::OK
        );
        assert_eq!(
            answer("/x", &metrics, &published).status(),
            StatusCode::NOT_FOUND
        );
    }
}
