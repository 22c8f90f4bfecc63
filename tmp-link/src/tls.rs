//! Mutual TLS for TMP links: every link is authenticated both ways against one CA, so only
//! Causeway gateways holding a certificate that CA signed can open or accept a link.
//!
//! Credentials come from PEM files (a mounted Secret in a cluster), or from a
//! [`LinkAuthority`] made in memory for `causeway local` and tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Generating certificates in memory failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
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

/// A certificate authority held in memory, issuing link certificates (local mode, tests, and
/// the operator when no cert-manager is present).
pub struct LinkAuthority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for LinkAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkAuthority").finish_non_exhaustive()
    }
}

/// PEM texts of an issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedPem {
    /// The CA certificate.
    pub ca: String,
    /// The gateway's certificate.
    pub cert: String,
    /// The gateway's private key.
    pub key: String,
}

impl LinkAuthority {
    /// A new CA with a fresh key.
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's private key, PEM: with [`ca_pem`](Self::ca_pem) what a Secret must keep so
    /// that [`from_pem`](Self::from_pem) can load the same authority after a restart.
    pub fn ca_key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Loads an authority kept as PEM (a certificate made by [`generate`](Self::generate)
    /// and its key).
    ///
    /// The issuer is rebuilt from the key and the certificate's common name, so certificates
    /// it issues carry the same issuer name and key identifier and verify against the stored
    /// CA certificate. [`ca_pem`](Self::ca_pem) of a loaded authority is a re-signed copy of
    /// that certificate (same subject and key); callers that publish the CA should publish the
    /// stored text.
    ///
    /// # Errors
    /// When the key is not a PEM private key, the certificate is not PEM or has no common name.
    pub fn from_pem(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::from_pem(ca_key_pem)?;
        let der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
            .map_err(|e| TlsError::Quic(format!("the CA certificate is not PEM: {e}")))?;
        let common_name = first_common_name(&der).ok_or_else(|| {
            TlsError::Quic("the CA certificate has no UTF-8 common name".to_owned())
        })?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key)?;
        Ok(Self { issuer })
    }

    /// Issues a certificate for the given DNS names, PEM.
    pub fn issue_pem(&self, names: &[&str]) -> Result<IssuedPem, TlsError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names)?;
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedPem {
            ca: self.ca_pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// Issues credentials for the given DNS names, in memory.
    pub fn issue(&self, names: &[&str]) -> Result<LinkCredentials, TlsError> {
        let pem = self.issue_pem(names)?;
        let parse = |text: &str| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Quic(e.to_string()))
        };
        Ok(LinkCredentials {
            ca: parse(&pem.ca)?,
            chain: parse(&pem.cert)?,
            key: PrivateKeyDer::from_pem_slice(pem.key.as_bytes())
                .map_err(|e| TlsError::Quic(e.to_string()))?,
        })
    }
}

/// The first common name (OID 2.5.4.3, UTF8String or PrintableString) in a DER certificate:
/// in a self-signed certificate the issuer's, which is also the subject's. A byte scan is
/// enough for the certificates [`LinkAuthority::generate`] makes.
fn first_common_name(der: &[u8]) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der.windows(CN_OID.len()).position(|w| w == CN_OID)? + CN_OID.len();
    let tag = *der.get(at)?;
    let length = usize::from(*der.get(at + 1)?);
    if !matches!(tag, 0x0c | 0x13) || length >= 0x80 {
        return None;
    }
    let value = der.get(at + 2..at + 2 + length)?;
    String::from_utf8(value.to_vec()).ok()
}
