//! Volumes without mounts: ConfigMap, Secret, projected, downward-API and emptyDir volumes are
//! written into the pod dir (`volumes/NAME`), and a container's `mountPath`s are rewritten to
//! those dirs wherever they appear in its command, arguments and environment. So a container
//! run with `--config /etc/causeway/site.yaml` reads the file its ConfigMap holds, without
//! touching the host's `/etc`. Files are written once, when the pod starts.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};

use super::container::{Addresses, Sources, field_value};

/// One file of a volume: its path inside the volume and its contents.
pub type VolumeFile = (String, Vec<u8>);

/// The names of the ConfigMaps and Secrets the pod's volumes read.
pub fn referenced_sources(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(source) = &volume.config_map {
            config_maps.push(source.name.clone());
        }
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(name);
        }
        for projection in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(source) = &projection.config_map {
                config_maps.push(source.name.clone());
            }
            if let Some(source) = &projection.secret {
                secrets.push(source.name.clone());
            }
        }
    }
    (config_maps, secrets)
}

/// What a pod's volumes need besides the API objects.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its addresses, for downward-API files.
    pub addresses: Addresses,
    /// The pod's service-account token, for projected token files.
    pub token: Option<&'a str>,
    /// The cluster CA (PEM), for projected `kube-root-ca.crt`-style files.
    pub ca_pem: &'a str,
}

/// The files of `volume`, or `None` for a volume kind that is not supported (it is left empty).
///
/// # Errors
/// A message when a referenced ConfigMap, Secret or key is missing and not optional.
pub fn volume_files(
    volume: &Volume,
    sources: &Sources,
    context: Context<'_>,
) -> Result<Option<Vec<VolumeFile>>, String> {
    if volume.empty_dir.is_some() {
        return Ok(Some(Vec::new()));
    }
    if let Some(source) = &volume.config_map {
        return keyed_files(
            "ConfigMap",
            &source.name,
            sources.config_maps.get(&source.name),
            source.items.as_deref(),
            source.optional == Some(true),
        )
        .map(Some);
    }
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        return keyed_files(
            "Secret",
            &name,
            sources.secrets.get(&name),
            source.items.as_deref(),
            source.optional == Some(true),
        )
        .map(Some);
    }
    if let Some(source) = &volume.downward_api {
        let mut files = Vec::new();
        for item in source.items.iter().flatten() {
            if let Some(field) = &item.field_ref {
                let value = field_value(context.pod, &field.field_path, context.addresses)
                    .ok_or_else(|| format!("unsupported fieldPath {:?}", field.field_path))?;
                files.push((item.path.clone(), value.into_bytes()));
            }
        }
        return Ok(Some(files));
    }
    if let Some(projected) = &volume.projected {
        let mut files = Vec::new();
        for projection in projected.sources.iter().flatten() {
            if let Some(source) = &projection.config_map {
                files.extend(keyed_files(
                    "ConfigMap",
                    &source.name,
                    sources.config_maps.get(&source.name),
                    source.items.as_deref(),
                    source.optional == Some(true),
                )?);
            }
            if let Some(source) = &projection.secret {
                files.extend(keyed_files(
                    "Secret",
                    &source.name,
                    sources.secrets.get(&source.name),
                    source.items.as_deref(),
                    source.optional == Some(true),
                )?);
            }
            if let Some(source) = &projection.service_account_token
                && let Some(token) = context.token
            {
                files.push((source.path.clone(), token.as_bytes().to_vec()));
            }
            if let Some(source) = &projection.downward_api {
                for item in source.items.iter().flatten() {
                    if let Some(field) = &item.field_ref {
                        let value = field_value(context.pod, &field.field_path, context.addresses)
                            .ok_or_else(|| {
                                format!("unsupported fieldPath {:?}", field.field_path)
                            })?;
                        files.push((item.path.clone(), value.into_bytes()));
                    }
                }
            }
            if projection.cluster_trust_bundle.is_some() {
                files.push(("ca.crt".to_owned(), context.ca_pem.as_bytes().to_vec()));
            }
        }
        return Ok(Some(files));
    }
    Ok(None)
}

fn keyed_files(
    kind: &str,
    name: &str,
    data: Option<&std::collections::BTreeMap<String, String>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<Vec<VolumeFile>, String> {
    let Some(data) = data else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(format!("{kind} {name:?} not found"))
        };
    };
    match items {
        None => Ok(data
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().into_bytes()))
            .collect()),
        Some(items) => items
            .iter()
            .map(|item| match data.get(&item.key) {
                Some(value) => Ok((item.path.clone(), value.clone().into_bytes())),
                None => Err(format!("key {:?} of {kind} {name:?} not found", item.key)),
            })
            .collect(),
    }
}

/// Writes `files` under `dir`, refusing paths that leave it.
///
/// # Errors
/// A message when a path is absolute or climbs out, or a write fails.
pub fn write_files(dir: &Path, files: &[VolumeFile]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (path, contents) in files {
        let relative = Path::new(path);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!("volume file path {path:?} leaves the volume"));
        }
        let target = dir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&target, contents).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

/// The container's mounts as (mountPath, host dir), longest mountPath first.
pub fn mounts(container: &Container, volumes_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut mounts: Vec<(String, PathBuf)> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| {
            let mut host = volumes_dir.join(&mount.name);
            if let Some(sub_path) = mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                host = host.join(sub_path);
            }
            (mount.mount_path.trim_end_matches('/').to_owned(), host)
        })
        .filter(|(path, _)| !path.is_empty())
        .collect();
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    mounts
}

/// Whether `c` can be part of a path word; a mountPath is only replaced where it is not
/// glued to such characters (so `/etc/demo` is replaced in `sh -c 'cat /etc/demo/x'` and in
/// `--config=/etc/demo`, but not in `/etc/demo2` or `x/etc/demo`).
fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '~' | '+' | '@' | '%')
}

/// `word` with every mountPath that appears as a whole path (or a path's leading dirs)
/// replaced by its host dir.
pub fn rewrite(word: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    let mut at_boundary = true;
    'scan: while !rest.is_empty() {
        if at_boundary {
            for (mount_path, host) in mounts {
                if let Some(after) = rest.strip_prefix(mount_path.as_str())
                    && after
                        .chars()
                        .next()
                        .is_none_or(|next| next == '/' || !is_path_char(next))
                {
                    out.push_str(&host.display().to_string());
                    rest = after;
                    at_boundary = false;
                    continue 'scan;
                }
            }
        }
        let Some(c) = rest.chars().next() else {
            break;
        };
        out.push(c);
        at_boundary = !is_path_char(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts_of(json: serde_json::Value) -> Vec<(String, PathBuf)> {
        let container: Container = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        mounts(&container, Path::new("/pods/p/volumes"))
    }

    #[test]
    fn rewrites_mount_paths_in_words() {
        let mounts = mounts_of(serde_json::json!({"name": "c", "volumeMounts": [
            {"name": "config", "mountPath": "/etc/causeway"},
            {"name": "tls", "mountPath": "/etc/causeway/tls/"},
        ]}));
        assert_eq!(
            rewrite("/etc/causeway/site.yaml", &mounts),
            "/pods/p/volumes/config/site.yaml"
        );
        assert_eq!(
            rewrite("--cert=/etc/causeway/tls/c.pem", &mounts),
            "--cert=/pods/p/volumes/tls/c.pem"
        );
        assert_eq!(rewrite("/etc/causewayx", &mounts), "/etc/causewayx");
        assert_eq!(rewrite("x/etc/causeway", &mounts), "x/etc/causeway");
        assert_eq!(rewrite("/etc/causeway", &mounts), "/pods/p/volumes/config");
        assert_eq!(
            rewrite("grep -q x '/etc/causeway/a' && cat /etc/causeway;", &mounts),
            "grep -q x '/pods/p/volumes/config/a' && cat /pods/p/volumes/config;"
        );
        assert_eq!(
            rewrite("/etc/causeway-old/a", &mounts),
            "/etc/causeway-old/a"
        );
    }

    #[test]
    fn config_map_volumes_become_files() -> Result<(), String> {
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
        "spec": {"containers": [], "volumes": [
            {"name": "v", "configMap": {"name": "cm", "items": [{"key": "a", "path": "dir/a.txt"}]}}
        ]}}))
        .map_err(|e| e.to_string())?;
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "cm".to_owned(),
            [("a".to_owned(), "hello".to_owned())].into_iter().collect(),
        );
        let context = Context {
            pod: &pod,
            addresses: Addresses {
                pod_ip: std::net::Ipv4Addr::new(127, 64, 1, 2),
                host_ip: std::net::Ipv4Addr::new(127, 64, 1, 1),
            },
            token: None,
            ca_pem: "",
        };
        let volume = &pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default()[0];
        let files = volume_files(volume, &sources, context)?;
        assert_eq!(
            files,
            Some(vec![("dir/a.txt".to_owned(), b"hello".to_vec())])
        );
        assert!(write_files(Path::new("/tmp/x"), &[("../escape".to_owned(), Vec::new())]).is_err());
        Ok(())
    }
}
