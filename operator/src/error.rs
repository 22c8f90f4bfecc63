//! The operator's one error type: what failed, wrapping its source, with a bounded `kind` for
//! the errors-by-kind metric.

/// Why a reconciliation, or the operator itself, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The operator found no cluster to talk to.
    #[error("finding the cluster: {0}")]
    Config(#[from] kube::config::InferConfigError),
    /// A desired object could not be rendered.
    #[error("rendering {what}: {reason}")]
    Render {
        /// What was being rendered.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// TMP link certificates could not be made or loaded.
    #[error("TMP link certificates: {0}")]
    Certificates(#[from] causeway_pki::PkiError),
    /// A Secret the operator keeps is there but unusable.
    #[error("Secret {namespace}/{name}: {reason}")]
    BadSecret {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An object from the API server lacks a field every stored object has.
    #[error("{kind} has no {field}")]
    MissingField {
        /// The object's kind.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// Leadership was lost or could not be kept.
    #[error("leader election: {0}")]
    Leadership(String),
    /// The metrics and health listener failed.
    #[error("metrics listener on {address}: {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// A short, bounded name of the error's kind, for the `kind` label of
    /// `causeway_operator_reconcile_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Self::Kube(kube::Error::Api(status)) if status.code == 422 => "invalid",
            Self::Kube(kube::Error::Api(status)) if status.code == 403 => "forbidden",
            Self::Kube(kube::Error::Api(_)) => "api",
            Self::Kube(_) => "transport",
            Self::Config(_) => "config",
            Self::Render { .. } => "render",
            Self::Certificates(_) | Self::BadSecret { .. } => "certificates",
            Self::MissingField { .. } => "missing_field",
            Self::Leadership(_) => "leadership",
            Self::Listen { .. } => "listen",
        }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_short_and_bounded() {
        let error = Error::MissingField {
            kind: "Site",
            field: "metadata.namespace",
        };
        assert_eq!(error.kind(), "missing_field");
        assert_eq!(error.to_string(), "Site has no metadata.namespace");
    }
}
