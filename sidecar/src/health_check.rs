//! Active health checks: a loop per origin that asks `GET <path>` every interval and feeds
//! the result to the balancer, whose state machine decides when the origin flips. The loops
//! belong to one running Site: they stop at shutdown or when a reload retires that Site (its
//! replacement, if any, starts its own), so a Site never has two sets probing.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Uri};
use tokio::sync::watch;

use crate::message::request_body::RequestBody;
use crate::sites::SiteRuntime;

/// Starts the checks of every origin of `site`, if it has checks configured; they stop when
/// `shutdown` turns true or the Site is retired.
pub fn spawn(site: &Arc<SiteRuntime>, shutdown: &watch::Receiver<bool>) {
    let Some(check) = site.health_check.clone() else {
        return;
    };
    for (index, origin) in site.balancer.origins().iter().enumerate() {
        // HTTP/1.1 origin form: the path is the target, the authority goes in Host.
        let uri = match Uri::builder().path_and_query(check.path.as_str()).build() {
            Ok(uri) => uri,
            Err(error) => {
                tracing::error!(site = %site.name, origin = %origin.name, %error, "cannot build health check URL");
                continue;
            }
        };
        let site = site.clone();
        let mut shutdown = shutdown.clone();
        let retired = site.retirement().clone();
        let interval = check.interval.get();
        let timeout = check.timeout.get();
        tokio::spawn(async move {
            // Spread the first checks so a site's origins are not all probed at one instant.
            let jitter =
                Duration::from_millis(fastrand::u64(..=interval.as_millis().min(1000) as u64));
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + jitter, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = crate::shutdown::requested(&mut shutdown) => return,
                    () = retired.cancelled() => return,
                }
                let passed = tokio::select! {
                    passed = probe(&site, index, &uri, timeout) => passed,
                    () = retired.cancelled() => return,
                };
                site.balancer.record_check(index, passed);
            }
        });
    }
}

async fn probe(site: &SiteRuntime, index: usize, uri: &Uri, timeout: Duration) -> bool {
    let Some(pool) = site.pools.get(index) else {
        return false;
    };
    let request = match Request::get(uri.clone())
        .header(http::header::HOST, pool.authority().as_str())
        .header("user-agent", "causeway-health-check")
        .body(RequestBody::Empty)
    {
        Ok(request) => request,
        Err(_) => return false,
    };
    let exchange = async {
        let mut connection = pool.connection(false).await.ok()?;
        let response = connection.send(request).await.ok()?;
        let ok = response.status().is_success() || response.status().is_redirection();
        // Read the body to its end so the connection can go back to the pool.
        if http_body_util::BodyExt::collect(response.into_body())
            .await
            .is_ok()
        {
            pool.give_back(connection);
        }
        Some(ok)
    };
    matches!(
        tokio::time::timeout(timeout, exchange).await,
        Ok(Some(true))
    )
}
