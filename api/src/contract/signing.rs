//! How a gateway pod gets its TMP link certificate, as both sides see it: the pod asks with a
//! Kubernetes CertificateSigningRequest under [`LINK_SIGNER`], its subject naming the pod
//! ([`subject_common_name`]) and its one DNS name its tier's ([`BACKEND_CERT_NAME`],
//! [`FRONTEND_CERT_NAME`]); the operator's signer checks exactly these and signs for a
//! lifetime within [`MIN_LIFETIME`]..=[`MAX_LIFETIME`]; both read where a request stands
//! with [`state`]. The certificates themselves (keys, CSR bytes) are not here: this crate
//! stays free of crypto.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;

/// The signer name of gateways' CertificateSigningRequests: the operator approves and signs
/// those, and only those, with the TMP link CA.
pub const LINK_SIGNER: &str = "causeway.dev/tmp-link";

/// The longest certificate the signer gives; gateways renew well before it ends.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The shortest: the API server's own floor for `expirationSeconds`.
pub const MIN_LIFETIME: Duration = Duration::from_secs(600);

/// The DNS name in back-end certificates; the front-ends verify it (the gateway's default
/// `--link-server-name`).
pub const BACKEND_CERT_NAME: &str = "causeway-backend";

/// The DNS name in front-end (client) certificates.
pub const FRONTEND_CERT_NAME: &str = "causeway-frontend";

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    /// Neither approved nor denied.
    Pending,
    /// Approved, certificate not yet written (the signer stopped in between).
    Approved,
    /// Issued, denied or failed: nothing left to do.
    Settled,
}

/// Where `csr` stands.
pub fn state(csr: &CertificateSigningRequest) -> RequestState {
    let Some(status) = &csr.status else {
        return RequestState::Pending;
    };
    if status.certificate.as_ref().is_some_and(|c| !c.0.is_empty()) {
        return RequestState::Settled;
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let has = |kind: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    if has("Denied") || has("Failed") {
        RequestState::Settled
    } else if has("Approved") {
        RequestState::Approved
    } else {
        RequestState::Pending
    }
}

/// The subject common name of pod `pod` in `namespace`: `NAMESPACE/POD`.
pub fn subject_common_name(namespace: &str, pod: &str) -> String {
    format!("{namespace}/{pod}")
}

/// The namespace and pod a subject common name claims, split at its first `/`; `None` when
/// it has no `/`. Either part may be empty: whether the claim holds is the signer's call.
pub fn parse_subject_common_name(common_name: &str) -> Option<(&str, &str)> {
    common_name.split_once('/')
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };

    use super::*;

    #[test]
    fn a_subject_names_the_pod_and_reads_back() {
        let cn = subject_common_name("web", "shop-backend-1");
        assert_eq!(cn, "web/shop-backend-1");
        assert_eq!(
            parse_subject_common_name(&cn),
            Some(("web", "shop-backend-1"))
        );
        assert_eq!(parse_subject_common_name("shop-backend-1"), None);
        assert_eq!(parse_subject_common_name("web/a/b"), Some(("web", "a/b")));
    }

    #[test]
    fn the_lifetime_bounds_are_ten_minutes_and_a_day() {
        assert_eq!(MIN_LIFETIME, Duration::from_secs(600));
        assert_eq!(MAX_LIFETIME, Duration::from_secs(86_400));
    }

    fn with(certificate: Option<&[u8]>, conditions: &[(&str, &str)]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                certificate: certificate.map(|c| ByteString(c.to_vec())),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(kind, status)| CertificateSigningRequestCondition {
                            type_: (*kind).to_owned(),
                            status: (*status).to_owned(),
                            ..CertificateSigningRequestCondition::default()
                        })
                        .collect(),
                ),
            }),
            ..CertificateSigningRequest::default()
        }
    }

    #[test]
    fn a_request_is_settled_once_issued_denied_or_failed() {
        assert_eq!(
            state(&CertificateSigningRequest::default()),
            RequestState::Pending
        );
        assert_eq!(state(&with(None, &[])), RequestState::Pending);
        assert_eq!(
            state(&with(None, &[("Approved", "False")])),
            RequestState::Pending
        );
        assert_eq!(
            state(&with(None, &[("Approved", "True")])),
            RequestState::Approved
        );
        assert_eq!(
            state(&with(Some(b""), &[("Approved", "True")])),
            RequestState::Approved,
            "an empty certificate is not one"
        );
        assert_eq!(
            state(&with(Some(b"PEM"), &[("Approved", "True")])),
            RequestState::Settled
        );
        for kind in ["Denied", "Failed"] {
            assert_eq!(
                state(&with(None, &[("Approved", "True"), (kind, "True")])),
                RequestState::Settled
            );
        }
    }
}
