//! A gateway's TMP link identity in a cluster. The pod makes its own key — it never leaves
//! the process — and asks for a certificate with a Kubernetes CertificateSigningRequest
//! under the signer `causeway.dev/tmp-link`, which only the operator approves and signs (see
//! the operator's `reconcile::signer`; the rules both follow are
//! [`causeway_api::contract::signing`]). The subject names the pod (`NAMESPACE/POD`), the DNS
//! name is the tier's (`causeway-backend` or `causeway-frontend`), and the certificate lives
//! a day: [`keep_renewed`] asks for the next one at two thirds of that and hands it to the
//! running gateway, whose next links present it.

use std::collections::BTreeMap;
use std::time::Duration;

use causeway_api::contract::signing::{
    self, LINK_SIGNER, MAX_LIFETIME, MIN_LIFETIME, RequestState, subject_common_name,
};
use causeway_link::LinkCredentials;
use causeway_link::tls::TlsError;
use causeway_pki::{PkiError, certificate_request};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::wait::await_condition;
use tokio::sync::watch;

/// How long a gateway waits for the operator to sign.
const SIGNING_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a failed renewal waits before the next try.
const RENEWAL_RETRY: Duration = Duration::from_secs(30);

/// Why no certificate came.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key or request could not be made.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The answer is unusable as link credentials.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The API server refused or failed.
    #[error("certificate request: {0}")]
    Api(#[from] kube::Error),
    /// The operator denied the request.
    #[error("certificate request {name} denied: {reason}")]
    Denied {
        /// The request's name.
        name: String,
        /// The signer's reason.
        reason: String,
    },
    /// Nobody signed in time (is the operator running?).
    #[error(
        "certificate request {0} not signed within {SIGNING_TIMEOUT:?}: is the Causeway operator running?"
    )]
    Timeout(String),
    /// The ConfigMap carries no CA to verify peers with.
    #[error("the configuration carries no link CA (linkCa in the ConfigMap's gateway.yaml)")]
    NoCa,
}

/// Who is asking.
#[derive(Clone, Debug)]
pub struct PodIdentity {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The DNS name of its tier, which peers verify.
    pub server_name: String,
    /// How long certificates should live (the signer keeps it within 10 min .. 24 h).
    pub lifetime: Duration,
}

impl PodIdentity {
    /// The lifetime the signer will give.
    fn granted_lifetime(&self) -> Duration {
        self.lifetime.clamp(MIN_LIFETIME, MAX_LIFETIME)
    }
}

/// Asks for a certificate and waits until it is signed: credentials with `ca_pem` as the
/// trusted CA.
///
/// # Errors
/// [`IdentityError`] when the request is refused, denied or not signed in time.
pub async fn obtain(
    client: &kube::Client,
    identity: &PodIdentity,
    ca_pem: &str,
) -> Result<LinkCredentials, IdentityError> {
    let made = certificate_request(
        &subject_common_name(&identity.namespace, &identity.pod),
        std::slice::from_ref(&identity.server_name),
    )?;
    let requests: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut prefix = format!("causeway-{}-{}-", identity.namespace, identity.pod);
    // Object names are at most 253 characters; the API server appends five.
    prefix.truncate(240);
    let request = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "causeway".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(made.request_pem.into_bytes()),
            signer_name: LINK_SIGNER.to_owned(),
            expiration_seconds: i32::try_from(identity.granted_lifetime().as_secs()).ok(),
            usages: Some(
                ["digital signature", "server auth", "client auth"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let created = requests.create(&PostParams::default(), &request).await?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(request = %name, signer = LINK_SIGNER, "asked for a link certificate");
    let settled = tokio::time::timeout(
        SIGNING_TIMEOUT,
        await_condition(
            requests,
            &name,
            |csr: Option<&CertificateSigningRequest>| {
                csr.is_some_and(|csr| signing::state(csr) == RequestState::Settled)
            },
        ),
    )
    .await
    .map_err(|_| IdentityError::Timeout(name.clone()))?
    .map_err(|e| IdentityError::Timeout(format!("{name} ({e})")))?;
    let status = settled.and_then(|csr| csr.status).unwrap_or_default();
    let Some(certificate) = status.certificate.filter(|c| !c.0.is_empty()) else {
        let reason = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
            .and_then(|c| c.message)
            .unwrap_or_else(|| "no reason given".to_owned());
        return Err(IdentityError::Denied { name, reason });
    };
    let chain = String::from_utf8_lossy(&certificate.0);
    let credentials = LinkCredentials::from_pem(ca_pem, &chain, &made.key_pem)?;
    tracing::info!(request = %name, lifetime_s = identity.granted_lifetime().as_secs(), "link certificate signed");
    Ok(credentials)
}

/// Renews the certificate at two thirds of its life, for as long as `shutdown` stays false,
/// and hands each new one to `install`. A failed renewal is retried every 30 s while the
/// current certificate is still valid; links already up are not touched either way.
pub fn keep_renewed(
    client: kube::Client,
    identity: PodIdentity,
    ca_pem: String,
    install: impl Fn(&LinkCredentials) -> Result<(), String> + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let renew_after = identity.granted_lifetime() * 2 / 3;
        let mut wait = renew_after;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = crate::shutdown::requested(&mut shutdown) => return,
            }
            match obtain(&client, &identity, &ca_pem).await {
                Ok(credentials) => match install(&credentials) {
                    Ok(()) => {
                        tracing::info!("link certificate renewed");
                        wait = renew_after;
                    }
                    Err(error) => {
                        tracing::error!(%error, "renewed link certificate unusable");
                        wait = RENEWAL_RETRY;
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "link certificate renewal failed; retrying");
                    wait = RENEWAL_RETRY;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use causeway_api::contract::signing::BACKEND_CERT_NAME;

    /// The link crate cannot see the contract (it does not depend on the API crate), so its
    /// default server name is checked against it here, where both meet.
    #[test]
    fn the_default_link_server_name_is_the_back_end_certificate_name() {
        assert_eq!(
            causeway_link::settings::DEFAULT_SERVER_NAME,
            BACKEND_CERT_NAME
        );
    }
}
