//! Turns a container spec into a local command: maps the image to a binary, resolves the
//! environment (values, downward-API fields, ConfigMap and Secret keys) and expands `$(VAR)`
//! references in the command and arguments, as the kubelet does.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

/// Maps Causeway's images to freshly built local binaries.
#[derive(Debug, Clone)]
pub struct ImageMap {
    causeway_bin: PathBuf,
}

/// The local command a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCommand {
    /// The program: a path, or a name looked up on PATH.
    pub program: String,
    /// Its arguments, `$(VAR)` references expanded.
    pub args: Vec<String>,
}

impl ImageMap {
    /// Maps every image whose name contains `causeway` to `causeway_bin`, or to the binary
    /// named like the image (such as `causeway-operator`) next to it when there is one.
    pub fn new(causeway_bin: impl Into<PathBuf>) -> Self {
        Self {
            causeway_bin: causeway_bin.into(),
        }
    }

    /// The `causeway` binary.
    pub fn causeway_bin(&self) -> &Path {
        &self.causeway_bin
    }

    /// The command `container` runs, with `env` for `$(VAR)` expansion. A `command` whose
    /// first word names a Causeway binary (`causeway`, `/usr/local/bin/causeway-operator`)
    /// runs the local build of it; any other first word runs as given on this machine.
    ///
    /// # Errors
    /// A message for the pod's status when the image is not one of Causeway's.
    pub fn command(
        &self,
        container: &Container,
        env: &[(String, String)],
    ) -> Result<LocalCommand, String> {
        let image = container.image.as_deref().unwrap_or_default();
        let name = image_name(image);
        if !name.contains("causeway") {
            return Err(format!(
                "image {image:?} cannot run here: the test kubelet runs only Causeway's images \
                 (a name containing \"causeway\"), as the local build {}",
                self.causeway_bin.display()
            ));
        }
        let lookup = |var: &str| {
            env.iter()
                .rev()
                .find(|(name, _)| name == var)
                .map(|(_, value)| value.as_str())
        };
        let command: Vec<String> = container
            .command
            .iter()
            .flatten()
            .map(|word| expand(word, lookup))
            .collect();
        let args = container
            .args
            .iter()
            .flatten()
            .map(|word| expand(word, lookup));
        match command.split_first() {
            Some((first, rest)) => Ok(LocalCommand {
                program: self.local_binary(first).unwrap_or_else(|| first.clone()),
                args: rest.iter().cloned().chain(args).collect(),
            }),
            None => Ok(LocalCommand {
                program: self
                    .local_binary(name)
                    .unwrap_or_else(|| self.causeway_bin.display().to_string()),
                args: args.collect(),
            }),
        }
    }

    /// The local build of the Causeway binary `word` names, if it is one.
    fn local_binary(&self, word: &str) -> Option<String> {
        let base = word.rsplit('/').next().unwrap_or(word);
        if base == "causeway" {
            return Some(self.causeway_bin.display().to_string());
        }
        let sibling = self.causeway_bin.parent()?.join(base);
        (base.starts_with("causeway") && sibling.is_file()).then(|| sibling.display().to_string())
    }
}

/// The image's name without registry, path, tag or digest: `causeway` for
/// `ghcr.io/org/causeway:1.0`.
pub fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// Expands `$(VAR)` with `lookup`, leaving unknown references as they are; `$$` is a literal `$`.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match lookup(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// ConfigMaps and Secrets of the pod's namespace that its containers refer to, by name.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// ConfigMap data.
    pub config_maps: HashMap<String, BTreeMap<String, String>>,
    /// Secret data, decoded (lossily) as UTF-8.
    pub secrets: HashMap<String, BTreeMap<String, String>>,
}

/// The names of the ConfigMaps and Secrets `container` reads its environment from.
pub fn referenced_sources(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for from in container.env_from.iter().flatten() {
        if let Some(source) = &from.config_map_ref {
            config_maps.push(source.name.clone());
        }
        if let Some(source) = &from.secret_ref {
            secrets.push(source.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(key) = &from.config_map_key_ref {
            config_maps.push(key.name.clone());
        }
        if let Some(key) = &from.secret_key_ref {
            secrets.push(key.name.clone());
        }
    }
    (config_maps, secrets)
}

/// The addresses of a pod's downward-API fields.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// `status.podIP`.
    pub pod_ip: Ipv4Addr,
    /// `status.hostIP`.
    pub host_ip: Ipv4Addr,
}

/// The environment `container` declares: `envFrom` first, then `env` (later wins), with
/// `$(VAR)` references to earlier variables expanded.
///
/// # Errors
/// A message for the pod's status when a referenced field, ConfigMap key or Secret key is
/// missing and not optional.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    addresses: Addresses,
    sources: &Sources,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (data, name, optional) = if let Some(source) = &from.config_map_ref {
            (
                sources.config_maps.get(&source.name),
                &source.name,
                source.optional,
            )
        } else if let Some(source) = &from.secret_ref {
            (
                sources.secrets.get(&source.name),
                &source.name,
                source.optional,
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                env.extend(
                    data.iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
                );
            }
            None if optional == Some(true) => {}
            None => return Err(format!("envFrom source {name:?} not found")),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, &field.field_path, addresses).ok_or_else(|| {
                        format!(
                            "env {}: unsupported fieldPath {:?}",
                            var.name, field.field_path
                        )
                    })?
                } else if let Some(key) = &from.config_map_key_ref {
                    match sources
                        .config_maps
                        .get(&key.name)
                        .and_then(|d| d.get(&key.key))
                    {
                        Some(value) => value.clone(),
                        None if key.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "env {}: key {:?} of ConfigMap {:?} not found",
                                var.name, key.key, key.name
                            ));
                        }
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    match sources.secrets.get(&key.name).and_then(|d| d.get(&key.key)) {
                        Some(value) => value.clone(),
                        None if key.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "env {}: key {:?} of Secret {:?} not found",
                                var.name, key.key, key.name
                            ));
                        }
                    }
                } else if from.resource_field_ref.is_some() {
                    // Resource limits are not enforced on local processes; report "no limit".
                    "0".to_owned()
                } else {
                    return Err(format!("env {}: unsupported valueFrom", var.name));
                }
            }
            (Some(value), None) => {
                let known = env.clone();
                expand(value, |name| {
                    known
                        .iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                })
            }
            (None, None) => String::new(),
        };
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

/// The value of a downward-API `fieldPath`, or `None` when it is not supported.
pub fn field_value(pod: &Pod, path: &str, addresses: Addresses) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some(key) = subscript(path, "metadata.labels") {
        return Some(meta.labels.as_ref()?.get(key).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Some(
            meta.annotations
                .as_ref()?
                .get(key)
                .cloned()
                .unwrap_or_default(),
        );
    }
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec?.node_name.clone(),
        "spec.serviceAccountName" => Some(
            spec?
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
        ),
        "status.podIP" | "status.podIPs" => Some(addresses.pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(addresses.host_ip.to_string()),
        _ => None,
    }
}

/// `key` of `prefix['key']`.
fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "a", "containers": [{
                "name": "main",
                "image": "registry.example/causeway:dev",
                "args": ["origin", "--listen", "$(POD_IP):8080", "$$(POD_IP)", "$(NOPE)"],
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "URL", "value": "http://$(POD_IP):8080/"},
                ],
            }]},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn addresses() -> Addresses {
        Addresses {
            pod_ip: Ipv4Addr::new(127, 64, 1, 2),
            host_ip: Ipv4Addr::new(127, 64, 1, 1),
        }
    }

    #[test]
    fn resolves_env_and_expands_arguments() -> Result<(), String> {
        let pod = pod();
        let container = &pod.spec.as_ref().ok_or("spec")?.containers[0];
        let env = container_env(&pod, container, addresses(), &Sources::default())?;
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("POD_IP"), Some("127.64.1.2"));
        assert_eq!(get("POD_NAME"), Some("web-1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("URL"), Some("http://127.64.1.2:8080/"));

        let command = ImageMap::new("/build/causeway").command(container, &env)?;
        assert_eq!(command.program, "/build/causeway");
        assert_eq!(
            command.args,
            [
                "origin",
                "--listen",
                "127.64.1.2:8080",
                "$(POD_IP)",
                "$(NOPE)"
            ]
        );
        Ok(())
    }

    #[test]
    fn refuses_foreign_images() {
        let container: Container =
            serde_json::from_value(serde_json::json!({"name": "c", "image": "nginx:1.27"}))
                .unwrap_or_else(|e| panic!("{e}"));
        let err = ImageMap::new("/build/causeway")
            .command(&container, &[])
            .err();
        assert!(err.is_some_and(|e| e.contains("nginx")));
    }

    #[test]
    fn names_images() {
        assert_eq!(image_name("causeway"), "causeway");
        assert_eq!(
            image_name("ghcr.io/org/causeway-operator:1.2@sha256:ab"),
            "causeway-operator"
        );
        assert_eq!(image_name("localhost:5000/causeway"), "causeway");
    }
}
