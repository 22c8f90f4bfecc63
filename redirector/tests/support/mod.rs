//! What the redirector's integration tests share: starting the real `causeway-redirector`
//! binary on loopback with a directory file, asking it with `dig`, reading dig's output,
//! and fetching the admin endpoints.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Whether `program` can be run; when it cannot, say so loudly and let the test skip —
/// unless `CAUSEWAY_REQUIRE_TOOLS` is set (CI), where a missing tool fails the test.
pub fn have(program: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args([
            "-c",
            &format!("command -v {program} || test -x /usr/sbin/{program}"),
        ])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    assert!(
        std::env::var_os("CAUSEWAY_REQUIRE_TOOLS").is_none(),
        "{program} is missing and CAUSEWAY_REQUIRE_TOOLS is set: install Debian's {package} (scripts/test.sh does)"
    );
    eprintln!(
        "\n!!!!!!!! SKIPPED: {program} is not installed (Debian package {package}); scripts/test.sh installs it !!!!!!!!\n"
    );
    false
}

/// A scratch directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "causeway-dns-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path` the way a careful writer does: a new file renamed over the old.
pub fn replace_file(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).expect("write staged");
    std::fs::rename(&staged, path).expect("rename");
}

/// The `causeway-redirector` binary: Cargo's build of it for the redirector's own tests;
/// elsewhere (the fault suite includes this module) `$CAUSEWAY_REDIRECTOR_BIN`, else
/// `causeway-redirector` beside the running test binary's `deps/` directory.
pub fn redirector_bin() -> PathBuf {
    if let Some(built) = option_env!("CARGO_BIN_EXE_causeway-redirector") {
        return PathBuf::from(built);
    }
    if let Some(path) = std::env::var_os("CAUSEWAY_REDIRECTOR_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("causeway-redirector"))
        .expect("a target directory above the test binary")
}

/// A running `causeway-redirector`, killed when dropped.
pub struct Redirector {
    child: Child,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub logs: mpsc::Receiver<String>,
    directory: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Redirector {
    /// Starts the binary on 127.0.0.1 with free ports, `directory` as its file, and `extra`
    /// arguments; waits until it listens and is ready.
    pub fn start(directory: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(directory, extra, &[])
    }

    /// [`Redirector::start`] with extra environment variables for the child.
    pub fn start_with_env(directory: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Self::launch(
            directory,
            "127.0.0.1:0",
            "127.0.0.1:0",
            extra.iter().map(|a| (*a).to_owned()).collect(),
            owned(env),
        )
    }

    /// Kills the process (SIGKILL) and starts it again on the same addresses with the same
    /// directory, arguments and environment; waits until it is ready.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (dns, admin) = (self.dns.to_string(), self.admin.to_string());
        let extra = std::mem::take(&mut self.extra);
        let env = std::mem::take(&mut self.env);
        *self = Self::launch(&self.directory.clone(), &dns, &admin, extra, env);
    }

    fn launch(
        directory: &Path,
        dns: &str,
        admin: &str,
        extra: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut child = Command::new(redirector_bin())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["--directory".as_ref(), directory.as_os_str()])
            .args(["--listen", dns, "--admin", admin, "--threads", "2"])
            .args(&extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start causeway-redirector");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[redirector] {line}");
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut dns, mut admin) = (None, None);
        while dns.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = logs
                .recv_timeout(left)
                .expect("causeway-redirector did not say where it listens");
            if line.contains("listening") {
                dns = field(&line, "dns=").and_then(|v| v.parse().ok());
                admin = field(&line, "admin=").and_then(|v| v.parse().ok());
            }
        }
        let redirector = Self {
            child,
            dns: dns.expect("dns address"),
            admin: admin.expect("admin address"),
            logs,
            directory: directory.to_owned(),
            extra,
            env,
        };
        redirector.wait_ready();
        redirector
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if http_get(self.admin, "/readyz").is_ok_and(|(status, _)| status == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "not ready within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs dig against this server with `args` (name, type, options).
    pub fn dig(&self, args: &[&str]) -> Dig {
        dig(self.dns, args)
    }

    /// The metrics text.
    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").expect("metrics").1
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    line[start..].split_whitespace().next()
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// One record line of dig's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// What dig printed, parsed.
#[derive(Clone, Debug, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
    /// `; CLIENT-SUBNET: 10.1.0.0/24/16` → "10.1.0.0/24/16".
    pub client_subnet: Option<String>,
    pub truncated_retry: bool,
    pub raw: String,
}

impl Dig {
    pub fn addresses(&self) -> Vec<String> {
        self.answer
            .iter()
            .filter(|r| r.rtype == "A" || r.rtype == "AAAA")
            .map(|r| r.data.clone())
            .collect()
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Runs `dig @server -p port args...` (one query) and parses the output.
pub fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let raw = dig_raw(server, args);
    parse_dig(&raw)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no answer from dig {args:?}:\n{raw}"))
}

/// Like [`dig`], `None` when nothing answered (for polling a server that is starting).
pub fn try_dig(server: SocketAddr, args: &[&str]) -> Option<Dig> {
    parse_dig(&dig_raw(server, args)).into_iter().next()
}

/// Runs dig with `args` (possibly several queries) and returns its text.
pub fn dig_raw(server: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+norec",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Parses dig's output: one [`Dig`] per answered query, in order.
pub fn parse_dig(raw: &str) -> Vec<Dig> {
    let mut all = Vec::new();
    let mut current: Option<Dig> = None;
    let mut section = "";
    let mut retry = false;
    for line in raw.lines() {
        if line.contains("Truncated, retrying in TCP mode") {
            retry = true;
        }
        if let Some(rest) = line.split("status: ").nth(1) {
            if let Some(done) = current.take() {
                all.push(done);
            }
            current = Some(Dig {
                status: rest.split(',').next().unwrap_or("").trim().to_owned(),
                truncated_retry: retry,
                ..Dig::default()
            });
            retry = false;
            section = "";
            continue;
        }
        let Some(dig) = current.as_mut() else {
            continue;
        };
        dig.raw.push_str(line);
        dig.raw.push('\n');
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            dig.flags = flags.split_whitespace().map(str::to_owned).collect();
        } else if let Some(rest) = line.strip_prefix("; CLIENT-SUBNET: ") {
            dig.client_subnet = Some(rest.trim().to_owned());
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.is_empty() || line.starts_with(';') {
            if line.is_empty() {
                section = "";
            }
        } else {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() >= 5 {
                let rr = Rr {
                    name: parts[0].to_owned(),
                    ttl: parts[1].parse().unwrap_or(0),
                    rtype: parts[3].to_owned(),
                    data: parts[4..].join(" "),
                };
                match section {
                    "answer" => dig.answer.push(rr),
                    "authority" => dig.authority.push(rr),
                    "additional" => dig.additional.push(rr),
                    _ => {}
                }
            }
        }
    }
    if let Some(done) = current {
        all.push(done);
    }
    all
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns the time it took.
pub fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
