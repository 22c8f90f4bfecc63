//! Process signals: SIGINT and SIGTERM become a shutdown signal every server watches;
//! SIGHUP asks for the configuration to be read again ([`hangups`]).

use tokio::sync::{mpsc, watch};

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

/// One message per SIGHUP, until shutdown; `None` where SIGHUP cannot be watched (the
/// configuration then changes only by restart). Hang-ups that arrive while the previous one
/// is being handled are merged: one more reload reads the files as they are by then.
pub fn hangups(mut shutdown: watch::Receiver<bool>) -> Option<mpsc::Receiver<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGHUP; configuration reloads are off");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = hangup.recv() => {
                        if received.is_none() {
                            return;
                        }
                    }
                    () = requested(&mut shutdown) => return,
                }
                // Full: a reload is already due, and will see these files too.
                if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                    return;
                }
            }
        });
        Some(rx)
    }
    #[cfg(not(unix))]
    {
        let _ = &mut shutdown;
        None
    }
}
