//! Finds the control-plane binaries that `tests/testbed/provision.sh` built and cached.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The wrapper module that pins the Kubernetes version; the version is read from it, so the
/// pin lives in one place.
const KUBERNETES_GO_MOD: &str = include_str!("../gobuild/kubernetes/go.mod");

/// The binaries the test bed needs, by file name.
pub const REQUIRED: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "helm",
];

/// The pinned Kubernetes version, such as `v1.37.2`.
pub fn kubernetes_version() -> &'static str {
    parse_kubernetes_version(KUBERNETES_GO_MOD).unwrap_or("unknown")
}

/// Reads the version of k8s.io/kubernetes that a go.mod requires, on a `require` line of its
/// own or inside a `require (...)` block.
fn parse_kubernetes_version(go_mod: &str) -> Option<&str> {
    go_mod.lines().find_map(|line| {
        let line = line.trim_start();
        let line = line.strip_prefix("require ").unwrap_or(line);
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("k8s.io/kubernetes"), Some(version)) if version.starts_with('v') => Some(version),
            _ => None,
        }
    })
}

/// The default bin dir, as provision.sh computes it:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/causeway/k8s/<version>/bin`.
pub fn default_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(
        cache
            .join("causeway/k8s")
            .join(kubernetes_version())
            .join("bin"),
    )
}

/// A dir holding every binary in [`REQUIRED`].
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Finds the bin dir from `CAUSEWAY_K8S_BIN`, or else the default cache path.
    ///
    /// # Errors
    /// [`Error::MissingBinaries`], telling to run provision.sh, when any binary is missing.
    pub fn locate() -> Result<Self> {
        let dir = match std::env::var_os("CAUSEWAY_K8S_BIN") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => default_dir().ok_or_else(|| Error::MissingBinaries {
                dir: PathBuf::from("~/.cache/causeway/k8s"),
                missing: "HOME (to find the cache)".to_owned(),
            })?,
        };
        Self::in_dir(dir)
    }

    /// Uses `dir`, checking that it holds every required binary.
    ///
    /// # Errors
    /// [`Error::MissingBinaries`] when any binary is missing.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|name| !dir.join(name).is_file())
            .collect();
        if missing.is_empty() {
            Ok(Self { dir })
        } else {
            Err(Error::MissingBinaries {
                dir,
                missing: missing.join(", "),
            })
        }
    }

    /// The bin dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the binary `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_version_from_the_wrapper_module() {
        assert!(kubernetes_version().starts_with("v1.37."));
        assert_eq!(
            parse_kubernetes_version("module x\n\nrequire k8s.io/kubernetes v1.2.3\n"),
            Some("v1.2.3")
        );
        assert_eq!(
            parse_kubernetes_version("require (\n\tk8s.io/kubernetes v1.37.2 // indirect\n)"),
            Some("v1.37.2")
        );
        assert_eq!(parse_kubernetes_version("require (\n\tfoo v1\n)"), None);
    }

    #[test]
    fn a_dir_without_binaries_names_them_and_provision_sh() {
        let err = Binaries::in_dir("/nonexistent/causeway-testbed").err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("kube-apiserver"), "{message}");
        assert!(message.contains("provision.sh"), "{message}");
    }
}
