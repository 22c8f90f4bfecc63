//! Turning SIGINT and SIGTERM into a shutdown signal every server watches.

use tokio::sync::watch;

/// A sender that flips to `true` on the first SIGINT or SIGTERM, and its receiver.
pub fn on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        let _ = tx.send(true);
    });
    rx
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the process");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Resolves once shutdown has been requested (or the sender is gone).
pub async fn requested(signal: &mut watch::Receiver<bool>) {
    // Mapped to () so no borrow of the channel is held across an await by callers.
    let _ = signal.wait_for(|stop| *stop).await;
}
