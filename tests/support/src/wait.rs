//! Waiting for an event with a deadline instead of sleeping and asserting: every wait in the
//! tests is bounded, and generous enough for a busy two-core machine.

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it holds or `limit` passes; whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
