//! Where the directory comes from, behind one small trait: a file ([`file`]) or the
//! Kubernetes API ([`kubernetes`]). The answer code sees only the compiled index that
//! [`run`] publishes; a source's failure or a directory that does not compile leaves the
//! last good index answering.

pub mod file;
pub mod kubernetes;

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::directory::{AnswerPolicy, Directory, Index};
use crate::error::Error;
use crate::metrics::Metrics;

/// A source of directories.
pub trait DirectorySource: Send {
    /// Waits for the next version of the directory; the first call returns the first one.
    ///
    /// An error is logged and counted as a refused reload; the source is asked again, so it
    /// must not return the same failure at once unless something changed.
    fn next(&mut self) -> impl Future<Output = Result<Directory, Error>> + Send;
}

/// The index in force, read lock-free by every query, and a channel announcing each new one
/// (for the exporter).
#[derive(Debug)]
pub struct Published {
    current: ArcSwapOption<Index>,
    changes: watch::Sender<Option<Arc<Index>>>,
}

impl Default for Published {
    fn default() -> Self {
        Self::new()
    }
}

impl Published {
    /// Nothing published yet.
    pub fn new() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            changes: watch::channel(None).0,
        }
    }

    /// The index in force, `None` before the first directory.
    pub fn load(&self) -> Option<Arc<Index>> {
        self.current.load_full()
    }

    /// Whether a directory has been applied (the readiness probe).
    pub fn ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// Announcements of each new index.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Index>>> {
        self.changes.subscribe()
    }

    /// Puts `index` in force.
    pub fn publish(&self, index: Index) {
        let index = Arc::new(index);
        self.current.store(Some(Arc::clone(&index)));
        self.changes.send_replace(Some(index));
    }
}

/// The next SOA serial: the current time in seconds, but always above the previous serial,
/// so secondaries and caches that compare serials see every change.
pub fn next_serial(previous: u32) -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    now.max(previous.wrapping_add(1))
}

/// Feeds `source` into `published` until the process stops: each directory is compiled
/// whole and put in force, or refused and logged.
pub async fn run<S: DirectorySource>(
    mut source: S,
    policy: AnswerPolicy,
    published: Arc<Published>,
    metrics: Metrics,
) {
    let mut last: Option<Directory> = None;
    loop {
        let directory = match source.next().await {
            Ok(directory) => directory,
            Err(error) => {
                tracing::warn!(%error, "directory refused; the last good one keeps answering");
                metrics.reload(None);
                continue;
            }
        };
        if last.as_ref() == Some(&directory) {
            continue;
        }
        let previous = published.load().map_or(0, |index| index.serial);
        match directory.compile(policy, next_serial(previous)) {
            Ok(index) => {
                for (site, hostname) in &index.skipped {
                    tracing::debug!(site, hostname, "hostname outside every served zone");
                }
                tracing::info!(
                    serial = index.serial,
                    zones = index.zones.len(),
                    sites = index.sites.len(),
                    "directory applied"
                );
                metrics.reload(Some(index.serial));
                published.publish(index);
                last = Some(directory);
            }
            Err(error) => {
                tracing::warn!(%error, "directory refused; the last good one keeps answering");
                metrics.reload(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_always_grow() {
        assert!(next_serial(0) > 1_600_000_000);
        assert_eq!(next_serial(u32::MAX - 1), u32::MAX);
        let far = next_serial(0) + 1000;
        assert_eq!(next_serial(far), far + 1);
    }
}
