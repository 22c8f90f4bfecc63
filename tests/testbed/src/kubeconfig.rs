//! Writes kubeconfig files: the admin's (client certificate), the controller manager's, and
//! the per-pod ones that carry a service-account token.

use std::path::Path;

use serde_json::json;

use crate::error::{IoContext, Result};
use crate::pki::CertFiles;

/// How a kubeconfig's user proves who it is.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// A client certificate and key (PEM files).
    ClientCertificate(&'a CertFiles),
    /// A bearer token.
    Token(&'a str),
}

/// Writes a kubeconfig for `server` (an `https://127.0.0.1:PORT` URL) trusting `ca_cert`.
/// JSON is valid YAML, so every Kubernetes client reads it.
///
/// # Errors
/// When the file cannot be written.
pub fn write(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    credentials: Credentials<'_>,
    namespace: Option<&str>,
) -> Result<()> {
    let user_entry = match credentials {
        Credentials::ClientCertificate(files) => json!({
            "client-certificate": files.cert,
            "client-key": files.key,
        }),
        Credentials::Token(token) => json!({ "token": token }),
    };
    let mut context = json!({ "cluster": "testbed", "user": user });
    if let Some(namespace) = namespace {
        context["namespace"] = json!(namespace);
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "testbed",
            "cluster": { "server": server, "certificate-authority": ca_cert },
        }],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{ "name": "testbed", "context": context }],
        "current-context": "testbed",
    });
    let text = serde_json::to_string_pretty(&config)?;
    std::fs::write(path, text).context(|| format!("writing {}", path.display()))
}
