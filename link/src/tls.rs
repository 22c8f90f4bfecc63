//! Mutual TLS for TMP links: every link is authenticated both ways against one CA, so only
//! Causeway gateways holding a certificate that CA signed can open or accept a link.
//!
//! Credentials come from PEM files, from a certificate signing request the gateway makes for
//! a key that never leaves it ([`certificate_request`], signed in a cluster by the operator
//! through the Kubernetes CertificateSigningRequest API), or from a [`LinkAuthority`] made
//! in memory for `causeway local` and tests.

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
    /// PEM text (not a file) holds nothing usable.
    #[error("{what}: {reason}")]
    PemText {
        /// Which text.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A signing request is malformed, badly signed, or asks for more than a gateway may have.
    #[error("certificate signing request refused: {0}")]
    Request(String),
}

/// Parses every certificate of a PEM text.
fn certificates_from_pem(
    what: &'static str,
    text: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::PemText {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::PemText {
            what,
            reason: "no certificate found".to_owned(),
        });
    }
    Ok(certs)
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
            ca: certificates_from_pem("CA certificate", ca)?,
            chain: certificates_from_pem("certificate chain", chain)?,
            key: PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| TlsError::PemText {
                what: "private key",
                reason: e.to_string(),
            })?,
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
        LinkCredentials::from_pem(&pem.ca, &pem.cert, &pem.key)
    }

    /// Signs a gateway's request for `lifetime` (from five minutes ago, for clock skew). The
    /// certificate gets the request's subject and DNS names and nothing else it may have
    /// asked for: never a CA, only digital signatures, TLS server and client use.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign(
        &self,
        request: &RequestedCertificate,
        lifetime: std::time::Duration,
    ) -> Result<String, TlsError> {
        let mut request = request.params.clone();
        let params = &mut request.params;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + lifetime;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(
            &fastrand::u64(..).to_be_bytes(),
        ));
        Ok(request.signed_by(&self.issuer)?.pem())
    }
}

/// A private key made here and a signing request for it; only the request leaves.
pub struct KeyAndRequest {
    /// The private key, PEM.
    pub key_pem: String,
    /// The PKCS#10 certificate signing request, PEM.
    pub request_pem: String,
}

impl std::fmt::Debug for KeyAndRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndRequest")
            .field("request_pem", &self.request_pem)
            .finish_non_exhaustive()
    }
}

/// Makes a fresh key (ECDSA P-256) and a signing request for `common_name` and the DNS
/// `names`.
///
/// # Errors
/// When key generation or encoding fails.
pub fn certificate_request(common_name: &str, names: &[String]) -> Result<KeyAndRequest, TlsError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let key = rcgen::KeyPair::generate()?;
    let request = params.serialize_request(&key)?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        request_pem: request.pem()?,
    })
}

/// A parsed signing request whose signature checked out: what a signer looks at before it
/// decides.
#[derive(Debug)]
pub struct RequestedCertificate {
    params: rcgen::CertificateSigningRequestParams,
}

impl RequestedCertificate {
    /// Parses a PEM request and checks it is signed by the key it carries.
    ///
    /// # Errors
    /// [`TlsError::Request`] when it is not a well-formed, well-signed request.
    pub fn parse(pem: &str) -> Result<Self, TlsError> {
        let params = rcgen::CertificateSigningRequestParams::from_pem(pem)
            .map_err(|e| TlsError::Request(e.to_string()))?;
        Ok(Self { params })
    }

    /// The subject alternative names, as text (`DNS:name`, `IP:addr`, `URI:…`, `email:…`).
    pub fn subject_alt_names(&self) -> Vec<String> {
        self.params
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                rcgen::SanType::DnsName(name) => format!("DNS:{}", name.as_str()),
                rcgen::SanType::IpAddress(ip) => format!("IP:{ip}"),
                rcgen::SanType::URI(uri) => format!("URI:{}", uri.as_str()),
                rcgen::SanType::Rfc822Name(mail) => format!("email:{}", mail.as_str()),
                other => format!("other:{other:?}"),
            })
            .collect()
    }

    /// The subject's common name, if any.
    pub fn common_name(&self) -> Option<String> {
        self.params
            .params
            .distinguished_name
            .get(&rcgen::DnType::CommonName)
            .map(|value| match value {
                rcgen::DnValue::Utf8String(s) => s.clone(),
                rcgen::DnValue::PrintableString(s) => s.as_str().to_owned(),
                other => format!("{other:?}"),
            })
    }

    /// Whether the request asks to be a CA.
    pub fn asks_for_ca(&self) -> bool {
        matches!(self.params.params.is_ca, rcgen::IsCa::Ca(_))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_gives_credentials_the_ca_verifies() -> Result<(), TlsError> {
        let authority = LinkAuthority::generate("test CA")?;
        let names = vec!["causeway-backend".to_owned()];
        let made = certificate_request("web/shop-backend-abc", &names)?;
        let request = RequestedCertificate::parse(&made.request_pem)?;
        assert_eq!(request.subject_alt_names(), ["DNS:causeway-backend"]);
        assert_eq!(
            request.common_name().as_deref(),
            Some("web/shop-backend-abc")
        );
        assert!(!request.asks_for_ca());
        let chain = authority.sign(&request, std::time::Duration::from_secs(3600))?;
        let credentials = LinkCredentials::from_pem(&authority.ca_pem(), &chain, &made.key_pem)?;
        // rustls checks the key matches the certificate when it builds the configurations.
        credentials.server_config()?;
        credentials.client_config()?;
        Ok(())
    }

    #[test]
    fn a_tampered_request_is_refused() -> Result<(), TlsError> {
        let made = certificate_request("x", &["causeway-backend".to_owned()])?;
        let body: String = made
            .request_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        // Flip one character inside the signed part.
        let mut bytes = body.into_bytes();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            String::from_utf8_lossy(&bytes)
        );
        assert!(matches!(
            RequestedCertificate::parse(&tampered),
            Err(TlsError::Request(_))
        ));
        assert!(RequestedCertificate::parse("not a request").is_err());
        Ok(())
    }
}
