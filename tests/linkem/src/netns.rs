//! Network namespace plumbing: create, enter, configure and delete named namespaces.
//!
//! Namespaces are named ones (`ip netns add`) so that `ip netns exec` can run programs in
//! them; entering one from Rust moves a fresh thread into it with `setns(2)`, and sockets
//! or TUN devices opened on that thread stay in the namespace afterwards.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::{CloneFlags, setns};

use crate::addressing::owner_pid;
use crate::error::Error;

/// Where `ip netns` keeps its bind mounts.
const NETNS_DIR: &str = "/run/netns";

/// Path of the named namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates the named network namespace `name`.
///
/// # Errors
/// [`Error::Command`] if `ip netns add` fails (e.g. not root, or the name exists).
pub fn create(name: &str) -> Result<(), Error> {
    run_ip(&["netns", "add", name], None)
}

/// Deletes the named network namespace `name`; it vanishes once no process uses it.
///
/// # Errors
/// [`Error::Command`] if `ip netns delete` fails.
pub fn delete(name: &str) -> Result<(), Error> {
    run_ip(&["netns", "delete", name], None)
}

/// Names of all named network namespaces on the machine.
pub fn list() -> Vec<String> {
    fs::read_dir(NETNS_DIR)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes namespaces left behind by labs whose owning process no longer exists.
///
/// Returns the names deleted. Failures are skipped: another process may be racing us.
pub fn remove_stale() -> Vec<String> {
    let me = std::process::id();
    list()
        .into_iter()
        .filter(|name| {
            owner_pid(name)
                .is_some_and(|pid| pid != me && !Path::new(&format!("/proc/{pid}")).exists())
        })
        .filter(|name| delete(name).is_ok())
        .collect()
}

/// Runs `f` on a new thread that has joined the namespace `name`, and returns its result.
///
/// # Errors
/// [`Error::Io`] if the namespace cannot be opened or joined.
pub fn enter<T, F>(name: &str, f: F) -> Result<T, Error>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = path(name);
    let file = fs::File::open(&ns).map_err(|e| Error::io(format!("open {}", ns.display()), e))?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io(format!("setns into {name}"), e.into()))?;
            Ok(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Writes kernel settings (`/proc/sys` relative paths) inside the namespace `name`.
///
/// `required` settings must succeed; `optional` ones are skipped if the kernel lacks them.
///
/// # Errors
/// [`Error::Io`] naming the first required setting that could not be written.
pub fn write_sysctls(
    name: &str,
    required: &[(&str, &str)],
    optional: &[(&str, &str)],
) -> Result<(), Error> {
    enter(name, || {
        for (key, value) in required {
            let file = Path::new("/proc/sys").join(key);
            fs::write(&file, value)
                .map_err(|e| Error::io(format!("write {}", file.display()), e))?;
        }
        for (key, value) in optional {
            let _ = fs::write(Path::new("/proc/sys").join(key), value);
        }
        Ok(())
    })?
}

/// Runs `ip -n name -batch -` with `lines` on its stdin; stops at the first failing line.
///
/// # Errors
/// [`Error::Command`] with `ip`'s stderr if any line fails.
pub fn ip_batch(name: &str, lines: &[String]) -> Result<(), Error> {
    let script = lines.join("\n") + "\n";
    run_ip(&["-n", name, "-batch", "-"], Some(&script))
}

fn run_ip(args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    let describe = || format!("ip {}", args.join(" "));
    let mut child = Command::new("ip")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("spawn {}", describe()), e))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| Error::io(format!("write to {}", describe()), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("wait for {}", describe()), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: describe(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
