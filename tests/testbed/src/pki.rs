//! Per-run certificates and keys: a cluster CA, the API server's serving certificate, client
//! certificates for the admin and the controller manager, and the service-account signing key.
//! Everything is generated fresh for each test bed and never leaves its run dir.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::{IoContext, Result};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// The files of one run's public-key infrastructure.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA; it signs every other certificate and is the client CA of the API server.
    pub ca: CertFiles,
    /// The API server's serving certificate (127.0.0.1, localhost, kubernetes.default...).
    pub apiserver: CertFiles,
    /// A `system:masters` client certificate for the harness, kubectl and the test kubelet.
    pub admin: CertFiles,
    /// The controller manager's client certificate (`system:kube-controller-manager`).
    pub controller_manager: CertFiles,
    /// The private key that signs service-account tokens (PKCS#8 PEM).
    pub service_account_key: PathBuf,
    /// Its public key, which verifies them (SPKI PEM).
    pub service_account_public_key: PathBuf,
}

/// Generates a CA, the serving and client certificates and the service-account key in `dir`.
///
/// # Errors
/// When a key or certificate cannot be generated or a file cannot be written.
pub fn generate(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "causeway-testbed-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let ca_files = write_pair(dir, "ca", &ca.pem(), &ca.key().serialize_pem())?;

    let apiserver = leaf(
        &ca,
        dir,
        "apiserver",
        "kube-apiserver",
        &[],
        &[
            "127.0.0.1",
            "::1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let admin = leaf(
        &ca,
        dir,
        "admin",
        "causeway-testbed-admin",
        &["system:masters"],
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let controller_manager = leaf(
        &ca,
        dir,
        "controller-manager",
        "system:kube-controller-manager",
        &[],
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    let service_account = KeyPair::generate()?;
    let service_account_key = dir.join("service-account.key");
    write(&service_account_key, &service_account.serialize_pem())?;
    let service_account_public_key = dir.join("service-account.pub");
    write(
        &service_account_public_key,
        &service_account.public_key_pem(),
    )?;

    Ok(Pki {
        ca: ca_files,
        apiserver,
        admin,
        controller_manager,
        service_account_key,
        service_account_public_key,
    })
}

/// Generates a certificate signed by `issuer` and writes it and its key as `NAME.crt`/`NAME.key`.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    dir: &Path,
    name: &str,
    common_name: &str,
    organizations: &[&str],
    subject_alt_names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertFiles> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(
        subject_alt_names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>(),
    )?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for organization in organizations {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *organization);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer)?;
    write_pair(dir, name, &cert.pem(), &key.serialize_pem())
}

fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> Result<CertFiles> {
    let files = CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    write(&files.cert, cert)?;
    write(&files.key, key)?;
    Ok(files)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("causeway-pki-test-{}", std::process::id()));
        let pki = generate(&dir)?;
        for path in [
            &pki.ca.cert,
            &pki.ca.key,
            &pki.apiserver.cert,
            &pki.admin.key,
            &pki.controller_manager.cert,
            &pki.service_account_key,
            &pki.service_account_public_key,
        ] {
            let text = std::fs::read_to_string(path).context(|| path.display().to_string())?;
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
        }
        std::fs::remove_dir_all(&dir).context(|| "cleaning up".to_owned())?;
        Ok(())
    }
}
