//! Scratch files and free loopback ports: what every process a test starts needs, named so
//! that test binaries and the tests inside them run in parallel without clashing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh path in the temporary directory, unique to this process and call, ending in
/// `what`.
pub(crate) fn scratch_path(what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "causeway-it-{}-{n}-{nanos}-{what}",
        std::process::id()
    ))
}

/// A loopback address no one listened on a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address")
}

/// Writes `text` to a fresh scratch file and returns its path.
pub fn write_scratch(what: &str, text: &str) -> PathBuf {
    let path = scratch_path(what);
    std::fs::write(&path, text).expect("write scratch file");
    path
}
