//! Certificate signing requests: the gateway makes one for a key that never leaves it
//! ([`certificate_request`]); the signer reads it back, its signature checked
//! ([`RequestedCertificate`]), before it decides.

use crate::PkiError;

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
pub fn certificate_request(common_name: &str, names: &[String]) -> Result<KeyAndRequest, PkiError> {
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
    /// [`PkiError::Request`] when it is not a well-formed, well-signed request.
    pub fn parse(pem: &str) -> Result<Self, PkiError> {
        let params = rcgen::CertificateSigningRequestParams::from_pem(pem)
            .map_err(|e| PkiError::Request(e.to_string()))?;
        Ok(Self { params })
    }

    /// What the authority signs from.
    pub(crate) fn params(&self) -> &rcgen::CertificateSigningRequestParams {
        &self.params
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_with_its_subject_and_names() -> Result<(), PkiError> {
        let names = vec!["causeway-backend".to_owned()];
        let made = certificate_request("web/shop-backend-abc", &names)?;
        let request = RequestedCertificate::parse(&made.request_pem)?;
        assert_eq!(request.subject_alt_names(), ["DNS:causeway-backend"]);
        assert_eq!(
            request.common_name().as_deref(),
            Some("web/shop-backend-abc")
        );
        assert!(!request.asks_for_ca());
        Ok(())
    }

    #[test]
    fn a_tampered_request_is_refused() -> Result<(), PkiError> {
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
            Err(PkiError::Request(_))
        ));
        assert!(RequestedCertificate::parse("not a request").is_err());
        Ok(())
    }
}
