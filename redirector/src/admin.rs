//! The admin listener, on the shared admin server ([`causeway_admin`]): `/metrics`
//! (Prometheus text), `/healthz` (the process runs) and `/readyz` (a first directory is in
//! force, so answers are real).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::source::Published;

/// Binds `address`; the returned future serves the admin endpoints.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    causeway_admin::bind(address).await.map_err(
        |causeway_admin::AdminError::Bind { address, source }| Error::Listen { address, source },
    )
}

/// Serves the admin endpoints on `listener` until the process stops.
pub async fn serve(listener: TcpListener, metrics: Metrics, published: Arc<Published>) {
    Arc::new(routes(&metrics, published))
        .serve(listener, std::future::pending())
        .await;
}

/// The redirector's routes: the shared ones, ready once a directory is published.
fn routes(metrics: &Metrics, published: Arc<Published>) -> causeway_admin::Admin {
    causeway_admin::Admin::new(metrics.registry().clone())
        .readiness(move || (!published.ready()).then(|| "no directory loaded yet".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{AnswerPolicy, Directory};
    use http::{Request, StatusCode};
    use http_body_util::Full;
    use hyper::body::Bytes;

    async fn status(admin: &causeway_admin::Admin, path: &str) -> StatusCode {
        let request = Request::get(path)
            .body(Full::new(Bytes::new()))
            .expect("request");
        admin.respond(request).await.status()
    }

    #[tokio::test]
    async fn ready_once_a_directory_is_published() {
        let metrics = Metrics::new();
        let published = Arc::new(Published::new());
        let admin = routes(&metrics, Arc::clone(&published));
        assert_eq!(
            status(&admin, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let index = Directory::default()
            .compile(AnswerPolicy::default(), 1)
            .expect("compiles");
        published.publish(index);
        assert_eq!(status(&admin, "/readyz").await, StatusCode::OK);
        assert_eq!(status(&admin, "/metrics").await, StatusCode::OK);
        assert_eq!(status(&admin, "/x").await, StatusCode::NOT_FOUND);
    }
}
