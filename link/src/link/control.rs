//! The control stream: the first channel of every link. The front-end says hello, the
//! back-end answers, then each end sends its QoS report every interval and stores the peer's,
//! so both ends know the whole link. A malformed control message closes the link: without
//! the control stream neither end can judge the link.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Link, LoadProbe};
use crate::channel::Channel;
use crate::error::LinkError;
use crate::frame::{self, WIRE_VERSION};
use crate::qos::{QosReport, ReportBuilder, Role};
use crate::settings::LinkSettings;

/// How often the send window is fitted to the congestion window.
const WINDOW_FIT_INTERVAL: Duration = Duration::from_millis(50);

/// How long the first end waits for the other's hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A message on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ControlMessage {
    /// The first message each way.
    Hello {
        /// Wire version the sender speaks.
        version: u8,
        /// The sender's role.
        role: Role,
        /// The sender's gateway name.
        name: String,
    },
    /// One end's view of the link.
    Qos(QosReport),
}

/// Sends one control message.
pub(crate) async fn send(channel: &mut Channel, message: &ControlMessage) -> Result<(), LinkError> {
    let json = serde_json::to_vec(message).map_err(|e| LinkError::Control(e.to_string()))?;
    channel
        .sender
        .send_frame(frame::encode_control(&json))
        .await
}

/// Receives one control message.
pub(crate) async fn receive(channel: &mut Channel) -> Result<ControlMessage, LinkError> {
    let payload = channel.receiver.read_frame().await?;
    serde_json::from_slice(&payload).map_err(|e| LinkError::Control(e.to_string()))
}

/// Checks the peer's hello and returns its name.
pub(crate) fn check_hello(message: ControlMessage, expected: Role) -> Result<String, LinkError> {
    match message {
        ControlMessage::Hello {
            version,
            role,
            name,
        } if version == WIRE_VERSION && role == expected => Ok(name),
        ControlMessage::Hello { version, role, .. } => Err(LinkError::Control(format!(
            "hello from a {role:?} speaking version {version}; expected a {expected:?} speaking {WIRE_VERSION}"
        ))),
        ControlMessage::Qos(_) => Err(LinkError::Control("QoS report before hello".to_owned())),
    }
}

/// This end's hello.
pub(crate) fn hello(role: Role, settings: &LinkSettings) -> ControlMessage {
    ControlMessage::Hello {
        version: WIRE_VERSION,
        role,
        name: settings.name.clone(),
    }
}

/// Runs the control stream until the link closes; a peer's malformed message closes the link.
pub(crate) async fn run(
    link: Arc<Link>,
    mut channel: Channel,
    settings: Arc<LinkSettings>,
    load: LoadProbe,
) {
    let started = Instant::now();
    let mut builder = ReportBuilder::new(link.role(), settings.name.clone());
    let mut fit = tokio::time::interval(WINDOW_FIT_INTERVAL);
    let mut report = tokio::time::interval(settings.qos_interval);
    let peer_role = link.role().peer();
    let Channel { sender, receiver } = &mut channel;
    let receive_loop = async {
        loop {
            let payload = receiver.read_frame().await?;
            match serde_json::from_slice(&payload) {
                Ok(ControlMessage::Qos(report)) if report.role == peer_role => {
                    link.store_report(report)
                }
                Ok(other) => {
                    return Err(LinkError::Control(format!(
                        "unexpected control message {other:?}"
                    )));
                }
                Err(e) => return Err(LinkError::Control(e.to_string())),
            }
        }
    };
    let send_loop = async {
        loop {
            tokio::select! {
                _ = fit.tick() => {
                    link.fit_send_window();
                    continue;
                }
                _ = report.tick() => {}
                // The peer learns of a drain at once, not at the next interval.
                () = link.drain_started() => {}
            }
            let queued: usize = link.blender().queued_bytes().iter().sum();
            let mut report = builder.report(
                link.sample(),
                started.elapsed(),
                link.channels_open() as u64,
                queued as u64,
                load(),
            );
            report.draining = link.is_draining();
            link.store_report(report.clone());
            let json = serde_json::to_vec(&ControlMessage::Qos(report))
                .map_err(|e| LinkError::Control(e.to_string()))?;
            sender.send_frame(frame::encode_control(&json)).await?;
        }
    };
    let result: Result<(), LinkError> = tokio::select! {
        r = receive_loop => r,
        r = send_loop => r,
    };
    if let Err(error) = result {
        if link.is_closed() {
            tracing::debug!(peer = %link.peer_address(), %error, "control stream ended with the link");
        } else {
            tracing::warn!(peer = %link.peer_address(), %error, "closing link: control stream failed");
            link.close("control stream failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_are_checked_for_role_and_version() {
        let settings = LinkSettings::default();
        assert_eq!(
            check_hello(hello(Role::Backend, &settings), Role::Backend).ok(),
            Some("causeway".to_owned())
        );
        assert!(check_hello(hello(Role::Frontend, &settings), Role::Backend).is_err());
        let wrong = ControlMessage::Hello {
            version: 99,
            role: Role::Backend,
            name: String::new(),
        };
        assert!(check_hello(wrong, Role::Backend).is_err());
    }
}
