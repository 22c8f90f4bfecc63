//! The operator's admin listener, on the shared admin server ([`causeway_admin`]):
//! `/metrics` (Prometheus text), `/healthz` (the process runs) and `/readyz` (the process
//! runs; a follower waiting for the Lease is ready too, so that a rolling update of the
//! operator is not held up by the election).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Binds `address` and serves the admin endpoints until the task is dropped.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(address: SocketAddr, metrics: Metrics) -> Result<tokio::task::JoinHandle<()>> {
    let listener = causeway_admin::bind(address).await.map_err(
        |causeway_admin::AdminError::Bind { address, source }| Error::Listen { address, source },
    )?;
    let admin = Arc::new(routes(&metrics));
    // Aborting the task is the shutdown: the operator's admin has nothing to drain.
    Ok(tokio::spawn(admin.serve(listener, std::future::pending())))
}

/// The operator's routes: the shared ones, always ready.
fn routes(metrics: &Metrics) -> causeway_admin::Admin {
    causeway_admin::Admin::new(metrics.registry().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, StatusCode};
    use http_body_util::Full;
    use hyper::body::Bytes;

    async fn answer(path: &str, metrics: &Metrics) -> http::Response<Full<Bytes>> {
        let request = Request::get(path)
            .body(Full::new(Bytes::new()))
            .expect("request");
        routes(metrics).respond(request).await
    }

    #[tokio::test]
    async fn routes_metrics_and_health() {
        let metrics = Metrics::new();
        assert_eq!(answer("/healthz", &metrics).await.status(), StatusCode::OK);
        assert_eq!(answer("/metrics", &metrics).await.status(), StatusCode::OK);
        assert_eq!(
            answer("/nope", &metrics).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(answer("/readyz", &metrics).await.status(), StatusCode::OK);
    }
}
