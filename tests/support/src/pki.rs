//! Mutual-TLS files for TMP links ([`LinkPki`]): one CA, a back-end and a front-end
//! certificate in a scratch directory, as files, command-line flags or credentials.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::scratch::scratch_path;

/// Mutual-TLS files for TMP links: one CA, a back-end and a front-end certificate.
pub struct LinkPki {
    dir: PathBuf,
}

impl LinkPki {
    /// Makes a CA and issues both certificates into a scratch directory.
    pub fn new() -> Self {
        let dir = scratch_path("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let authority = causeway_pki::LinkAuthority::generate("test link CA").expect("CA");
        for (role, name) in [
            ("backend", "causeway-backend"),
            ("frontend", "causeway-frontend"),
        ] {
            let issued = authority.issue_pem(&[name]).expect("issue");
            std::fs::write(dir.join(format!("{role}.pem")), issued.cert).expect("write cert");
            std::fs::write(dir.join(format!("{role}.key")), issued.key).expect("write key");
        }
        std::fs::write(dir.join("ca.pem"), authority.ca_pem()).expect("write CA");
        Self { dir }
    }

    /// The link credentials of one role (`backend` or `frontend`), for a tier run in the
    /// test process.
    pub fn credentials(&self, role: &str) -> causeway_link::LinkCredentials {
        causeway_link::LinkCredentials::from_pem_files(
            &self.dir.join("ca.pem"),
            &self.dir.join(format!("{role}.pem")),
            &self.dir.join(format!("{role}.key")),
        )
        .expect("link credentials")
    }

    /// The `--link-*` arguments for one role (`backend` or `frontend`).
    pub fn args(&self, role: &str) -> Vec<String> {
        let path = |name: String| self.dir.join(name).display().to_string();
        vec![
            "--link-ca".into(),
            path("ca.pem".into()),
            "--link-cert".into(),
            path(format!("{role}.pem")),
            "--link-key".into(),
            path(format!("{role}.key")),
        ]
    }
}

impl LinkPki {
    /// The command line of a tier started by hand: `ROLE` (`backend` or `frontend`), its main
    /// listener on `listen` (`--link-listen` for a back-end, UDP; `--listen` for a front-end),
    /// the admin listener on `admin`, `--name NAME`, `extra`, this PKI's credentials for the
    /// role, and the Site file last.
    pub fn tier_args(
        &self,
        role: &str,
        listen: SocketAddr,
        admin: &str,
        name: &str,
        extra: &[String],
        site_file: &Path,
    ) -> Vec<String> {
        let listen_flag = if role == "backend" {
            "--link-listen"
        } else {
            "--listen"
        };
        let mut args: Vec<String> = [role, listen_flag, &listen.to_string()]
            .into_iter()
            .chain(["--admin-listen", admin, "--name", name])
            .map(str::to_owned)
            .collect();
        args.extend(extra.iter().cloned());
        args.extend(self.args(role));
        args.push(site_file.display().to_string());
        args
    }
}

impl Default for LinkPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LinkPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
