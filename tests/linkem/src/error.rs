//! The crate's one error type.

use std::io;

/// Everything that can go wrong setting up or running a lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An impairment setting is out of range.
    #[error("invalid impairment: {0}")]
    InvalidImpairment(String),
    /// A textual impairment or link spec could not be parsed.
    #[error("invalid spec {spec:?}: {reason}")]
    InvalidSpec {
        /// The text that was given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The lab's topology is not a chain of uniquely named namespaces.
    #[error("invalid topology: {0}")]
    InvalidTopology(String),
    /// A namespace name that is not part of the lab.
    #[error("no namespace {0:?} in this lab")]
    UnknownNamespace(String),
    /// Two namespaces that are not neighbours in the chain.
    #[error("{0:?} and {1:?} are not neighbours in the chain")]
    NotNeighbours(String, String),
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// An `ip` command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl Error {
    /// Wraps an I/O error with what we were doing.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
