//! The Sites handed to gateways: the Site as the API holds it, with origins the gateway can
//! dial, as the gateway configuration document ([`causeway_api::contract::config`]) carries
//! it. Back-ends get every Service origin resolved to endpoint URLs; front-ends never dial
//! origins, so theirs name the Service's cluster DNS name instead — which keeps a front-end's
//! configuration, and so its pods, unchanged when origin endpoints move.

use causeway_api::Site;
use causeway_api::site::{OriginSpec, SiteSpec};

use crate::error::{Error, Result};

/// The Site named `name` in `namespace` with `origins` in place of its own.
///
/// # Errors
/// [`Error::Render`] when `origins` is empty: a Site needs one, and a gateway would refuse it.
pub fn render(
    name: &str,
    namespace: &str,
    spec: &SiteSpec,
    origins: Vec<OriginSpec>,
) -> Result<Site> {
    if origins.is_empty() {
        return Err(Error::Render {
            what: format!("the gateways' copy of Site {namespace}/{name}"),
            reason: "no origin has an address yet".to_owned(),
        });
    }
    let mut spec = spec.clone();
    spec.origins = origins;
    let mut site = Site::new(name, spec);
    site.metadata.namespace = Some(namespace.to_owned());
    Ok(site)
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

/// Fixtures shared by the tests of the `desired` modules.
#[cfg(test)]
pub(crate) mod tests_support {
    use causeway_api::contract::GatewayConfig;
    use causeway_api::site::SiteSpec;
    use k8s_openapi::api::core::v1::ConfigMap;

    use crate::error::{Error, Result};

    /// The configuration document `map` publishes, which must be there and valid.
    pub(crate) fn document(map: &ConfigMap) -> Result<GatewayConfig> {
        let keys: Vec<&String> = map.data.iter().flat_map(|d| d.keys()).collect();
        assert_eq!(
            keys,
            [causeway_api::contract::CONFIG_KEY],
            "exactly one key"
        );
        super::super::published(map)
            .map_err(|e| Error::Render {
                what: "the published document".into(),
                reason: e.to_string(),
            })?
            .ok_or(Error::Render {
                what: "the published document".into(),
                reason: "missing".into(),
            })
    }

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
    use causeway_api::contract::GatewayConfig;

    #[test]
    fn a_rendered_file_parses_back_with_the_given_origins() -> Result<()> {
        let origins = frontend_origins("web", &shop());
        assert_eq!(
            origins[0].url.as_deref(),
            Some("http://shop-origin.web.svc:80")
        );
        let rendered = render("shop", "web", &shop(), origins.clone())?;
        let text = GatewayConfig {
            sites: vec![rendered],
            ..GatewayConfig::default()
        }
        .to_yaml()
        .map_err(|e| render_error(&e))?;
        let mut read = GatewayConfig::from_yaml(&text).map_err(|e| render_error(&e))?;
        let site = read.sites.remove(0);
        assert_eq!(site.metadata.name.as_deref(), Some("shop"));
        assert_eq!(site.metadata.namespace.as_deref(), Some("web"));
        assert_eq!(site.spec.origins, origins);
        assert_eq!(site.spec.hostnames, ["shop.example.com"]);
        Ok(())
    }

    fn render_error(error: &dyn std::fmt::Display) -> Error {
        Error::Render {
            what: "test".into(),
            reason: error.to_string(),
        }
    }

    #[test]
    fn a_site_without_origins_is_not_rendered() {
        assert!(render("shop", "web", &shop(), Vec::new()).is_err());
    }
}
