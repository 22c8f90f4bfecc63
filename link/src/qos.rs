//! Link quality as each end sees it, and the reports the two ends exchange so that both know
//! the whole link: RTT, loss, delivery rate, window, channels hosted, bytes queued and load.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Which end of a link a report describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The end next to the clients.
    Frontend,
    /// The end next to the origins.
    Backend,
}

impl Role {
    /// The other end.
    pub fn peer(self) -> Self {
        match self {
            Self::Frontend => Self::Backend,
            Self::Backend => Self::Frontend,
        }
    }
}

/// One end's view of the link over the last reporting interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QosReport {
    /// The reporting end.
    pub role: Role,
    /// The reporting gateway's name.
    pub name: String,
    /// Report number, counting from 1 on each link.
    pub seq: u64,
    /// Milliseconds since the Unix epoch when the report was made.
    pub at_ms: u64,
    /// Smoothed round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Lowest round-trip time seen, milliseconds.
    pub min_rtt_ms: f64,
    /// Packets lost over packets sent in the interval.
    pub loss: f64,
    /// Loss, smoothed over several intervals (what link choice uses).
    pub loss_smoothed: f64,
    /// Bytes per second put on the wire in the interval.
    pub delivery_rate_bps: u64,
    /// Congestion window, bytes.
    pub cwnd_bytes: u64,
    /// Channels hosted (the N the congestion controller scales with).
    pub channels: u64,
    /// Bytes waiting for a blender turn.
    pub queued_bytes: u64,
    /// Requests this gateway has in flight (its load).
    pub in_flight: u64,
    /// Requests waiting in this gateway's release queues.
    pub queued_requests: u64,
    /// The sender is shutting down: it finishes the channels it has and wants no new ones,
    /// which its peer then opens on other links.
    #[serde(default)]
    pub draining: bool,
}

/// The whole link as one end knows it: its own latest report and its peer's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkQos {
    /// The front-end's latest report.
    pub frontend: Option<QosReport>,
    /// The back-end's latest report.
    pub backend: Option<QosReport>,
}

impl LinkQos {
    /// Stores a report in its end's slot.
    pub fn store(&mut self, report: QosReport) {
        match report.role {
            Role::Frontend => self.frontend = Some(report),
            Role::Backend => self.backend = Some(report),
        }
    }

    /// The latest report of one end.
    pub fn of(&self, role: Role) -> Option<&QosReport> {
        match role {
            Role::Frontend => self.frontend.as_ref(),
            Role::Backend => self.backend.as_ref(),
        }
    }
}

/// Load a gateway reports to its peers with each QoS report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests waiting in release queues.
    pub queued: u64,
}

/// Counters read off the QUIC connection at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportSample {
    /// Smoothed RTT.
    pub rtt: Duration,
    /// Lowest RTT.
    pub min_rtt: Duration,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Packets sent since the connection opened.
    pub sent_packets: u64,
    /// Packets lost since the connection opened.
    pub lost_packets: u64,
    /// UDP bytes sent since the connection opened.
    pub sent_bytes: u64,
}

/// Turns successive transport samples into reports (pure: the caller supplies samples,
/// load and times).
#[derive(Debug, Clone)]
pub struct ReportBuilder {
    role: Role,
    name: String,
    seq: u64,
    previous: Option<(TransportSample, Duration)>,
    loss_smoothed: f64,
}

/// Weight of the newest interval in the smoothed loss.
const LOSS_SMOOTHING: f64 = 0.3;

impl ReportBuilder {
    /// A builder for one end of one link.
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Self {
            role,
            name: name.into(),
            seq: 0,
            previous: None,
            loss_smoothed: 0.0,
        }
    }

    /// The report for the interval ending at `now` (time since any fixed start).
    pub fn report(
        &mut self,
        sample: TransportSample,
        now: Duration,
        channels: u64,
        queued_bytes: u64,
        load: Load,
    ) -> QosReport {
        let (loss, delivery_rate_bps) = match self.previous {
            Some((before, then)) => {
                let sent = sample.sent_packets.saturating_sub(before.sent_packets);
                let lost = sample.lost_packets.saturating_sub(before.lost_packets);
                let loss = if sent == 0 {
                    0.0
                } else {
                    (lost as f64 / sent as f64).min(1.0)
                };
                let seconds = now.saturating_sub(then).as_secs_f64();
                let rate = if seconds > 0.0 {
                    (sample.sent_bytes.saturating_sub(before.sent_bytes) as f64 / seconds) as u64
                } else {
                    0
                };
                (loss, rate)
            }
            None => (0.0, 0),
        };
        self.loss_smoothed = if self.previous.is_none() {
            loss
        } else {
            LOSS_SMOOTHING * loss + (1.0 - LOSS_SMOOTHING) * self.loss_smoothed
        };
        self.previous = Some((sample, now));
        self.seq += 1;
        QosReport {
            role: self.role,
            name: self.name.clone(),
            seq: self.seq,
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            rtt_ms: sample.rtt.as_secs_f64() * 1000.0,
            min_rtt_ms: sample.min_rtt.as_secs_f64() * 1000.0,
            loss,
            loss_smoothed: self.loss_smoothed,
            delivery_rate_bps,
            cwnd_bytes: sample.cwnd,
            channels,
            queued_bytes,
            in_flight: load.in_flight,
            queued_requests: load.queued,
            draining: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent_packets: u64, lost_packets: u64, sent_bytes: u64) -> TransportSample {
        TransportSample {
            rtt: Duration::from_millis(50),
            min_rtt: Duration::from_millis(48),
            cwnd: 100_000,
            sent_packets,
            lost_packets,
            sent_bytes,
        }
    }

    #[test]
    fn loss_and_rate_are_per_interval() {
        let mut builder = ReportBuilder::new(Role::Frontend, "fe-1");
        let first = builder.report(
            sample(100, 0, 0),
            Duration::from_secs(1),
            3,
            0,
            Load::default(),
        );
        assert_eq!(first.seq, 1);
        assert_eq!(first.loss, 0.0);
        let second = builder.report(
            sample(1100, 20, 1_000_000),
            Duration::from_secs(2),
            3,
            0,
            Load {
                in_flight: 5,
                queued: 1,
            },
        );
        assert!((second.loss - 0.02).abs() < 1e-9);
        assert_eq!(second.delivery_rate_bps, 1_000_000);
        assert!((second.rtt_ms - 50.0).abs() < 1e-9);
        assert_eq!(second.in_flight, 5);
        // Smoothed loss moves towards the interval's loss without jumping to it.
        assert!(second.loss_smoothed > 0.0 && second.loss_smoothed < 0.02);
    }

    #[test]
    fn reports_land_in_their_end_slot() {
        let mut link = LinkQos::default();
        let mut builder = ReportBuilder::new(Role::Backend, "be-1");
        let report = builder.report(sample(1, 0, 0), Duration::ZERO, 0, 0, Load::default());
        link.store(report.clone());
        assert_eq!(link.of(Role::Backend), Some(&report));
        assert_eq!(link.of(Role::Frontend), None);
        let json = serde_json::to_string(&report).expect("serializes");
        assert!(json.contains("\"role\":\"backend\""));
        assert_eq!(
            serde_json::from_str::<QosReport>(&json).expect("parses"),
            report
        );
    }
}
