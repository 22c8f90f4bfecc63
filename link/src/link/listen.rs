//! The back-end side: accepts links from front-ends, answers their hello, and hands every
//! channel with a valid head to the gateway. A channel whose head is malformed is reset with
//! a logged reason; the link and its other channels carry on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use super::{Link, LinkView, LoadProbe, control};
use crate::blender::Blender;
use crate::channel::{Channel, ChannelReset};
use crate::congestion::ChannelCount;
use crate::error::LinkError;
use crate::frame::ChannelHead;
use crate::qos::Role;
use crate::settings::LinkSettings;
use crate::tls::LinkCredentials;

/// What the gateway does with each accepted channel.
pub trait ChannelHandler: Clone + Send + Sync + 'static {
    /// Serves one channel whose head has been read and checked.
    fn serve(
        &self,
        link: Arc<Link>,
        head: ChannelHead,
        channel: Channel,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// The live links of a back-end, for `/qos` and metrics.
#[derive(Debug, Default)]
pub struct LinkRegistry {
    links: Mutex<HashMap<usize, Arc<Link>>>,
}

impl LinkRegistry {
    /// Every live link.
    pub fn links(&self) -> Vec<Arc<Link>> {
        self.lock().values().cloned().collect()
    }

    /// Every live link as `/qos` shows it.
    pub fn views(&self) -> Vec<LinkView> {
        self.links().iter().map(|l| l.view()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Arc<Link>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A back-end's QUIC endpoint accepting links.
pub struct Listener {
    endpoint: quinn::Endpoint,
    /// Swapped whole when the certificate is renewed; each accepted link takes the current one.
    crypto: RwLock<Arc<quinn::crypto::rustls::QuicServerConfig>>,
    settings: Arc<LinkSettings>,
    load: LoadProbe,
    registry: Arc<LinkRegistry>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds the UDP socket.
    pub fn bind(
        address: SocketAddr,
        credentials: &LinkCredentials,
        settings: LinkSettings,
        load: LoadProbe,
    ) -> Result<Self, LinkError> {
        let crypto = Arc::new(credentials.server_config()?);
        let default = quinn::ServerConfig::with_crypto(crypto.clone());
        let endpoint = quinn::Endpoint::server(default, address)?;
        Ok(Self {
            endpoint,
            crypto: RwLock::new(crypto),
            settings: Arc::new(settings),
            load,
            registry: Arc::default(),
        })
    }

    /// Presents `credentials` to links accepted from now on (a renewed certificate); links up
    /// now keep the one they were opened with.
    ///
    /// # Errors
    /// When the credentials do not make a TLS configuration.
    pub fn set_credentials(&self, credentials: &LinkCredentials) -> Result<(), LinkError> {
        let crypto = Arc::new(credentials.server_config()?);
        *self
            .crypto
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = crypto;
        Ok(())
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, LinkError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// The live links.
    pub fn registry(&self) -> Arc<LinkRegistry> {
        self.registry.clone()
    }

    /// Stops accepting and closes every link.
    pub fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"back-end stopping");
    }

    /// Accepts links until the endpoint closes.
    pub async fn serve(&self, handler: impl ChannelHandler) {
        while let Some(incoming) = self.endpoint.accept().await {
            // Each link gets its own transport, so its congestion controller counts only its
            // own channels.
            let channels = ChannelCount::new();
            let crypto = self
                .crypto
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let mut config = quinn::ServerConfig::with_crypto(crypto);
            config.transport_config(Arc::new(self.settings.transport(channels.clone())));
            let remote = incoming.remote_address();
            let connecting = match incoming.accept_with(Arc::new(config)) {
                Ok(connecting) => connecting,
                Err(error) => {
                    tracing::warn!(%remote, %error, "link refused");
                    continue;
                }
            };
            let settings = self.settings.clone();
            let load = self.load.clone();
            let registry = self.registry.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let connection = match connecting.await {
                    Ok(connection) => connection,
                    Err(error) => {
                        // A peer without a certificate the CA signed ends here.
                        tracing::warn!(%remote, %error, "link handshake failed");
                        return;
                    }
                };
                let link = Link::new(
                    connection,
                    Role::Backend,
                    Blender::new(settings.blend),
                    channels,
                );
                if let Err(error) =
                    accept_link(link.clone(), settings, load, registry, handler).await
                {
                    tracing::warn!(%remote, %error, "link closed");
                    link.close(&error.to_string());
                }
            });
        }
    }
}

async fn accept_link(
    link: Arc<Link>,
    settings: Arc<LinkSettings>,
    load: LoadProbe,
    registry: Arc<LinkRegistry>,
    handler: impl ChannelHandler,
) -> Result<(), LinkError> {
    let control_channel = tokio::time::timeout(control::HELLO_TIMEOUT, async {
        let (send, recv) = link.connection.accept_bi().await?;
        let mut channel = Channel::new(
            send,
            recv,
            link.blender.clone(),
            0,
            ChannelCount::new().open_channel(),
        );
        let hello = control::receive(&mut channel).await?;
        link.set_peer_name(control::check_hello(hello, Role::Frontend)?);
        control::send(&mut channel, &control::hello(Role::Backend, &settings)).await?;
        Ok::<_, LinkError>(channel)
    })
    .await
    .map_err(|_| LinkError::Control("no hello from the front-end".to_owned()))??;
    let id = link.connection.stable_id();
    registry.lock().insert(id, link.clone());
    tracing::info!(peer = %link.peer_address(), name = %link.peer_name(), "link accepted");
    let control_task = tokio::spawn(control::run(link.clone(), control_channel, settings, load));
    let result = loop {
        let mut channel = match link.accept().await {
            Ok(channel) => channel,
            Err(error) => break error,
        };
        let link = link.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let head = match channel.receiver.read_frame().await {
                Ok(payload) => ChannelHead::decode(&payload).map_err(LinkError::from),
                Err(error) => Err(error),
            };
            match head {
                Ok(head) => {
                    channel.sender.set_class(head.class);
                    handler.serve(link, head, channel).await;
                }
                Err(error) => {
                    tracing::warn!(peer = %link.peer_address(), %error, "channel refused: bad head");
                    channel.receiver.stop(ChannelReset::Malformed);
                    channel.sender.reset(ChannelReset::Malformed);
                }
            }
        });
    };
    registry.lock().remove(&id);
    control_task.abort();
    tracing::info!(peer = %link.peer_address(), reason = %result, "link ended");
    Ok(())
}
