//! Export to DNS servers the redirector does not replace: per Site, RFC 2136 dynamic updates
//! signed with TSIG (RFC 8945, hmac-sha256 and stronger) that replace the Site's A and AAAA
//! RRsets on another authoritative server whenever its set of ready front-ends changes.
//!
//! The external server cannot steer per client, so it gets every ready front-end of the
//! Site, all regions together; with none ready, the RRsets are deleted (the name answers
//! NODATA there, as it does here) rather than left pointing at front-ends known to be down.
//!
//! Building the update is pure ([`desired`], [`update_message`]); [`run`] sends it over TCP,
//! checks the server's signed answer, and retries with backoff until it lands or a newer
//! directory supersedes it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::directory::{Index, SiteId};
use crate::error::{DirectoryError, Error};
use crate::metrics::Metrics;
use crate::source::Published;

/// How long one update exchange may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first retry delay after a failed update; doubled up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Allowed clock difference with the server, in seconds (RFC 8945 recommends 300).
pub const FUDGE: u16 = 300;

/// One Site's export, as configured in the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportTarget {
    /// The Site (`NAMESPACE/NAME` when Sites come from Kubernetes).
    pub site: String,
    /// The primary server taking updates for `zone`.
    pub server: SocketAddr,
    /// The zone updated there.
    pub zone: String,
    /// The names kept there; default: the Site's hostnames inside `zone` (wildcards
    /// included, as `*.name` records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// TTL of the exported records.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// The TSIG key.
    pub key: TsigKey,
}

fn default_ttl() -> u32 {
    crate::directory::DEFAULT_TTL
}

/// A TSIG key, as BIND's `key` clause has it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TsigKey {
    /// The key's name.
    pub name: String,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// The secret, base64; exactly one of `secret` and `secretFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A file holding the base64 secret (a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret_file", &self.secret_file)
            .finish_non_exhaustive()
    }
}

fn default_algorithm() -> String {
    "hmac-sha256".to_owned()
}

/// A checked export, ready to run.
#[derive(Clone)]
pub struct CompiledExport {
    /// The Site exported.
    pub site: SiteId,
    /// The Site's name (for logs and metrics).
    pub site_name: String,
    /// The server.
    pub server: SocketAddr,
    /// The zone.
    pub zone: Name,
    /// The names kept.
    pub hostnames: Vec<Name>,
    /// The records' TTL.
    pub ttl: u32,
    /// Signs updates and checks answers.
    pub signer: TSigner,
}

impl std::fmt::Debug for CompiledExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledExport")
            .field("site", &self.site_name)
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("hostnames", &self.hostnames)
            .finish_non_exhaustive()
    }
}

impl ExportTarget {
    /// Checks the export against `index` and the key, and prepares its signer.
    ///
    /// # Errors
    /// An unknown Site, a zone or hostname that is not a name, a hostname outside the zone,
    /// no hostname to export, a key that cannot be read or decoded, or an algorithm other
    /// than hmac-sha256/384/512.
    pub fn compile(
        &self,
        index: &Index,
        site_hostnames: &[String],
    ) -> Result<CompiledExport, DirectoryError> {
        let refuse = |reason: String| DirectoryError::Export {
            site: self.site.clone(),
            reason,
        };
        let site = index
            .site_id(&self.site)
            .ok_or_else(|| refuse("no such Site".to_owned()))?;
        let name = |text: &str| -> Result<Name, DirectoryError> {
            let mut name = Name::from_ascii(text)
                .map_err(|e| refuse(format!("{text:?} is not a domain name: {e}")))?;
            name.set_fqdn(true);
            Ok(name)
        };
        let zone = name(&self.zone)?;
        let hostnames: Vec<Name> = if self.hostnames.is_empty() {
            site_hostnames
                .iter()
                .map(|h| name(h))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|h| zone.zone_of(h))
                .collect()
        } else {
            let listed = self
                .hostnames
                .iter()
                .map(|h| name(h))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(outside) = listed.iter().find(|h| !zone.zone_of(h)) {
                return Err(refuse(format!("{outside} is not in zone {zone}")));
            }
            listed
        };
        if hostnames.is_empty() {
            return Err(refuse(format!("no hostname of the Site is in zone {zone}")));
        }
        let algorithm = match self.key.algorithm.to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => return Err(refuse(format!("TSIG algorithm {other} is not supported"))),
        };
        let encoded = match (&self.key.secret, &self.key.secret_file) {
            (Some(secret), None) => secret.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?,
            _ => {
                return Err(refuse(
                    "give exactly one of secret and secretFile".to_owned(),
                ));
            }
        };
        let secret = BASE64
            .decode(encoded.trim().as_bytes())
            .map_err(|e| refuse(format!("the TSIG secret is not base64: {e}")))?;
        let signer = TSigner::new(secret, algorithm, name(&self.key.name)?, FUDGE)
            .map_err(|e| refuse(format!("TSIG key: {e}")))?;
        Ok(CompiledExport {
            site,
            site_name: self.site.clone(),
            server: self.server,
            zone,
            hostnames,
            ttl: self.ttl,
            signer,
        })
    }
}

/// Every ready front-end of the export's Site, all regions together, sorted.
pub fn desired(index: &Index, export: &CompiledExport) -> BTreeSet<IpAddr> {
    index
        .sites
        .get(export.site)
        .map_or_else(BTreeSet::new, |site| {
            site.all_v4
                .iter()
                .chain(&site.all_v6)
                .map(|w| w.address)
                .collect()
        })
}

/// The update replacing the A and AAAA RRsets of each hostname with `addresses` (RFC 2136
/// §2.5.2 "delete an RRset", then §2.5.1 "add to an RRset"), applied atomically by the
/// server; unsigned.
pub fn update_message(export: &CompiledExport, addresses: &BTreeSet<IpAddr>) -> Message {
    let mut zone = Query::new();
    zone.set_name(export.zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    message.add_zone(zone);
    for hostname in &export.hostnames {
        for rtype in [RecordType::A, RecordType::AAAA] {
            let mut delete = Record::update0(hostname.clone(), 0, rtype);
            delete.dns_class = DNSClass::ANY;
            message.add_update(delete);
        }
        for address in addresses {
            let data = match address {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            message.add_update(Record::from_rdata(hostname.clone(), export.ttl, data));
        }
    }
    message
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends `addresses` for `export`: signed, over TCP, answer checked.
///
/// # Errors
/// When the server cannot be reached in time, answers with another code than NOERROR
/// (NOTAUTH for a wrong key, REFUSED for a policy that does not allow the key), or its
/// answer's TSIG does not verify.
pub async fn send(export: &CompiledExport, addresses: &BTreeSet<IpAddr>) -> Result<(), Error> {
    let failed = |reason: String| Error::Update {
        zone: export.zone.to_string(),
        server: export.server,
        reason,
    };
    let mut message = update_message(export, addresses);
    let verifier = message
        .finalize(&export.signer, now_seconds())
        .map_err(|e| failed(format!("cannot sign: {e}")))?;
    let bytes = message
        .to_vec()
        .map_err(|e| failed(format!("cannot encode: {e}")))?;
    let length = u16::try_from(bytes.len()).map_err(|_| failed("update too large".to_owned()))?;
    let exchange = async {
        let mut stream = TcpStream::connect(export.server).await?;
        let mut framed = length.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| failed("timed out".to_owned()))?
        .map_err(|e| failed(e.to_string()))?;
    let parsed = Message::from_vec(&answer).map_err(|e| failed(format!("bad answer: {e}")))?;
    if parsed.metadata.id != message.metadata.id {
        return Err(failed("answer to another message".to_owned()));
    }
    let rcode = parsed.metadata.response_code;
    if rcode != ResponseCode::NoError {
        let tsig_error = parsed
            .signature()
            .map(|s| format!(" (TSIG error {:?})", s.data.error))
            .unwrap_or_default();
        return Err(failed(format!("server answered {rcode}{tsig_error}")));
    }
    let Some(mut verifier) = verifier else {
        return Err(failed("no TSIG verifier".to_owned()));
    };
    verifier
        .verify(&answer)
        .map_err(|e| failed(format!("answer's TSIG does not verify: {e}")))?;
    Ok(())
}

/// Keeps every configured export in step with the directory until the process stops.
pub async fn run(published: Arc<Published>, metrics: Metrics) {
    let mut changes = published.subscribe();
    // What each export (by Site name and server) last got, successfully.
    let mut sent: BTreeMap<(String, SocketAddr, Name), BTreeSet<IpAddr>> = BTreeMap::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let index = changes.borrow_and_update().clone();
        let mut failed = false;
        if let Some(index) = index {
            for export in &index.exports {
                let key = (export.site_name.clone(), export.server, export.zone.clone());
                let want = desired(&index, export);
                if sent.get(&key) == Some(&want) {
                    continue;
                }
                match send(export, &want).await {
                    Ok(()) => {
                        tracing::info!(site = export.site_name, server = %export.server, addresses = want.len(), "exported");
                        metrics.export(&export.site_name, true);
                        sent.insert(key, want);
                    }
                    Err(error) => {
                        tracing::warn!(site = export.site_name, %error, "export failed; retrying");
                        metrics.export(&export.site_name, false);
                        failed = true;
                    }
                }
            }
        }
        if failed {
            // A newer directory ends the wait early: its answer set is what counts.
            let _ = tokio::time::timeout(backoff, changes.changed()).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = FIRST_BACKOFF;
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::AnswerPolicy;
    use crate::directory::tests::sample;

    fn export(index: &Index) -> CompiledExport {
        ExportTarget {
            site: "shop".into(),
            server: "127.0.0.1:5300".parse().expect("address"),
            zone: "example.com".into(),
            hostnames: Vec::new(),
            ttl: 20,
            key: TsigKey {
                name: "causeway".into(),
                algorithm: "hmac-sha256".into(),
                secret: Some(BASE64.encode(&[7u8; 32])),
                secret_file: None,
            },
        }
        .compile(
            index,
            &["shop.example.com".into(), "shop.example.org".into()],
        )
        .expect("compiles")
    }

    #[test]
    fn replaces_both_rrsets_of_each_hostname() {
        let index = sample().compile(AnswerPolicy::default(), 1).expect("index");
        let export = export(&index);
        assert_eq!(export.hostnames.len(), 1, "only names inside the zone");
        let want = desired(&index, &export);
        assert_eq!(
            want.len(),
            4,
            "three ready v4 and one v6 front-end, all regions"
        );
        let message = update_message(&export, &want);
        assert_eq!(message.metadata.op_code, OpCode::Update);
        assert_eq!(message.zones()[0].name().to_string(), "example.com.");
        let updates = message.updates();
        assert_eq!(updates[0].dns_class, DNSClass::ANY);
        assert_eq!(updates[0].record_type(), RecordType::A);
        assert_eq!(updates[1].record_type(), RecordType::AAAA);
        assert!(
            updates[2..]
                .iter()
                .all(|r| r.dns_class == DNSClass::IN && r.ttl == 20)
        );
        assert_eq!(updates.len(), 2 + 4);
        // Nothing ready: only the deletions.
        assert_eq!(update_message(&export, &BTreeSet::new()).updates().len(), 2);
    }

    #[test]
    fn refuses_what_cannot_be_exported() {
        let index = sample().compile(AnswerPolicy::default(), 1).expect("index");
        let base = ExportTarget {
            site: "shop".into(),
            server: "127.0.0.1:5300".parse().expect("address"),
            zone: "example.net".into(),
            hostnames: Vec::new(),
            ttl: 20,
            key: TsigKey {
                name: "k".into(),
                algorithm: "hmac-sha256".into(),
                secret: Some("c2VjcmV0".into()),
                secret_file: None,
            },
        };
        let hostnames = ["shop.example.com".to_owned()];
        assert!(
            base.compile(&index, &hostnames).is_err(),
            "no hostname in the zone"
        );
        let unknown = ExportTarget {
            site: "nope".into(),
            ..base.clone()
        };
        assert!(unknown.compile(&index, &hostnames).is_err());
        let md5 = ExportTarget {
            zone: "example.com".into(),
            key: TsigKey {
                algorithm: "hmac-md5".into(),
                ..base.key.clone()
            },
            ..base.clone()
        };
        assert!(md5.compile(&index, &hostnames).is_err());
        let not_base64 = ExportTarget {
            zone: "example.com".into(),
            key: TsigKey {
                secret: Some("%%%".into()),
                ..base.key.clone()
            },
            ..base.clone()
        };
        assert!(not_base64.compile(&index, &hostnames).is_err());
        assert!(
            !format!("{:?}", base.key).contains("c2VjcmV0"),
            "secrets stay out of logs"
        );
    }
}
