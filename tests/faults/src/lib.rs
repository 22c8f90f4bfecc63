//! Causeway's fault-injection suite: each case (in `tests/`) runs real `causeway` processes
//! under steady load from [`load::Load`], breaks one component, and reports the same figures
//! through [`report::Fault`]: failed idempotent and non-idempotent requests, requests in
//! flight on the broken component, wrong bodies, and the time to recover.
//!
//! The gateways, origins and link labs are those of the gateway's integration tests (crate
//! `causeway-test-support`, shared rather than copied); the short form runs under `cargo test`, the
//! long form with `CAUSEWAY_FAULTS_LONG=1` (see the README).
#![forbid(unsafe_code)]

pub mod dns;
pub mod kube;
pub mod load;
pub mod report;

/// The operator's end-to-end support: the chart installed in a test namespace, manifests,
/// pod helpers.
#[path = "../../../operator/tests/support/mod.rs"]
pub mod cluster;

use std::time::Duration;

use causeway_test_support::binary::causeway_bin;
use causeway_test_support::client::{client, get_request, send};
use causeway_test_support::wait::eventually;

/// Whether the long form runs (`CAUSEWAY_FAULTS_LONG` set and not `0`).
pub fn long() -> bool {
    std::env::var("CAUSEWAY_FAULTS_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `short` in the short form, `long` in the long form: load and fault windows.
pub fn window(short: Duration, long: Duration) -> Duration {
    if self::long() { long } else { short }
}

/// Builds the `causeway` binary the cases start (unless `CAUSEWAY_BIN` names one), where
/// [`causeway_bin`] finds it, so a case never runs stale code.
pub async fn build_causeway() {
    let path = causeway_testbed::testbed::causeway_binary()
        .await
        .unwrap_or_else(|e| panic!("the causeway binary: {e}"));
    let canonical = |p: std::path::PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    assert_eq!(
        canonical(path),
        canonical(causeway_bin()),
        "the built binary is not the one the support starts; set CAUSEWAY_BIN"
    );
}

/// Cases of one test binary run one at a time: two cores are shared with everything else,
/// and one case's load must not starve another's processes.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Waits up to `limit` until `target` answers `GET /echo` for `host` with 200: a process
/// just spawned is not counted against before it listens.
pub async fn wait_serving(target: std::net::SocketAddr, host: &str, limit: Duration) {
    let client = client();
    let serving = eventually(limit, || async {
        send(&client, get_request(target, host, "/echo"))
            .await
            .is_ok_and(|answer| answer.status == http::StatusCode::OK)
    })
    .await;
    assert!(serving, "{target} did not serve {host} within {limit:?}");
}

/// Starts `spec`'s load and waits until it is answered steadily: 50 correct answers, then
/// the warm-up window (1 s short, 10 s long).
pub async fn steady_load(spec: load::LoadSpec) -> load::Load {
    let load = load::Load::start(spec);
    assert!(
        load.wait_answered(50, Duration::from_secs(30)).await,
        "the load was never answered: {:?} (ended, bad)",
        load.progress()
    );
    tokio::time::sleep(window(Duration::from_secs(1), Duration::from_secs(10))).await;
    load
}
