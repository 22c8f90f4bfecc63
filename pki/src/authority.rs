//! The link CA: a certificate authority whose key is held in memory, issuing and signing TMP
//! link certificates.

use std::time::Duration;

use crate::request::RequestedCertificate;
use crate::{PkiError, pem};

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

/// The parameters of a CA certificate named `common_name`: it may sign certificates and
/// revocation lists, and nothing else.
fn ca_params(common_name: &str) -> Result<rcgen::CertificateParams, PkiError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    Ok(params)
}

impl LinkAuthority {
    /// A new CA with a fresh key.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let issuer = rcgen::CertifiedIssuer::self_signed(
            ca_params(common_name)?,
            rcgen::KeyPair::generate()?,
        )?;
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
    pub fn from_pem(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Self, PkiError> {
        let key = rcgen::KeyPair::from_pem(ca_key_pem)?;
        let der = pem::certificate("the CA certificate", ca_cert_pem)?;
        let common_name = pem::first_common_name(&der).ok_or_else(|| {
            PkiError::Authority("the CA certificate has no UTF-8 common name".to_owned())
        })?;
        let issuer = rcgen::CertifiedIssuer::self_signed(ca_params(&common_name)?, key)?;
        Ok(Self { issuer })
    }

    /// Issues a certificate and a fresh key for the given DNS names, PEM.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn issue_pem(&self, names: &[&str]) -> Result<IssuedPem, PkiError> {
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

    /// Signs a gateway's request for `lifetime` (from five minutes ago, for clock skew). The
    /// certificate gets the request's subject and DNS names and nothing else it may have
    /// asked for: never a CA, only digital signatures, TLS server and client use.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign(
        &self,
        request: &RequestedCertificate,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let mut request = request.params().clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate_request;

    #[test]
    fn a_reloaded_authority_keeps_its_name_and_key() -> Result<(), PkiError> {
        let original = LinkAuthority::generate("test CA")?;
        let reloaded = LinkAuthority::from_pem(&original.ca_pem(), &original.ca_key_pem())?;
        assert_eq!(reloaded.ca_key_pem(), original.ca_key_pem());
        let cn = |authority: &LinkAuthority| {
            pem::certificate("CA", &authority.ca_pem())
                .ok()
                .and_then(|der| pem::first_common_name(&der))
        };
        assert_eq!(cn(&reloaded).as_deref(), Some("test CA"));
        assert_eq!(cn(&original), cn(&reloaded));
        Ok(())
    }

    #[test]
    fn a_kept_authority_that_is_not_pem_is_refused() -> Result<(), PkiError> {
        let original = LinkAuthority::generate("test CA")?;
        assert!(matches!(
            LinkAuthority::from_pem("not PEM", &original.ca_key_pem()),
            Err(PkiError::PemText { .. })
        ));
        assert!(LinkAuthority::from_pem(&original.ca_pem(), "not PEM").is_err());
        Ok(())
    }

    #[test]
    fn issued_and_signed_certificates_are_pem() -> Result<(), PkiError> {
        let authority = LinkAuthority::generate("test CA")?;
        let issued = authority.issue_pem(&["causeway-backend"])?;
        assert_eq!(issued.ca, authority.ca_pem());
        assert_eq!(pem::certificates("certificate", &issued.cert)?.len(), 1);
        pem::private_key(&issued.key)?;
        let made = certificate_request("web/p", &["causeway-backend".to_owned()])?;
        let request = RequestedCertificate::parse(&made.request_pem)?;
        let signed = authority.sign(&request, Duration::from_secs(3600))?;
        assert_eq!(pem::certificates("certificate", &signed)?.len(), 1);
        Ok(())
    }
}
