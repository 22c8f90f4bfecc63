//! Classification: each request gets a priority class and a request type from the Site's
//! rules, compiled once so that matching costs no allocation on the request path.

use causeway_api::site::{RequestMatch, SiteSpec, ValueMatch};
use http::request::Parts;
use http::{HeaderName, Method};
use regex::Regex;

/// What classification decided about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestProfile {
    /// Priority class, 0 (highest) to 4.
    pub class: u8,
    /// Index of the request type in [`Classifier::type_names`].
    pub request_type: usize,
    /// Load units the request costs an origin.
    pub cost: u32,
}

/// Why a Site's rules could not be compiled (the api crate validates first, so this means
/// a spec that skipped validation).
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// A regular expression does not compile.
    #[error("invalid regular expression {pattern:?}: {source}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// The compiler's complaint.
        source: regex::Error,
    },
    /// A name or method is not valid HTTP.
    #[error("invalid {what} {value:?}")]
    Invalid {
        /// What kind of value.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A rule names a request type with no cost.
    #[error("request type {0:?} has no cost in requestTypes.costs")]
    UnknownType(String),
}

#[derive(Debug)]
enum ValueTest {
    Present,
    Exact(String),
    Pattern(Regex),
}

impl ValueTest {
    fn compile(m: &ValueMatch) -> Result<Self, ClassifyError> {
        Ok(match (&m.value, &m.regex) {
            (Some(value), _) => Self::Exact(value.clone()),
            (None, Some(pattern)) => Self::Pattern(compile_regex(pattern)?),
            (None, None) => Self::Present,
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Present => true,
            Self::Exact(expected) => value == expected,
            Self::Pattern(re) => re.is_match(value),
        }
    }
}

fn compile_regex(pattern: &str) -> Result<Regex, ClassifyError> {
    Regex::new(pattern).map_err(|source| ClassifyError::Regex {
        pattern: pattern.to_owned(),
        source,
    })
}

/// A compiled [`RequestMatch`].
#[derive(Debug, Default)]
struct Matcher {
    path_prefix: Option<String>,
    path_regex: Option<Regex>,
    extensions: Vec<String>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, ValueTest)>,
    cookies: Vec<(String, ValueTest)>,
}

impl Matcher {
    fn compile(m: &RequestMatch) -> Result<Self, ClassifyError> {
        let invalid = |what, value: &str| ClassifyError::Invalid {
            what,
            value: value.to_owned(),
        };
        Ok(Self {
            path_prefix: m.path_prefix.clone(),
            path_regex: m.path_regex.as_deref().map(compile_regex).transpose()?,
            extensions: m
                .extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            methods: m
                .methods
                .iter()
                .map(|name| {
                    Method::from_bytes(name.as_bytes()).map_err(|_| invalid("method", name))
                })
                .collect::<Result<_, _>>()?,
            headers: m
                .headers
                .iter()
                .map(|h| {
                    let name = HeaderName::from_bytes(h.name.as_bytes())
                        .map_err(|_| invalid("header name", &h.name))?;
                    Ok((name, ValueTest::compile(h)?))
                })
                .collect::<Result<_, ClassifyError>>()?,
            cookies: m
                .cookies
                .iter()
                .map(|c| Ok((c.name.clone(), ValueTest::compile(c)?)))
                .collect::<Result<_, ClassifyError>>()?,
        })
    }

    fn matches(&self, request: &Parts) -> bool {
        let path = request.uri.path();
        if self
            .path_prefix
            .as_deref()
            .is_some_and(|prefix| !path.starts_with(prefix))
        {
            return false;
        }
        if self
            .path_regex
            .as_ref()
            .is_some_and(|re| !re.is_match(path))
        {
            return false;
        }
        if !self.extensions.is_empty() {
            let Some(extension) = extension_of(path) else {
                return false;
            };
            if !self
                .extensions
                .iter()
                .any(|e| e.eq_ignore_ascii_case(extension))
            {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.contains(&request.method) {
            return false;
        }
        let header_ok = |(name, test): &(HeaderName, ValueTest)| {
            request
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| test.matches(v)))
        };
        if !self.headers.iter().all(header_ok) {
            return false;
        }
        self.cookies
            .iter()
            .all(|(name, test)| cookie_values(request, name).any(|v| test.matches(v)))
    }
}

/// The extension of the last path segment, without the dot.
fn extension_of(path: &str) -> Option<&str> {
    let segment = path.rsplit('/').next()?;
    let (stem, extension) = segment.rsplit_once('.')?;
    (!stem.is_empty() && !extension.is_empty()).then_some(extension)
}

/// Every value the request's `Cookie` headers give the named cookie.
fn cookie_values<'a>(request: &'a Parts, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// A Site's compiled classification rules.
#[derive(Debug)]
pub struct Classifier {
    default_class: u8,
    priority_rules: Vec<(Matcher, u8)>,
    type_names: Vec<String>,
    type_costs: Vec<u32>,
    default_type: usize,
    type_rules: Vec<(Matcher, usize)>,
}

impl Classifier {
    /// Compiles the priority and request-type rules of a Site.
    pub fn new(spec: &SiteSpec) -> Result<Self, ClassifyError> {
        let type_names: Vec<String> = spec.request_types.costs.keys().cloned().collect();
        let type_costs = spec
            .request_types
            .costs
            .values()
            .map(|&c| c.max(1))
            .collect();
        let index_of = |name: &str| {
            type_names
                .iter()
                .position(|t| t == name)
                .ok_or_else(|| ClassifyError::UnknownType(name.to_owned()))
        };
        Ok(Self {
            default_class: spec.priority.default_class,
            priority_rules: spec
                .priority
                .rules
                .iter()
                .map(|r| Ok((Matcher::compile(&r.matches)?, r.class)))
                .collect::<Result<_, ClassifyError>>()?,
            default_type: index_of(&spec.request_types.default_type)?,
            type_rules: spec
                .request_types
                .rules
                .iter()
                .map(|r| Ok((Matcher::compile(&r.matches)?, index_of(&r.request_type)?)))
                .collect::<Result<_, ClassifyError>>()?,
            type_costs,
            type_names,
        })
    }

    /// Names of the request types, indexed as in [`RequestProfile::request_type`].
    pub fn type_names(&self) -> &[String] {
        &self.type_names
    }

    /// Index of a request type by name.
    pub fn type_index(&self, name: &str) -> Option<usize> {
        self.type_names.iter().position(|t| t == name)
    }

    /// The profile a front-end already gave a request, checked against this Site's types;
    /// `None` when the type index is not one of them (the two ends run different specs).
    pub fn profile(&self, class: u8, request_type: usize) -> Option<RequestProfile> {
        Some(RequestProfile {
            class: class.min(4),
            request_type,
            cost: *self.type_costs.get(request_type)?,
        })
    }

    /// Classifies one request: the first matching rule of each list wins.
    pub fn classify(&self, request: &Parts) -> RequestProfile {
        let class = self
            .priority_rules
            .iter()
            .find(|(m, _)| m.matches(request))
            .map_or(self.default_class, |&(_, class)| class);
        let request_type = self
            .type_rules
            .iter()
            .find(|(m, _)| m.matches(request))
            .map_or(self.default_type, |&(_, t)| t);
        RequestProfile {
            class,
            request_type,
            cost: self.type_costs[request_type],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_api::parse_sites;

    const SITE: &str = r#"
apiVersion: causeway.dev/v1alpha1
kind: Site
metadata: { name: shop }
spec:
  hostnames: [shop.example.com]
  origins: [{ name: a, url: "http://127.0.0.1:1" }]
  priority:
    defaultClass: 3
    rules:
      - class: 0
        match: { pathPrefix: /checkout, methods: [POST] }
      - class: 1
        match: { cookies: [{ name: cart, regex: "^[0-9]+$" }] }
      - class: 4
        match: { headers: [{ name: x-bulk }] }
  requestTypes:
    defaultType: dynamic
    rules:
      - type: static
        match: { extensions: [css, js, png] }
      - type: media
        match: { pathRegex: "^/video/" }
      - type: db
        match: { headers: [{ name: x-query, value: "yes" }] }
"#;

    fn classifier() -> Classifier {
        let sites = parse_sites("test", SITE).expect("valid site");
        Classifier::new(&sites[0].spec).expect("compiles")
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    fn profile(c: &Classifier, p: &Parts) -> (u8, String, u32) {
        let r = c.classify(p);
        (r.class, c.type_names()[r.request_type].clone(), r.cost)
    }

    #[test]
    fn priority_rules_match_in_order() {
        let c = classifier();
        assert_eq!(c.classify(&parts("POST", "/checkout/pay", &[])).class, 0);
        assert_eq!(
            c.classify(&parts("GET", "/checkout/pay", &[])).class,
            3,
            "method must match too"
        );
        assert_eq!(
            c.classify(&parts("GET", "/", &[("cookie", "a=b; cart=42")]))
                .class,
            1
        );
        assert_eq!(
            c.classify(&parts("GET", "/", &[("cookie", "cart=abc")]))
                .class,
            3
        );
        assert_eq!(c.classify(&parts("GET", "/", &[("x-bulk", "1")])).class, 4);
    }

    #[test]
    fn request_types_and_costs() {
        let c = classifier();
        assert_eq!(
            profile(&c, &parts("GET", "/site.CSS?v=1", &[])),
            (3, "static".into(), 1)
        );
        assert_eq!(
            profile(&c, &parts("GET", "/video/a.mp4", &[])),
            (3, "media".into(), 8)
        );
        assert_eq!(
            profile(&c, &parts("GET", "/q", &[("x-query", "yes")])),
            (3, "db".into(), 4)
        );
        assert_eq!(
            profile(&c, &parts("GET", "/q", &[("x-query", "no")])),
            (3, "dynamic".into(), 2)
        );
        assert_eq!(
            profile(&c, &parts("GET", "/.css", &[])).1,
            "dynamic",
            "a dotfile has no extension"
        );
    }
}
