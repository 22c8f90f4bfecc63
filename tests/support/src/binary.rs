//! The `causeway` binary under test: [`causeway_bin`] finds or builds it (once per test
//! process), [`run_causeway`] runs it to completion.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::scratch::scratch_path;

/// The `causeway` binary: `$CAUSEWAY_BIN` when set; else the workspace's debug build of
/// package `causeway`, (re)built once per test process so that a test never runs stale code
/// (the binary is its own crate, so Cargo does not build it for other crates' tests).
pub fn causeway_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("CAUSEWAY_BIN").filter(|p| !p.is_empty()) {
                return PathBuf::from(path);
            }
            let root = workspace_root();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--quiet", "-p", "causeway", "--bin", "causeway"])
                .status()
                .expect("run cargo build for the causeway binary");
            assert!(status.success(), "cargo build -p causeway failed: {status}");
            std::env::var_os("CARGO_TARGET_DIR")
                .filter(|p| !p.is_empty())
                .map_or_else(|| root.join("target"), PathBuf::from)
                .join("debug")
                .join("causeway")
        })
        .clone()
}

/// The workspace root: the nearest directory above this crate holding `Cargo.lock`.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// How a run of the `causeway` binary ended.
#[derive(Debug)]
pub struct Exit {
    /// Exit code, if it exited on its own.
    pub code: Option<i32>,
    /// What it wrote to stderr and stdout.
    pub output: String,
}

/// Runs `causeway ARGS` to completion within `limit`; it is killed if it takes longer.
pub fn run_causeway(args: &[&str], limit: Duration) -> Exit {
    let log = scratch_path("run.log");
    let file = std::fs::File::create(&log).expect("create log file");
    let mut child = Command::new(causeway_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log handle"))
        .stderr(file)
        .spawn()
        .expect("start causeway");
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("poll causeway") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    Exit { code, output }
}
