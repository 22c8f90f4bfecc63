//! A directory file (YAML or JSON): read at start, again on SIGHUP, and whenever it changes
//! on disk (checked every [`POLL`], so an edit reaches answers within about a second, also
//! when the file is replaced by a rename, as a ConfigMap mount does).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::directory::Directory;
use crate::error::Error;
use crate::source::DirectorySource;

/// How often the file's metadata is compared.
pub const POLL: Duration = Duration::from_millis(250);

/// What tells one version of the file from another without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Parses a directory file's text.
///
/// # Errors
/// When the text is not a directory, with the path of the offending field.
pub fn parse(path: &Path, text: &str) -> Result<Directory, Error> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| Error::Parse {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// Reads and parses a directory file.
///
/// # Errors
/// When the file cannot be read or does not parse.
pub fn read(path: &Path) -> Result<Directory, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// The file source.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    seen: Option<Option<Stamp>>,
    hangup: Option<Signal>,
}

impl FileSource {
    /// Watches `path`; SIGHUP forces a read.
    ///
    /// # Errors
    /// When the SIGHUP handler cannot be installed.
    pub fn new(path: PathBuf) -> Result<Self, Error> {
        let hangup = signal(SignalKind::hangup()).map_err(|source| Error::Read {
            path: PathBuf::from("SIGHUP"),
            source,
        })?;
        Ok(Self {
            path,
            seen: None,
            hangup: Some(hangup),
        })
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl DirectorySource for FileSource {
    async fn next(&mut self) -> Result<Directory, Error> {
        if self.seen.is_some() {
            loop {
                let hangup = async {
                    match self.hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = hangup => {
                        tracing::info!(path = %self.path.display(), "SIGHUP: reading the directory again");
                        break;
                    }
                    () = tokio::time::sleep(POLL) => {
                        if self.seen != Some(stamp(&self.path)) {
                            break;
                        }
                    }
                }
            }
        }
        // Record the version before reading: a broken file is reported once, not every poll.
        self.seen = Some(stamp(&self.path));
        read(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_field() {
        let error = parse(
            Path::new("d.yaml"),
            "zones:\n  - name: example.com\n    nameservers: 7\n",
        )
        .expect_err("refused");
        let text = error.to_string();
        assert!(text.contains("zones[0].nameservers"), "{text}");
        let error = parse(Path::new("d.yaml"), "zonez: []\n").expect_err("unknown field");
        assert!(error.to_string().contains("zonez"));
    }

    #[tokio::test]
    async fn follows_changes_on_disk() {
        let dir = std::env::temp_dir().join(format!("causeway-dns-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("directory.yaml");
        std::fs::write(&path, "sites: [{name: a, hostnames: [a.example.com]}]\n").expect("write");
        let mut source = FileSource::new(path.clone()).expect("source");
        let first = source.next().await.expect("first");
        assert_eq!(first.sites[0].name, "a");
        // Replace by rename, as Kubernetes updates a mounted ConfigMap.
        let staged = dir.join("staged.yaml");
        std::fs::write(&staged, "sites: [{name: b, hostnames: [b.example.com]}]\n").expect("write");
        std::fs::rename(&staged, &path).expect("rename");
        let second = tokio::time::timeout(Duration::from_secs(2), source.next())
            .await
            .expect("noticed within 2 s")
            .expect("parses");
        assert_eq!(second.sites[0].name, "b");
        std::fs::write(&path, "sites: 12\n").expect("write");
        let broken = tokio::time::timeout(Duration::from_secs(2), source.next())
            .await
            .expect("noticed");
        assert!(broken.is_err());
        // The broken version is not reported again until the file changes.
        assert!(
            tokio::time::timeout(Duration::from_millis(700), source.next())
                .await
                .is_err()
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
