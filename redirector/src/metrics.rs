//! The redirector's Prometheus metrics. Labels are bounded: the Site's name (from the
//! directory, `""` for names that are no Site's — never the asked name), a fixed set of
//! query types (others are `OTHER`), response codes, transports and malformation reasons.

use std::collections::HashMap;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::directory::Index;
use crate::wire::{Malformed, Outcome, Transport};

/// The redirector's metric families, registered in their own registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    queries: IntCounterVec,
    answer_duration: Histogram,
    malformed: IntCounterVec,
    truncated: IntCounter,
    reloads: IntCounterVec,
    serial: IntGauge,
    exports: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Query types with a label of their own; every other type counts as `OTHER`.
const QTYPES: [RecordType; 12] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::ANY,
    RecordType::SOA,
    RecordType::NS,
    RecordType::MX,
    RecordType::TXT,
    RecordType::CNAME,
    RecordType::PTR,
    RecordType::SRV,
    RecordType::HTTPS,
    RecordType::CAA,
];

fn qtype_label(qtype: Option<RecordType>) -> &'static str {
    match qtype {
        None => "NONE",
        Some(qtype) if QTYPES.contains(&qtype) => qtype.into(),
        Some(_) => "OTHER",
    }
}

fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

impl Metrics {
    /// Registers every family.
    ///
    /// # Panics
    /// Never in practice: the names and labels are constants that register once.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let queries = IntCounterVec::new(
            Opts::new(
                "causeway_dns_queries_total",
                "DNS queries answered, by Site (\"\" for names that are no Site's), query type and response code.",
            ),
            &["site", "qtype", "rcode"],
        )
        .expect("a valid metric");
        let answer_duration = Histogram::with_opts(
            HistogramOpts::new(
                "causeway_dns_answer_duration_seconds",
                "Time from a query's arrival to its answer's bytes being ready.",
            )
            .buckets(vec![
                5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2,
            ]),
        )
        .expect("a valid metric");
        let malformed = IntCounterVec::new(
            Opts::new(
                "causeway_dns_malformed_total",
                "Packets not answered normally: dropped (short, oversized, not_query) or answered FORMERR (format), by transport.",
            ),
            &["transport", "reason"],
        )
        .expect("a valid metric");
        let truncated = IntCounter::new(
            "causeway_dns_truncated_total",
            "UDP answers sent truncated (TC) because they did not fit the client's limit.",
        )
        .expect("a valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "causeway_dns_directory_reloads_total",
                "New directories from the source: applied, or refused (the last good one keeps answering).",
            ),
            &["result"],
        )
        .expect("a valid metric");
        let serial = IntGauge::new(
            "causeway_dns_directory_serial",
            "The SOA serial of the directory in force (0 before the first).",
        )
        .expect("a valid metric");
        let exports = IntCounterVec::new(
            Opts::new(
                "causeway_dns_exports_total",
                "RFC 2136 updates sent to external servers, by Site and result.",
            ),
            &["site", "result"],
        )
        .expect("a valid metric");
        for collector in [
            Box::new(queries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(answer_duration.clone()),
            Box::new(malformed.clone()),
            Box::new(truncated.clone()),
            Box::new(reloads.clone()),
            Box::new(serial.clone()),
            Box::new(exports.clone()),
        ] {
            registry.register(collector).expect("registers once");
        }
        Self {
            registry,
            queries,
            answer_duration,
            malformed,
            truncated,
            reloads,
            serial,
            exports,
        }
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        causeway_admin::render(&self.registry)
    }

    /// The registry every family is in, for the admin server's `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a directory applied (with its serial) or refused.
    pub fn reload(&self, applied: Option<u32>) {
        let result = if applied.is_some() {
            "applied"
        } else {
            "refused"
        };
        self.reloads.with_label_values(&[result]).inc();
        if let Some(serial) = applied {
            self.serial.set(i64::from(serial));
        }
    }

    /// Counts one RFC 2136 update of `site`.
    pub fn export(&self, site: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.exports.with_label_values(&[site, result]).inc();
    }

    /// A per-worker recorder that caches its counters, so the query path does not hash
    /// label strings for every packet.
    pub fn recorder(&self) -> Recorder {
        Recorder {
            metrics: self.clone(),
            cache: HashMap::new(),
            serial: 0,
        }
    }
}

/// Records queries for one server worker.
#[derive(Debug)]
pub struct Recorder {
    metrics: Metrics,
    cache: HashMap<(Option<usize>, &'static str, &'static str), IntCounter>,
    serial: u32,
}

impl Recorder {
    /// Counts `outcome`, answered from `index`, that took `seconds`.
    pub fn record(&mut self, index: &Index, outcome: &Outcome, transport: Transport, seconds: f64) {
        if let Some(reason) = outcome.malformed {
            self.malformed(transport, reason);
            if outcome.response.is_none() {
                return;
            }
        }
        if outcome.truncated {
            self.metrics.truncated.inc();
        }
        if index.serial != self.serial {
            // Site ids are positions in one directory: a new one renumbers them.
            self.cache.clear();
            self.serial = index.serial;
        }
        let key = (
            outcome.site,
            qtype_label(outcome.qtype),
            rcode_label(outcome.rcode),
        );
        let counter = self.cache.entry(key).or_insert_with(|| {
            let site = outcome
                .site
                .and_then(|id| index.sites.get(id))
                .map_or("", |s| s.name.as_str());
            self.metrics
                .queries
                .with_label_values(&[site, key.1, key.2])
        });
        counter.inc();
        self.metrics.answer_duration.observe(seconds);
    }

    /// Counts a malformed packet.
    pub fn malformed(&self, transport: Transport, reason: Malformed) {
        self.metrics
            .malformed
            .with_label_values(&[transport.as_str(), reason.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(qtype_label(Some(RecordType::A)), "A");
        assert_eq!(qtype_label(Some(RecordType::Unknown(65000))), "OTHER");
        assert_eq!(qtype_label(None), "NONE");
        assert_eq!(rcode_label(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_label(ResponseCode::Unknown(3000)), "OTHER");
    }

    #[test]
    fn renders_every_family() {
        let metrics = Metrics::new();
        metrics.reload(Some(5));
        metrics.export("shop", true);
        let text = metrics.render();
        assert!(text.contains("causeway_dns_directory_serial 5"), "{text}");
        assert!(text.contains("causeway_dns_exports_total{result=\"ok\",site=\"shop\"} 1"));
    }
}
