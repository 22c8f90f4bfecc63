//! The redirector's errors: one enum for the process, with the directory's own refusals
//! kept apart because a refused directory is not fatal (the last good one keeps answering).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a directory was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A name that is not a valid domain name.
    #[error("invalid {what} {name:?}: {reason}")]
    Name {
        /// What the name was for.
        what: &'static str,
        /// The text.
        name: String,
        /// The parser's reason.
        reason: String,
    },
    /// A zone without name servers.
    #[error("zone {0} has no name server")]
    NoNameserver(String),
    /// Something named twice.
    #[error("{what} {name} is listed twice")]
    Duplicate {
        /// Zone, Site or Frontend.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A hostname already owned by something else.
    #[error("hostname {hostname} of Site {site} is already {other}'s")]
    HostnameClash {
        /// The hostname.
        hostname: String,
        /// The Site claiming it.
        site: String,
        /// Who has it.
        other: String,
    },
    /// An answer count outside 1 to [`crate::directory::MAX_ANSWER_COUNT`].
    #[error("answer count {0} is outside 1 to 64")]
    AnswerCount(usize),
    /// An export that names nothing it can export.
    #[error("export of Site {site}: {reason}")]
    Export {
        /// The Site.
        site: String,
        /// What is wrong.
        reason: String,
    },
}

/// Every error of the redirector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory that does not compile.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A directory file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A directory file that does not parse.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with the field's path).
        reason: String,
    },
    /// A socket that cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Kubernetes client could not be made.
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// A TSIG key that cannot be used.
    #[error("TSIG key for Site {site}: {reason}")]
    TsigKey {
        /// The Site.
        site: String,
        /// What is wrong.
        reason: String,
    },
    /// An RFC 2136 update that failed.
    #[error("update of {zone} at {server}: {reason}")]
    Update {
        /// The zone.
        zone: String,
        /// The server.
        server: SocketAddr,
        /// What happened.
        reason: String,
    },
}

/// The redirector's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
