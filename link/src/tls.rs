//! Mutual TLS for TMP links: every link is authenticated both ways against one CA, so only
//! Causeway gateways holding a certificate that CA signed can open or accept a link.
//!
//! Credentials come from PEM files, from a certificate signing request the gateway makes for
//! a key that never leaves it ([`causeway_pki::certificate_request`], signed in a cluster by
//! the operator through the Kubernetes CertificateSigningRequest API), or from a
//! [`LinkAuthority`] made in memory for `causeway local` and tests. The certificates
//! themselves are `causeway_pki`'s business; this module only turns them into QUIC
//! configurations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use causeway_pki::{LinkAuthority, PkiError, pem};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN token of the TMP protocol; a QUIC peer speaking anything else is refused.
pub const ALPN: &[u8] = b"causeway-tmp/1";

/// Why link credentials are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused a certificate, key or CA.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA set could not build a client verifier.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The TLS configuration cannot run over QUIC (no TLS 1.3 suite).
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
    /// PEM text (not a file) holds nothing usable, or certificates could not be made.
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// A gateway's identity on TMP links: the CA both ends trust, its own chain and key.
#[derive(Debug)]
pub struct LinkCredentials {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for LinkCredentials {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl LinkCredentials {
    /// Loads the CA bundle, certificate chain and private key from PEM files.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pem_error = |path: &Path, reason: String| TlsError::Pem {
            path: path.to_owned(),
            reason,
        };
        let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                .map_err(|e| pem_error(path, e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| pem_error(path, e.to_string()))?;
            if certs.is_empty() {
                return Err(pem_error(path, "no certificate found".into()));
            }
            Ok(certs)
        };
        Ok(Self {
            ca: read_certs(ca)?,
            chain: read_certs(cert)?,
            key: PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e.to_string()))?,
        })
    }

    /// Builds credentials from PEM texts: the CA bundle, the certificate chain, the key.
    ///
    /// # Errors
    /// When a text holds no certificate or no private key.
    pub fn from_pem(ca: &str, chain: &str, key: &str) -> Result<Self, TlsError> {
        Ok(Self {
            ca: pem::certificates("CA certificate", ca)?,
            chain: pem::certificates("certificate chain", chain)?,
            key: pem::private_key(key)?,
        })
    }

    /// Issues credentials for the given DNS names from `authority`, in memory: a fresh key
    /// and a certificate for it, trusting that authority.
    ///
    /// # Errors
    /// When issuing fails.
    pub fn issued_by(authority: &LinkAuthority, names: &[&str]) -> Result<Self, TlsError> {
        let issued = authority.issue_pem(names)?;
        Self::from_pem(&issued.ca, &issued.cert, &issued.key)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.ca {
            roots.add(ca.clone())?;
        }
        Ok(Arc::new(roots))
    }

    /// The QUIC server side: requires a client certificate the CA signed.
    pub fn server_config(&self) -> Result<QuicServerConfig, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots()?, provider()).build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        QuicServerConfig::try_from(config).map_err(|e| TlsError::Quic(e.to_string()))
    }

    /// The QUIC client side: presents this gateway's certificate and checks the server's
    /// against the CA.
    pub fn client_config(&self) -> Result<QuicClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        QuicClientConfig::try_from(config).map_err(|e| TlsError::Quic(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use causeway_pki::{RequestedCertificate, certificate_request};

    use super::*;

    #[test]
    fn a_signed_request_gives_credentials_the_ca_verifies() -> Result<(), TlsError> {
        let authority = LinkAuthority::generate("test CA")?;
        let names = vec!["causeway-backend".to_owned()];
        let made = certificate_request("web/shop-backend-abc", &names)?;
        // What the request itself carries is causeway-pki's test; this one is the link's
        // side: the signed chain makes credentials the CA verifies.
        let request = RequestedCertificate::parse(&made.request_pem)?;
        let chain = authority.sign(&request, std::time::Duration::from_secs(3600))?;
        let credentials = LinkCredentials::from_pem(&authority.ca_pem(), &chain, &made.key_pem)?;
        // rustls checks the key matches the certificate when it builds the configurations.
        credentials.server_config()?;
        credentials.client_config()?;
        Ok(())
    }
}
