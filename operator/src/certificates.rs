//! The TMP link CA: one CA, kept in a Secret in the operator's namespace (made on first
//! start, loaded afterwards, so every operator replica and restart signs under the same CA).
//! Gateways never see its key: each gateway pod makes its own key and asks for a certificate
//! through a CertificateSigningRequest, which [`crate::reconcile::signer`] signs here; the
//! CA certificate reaches the pods in their ConfigMap. Both ends of a link verify the other
//! against the CA: links are always mutually authenticated.

use std::collections::BTreeMap;
use std::time::Duration;

use causeway_pki::{LinkAuthority, RequestedCertificate};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

use crate::error::{Error, Result};
use crate::names::{self, FIELD_MANAGER};

/// Secret key of the CA certificate.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Secret key of the CA private key (CA Secret only).
pub const CA_KEY_KEY: &str = "ca.key";

/// The CA common name of generated authorities.
const CA_COMMON_NAME: &str = "causeway TMP link CA";

/// The link CA: the authority that issues, and the CA certificate text gateways trust.
pub struct Authority {
    authority: LinkAuthority,
    ca_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new CA.
    ///
    /// # Errors
    /// When key generation fails.
    pub fn generate() -> Result<Self> {
        let authority = LinkAuthority::generate(CA_COMMON_NAME)?;
        let ca_pem = authority.ca_pem();
        Ok(Self { authority, ca_pem })
    }

    /// The CA kept in a Secret's `ca.crt` and `ca.key`.
    ///
    /// # Errors
    /// When the PEM texts are not a CA certificate and its key.
    pub fn from_pem(ca_pem: &str, key_pem: &str) -> Result<Self> {
        Ok(Self {
            authority: LinkAuthority::from_pem(ca_pem, key_pem)?,
            ca_pem: ca_pem.to_owned(),
        })
    }

    /// The CA certificate, PEM, as stored.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Signs a gateway's request, valid for `lifetime`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign(&self, request: &RequestedCertificate, lifetime: Duration) -> Result<String> {
        Ok(self.authority.sign(request, lifetime)?)
    }

    /// The CA Secret's data.
    pub fn secret_data(&self) -> BTreeMap<String, ByteString> {
        BTreeMap::from([
            (CA_CERT_KEY.to_owned(), bytes(&self.ca_pem)),
            (CA_KEY_KEY.to_owned(), bytes(&self.authority.ca_key_pem())),
        ])
    }
}

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

fn text<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    let data = secret.data.as_ref()?.get(key)?;
    std::str::from_utf8(&data.0).ok().filter(|t| !t.is_empty())
}

/// Loads the CA from Secret `name` in `namespace`, or makes one and stores it there. When
/// two replicas race to create it, the loser loads the winner's.
///
/// # Errors
/// When the API fails, or the Secret exists but does not hold a usable CA.
pub async fn load_or_create_ca(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Authority> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(secret) = secrets.get_opt(name).await? {
        return from_secret(&secret, namespace, name);
    }
    let authority = Authority::generate()?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                names::MANAGED_BY_LABEL.to_owned(),
                FIELD_MANAGER.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(authority.secret_data()),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(namespace, name, "made the TMP link CA");
            Ok(authority)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = secrets.get(name).await?;
            from_secret(&secret, namespace, name)
        }
        Err(error) => Err(error.into()),
    }
}

fn from_secret(secret: &Secret, namespace: &str, name: &str) -> Result<Authority> {
    let bad = |reason: &str| Error::BadSecret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let cert = text(secret, CA_CERT_KEY).ok_or_else(|| bad("no ca.crt"))?;
    let key = text(secret, CA_KEY_KEY).ok_or_else(|| bad("no ca.key"))?;
    Authority::from_pem(cert, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_ca_signs_requests_the_stored_ca_verifies()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        use causeway_api::contract::signing::BACKEND_CERT_NAME;
        use causeway_pki::certificate_request;
        use rustls::client::WebPkiServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

        let original = Authority::generate()?;
        let data = original.secret_data();
        let pem = |key: &str| String::from_utf8(data[key].0.clone()).unwrap_or_default();
        let reloaded = Authority::from_pem(&pem(CA_CERT_KEY), &pem(CA_KEY_KEY))?;
        assert_eq!(reloaded.ca_pem(), original.ca_pem());

        let made = certificate_request("web/p", &[BACKEND_CERT_NAME.to_owned()])?;
        let request = RequestedCertificate::parse(&made.request_pem)?;
        let signed = reloaded.sign(&request, Duration::from_secs(3600))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(original.ca_pem().as_bytes()).flatten() {
            roots.add(ca)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()?;
        let leaf = CertificateDer::from_pem_slice(signed.as_bytes())?;
        let name = ServerName::try_from(BACKEND_CERT_NAME)?;
        verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())?;
        Ok(())
    }
}
