//! Link settings and the QUIC transport they make: keep-alives, idle timeout, flow-control
//! windows sized to the bandwidth-delay product, and our congestion controller.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::blender::BlendSettings;
use crate::congestion::{ChannelCount, ModelConfig};

/// How a gateway runs its TMP links.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// This gateway's name, sent to peers in reports.
    pub name: String,
    /// The name back-end certificates carry (checked by front-ends).
    pub server_name: String,
    /// Interval of QUIC keep-alive pings, so NATs and idle timers keep the link.
    pub keep_alive: Duration,
    /// A link silent this long is dead.
    pub idle_timeout: Duration,
    /// The longest RTT the link should run at full rate over.
    pub expected_rtt: Duration,
    /// The highest rate, bits per second, the link should reach at that RTT.
    pub expected_bandwidth_bps: u64,
    /// Interval of QoS reports on the control stream.
    pub qos_interval: Duration,
    /// First wait before redialling a lost link.
    pub reconnect_initial: Duration,
    /// Longest wait between redials.
    pub reconnect_max: Duration,
    /// Class weights and sub-packet size.
    pub blend: BlendSettings,
    /// Most channels open at once on one link.
    pub max_channels: u32,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            name: "causeway".to_owned(),
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            expected_rtt: Duration::from_millis(200),
            expected_bandwidth_bps: 1_000_000_000,
            qos_interval: Duration::from_secs(1),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            blend: BlendSettings::default(),
            max_channels: 10_000,
        }
    }
}

/// The DNS name back-end link certificates carry unless configured otherwise.
pub const DEFAULT_SERVER_NAME: &str = "causeway-backend";

/// The smallest windows used, whatever the settings say: a link must never be capped below
/// what a LAN needs.
const MIN_WINDOW: u64 = 1024 * 1024;

impl LinkSettings {
    /// Bytes in flight at full rate over the expected RTT.
    pub fn bdp_bytes(&self) -> u64 {
        let bytes = self.expected_bandwidth_bps as f64 / 8.0 * self.expected_rtt.as_secs_f64();
        (bytes as u64).max(MIN_WINDOW)
    }

    /// The QUIC transport for one link, whose congestion controller scales with `channels`.
    pub fn transport(&self, channels: ChannelCount) -> TransportConfig {
        let bdp = self.bdp_bytes();
        // quinn's defaults (1.25 MB per connection) cap a 100 ms link near 100 Mbit/s; the
        // receive windows must cover the whole bandwidth-delay product, a single stream half
        // of it so no one download fills the connection window alone.
        let connection_window = VarInt::from_u64(bdp.saturating_mul(2)).unwrap_or(VarInt::MAX);
        let stream_window = VarInt::from_u64(bdp).unwrap_or(VarInt::MAX);
        let mut transport = TransportConfig::default();
        transport
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok())
            .receive_window(connection_window)
            .stream_receive_window(stream_window)
            .send_window(bdp.saturating_mul(2))
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_channels))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .send_fairness(true)
            .congestion_controller_factory(Arc::new(ModelConfig::new(channels)));
        transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_bandwidth_delay_product() {
        let settings = LinkSettings {
            expected_rtt: Duration::from_millis(100),
            expected_bandwidth_bps: 1_000_000_000,
            ..LinkSettings::default()
        };
        assert_eq!(settings.bdp_bytes(), 12_500_000);
        let lan = LinkSettings {
            expected_rtt: Duration::from_micros(100),
            ..LinkSettings::default()
        };
        assert_eq!(lan.bdp_bytes(), MIN_WINDOW);
    }
}
