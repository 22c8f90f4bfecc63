//! The operator's admin listener: `/metrics` (Prometheus text), `/healthz` (the process
//! runs) and `/readyz` (the process runs; a follower waiting for the Lease is ready too, so
//! that a rolling update of the operator is not held up by the election).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes_free::full;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

mod bytes_free {
    //! A full body from a string, without naming the bytes crate.
    use http_body_util::Full;

    /// The body type of every answer.
    pub type Body = Full<hyper::body::Bytes>;

    /// A body holding `text`.
    pub fn full(text: String) -> Body {
        Full::new(hyper::body::Bytes::from(text))
    }
}

/// Binds `address` and serves the admin endpoints until the task is dropped.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(address: SocketAddr, metrics: Metrics) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| Error::Listen { address, source })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(answer(request.uri().path(), &metrics)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

fn answer(path: &str, metrics: &Metrics) -> Response<bytes_free::Body> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    };
    let mut response = Response::new(full(body));
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

    #[test]
    fn routes_metrics_and_health() {
        let metrics = Metrics::new();
        assert_eq!(answer("/healthz", &metrics).status(), StatusCode::OK);
        assert_eq!(answer("/metrics", &metrics).status(), StatusCode::OK);
        assert_eq!(answer("/nope", &metrics).status(), StatusCode::NOT_FOUND);
    }
}
