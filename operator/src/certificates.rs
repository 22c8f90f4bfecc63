//! TMP link credentials: one CA, kept in a Secret in the operator's namespace (made on first
//! start, loaded afterwards, so every operator replica and restart issues under the same CA),
//! and one certificate Secret per Site (back-ends, DNS name `causeway-backend`, which the
//! front-ends verify) and per Frontend (front-ends, client certificates). Both ends verify the
//! other against the CA: links are always mutually authenticated.
//!
//! A certificate Secret is issued once and kept while it carries the current CA; the
//! operator never re-issues one that is current, so restarts change nothing. The CA key stays
//! in the operator's namespace: gateway pods get only `ca.crt`, `tls.crt` and `tls.key`.

use std::collections::BTreeMap;

use causeway_tmp::LinkAuthority;
use causeway_tmp::tls::IssuedPem;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use crate::error::{Error, Result};
use crate::names::{self, FIELD_MANAGER, Tier};

/// Secret key of the CA certificate.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Secret key of the CA private key (CA Secret only).
pub const CA_KEY_KEY: &str = "ca.key";
/// Secret key of a gateway certificate.
pub const CERT_KEY: &str = "tls.crt";
/// Secret key of a gateway private key.
pub const KEY_KEY: &str = "tls.key";

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

    /// A certificate for gateways of `tier`, carrying the stored CA text.
    ///
    /// # Errors
    /// When signing fails.
    pub fn issue(&self, tier: Tier) -> Result<IssuedPem> {
        let name = match tier {
            Tier::Backend => names::BACKEND_CERT_NAME,
            Tier::Frontend => names::FRONTEND_CERT_NAME,
        };
        let mut issued = self.authority.issue_pem(&[name])?;
        issued.ca = self.ca_pem.clone();
        Ok(issued)
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

/// Whether `secret` holds a certificate and key issued under the CA `ca_pem`.
pub fn is_current(secret: &Secret, ca_pem: &str) -> bool {
    text(secret, CA_CERT_KEY) == Some(ca_pem)
        && text(secret, CERT_KEY).is_some()
        && text(secret, KEY_KEY).is_some()
}

/// A fingerprint of a certificate Secret's contents, for the pod-template hash.
pub fn fingerprint(secret: &Secret) -> String {
    names::content_hash(
        [CA_CERT_KEY, CERT_KEY, KEY_KEY]
            .iter()
            .map(|key| text(secret, key).unwrap_or_default().as_bytes()),
    )
}

/// The certificate Secret `name` in `namespace`, owned by `owner`.
pub fn link_secret(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: &OwnerReference,
    issued: &IssuedPem,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (CA_CERT_KEY.to_owned(), bytes(&issued.ca)),
            (CERT_KEY.to_owned(), bytes(&issued.cert)),
            (KEY_KEY.to_owned(), bytes(&issued.key)),
        ])),
        ..Secret::default()
    }
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

/// Makes sure the certificate Secret of `owner_name`'s gateways in `tier` exists and carries
/// the current CA, issuing one only when it does not. Returns its fingerprint and whether a
/// certificate was issued.
///
/// # Errors
/// When the API or signing fails.
pub async fn ensure_link_secret(
    client: &kube::Client,
    authority: &Authority,
    namespace: &str,
    owner_name: &str,
    tier: Tier,
    owner: &OwnerReference,
) -> Result<(String, bool)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = names::link_secret(owner_name, tier);
    if let Some(existing) = secrets.get_opt(&name).await?
        && is_current(&existing, authority.ca_pem())
    {
        return Ok((fingerprint(&existing), false));
    }
    let issued = authority.issue(tier)?;
    let secret = link_secret(
        &name,
        namespace,
        names::labels(owner_name, tier),
        owner,
        &issued,
    );
    let applied = secrets
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok((fingerprint(&applied), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "causeway.dev/v1alpha1".into(),
            kind: "Site".into(),
            name: "shop".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn a_reloaded_ca_issues_certificates_the_stored_ca_verifies()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        use rustls::client::WebPkiServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

        let original = Authority::generate()?;
        let data = original.secret_data();
        let pem = |key: &str| String::from_utf8(data[key].0.clone()).unwrap_or_default();
        let reloaded = Authority::from_pem(&pem(CA_CERT_KEY), &pem(CA_KEY_KEY))?;
        assert_eq!(reloaded.ca_pem(), original.ca_pem());

        let issued = reloaded.issue(Tier::Backend)?;
        assert_eq!(issued.ca, original.ca_pem());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(original.ca_pem().as_bytes()).flatten() {
            roots.add(ca)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()?;
        let leaf = CertificateDer::from_pem_slice(issued.cert.as_bytes())?;
        let name = ServerName::try_from(names::BACKEND_CERT_NAME)?;
        verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())?;
        Ok(())
    }

    #[test]
    fn a_secret_is_current_only_under_the_same_ca() -> Result<()> {
        let authority = Authority::generate()?;
        let issued = authority.issue(Tier::Frontend)?;
        let secret = link_secret(
            "edge-frontend-link",
            "web",
            BTreeMap::new(),
            &owner(),
            &issued,
        );
        assert!(is_current(&secret, authority.ca_pem()));
        let other = Authority::generate()?;
        assert!(!is_current(&secret, other.ca_pem()));
        assert_eq!(fingerprint(&secret), fingerprint(&secret.clone()));
        let mut empty = secret;
        empty.data = None;
        assert!(!is_current(&empty, authority.ca_pem()));
        Ok(())
    }
}
