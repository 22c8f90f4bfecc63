//! Child processes that cannot outlive the process that started them.
//!
//! Every process the test bed starts (etcd, the API server, the controller manager, pod
//! containers) runs in its own process group under a small bash guard that holds the read end
//! of a pipe whose write end only the owner holds. When the owner exits for any reason (tests
//! done, a panic, SIGKILL), the pipe closes and the guard stops the group: SIGTERM, then SIGKILL
//! after the grace period. So no test run leaves processes or ports behind, without any
//! `unsafe` pre-exec hooks.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};

use crate::error::{IoContext, Result};

/// The guard: `$1` is the grace period in seconds, the rest is the command. The guard keeps the
/// owner's pipe on fd 3 and waits for a line: `done` means the command has exited and was
/// reaped; end of file means the owner is gone, so the group is stopped. Then the shell execs
/// the command itself, so the command's pid and process group are the ones the owner knows.
const GUARD: &str = r#"
grace="$1"; shift
exec 3<&0 </dev/null
(
    trap '' TERM INT
    line=""
    read -r line <&3 || true
    if [ "$line" != done ]; then
        kill -TERM -- -$$ 2>/dev/null
        i=0
        while [ "$i" -lt "$((grace * 10))" ] && kill -0 $$ 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
        kill -KILL -- -$$ 2>/dev/null
    fi
) &
exec "$@" 3<&-
"#;

/// How a guarded process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == Self::Code(0)
    }

    /// The exit code as Kubernetes reports it: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
        }
    }

    fn from_status(status: std::process::ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Code(-1),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The program: a path, or a name looked up on PATH.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables to set.
    pub env: Vec<(OsString, OsString)>,
    /// Start from an empty environment instead of this process's one.
    pub clear_env: bool,
    /// The working directory.
    pub cwd: PathBuf,
    /// The file that receives stdout and stderr (appended).
    pub log: PathBuf,
    /// How long the guard waits after SIGTERM before SIGKILL when the owner is gone.
    pub grace: Duration,
}

impl Spec {
    /// A spec that runs `program` in `cwd`, logging to `log`, with a 5 s grace period.
    pub fn new(
        program: impl Into<OsString>,
        cwd: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
    ) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            clear_env: false,
            cwd: cwd.into(),
            log: log.into(),
            grace: Duration::from_secs(5),
        }
    }

    /// Adds arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running guarded process. Dropping it stops the process group (SIGTERM, then SIGKILL
/// after the grace period).
#[derive(Debug)]
pub struct Guarded {
    pid: i32,
    exit: watch::Receiver<Option<Exit>>,
    abandon: Option<oneshot::Sender<()>>,
}

impl Guarded {
    /// Starts `spec` under a guard, in its own process group. Must be called inside a tokio
    /// runtime, which reaps the process; if that runtime shuts down, the process is stopped.
    ///
    /// # Errors
    /// When the log cannot be opened or bash cannot be started.
    pub fn spawn(spec: &Spec) -> Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .context(|| format!("opening {}", spec.log.display()))?;
        let log_err = log
            .try_clone()
            .context(|| format!("opening {}", spec.log.display()))?;
        let mut command = tokio::process::Command::new("bash");
        command
            .arg("-c")
            .arg(GUARD)
            .arg("causeway-testbed-guard")
            .arg(spec.grace.as_secs().max(1).to_string())
            .arg(&spec.program)
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        if spec.clear_env {
            command.env_clear();
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .spawn()
            .context(|| format!("starting {}", spec.program.to_string_lossy()))?;
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .unwrap_or_default();
        let mut owner = child.stdin.take();
        let (exit_tx, exit) = watch::channel(None);
        let (abandon, mut abandoned) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = &mut abandoned => {
                    // Closing the pipe makes the guard stop the group.
                    drop(owner.take());
                    child.wait().await
                }
            };
            if let Some(mut pipe) = owner.take() {
                // The command was reaped: tell the guard to leave quietly.
                let _ = pipe.write_all(b"done\n").await;
            }
            let exit = match status {
                Ok(status) => Exit::from_status(status),
                Err(_) => Exit::Code(-1),
            };
            let _ = exit_tx.send(Some(exit));
        });
        Ok(Self {
            pid,
            exit,
            abandon: Some(abandon),
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How the process ended, if it has.
    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// A handle that waits for the process to end; it can be moved to another task.
    pub fn exit_watch(&self) -> ExitWatch {
        ExitWatch(self.exit.clone())
    }

    /// Waits for the process to end.
    pub async fn wait(&self) -> Exit {
        self.exit_watch().wait().await
    }

    /// Sends `signal` to the process group, if it still runs.
    pub fn signal(&self, signal: Signal) {
        if self.exit().is_none() && self.pid > 0 {
            let _ = killpg(Pid::from_raw(self.pid), signal);
        }
    }

    /// Stops the process: SIGTERM to its group, SIGKILL after `grace`, and waits for it.
    pub async fn stop(&self, grace: Duration) -> Exit {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.wait().await
            }
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(abandon) = self.abandon.take() {
            let _ = abandon.send(());
        }
    }
}

/// Waits for a guarded process to end.
#[derive(Debug, Clone)]
pub struct ExitWatch(watch::Receiver<Option<Exit>>);

impl ExitWatch {
    /// Resolves when the process has ended; at once if it already has.
    pub async fn wait(mut self) -> Exit {
        match self.0.wait_for(Option::is_some).await {
            Ok(exit) => exit.unwrap_or(Exit::Code(-1)),
            // The reaper is gone: its runtime shut down, and with it the process.
            Err(_) => Exit::Code(-1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str) -> Spec {
        let dir = std::env::temp_dir();
        Spec::new(
            "sh",
            &dir,
            dir.join(format!("causeway-guard-test-{}.log", std::process::id())),
        )
        .args(["-c", script])
    }

    #[tokio::test]
    async fn reports_the_exit_code() -> Result<()> {
        let process = Guarded::spawn(&spec("exit 3"))?;
        assert_eq!(process.wait().await, Exit::Code(3));
        Ok(())
    }

    #[tokio::test]
    async fn stop_terminates_the_group() -> Result<()> {
        let process = Guarded::spawn(&spec("sleep 30 & wait"))?;
        let exit = process.stop(Duration::from_secs(5)).await;
        assert_eq!(exit, Exit::Signal(15));
        Ok(())
    }

    #[tokio::test]
    async fn dropping_the_owner_stops_the_process() -> Result<()> {
        let process = Guarded::spawn(&spec("sleep 30"))?;
        let watch = process.exit_watch();
        drop(process);
        let exit = tokio::time::timeout(Duration::from_secs(10), watch.wait()).await;
        assert_eq!(exit.ok(), Some(Exit::Signal(15)));
        Ok(())
    }
}
