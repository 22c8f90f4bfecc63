//! Names and labels of the objects the operator makes, so that every module agrees on them:
//! `SITE-backend` for a Site's back-ends, `FRONTEND-frontend` for a Frontend's front-ends,
//! each shortened with a hash when it would exceed the 63 characters of a DNS label.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "causeway-operator";

/// `app.kubernetes.io/name` of everything the operator makes.
pub const APP_NAME: &str = "causeway";

/// Label key: which tier a pod serves (`backend` or `frontend`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Label key: who manages the object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Label key: the Site a back-end object belongs to.
pub const SITE_LABEL: &str = "causeway.dev/site";

/// Label key: the Frontend a front-end object belongs to.
pub const FRONTEND_LABEL: &str = "causeway.dev/frontend";

/// Deployment annotation: the hash of the configuration published in the gateways'
/// ConfigMap. The pods watch the ConfigMap and apply a change live; the operator compares
/// hashes only to tell, in an event, that the configuration changed.
pub const CONFIG_HASH_ANNOTATION: &str = "causeway.dev/config-hash";

/// Pod-template annotation: the hash of what a gateway reads only at start (its link
/// certificate, the client TLS Secret). A change rolls the pods, new before old.
pub const RESTART_HASH_ANNOTATION: &str = "causeway.dev/restart-hash";

/// The Role (and RoleBinding) letting gateway pods read their ConfigMaps in a namespace.
pub const GATEWAY_CONFIG_ROLE: &str = "causeway-gateway-config";

/// The UDP port back-ends take TMP links on.
pub const LINK_PORT: u16 = 4433;

/// The port a front-end serves plain HTTP on inside its pod.
pub const FRONTEND_HTTP_PORT: u16 = 8080;

/// The port a front-end serves HTTPS on inside its pod, for Sites with `tls`.
pub const FRONTEND_HTTPS_PORT: u16 = 8443;

/// The admin port (`/readyz`, `/metrics`) of front-end pods.
pub const FRONTEND_ADMIN_PORT: u16 = 9901;

/// The admin port (`/readyz`, `/metrics`) of back-end pods.
pub const BACKEND_ADMIN_PORT: u16 = 9902;

/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// The tier of a gateway pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Back-end gateways of a Site.
    Backend,
    /// Front-end gateways of a Frontend.
    Frontend,
}

impl Tier {
    /// The component label value and name suffix.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Backend => "backend",
            Self::Frontend => "frontend",
        }
    }

    /// The label key naming the owning resource.
    pub const fn owner_label(self) -> &'static str {
        match self {
            Self::Backend => SITE_LABEL,
            Self::Frontend => FRONTEND_LABEL,
        }
    }
}

/// `name` with `-suffix`, at most 63 characters: a longer result keeps a prefix of `name` and
/// ends in eight hex digits of its hash, so distinct names stay distinct.
pub fn bounded(name: &str, suffix: &str) -> String {
    let full = if suffix.is_empty() {
        name.to_owned()
    } else {
        format!("{name}-{suffix}")
    };
    if full.len() <= MAX_LABEL {
        return full;
    }
    let digest = hex8(name.as_bytes());
    let tail = if suffix.is_empty() {
        digest
    } else {
        format!("{digest}-{suffix}")
    };
    let keep = MAX_LABEL.saturating_sub(tail.len() + 1);
    let prefix: String = name.chars().take(keep).collect();
    format!("{}-{tail}", prefix.trim_end_matches(['-', '.']))
}

/// The name of the Deployment, Service and ConfigMap of `owner`'s gateways in `tier`.
pub fn workload(owner: &str, tier: Tier) -> String {
    bounded(owner, tier.as_str())
}

/// The value of the owner label: the owner's name, bounded like a DNS label.
pub fn label_value(owner: &str) -> String {
    bounded(owner, "")
}

/// The labels that select `owner`'s pods in `tier`.
pub fn selector(owner: &str, tier: Tier) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPONENT_LABEL.to_owned(), tier.as_str().to_owned()),
        (tier.owner_label().to_owned(), label_value(owner)),
    ])
}

/// The selector of `owner`'s pods as `kubectl get -l` text (the scale subresource's form).
pub fn selector_text(owner: &str, tier: Tier) -> String {
    selector(owner, tier)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every label of an object the operator makes for `owner` in `tier`.
pub fn labels(owner: &str, tier: Tier) -> BTreeMap<String, String> {
    let mut labels = selector(owner, tier);
    labels.insert("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned());
    labels.insert(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned());
    labels
}

/// Sixteen hex digits of the SHA-256 of `parts`, each part length-prefixed so that
/// `["ab", "c"]` and `["a", "bc"]` differ: the configuration hash of a pod template.
pub fn content_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex(&hasher.finalize()[..8])
}

fn hex8(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes)[..4])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_keep_their_suffix() {
        assert_eq!(workload("shop", Tier::Backend), "shop-backend");
        assert_eq!(label_value("shop"), "shop");
    }

    #[test]
    fn long_names_are_bounded_and_distinct() {
        let a = "a".repeat(100);
        let b = format!("{}b", "a".repeat(99));
        let (na, nb) = (workload(&a, Tier::Backend), workload(&b, Tier::Backend));
        assert!(na.len() <= 63 && nb.len() <= 63, "{na} {nb}");
        assert!(na.ends_with("-backend"));
        assert_ne!(na, nb);
        assert!(label_value(&a).len() <= 63);
    }

    #[test]
    fn hashes_are_stable_and_framed() {
        let one = content_hash([b"ab".as_slice(), b"c".as_slice()]);
        assert_eq!(one, content_hash([b"ab".as_slice(), b"c".as_slice()]));
        assert_ne!(one, content_hash([b"a".as_slice(), b"bc".as_slice()]));
        assert_eq!(one.len(), 16);
    }

    #[test]
    fn selector_text_is_sorted() {
        assert_eq!(
            selector_text("edge", Tier::Frontend),
            "app.kubernetes.io/component=frontend,causeway.dev/frontend=edge"
        );
    }
}
