//! The crate's error type: why certificate material could not be made, read or accepted.

/// Why a certificate, key, CA or signing request is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating or signing certificates failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// PEM text holds nothing usable.
    #[error("{what}: {reason}")]
    PemText {
        /// Which text.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A kept CA certificate cannot rebuild the authority.
    #[error("link CA: {0}")]
    Authority(String),
    /// A signing request is malformed, badly signed, or asks for more than a gateway may have.
    #[error("certificate signing request refused: {0}")]
    Request(String),
}
