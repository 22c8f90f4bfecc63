//! Prometheus families of TMP links, labelled by peer gateway and end: both ends' view of
//! every link (RTT, loss, delivery rate, window, channels, queued bytes) and the bytes the
//! blender let through per class. Copied from the links once a second.

use std::sync::Arc;
use std::time::Duration;

use causeway_api::contract::qos::{LinkEnd, LinkReport};
use causeway_link::{Link, LinkView, QosReport};
use prometheus::{GaugeVec, IntCounterVec, Opts};
use tokio::sync::watch;

use crate::metrics::{Metrics, MetricsError};

/// Where the live links come from (a back-end's registry, a front-end's handles).
pub trait LinkSource: Send + Sync + 'static {
    /// The live links now.
    fn live_links(&self) -> Vec<Arc<Link>>;
}

impl LinkSource for causeway_link::LinkRegistry {
    fn live_links(&self) -> Vec<Arc<Link>> {
        self.links()
    }
}

struct LinkFamilies {
    rtt: GaugeVec,
    loss: GaugeVec,
    delivery_rate: GaugeVec,
    cwnd: GaugeVec,
    channels: GaugeVec,
    queued: GaugeVec,
    blended: IntCounterVec,
}

impl LinkFamilies {
    fn register(metrics: &Metrics) -> Result<Self, MetricsError> {
        let registry = metrics.registry();
        let gauge = |name: &str, help: &str| -> Result<GaugeVec, MetricsError> {
            let family = GaugeVec::new(Opts::new(name, help), &["peer", "end"])?;
            registry.register(Box::new(family.clone()))?;
            Ok(family)
        };
        let blended = IntCounterVec::new(
            Opts::new(
                "causeway_link_blended_bytes_total",
                "Bytes the blender let onto a link, by peer and priority class.",
            ),
            &["peer", "class"],
        )?;
        registry.register(Box::new(blended.clone()))?;
        Ok(Self {
            rtt: gauge(
                "causeway_link_rtt_seconds",
                "Smoothed round-trip time of a TMP link, as each end reports it.",
            )?,
            loss: gauge(
                "causeway_link_loss_ratio",
                "Smoothed packet loss of a TMP link, as each end reports it.",
            )?,
            delivery_rate: gauge(
                "causeway_link_delivery_rate_bytes",
                "Bytes per second each end put on a TMP link.",
            )?,
            cwnd: gauge(
                "causeway_link_cwnd_bytes",
                "Congestion window of each end of a TMP link.",
            )?,
            channels: gauge(
                "causeway_link_channels",
                "Channels (client connections) a TMP link hosts.",
            )?,
            queued: gauge(
                "causeway_link_queued_bytes",
                "Bytes waiting for a blender turn at each end of a TMP link.",
            )?,
            blended,
        })
    }

    fn record(
        &self,
        view: &LinkView,
        blended_before: &mut std::collections::HashMap<String, [u64; 5]>,
    ) {
        let peer = peer_label(view);
        for (end, report) in [
            ("frontend", &view.qos.frontend),
            ("backend", &view.qos.backend),
        ] {
            let Some(report) = report else { continue };
            self.record_report(&peer, end, report);
        }
        let before = blended_before.entry(peer.clone()).or_insert([0; 5]);
        for (class, (now, then)) in view.blended_bytes.iter().zip(before.iter_mut()).enumerate() {
            self.blended
                .with_label_values(&[peer.as_str(), &class.to_string()])
                .inc_by(now.saturating_sub(*then));
            *then = *now;
        }
    }

    fn record_report(&self, peer: &str, end: &str, report: &QosReport) {
        let labels = [peer, end];
        self.rtt
            .with_label_values(&labels)
            .set(report.rtt_ms / 1000.0);
        self.loss
            .with_label_values(&labels)
            .set(report.loss_smoothed);
        self.delivery_rate
            .with_label_values(&labels)
            .set(report.delivery_rate_bps as f64);
        self.cwnd
            .with_label_values(&labels)
            .set(report.cwnd_bytes as f64);
        self.channels
            .with_label_values(&labels)
            .set(report.channels as f64);
        self.queued
            .with_label_values(&labels)
            .set(report.queued_bytes as f64);
    }
}

/// The links' part of the pod's QoS report: each live link, with both ends' latest view.
/// A link neither end has reported on yet is left out (it has no figures), as it is from
/// the `causeway_link_*` families.
pub fn qos_links(links: &dyn LinkSource) -> Vec<LinkReport> {
    let end = |report: &QosReport| LinkEnd {
        rtt_ms: finite(report.rtt_ms),
        loss: finite(report.loss_smoothed),
        channels: report.channels,
    };
    links
        .live_links()
        .iter()
        .map(|link| link.view())
        .filter(|view| view.qos.frontend.is_some() || view.qos.backend.is_some())
        .map(|view| LinkReport {
            peer: peer_label(&view),
            frontend: view.qos.frontend.as_ref().map(end),
            backend: view.qos.backend.as_ref().map(end),
        })
        .collect()
}

fn finite(value: f64) -> f64 {
    if value.is_finite() { value } else { 0.0 }
}

/// The peer's label: its gateway name, or its address until the name is known.
fn peer_label(view: &LinkView) -> String {
    if view.peer_name.is_empty() {
        view.peer_address.to_string()
    } else {
        view.peer_name.clone()
    }
}

/// Copies every link's figures into the metric families once a second until shutdown.
pub async fn export(
    metrics: Metrics,
    links: Arc<impl LinkSource>,
    mut shutdown: watch::Receiver<bool>,
) {
    let families = match LinkFamilies::register(&metrics) {
        Ok(families) => families,
        Err(error) => {
            tracing::error!(%error, "link metrics unavailable");
            return;
        }
    };
    let mut blended_before = std::collections::HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = crate::shutdown::requested(&mut shutdown) => return,
        }
        // Links that went away keep their last figures until a new link to the same peer
        // replaces them; peers are few and named, so the label set stays small.
        for link in links.live_links() {
            families.record(&link.view(), &mut blended_before);
        }
    }
}
