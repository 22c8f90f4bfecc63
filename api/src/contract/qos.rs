//! The QoS report: what one gateway pod measured, served as JSON at [`REPORT_PATH`] on its
//! admin port and read by the operator's QoS loop, which turns two successive reports into
//! the figures of the Site's and Frontend's `status.qos`.
//!
//! ```json
//! { "version": 1,
//!   "unrouted": [{ "code": 404, "count": 3 }],
//!   "sites": [{ "site": "web/shop",
//!               "requests": [{ "class": 2, "code": 200, "count": 1200 }],
//!               "duration": [{ "class": 2, "buckets": [{ "le": 0.01, "count": 1100 }], "count": 1200, "sum": 4.2 }],
//!               "queueWait": [], "queueDepth": 0,
//!               "origins": [{ "name": "main", "healthy": true, "latencyEwmaMs": 3.1, "inFlight": 2 }] }],
//!   "links": [{ "peer": "backend-0", "frontend": { "rttMs": 20.5, "loss": 0.0, "channels": 4 }, "backend": null }] }
//! ```
//!
//! Counters and histograms are cumulative since the pod started, as in `/metrics`: rates
//! come from the difference between two reports, so a report carries no interval of its
//! own and a missed scrape loses nothing. `version` lets the layout change: a reader refuses
//! a version it does not know rather than guessing. Within one version fields are only ever
//! added (with defaults), so unknown fields are ignored, not refused.

use serde::{Deserialize, Serialize};

/// The admin path a gateway serves its report at.
pub const REPORT_PATH: &str = "/qos/pod";

/// The report layout this build writes and reads.
pub const REPORT_VERSION: u32 = 1;

/// The largest report a reader takes: a pod with hundreds of Sites stays far below it, and a
/// reply above it is not a report.
pub const MAX_REPORT_BYTES: usize = 4 << 20;

/// One pod's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    /// The layout, [`REPORT_VERSION`] when written by this build.
    pub version: u32,
    /// Requests answered without reaching a Site (unknown host, malformed request).
    #[serde(default)]
    pub unrouted: Vec<CodeCount>,
    /// Every Site the pod has counted requests or holds gauges for.
    #[serde(default)]
    pub sites: Vec<SiteReport>,
    /// Every live TMP link of the pod (none on a single-tier gateway).
    #[serde(default)]
    pub links: Vec<LinkReport>,
}

impl Default for PodReport {
    fn default() -> Self {
        Self {
            version: REPORT_VERSION,
            unrouted: Vec::new(),
            sites: Vec::new(),
            links: Vec::new(),
        }
    }
}

/// Requests answered with one status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeCount {
    /// The HTTP status code.
    pub code: u16,
    /// Requests answered with it since the pod started.
    pub count: u64,
}

/// What the pod measured for one Site.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteReport {
    /// The Site, as the gateway labels it (`namespace/name`).
    pub site: String,
    /// Requests answered, by priority class and status code.
    #[serde(default)]
    pub requests: Vec<RequestCount>,
    /// Time from a request's arrival to the end of its response, by class.
    #[serde(default)]
    pub duration: Vec<ClassHistogram>,
    /// Time requests waited in the release queue, by class.
    #[serde(default)]
    pub queue_wait: Vec<ClassHistogram>,
    /// Requests waiting in the release queue now.
    #[serde(default)]
    pub queue_depth: u64,
    /// The Site's origins as this pod sees them (back-ends and single-tier gateways).
    #[serde(default)]
    pub origins: Vec<OriginReport>,
}

/// Requests of one class answered with one status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// The priority class (0 most urgent).
    pub class: u8,
    /// The HTTP status code.
    pub code: u16,
    /// Requests since the pod started.
    pub count: u64,
}

/// A histogram of one class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassHistogram {
    /// The priority class.
    pub class: u8,
    /// The observations.
    #[serde(flatten)]
    pub histogram: Histogram,
}

/// A cumulative histogram of durations in seconds, as Prometheus keeps one: each bucket
/// counts the observations at or below its bound; `count` is the open-ended last bucket.
/// JSON has no infinity, which is why that bucket is not in the list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// The finite buckets, by increasing bound.
    #[serde(default)]
    pub buckets: Vec<Bucket>,
    /// Every observation.
    #[serde(default)]
    pub count: u64,
    /// The observations' sum, seconds.
    #[serde(default)]
    pub sum: f64,
}

/// One cumulative bucket.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound, seconds.
    pub le: f64,
    /// Observations at or below it.
    pub count: u64,
}

/// One origin of a Site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginReport {
    /// The origin's name in the Site.
    pub name: String,
    /// In rotation (neither unhealthy nor ejected).
    pub healthy: bool,
    /// Peak-EWMA response latency, milliseconds.
    pub latency_ewma_ms: f64,
    /// Requests in flight to it now.
    pub in_flight: u64,
}

/// One TMP link: both ends' latest view of it, each `None` until that end has reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// The peer gateway's name (its address while the name is not known).
    pub peer: String,
    /// The front-end's view.
    #[serde(default)]
    pub frontend: Option<LinkEnd>,
    /// The back-end's view.
    #[serde(default)]
    pub backend: Option<LinkEnd>,
}

/// One end's view of a link.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkEnd {
    /// Smoothed round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Smoothed packet loss, 0–1.
    pub loss: f64,
    /// Channels the link hosts, as this end counts them.
    pub channels: u64,
}

/// Why a reply could not be read as a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Longer than [`MAX_REPORT_BYTES`].
    #[error("QoS report of {0} bytes is over the limit of {MAX_REPORT_BYTES}")]
    TooLarge(usize),
    /// Not JSON, or a field has the wrong shape.
    #[error("QoS report: {0}")]
    Syntax(#[from] serde_json::Error),
    /// No `version`, or one this build does not know.
    #[error(
        "QoS report format version {found:?} is not one this build reads (it reads {REPORT_VERSION}); the gateway image is newer or older than the operator"
    )]
    Version {
        /// The version found, if any.
        found: Option<u32>,
    },
}

/// The version field alone, read first so that a newer layout is reported as such rather
/// than as fields of the wrong shape.
#[derive(Deserialize)]
struct VersionOnly {
    version: Option<u32>,
}

impl PodReport {
    /// The report's JSON, as the gateway serves it.
    ///
    /// # Errors
    /// When a figure does not serialize (never with the types here; kept typed for callers).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads a report: its size, its version, then every field.
    ///
    /// # Errors
    /// [`ReportError`] saying which of the three is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge(bytes.len()));
        }
        let version: VersionOnly = serde_json::from_slice(bytes)?;
        if version.version != Some(REPORT_VERSION) {
            return Err(ReportError::Version {
                found: version.version,
            });
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PodReport {
        PodReport {
            version: REPORT_VERSION,
            unrouted: vec![CodeCount {
                code: 404,
                count: 3,
            }],
            sites: vec![SiteReport {
                site: "web/shop".into(),
                requests: vec![RequestCount {
                    class: 2,
                    code: 200,
                    count: 1200,
                }],
                duration: vec![ClassHistogram {
                    class: 2,
                    histogram: Histogram {
                        buckets: vec![
                            Bucket {
                                le: 0.01,
                                count: 1100,
                            },
                            Bucket {
                                le: 0.1,
                                count: 1190,
                            },
                        ],
                        count: 1200,
                        sum: 4.25,
                    },
                }],
                queue_wait: Vec::new(),
                queue_depth: 2,
                origins: vec![OriginReport {
                    name: "main".into(),
                    healthy: true,
                    latency_ewma_ms: 3.5,
                    in_flight: 2,
                }],
            }],
            links: vec![LinkReport {
                peer: "backend-0".into(),
                frontend: Some(LinkEnd {
                    rtt_ms: 20.5,
                    loss: 0.01,
                    channels: 4,
                }),
                backend: None,
            }],
        }
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let report = sample();
        let json = report.to_json().expect("serializes");
        assert_eq!(PodReport::from_json(&json).expect("reads"), report);
        let empty = PodReport::default();
        let json = empty.to_json().expect("serializes");
        assert_eq!(PodReport::from_json(&json).expect("reads"), empty);
    }

    #[test]
    fn the_layout_is_camel_case_with_flattened_histograms() {
        let value = serde_json::to_value(sample()).expect("serializes");
        let site = &value["sites"][0];
        assert_eq!(site["queueDepth"], 2);
        assert_eq!(site["duration"][0]["class"], 2);
        assert_eq!(site["duration"][0]["buckets"][1]["le"], 0.1);
        assert_eq!(site["duration"][0]["count"], 1200);
        assert_eq!(site["origins"][0]["latencyEwmaMs"], 3.5);
        assert_eq!(value["links"][0]["frontend"]["rttMs"], 20.5);
        assert!(value["links"][0]["backend"].is_null());
    }

    #[test]
    fn unknown_versions_bad_shapes_and_oversized_replies_are_refused() {
        assert!(matches!(
            PodReport::from_json(br#"{"version": 2, "sites": "whatever"}"#),
            Err(ReportError::Version { found: Some(2) })
        ));
        assert!(matches!(
            PodReport::from_json(br#"{"sites": []}"#),
            Err(ReportError::Version { found: None })
        ));
        assert!(matches!(
            PodReport::from_json(br#"{"version": 1, "sites": [{"site": 7}]}"#),
            Err(ReportError::Syntax(_))
        ));
        assert!(matches!(
            PodReport::from_json(b"# HELP causeway_requests_total\n"),
            Err(ReportError::Syntax(_))
        ));
        assert!(matches!(
            PodReport::from_json(br#"{"version": 1, "links": [{"peer": "b", "frontend": {"rttMs": 1e999, "loss": 0, "channels": 0}}]}"#),
            Err(ReportError::Syntax(_))
        ));
        let huge = vec![b' '; MAX_REPORT_BYTES + 1];
        assert!(matches!(
            PodReport::from_json(&huge),
            Err(ReportError::TooLarge(_))
        ));
    }

    #[test]
    fn fields_added_later_are_ignored_and_missing_lists_are_empty() {
        let report = PodReport::from_json(br#"{"version": 1, "newField": true}"#).expect("reads");
        assert_eq!(report, PodReport::default());
    }
}
