//! Processes and origins inside `causeway-linkem` network namespaces, for the tests that
//! run the tiers across an emulated WAN.

use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use causeway_linkem::NetLab;

use crate::origin::Origin;

/// True when this process can build labs: root, with a TUN device.
pub fn can_build_labs() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    root && std::path::Path::new("/dev/net/tun").exists()
}

/// Labs share two cores with everything else: one at a time keeps the figures honest.
static SERIAL: Mutex<()> = Mutex::new(());

/// This test's turn to build a lab, or `None` when labs cannot be built here (not root, no
/// TUN): the test then skips — except under `CI`, where that is a failure.
pub fn lab_slot() -> Option<MutexGuard<'static, ()>> {
    if !can_build_labs() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the WAN tests as root with /dev/net/tun"
        );
        eprintln!("skipped: needs root and /dev/net/tun");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Runs `test` to its end on a two-thread runtime inside namespace `ns` (so its sockets
/// live there).
pub fn run_in<T: Send, F: Future<Output = T> + Send>(lab: &NetLab, ns: &str, test: F) -> T {
    lab.in_namespace(ns, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
            .block_on(test)
    })
    .unwrap_or_else(|e| panic!("enter {ns}: {e}"))
}

/// A child process inside a lab namespace, killed when dropped; its log is shown on failure.
pub struct Spawned {
    /// The process.
    pub child: Child,
    log: std::path::PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Starts `program ARGS` in namespace `ns`, logging to a scratch file.
pub fn spawn_in(lab: &NetLab, ns: &str, program: &str, args: &[String]) -> Spawned {
    let log = std::env::temp_dir().join(format!(
        "causeway-lab-{}-{ns}-{}.log",
        std::process::id(),
        fastrand::u32(..)
    ));
    let file = std::fs::File::create(&log).expect("log file");
    let child = lab
        .command(ns, program)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program} in {ns}: {e}"));
    Spawned { child, log }
}

/// Starts `count` test origins inside namespace `ns`, on their own runtime thread: sockets
/// belong to the namespace of the thread that makes them, and threads inherit it.
pub fn start_origins(lab: &NetLab, ns: &str, prefix: &str, count: usize) -> Vec<Origin> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let prefix = prefix.to_owned();
    lab.in_namespace(ns, move || {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("origin runtime");
            runtime.block_on(async move {
                let origins = Origin::start_many(&prefix, count).await;
                let _ = sender.send(origins);
                std::future::pending::<()>().await;
            });
        });
    })
    .unwrap_or_else(|e| panic!("enter {ns}: {e}"));
    receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("origins started")
}
