//! Site manifests for the gateway's Site files: [`SiteYaml`] builds one Site around test
//! [`Origin`]s, [`manifest`] joins several into one multi-document file.

use crate::origin::Origin;

/// Builds a Site manifest.
pub struct SiteYaml {
    name: String,
    hostnames: Vec<String>,
    origins: Vec<String>,
    spec: String,
}

impl SiteYaml {
    /// A Site named `name` serving `hostname`.
    pub fn new(name: &str, hostname: &str) -> Self {
        Self {
            name: name.to_owned(),
            hostnames: vec![hostname.to_owned()],
            origins: Vec::new(),
            spec: String::new(),
        }
    }

    /// Adds an origin; `fields` are more flow-mapping entries, like `maxInFlight: 4`.
    pub fn origin(self, origin: &Origin, fields: &str) -> Self {
        self.origin_at(&origin.name, &origin.url(), fields)
    }

    /// Adds an origin named `name` at `url` (one that is no [`Origin`], like a
    /// [`crate::raw::RawOrigin`]); `fields` as for [`SiteYaml::origin`].
    pub fn origin_at(mut self, name: &str, url: &str, fields: &str) -> Self {
        let extra = if fields.is_empty() {
            String::new()
        } else {
            format!(", {fields}")
        };
        self.origins
            .push(format!("    - {{ name: {name}, url: \"{url}\"{extra} }}"));
        self
    }

    /// Adds every origin of `origins` with the same `fields`.
    pub fn origins(mut self, origins: &[Origin], fields: &str) -> Self {
        for origin in origins {
            self = self.origin(origin, fields);
        }
        self
    }

    /// Appends raw YAML under `spec:` (written at two-space indentation, as if top level).
    pub fn spec(mut self, yaml: &str) -> Self {
        for line in yaml.lines() {
            self.spec.push_str("  ");
            self.spec.push_str(line);
            self.spec.push('\n');
        }
        self
    }

    /// The manifest text.
    pub fn render(&self) -> String {
        format!(
            "apiVersion: causeway.dev/v1alpha1\nkind: Site\nmetadata:\n  name: {}\nspec:\n  hostnames: [{}]\n  origins:\n{}\n{}",
            self.name,
            self.hostnames.join(", "),
            self.origins.join("\n"),
            self.spec
        )
    }
}

/// Several Sites in one multi-document manifest.
pub fn manifest(sites: &[SiteYaml]) -> String {
    sites
        .iter()
        .map(SiteYaml::render)
        .collect::<Vec<_>>()
        .join("---\n")
}
