//! The operator's Prometheus metrics: reconciliations, errors by kind, reconcile duration,
//! objects managed and leadership. Labels are bounded: the controller (`site`, `frontend`)
//! and the error kind — never an object's name.

use std::time::Instant;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::error::Error;

/// Which controller a sample belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// The Site controller.
    Site,
    /// The Frontend controller.
    Frontend,
    /// The signer of gateways' certificate signing requests.
    Signer,
}

impl Controller {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Site => "site",
            Self::Frontend => "frontend",
            Self::Signer => "signer",
        }
    }
}

/// The operator's metric families, registered in their own registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    managed: IntGaugeVec,
    leader: IntGauge,
    qos_writes: IntCounterVec,
    qos_scrapes: IntCounterVec,
    scaling: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
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
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "causeway_operator_reconciliations_total",
                "Reconciliations run, by controller.",
            ),
            &["controller"],
        )
        .expect("a valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "causeway_operator_reconcile_errors_total",
                "Reconciliations that failed, by controller and error kind.",
            ),
            &["controller", "kind"],
        )
        .expect("a valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "causeway_operator_reconcile_duration_seconds",
                "Time one reconciliation took, by controller.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["controller"],
        )
        .expect("a valid metric");
        let managed = IntGaugeVec::new(
            Opts::new(
                "causeway_operator_managed_objects",
                "Sites and Frontends the operator manages, by controller.",
            ),
            &["controller"],
        )
        .expect("a valid metric");
        let leader = IntGauge::new(
            "causeway_operator_leader",
            "1 while this replica holds the leader Lease and writes, else 0.",
        )
        .expect("a valid metric");
        let qos_writes = IntCounterVec::new(
            Opts::new(
                "causeway_operator_qos_status_writes_total",
                "Status writes of the QoS loop, by kind (site, frontend).",
            ),
            &["kind"],
        )
        .expect("a valid metric");
        let qos_scrapes = IntCounterVec::new(
            Opts::new(
                "causeway_operator_qos_scrapes_total",
                "Fetches of gateway pods' QoS reports (/qos/pod) by the QoS loop, by result (ok, failed; a reply that is not a valid report is failed).",
            ),
            &["result"],
        )
        .expect("a valid metric");
        let scaling = IntCounterVec::new(
            Opts::new(
                "causeway_operator_scaling_events_total",
                "Pods the QoS loop added or gave back, by tier and direction (up, down).",
            ),
            &["tier", "direction"],
        )
        .expect("a valid metric");
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(managed.clone()),
            Box::new(leader.clone()),
            Box::new(qos_writes.clone()),
            Box::new(qos_scrapes.clone()),
            Box::new(scaling.clone()),
        ] {
            registry.register(collector).expect("registers once");
        }
        Self {
            registry,
            reconciliations,
            errors,
            duration,
            managed,
            leader,
            qos_writes,
            qos_scrapes,
            scaling,
        }
    }

    /// Counts a status write of the QoS loop on a `kind` ("site", "frontend").
    pub fn qos_write(&self, kind: &str) {
        self.qos_writes.with_label_values(&[kind]).inc();
    }

    /// Counts a scrape of a gateway pod.
    pub fn qos_scrape(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.qos_scrapes.with_label_values(&[result]).inc();
    }

    /// Counts a scaling step of `tier` ("backend", "frontend").
    pub fn scaled(&self, tier: &str, up: bool) {
        let direction = if up { "up" } else { "down" };
        self.scaling.with_label_values(&[tier, direction]).inc();
    }

    /// Counts a reconciliation of `controller` and times it until the timer drops.
    pub fn reconcile(&self, controller: Controller) -> ReconcileTimer {
        self.reconciliations
            .with_label_values(&[controller.as_str()])
            .inc();
        ReconcileTimer {
            histogram: self.duration.with_label_values(&[controller.as_str()]),
            started: Instant::now(),
        }
    }

    /// Counts a failed reconciliation by its error kind.
    pub fn failed(&self, controller: Controller, error: &Error) {
        self.errors
            .with_label_values(&[controller.as_str(), error.kind()])
            .inc();
    }

    /// Sets how many objects `controller` manages.
    pub fn set_managed(&self, controller: Controller, count: usize) {
        self.managed
            .with_label_values(&[controller.as_str()])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        causeway_admin::render(&self.registry)
    }

    /// The registry every family is in, for the admin server's `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Records a reconciliation's duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    histogram: prometheus::Histogram,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_times_and_labels_errors_by_kind() {
        let metrics = Metrics::new();
        drop(metrics.reconcile(Controller::Site));
        metrics.failed(
            Controller::Site,
            &Error::MissingField {
                kind: "Site",
                field: "x",
            },
        );
        metrics.set_managed(Controller::Frontend, 2);
        metrics.set_leader(true);
        let text = metrics.render();
        assert!(text.contains("causeway_operator_reconciliations_total{controller=\"site\"} 1"));
        assert!(text.contains(
            "causeway_operator_reconcile_errors_total{controller=\"site\",kind=\"missing_field\"} 1"
        ));
        assert!(
            text.contains(
                "causeway_operator_reconcile_duration_seconds_count{controller=\"site\"} 1"
            )
        );
        assert!(text.contains("causeway_operator_managed_objects{controller=\"frontend\"} 2"));
        assert!(text.contains("causeway_operator_leader 1"));
    }
}
