//! The Site files handed to gateways: the Site as the API holds it, with origins the sidecar
//! can dial. Back-ends get every Service origin resolved to endpoint URLs; front-ends never
//! dial origins, so theirs name the Service's cluster DNS name instead — which keeps a
//! front-end's configuration, and so its pods, unchanged when origin endpoints move.

use causeway_api::site::{OriginSpec, SiteSpec};
use causeway_api::{API_VERSION, Site};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::{Error, Result};

/// The YAML of a Site named `name` in `namespace` with `origins` in place of its own.
///
/// # Errors
/// [`Error::Render`] when `origins` is empty (a Site needs one) or serialization fails.
pub fn render(
    name: &str,
    namespace: &str,
    spec: &SiteSpec,
    origins: Vec<OriginSpec>,
) -> Result<String> {
    if origins.is_empty() {
        return Err(Error::Render {
            what: format!("the Site file of {namespace}/{name}"),
            reason: "no origin has an address yet".to_owned(),
        });
    }
    let mut spec = spec.clone();
    spec.origins = origins;
    let document = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "Site",
        "metadata": ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        "spec": spec,
    });
    serde_yaml_ng::to_string(&document).map_err(|e| Error::Render {
        what: format!("the Site file of {namespace}/{name}"),
        reason: e.to_string(),
    })
}

/// The front-end view of `spec`'s origins: Service origins as `http://NAME.NAMESPACE.svc:PORT`.
pub fn frontend_origins(namespace: &str, spec: &SiteSpec) -> Vec<OriginSpec> {
    spec.origins
        .iter()
        .map(|origin| {
            let mut origin = origin.clone();
            if let Some(service) = origin.service.take() {
                origin.url = Some(format!(
                    "http://{}.{namespace}.svc:{}",
                    service.name, service.port
                ));
            }
            origin
        })
        .collect()
}

/// The Site a file rendered by [`render`] holds, for tests and checks.
///
/// # Errors
/// When the text is not exactly one valid Site.
pub fn parse(text: &str) -> Result<Site> {
    let mut sites = causeway_api::parse_sites("site file", text).map_err(|e| Error::Render {
        what: "a Site file".to_owned(),
        reason: e.to_string(),
    })?;
    match (sites.pop(), sites.is_empty()) {
        (Some(site), true) => Ok(site),
        _ => Err(Error::Render {
            what: "a Site file".to_owned(),
            reason: "expected exactly one Site".to_owned(),
        }),
    }
}

/// Fixtures shared by the tests of the `desired` modules.
#[cfg(test)]
pub(crate) mod tests_support {
    use causeway_api::site::SiteSpec;

    /// A Site with a primary Service origin and a URL mirror.
    pub(crate) fn shop() -> SiteSpec {
        serde_yaml_ng::from_str(
            r#"
hostnames: [shop.example.com]
origins:
  - { name: main, service: { name: shop-origin, port: 80 }, primary: true }
  - { name: mirror, url: "http://192.0.2.1:8080" }
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::shop;
    use super::*;

    #[test]
    fn a_rendered_file_parses_back_with_the_given_origins() -> Result<()> {
        let origins = frontend_origins("web", &shop());
        assert_eq!(
            origins[0].url.as_deref(),
            Some("http://shop-origin.web.svc:80")
        );
        let text = render("shop", "web", &shop(), origins.clone())?;
        let site = parse(&text)?;
        assert_eq!(site.metadata.name.as_deref(), Some("shop"));
        assert_eq!(site.spec.origins, origins);
        assert_eq!(site.spec.hostnames, ["shop.example.com"]);
        Ok(())
    }

    #[test]
    fn a_site_without_origins_is_not_rendered() {
        assert!(render("shop", "web", &shop(), Vec::new()).is_err());
    }
}
