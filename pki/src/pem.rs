//! PEM texts (not files) to the DER certificates and keys rustls and rcgen take.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::PkiError;

/// Every certificate of a PEM text; `what` names the text in the error.
///
/// # Errors
/// [`PkiError::PemText`] when the text is not PEM or holds no certificate.
pub fn certificates(
    what: &'static str,
    text: &str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| PkiError::PemText {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::PemText {
            what,
            reason: "no certificate found".to_owned(),
        });
    }
    Ok(certs)
}

/// The first certificate of a PEM text.
///
/// # Errors
/// [`PkiError::PemText`] when the text holds no certificate.
pub fn certificate(what: &'static str, text: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(text.as_bytes()).map_err(|e| PkiError::PemText {
        what,
        reason: e.to_string(),
    })
}

/// The private key of a PEM text.
///
/// # Errors
/// [`PkiError::PemText`] when the text holds no private key.
pub fn private_key(text: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| PkiError::PemText {
        what: "private key",
        reason: e.to_string(),
    })
}

/// The first common name (OID 2.5.4.3, UTF8String or PrintableString) in a DER certificate:
/// in a self-signed certificate the issuer's, which is also the subject's. A byte scan is
/// enough for the certificates [`LinkAuthority::generate`](crate::LinkAuthority::generate)
/// makes.
pub(crate) fn first_common_name(der: &[u8]) -> Option<String> {
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
    fn texts_without_certificates_or_keys_are_refused_with_their_name() {
        let error = certificates("CA certificate", "not PEM").err();
        assert_eq!(
            error.map(|e| e.to_string()).as_deref(),
            Some("CA certificate: no certificate found")
        );
        assert!(private_key("not PEM").is_err());
    }
}
