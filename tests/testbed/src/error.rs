//! The test bed's one error type.

use std::path::PathBuf;

/// What went wrong while finding, starting or driving the test bed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control-plane binaries are not where the harness looks for them.
    #[error(
        "the Kubernetes test bed's binaries are missing: {missing} not found in {dir}; \
         run `bash tests/testbed/provision.sh` first (or set CAUSEWAY_K8S_BIN to a dir holding them)"
    )]
    MissingBinaries {
        /// The dir that was searched.
        dir: PathBuf,
        /// The binaries that were not found, comma separated.
        missing: String,
    },
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate or key generation failed.
    #[error("generating certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A request to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A kubeconfig could not be read or turned into a client configuration.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// JSON could not be encoded or decoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A control-plane process exited while it was expected to run.
    #[error("{component} exited ({status}); the end of its log:\n{log}")]
    Exited {
        /// The process that exited.
        component: String,
        /// Its exit status.
        status: String,
        /// The last lines of its log.
        log: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        seconds: u64,
    },
    /// A command (kubectl, cargo) exited with a failure.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Every test-bed slot on this machine is held by another running test bed.
    #[error("all {0} test-bed slots on this machine are in use by other test runs")]
    NoFreeSlot(u8),
    /// Starting the shared test bed failed earlier in this test binary.
    #[error("the shared test bed failed to start: {0}")]
    Start(String),
    /// A value given to the test bed is not valid.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What was invalid.
        what: String,
        /// Why.
        message: String,
    },
}

/// The test bed's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    /// Wraps the error with `what`, computed only on failure.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}
