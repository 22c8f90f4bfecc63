//! The real `causeway` gateway (any tier) as a child process on free loopback ports: started
//! and waited for until ready, restarted, killed, signalled, asked on its admin listener, its
//! Site file rewritten for a reload; killed when dropped, its log shown if the test failed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::binary::causeway_bin;
use crate::client::{TestClient, client, get_request, send};
use crate::metrics::metric;
use crate::scratch::{free_addr, scratch_path, write_scratch};
use crate::wait::eventually;

/// The real `causeway gateway` as a child process, killed when dropped.
pub struct Gateway {
    child: Child,
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    log: PathBuf,
    site_file: PathBuf,
    admin_client: TestClient,
    command: (String, String, Vec<String>),
}

impl Gateway {
    /// Starts a gateway serving `manifest`, and waits until its admin `/readyz` answers 200.
    pub async fn start(manifest: &str) -> Self {
        Self::start_with(manifest, &[]).await
    }

    /// Like [`Gateway::start`] with extra command-line arguments.
    pub async fn start_with(manifest: &str, extra_args: &[&str]) -> Self {
        Self::launch("gateway", "--listen", manifest, extra_args).await
    }

    /// Starts `causeway MODE` on free ports: `listen_flag` names the flag of its main
    /// listener (`--listen`, or `--link-listen` for a back-end, whose address is then UDP).
    pub async fn launch(
        mode: &str,
        listen_flag: &str,
        manifest: &str,
        extra_args: &[&str],
    ) -> Self {
        let site_file = write_scratch("site.yaml", manifest);
        let mut last_log = String::new();
        // Another process may grab a port between our probe and the gateway's bind: retry.
        for _ in 0..5 {
            let addr = free_addr();
            let admin = free_addr();
            match Self::spawn(mode, listen_flag, addr, admin, &site_file, extra_args).await {
                Ok(gateway) => return gateway,
                Err(log) if log.contains("cannot listen") || log.contains("in use") => {
                    last_log = log
                }
                Err(log) => panic!("causeway {mode} did not become ready:\n{log}"),
            }
        }
        panic!("causeway {mode} could not bind free ports after five tries:\n{last_log}");
    }

    /// Starts `causeway MODE` on the given addresses; the log when it does not become ready.
    pub async fn spawn(
        mode: &str,
        listen_flag: &str,
        addr: SocketAddr,
        admin: SocketAddr,
        site_file: &Path,
        extra_args: &[&str],
    ) -> Result<Self, String> {
        let (child, log) = launch(mode, listen_flag, addr, admin, extra_args, site_file)
            .unwrap_or_else(|e| panic!("start causeway {mode}: {e}"));
        let mut gateway = Self {
            child,
            addr,
            admin,
            log,
            site_file: site_file.to_owned(),
            admin_client: client(),
            command: (
                mode.to_owned(),
                listen_flag.to_owned(),
                extra_args.iter().map(|a| (*a).to_owned()).collect(),
            ),
        };
        gateway.wait_ready().await?;
        Ok(gateway)
    }

    /// Kills the process (SIGKILL: no goodbye to peers) and starts it again on the same
    /// addresses with the same arguments.
    pub async fn restart(&mut self) {
        self.kill();
        let (mode, flag, args) = self.command.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, log) = launch(&mode, &flag, self.addr, self.admin, &args, &self.site_file)
            .unwrap_or_else(|e| panic!("restart causeway {mode}: {e}"));
        self.child = child;
        let _ = std::fs::remove_file(&self.log);
        self.log = log;
        if let Err(log) = self.wait_ready().await {
            panic!("causeway {mode} did not come back:\n{log}");
        }
    }

    /// Kills the process with SIGKILL (no goodbye to peers) and reaps it; [`Gateway::restart`]
    /// brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.log_text()));
            }
            let probe = tokio::time::timeout(
                Duration::from_secs(1),
                self.admin_client
                    .request(get_request(self.admin, "admin", "/readyz")),
            )
            .await;
            if let Ok(Ok(response)) = probe
                && response.status() == StatusCode::OK
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("not ready within 20 s\n{}", self.log_text()))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> String {
        let answer = send(&self.admin_client, get_request(self.admin, "admin", path))
            .await
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
        assert_eq!(answer.status, StatusCode::OK, "admin GET {path}");
        answer.text()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin_get("/status").await).expect("/status is JSON")
    }

    /// Whether `/status` shows `origin` of `site` in rotation.
    pub async fn in_rotation(&self, site: &str, origin: &str) -> bool {
        let status = self.status().await;
        status["sites"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["site"] == site)
            .flat_map(|s| s["origins"].as_array().into_iter().flatten())
            .find(|o| o["name"] == origin)
            .and_then(|o| o["in_rotation"].as_bool())
            .unwrap_or_else(|| panic!("no origin {origin} of site {site} in {status}"))
    }

    /// Resident memory of the gateway process, in bytes (from `/proc/PID/status`).
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid()).expect("VmRSS in /proc/PID/status")
    }

    /// Sends SIGTERM (through `kill(1)`, to keep the tests free of unsafe code).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends SIGHUP: read the Site files again.
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Replaces the Site file the process was started with (read again on SIGHUP).
    pub fn rewrite_sites(&self, manifest: &str) {
        // Written aside and renamed, as a config map update is, so a reload never reads a
        // half-written file.
        let aside = self.site_file.with_extension("next");
        std::fs::write(&aside, manifest).expect("write the new Site file");
        std::fs::rename(&aside, &self.site_file).expect("replace the Site file");
    }

    /// Waits up to `limit` for `causeway_config_generation` to reach `generation`.
    pub async fn wait_generation(&self, generation: u64, limit: Duration) -> bool {
        eventually(limit, || async {
            metric(&self.metrics().await, "causeway_config_generation", &[]) >= generation as f64
        })
        .await
    }

    /// Waits up to `limit` for `causeway_queue_depth` of `site` to be `depth`.
    pub async fn wait_queue_depth(&self, site: &str, depth: usize, limit: Duration) -> bool {
        eventually(limit, || async {
            metric(
                &self.metrics().await,
                "causeway_queue_depth",
                &[("site", site)],
            ) == depth as f64
        })
        .await
    }

    /// Waits up to `limit` for the process to exit; its exit code if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last gateway log lines ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.site_file);
    }
}

/// Resident memory of process `pid`, in bytes, from `/proc/PID/status`; `None` once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
}

/// Starts `causeway MODE LISTEN_FLAG ADDR --admin-listen ADMIN ARGS.. SITE_FILE`, its output
/// in a fresh scratch log: the child and the log's path.
fn launch(
    mode: &str,
    listen_flag: &str,
    addr: SocketAddr,
    admin: SocketAddr,
    extra_args: &[&str],
    site_file: &Path,
) -> std::io::Result<(Child, PathBuf)> {
    let log = scratch_path(&format!("{mode}.log"));
    let file = std::fs::File::create(&log)?;
    let child = Command::new(causeway_bin())
        .arg(mode)
        .arg(listen_flag)
        .arg(addr.to_string())
        .arg("--admin-listen")
        .arg(admin.to_string())
        .args(extra_args)
        .arg(site_file)
        .env(
            "RUST_LOG",
            std::env::var("CAUSEWAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    Ok((child, log))
}
