//! The front-end side: keeps one link to one back-end up for as long as the gateway runs,
//! redialling with exponential backoff and jitter when it drops — or until the back-end is
//! dropped from the configuration, when [`LinkHandle::drain`] lets its channels finish.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::{Link, LoadProbe, control};
use crate::blender::Blender;
use crate::congestion::ChannelCount;
use crate::error::LinkError;
use crate::qos::Role;
use crate::settings::LinkSettings;
use crate::tls::LinkCredentials;

/// A front-end's standing link to one back-end.
#[derive(Debug)]
pub struct LinkHandle {
    address: SocketAddr,
    current: watch::Receiver<Option<Arc<Link>>>,
    task: tokio::task::JoinHandle<()>,
    draining: AtomicBool,
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(link) = self.current.borrow().as_ref() {
            link.close("front-end stopping");
        }
    }
}

/// How often a draining link looks at its open channels.
const DRAIN_POLL: Duration = Duration::from_millis(50);

impl LinkHandle {
    /// The back-end's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The link, when it is up and not draining: the link to open a new channel on.
    pub fn current(&self) -> Option<Arc<Link>> {
        if self.draining.load(Ordering::Acquire) {
            return None;
        }
        self.current
            .borrow()
            .as_ref()
            .filter(|link| !link.is_closed())
            .cloned()
    }

    /// Whether [`LinkHandle::drain`] has been called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Retires the link gracefully: from now on it takes no new channel ([`LinkHandle::current`]
    /// says it is down) and is not redialled; the channels open on it go on until they finish,
    /// for at most `limit`, then the link closes. Returns once it is closed.
    ///
    /// A channel being opened at the very moment the drain starts (on a link fetched just
    /// before) is counted only once its stream is open, so the link is closed only after it
    /// has been seen idle twice, a poll apart.
    pub async fn drain(&self, limit: Duration) {
        self.draining.store(true, Ordering::Release);
        self.task.abort();
        let link = self.current.borrow().clone();
        let Some(link) = link else { return };
        let deadline = tokio::time::Instant::now() + limit;
        let mut idle_polls = 0;
        while idle_polls < 2 && !link.is_closed() && tokio::time::Instant::now() < deadline {
            idle_polls = if link.channels_open() == 0 {
                idle_polls + 1
            } else {
                0
            };
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if link.channels_open() > 0 {
            tracing::warn!(address = %self.address, channels = link.channels_open(), "drain time over; closing the link with channels open");
        }
        link.close("back-end removed from the configuration");
    }

    /// Waits until the link is up, at most `limit`.
    pub async fn wait_up(&self, limit: Duration) -> Option<Arc<Link>> {
        let mut current = self.current.clone();
        let up = current.wait_for(|link| link.as_ref().is_some_and(|l| !l.is_closed()));
        match tokio::time::timeout(limit, up).await {
            Ok(Ok(link)) => link.clone(),
            _ => None,
        }
    }
}

/// Dials links from one QUIC endpoint.
#[derive(Clone)]
pub struct Dialer {
    endpoint: quinn::Endpoint,
    /// Shared by every clone, so a renewed certificate reaches every later handshake.
    crypto: Arc<RwLock<Arc<quinn::crypto::rustls::QuicClientConfig>>>,
    settings: Arc<LinkSettings>,
    load: LoadProbe,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("local", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer on a fresh UDP socket bound to `bind` (port 0 for any).
    pub fn new(
        bind: SocketAddr,
        credentials: &LinkCredentials,
        settings: LinkSettings,
        load: LoadProbe,
    ) -> Result<Self, LinkError> {
        Ok(Self {
            endpoint: quinn::Endpoint::client(bind)?,
            crypto: Arc::new(RwLock::new(Arc::new(credentials.client_config()?))),
            settings: Arc::new(settings),
            load,
        })
    }

    /// Presents `credentials` from the next handshake on (a renewed certificate); links up
    /// now keep the one they were opened with.
    ///
    /// # Errors
    /// When the credentials do not make a TLS configuration.
    pub fn set_credentials(&self, credentials: &LinkCredentials) -> Result<(), LinkError> {
        let crypto = Arc::new(credentials.client_config()?);
        *self
            .crypto
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = crypto;
        Ok(())
    }

    /// Starts keeping a link to `address` up.
    pub fn spawn(&self, address: SocketAddr) -> LinkHandle {
        let (publish, current) = watch::channel(None);
        let dialer = self.clone();
        let task = tokio::spawn(async move { dialer.keep_up(address, publish).await });
        LinkHandle {
            address,
            current,
            task,
            draining: AtomicBool::new(false),
        }
    }

    /// Dials once: handshake, hello exchange, control stream started.
    pub async fn connect(&self, address: SocketAddr) -> Result<Arc<Link>, LinkError> {
        let channels = ChannelCount::new();
        let crypto = self
            .crypto
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut config = quinn::ClientConfig::new(crypto);
        config.transport_config(Arc::new(self.settings.transport(channels.clone())));
        let connection = self
            .endpoint
            .connect_with(config, address, &self.settings.server_name)?
            .await?;
        let link = Link::new(
            connection,
            Role::Frontend,
            Blender::new(self.settings.blend),
            channels,
        );
        let mut channel = link.open_control().await?;
        control::send(
            &mut channel,
            &control::hello(Role::Frontend, &self.settings),
        )
        .await?;
        let answer = tokio::time::timeout(control::HELLO_TIMEOUT, control::receive(&mut channel))
            .await
            .map_err(|_| LinkError::Control("no hello from the back-end".to_owned()))??;
        link.set_peer_name(control::check_hello(answer, Role::Backend)?);
        tokio::spawn(control::run(
            link.clone(),
            channel,
            self.settings.clone(),
            self.load.clone(),
        ));
        Ok(link)
    }

    async fn keep_up(self, address: SocketAddr, publish: watch::Sender<Option<Arc<Link>>>) {
        let mut backoff =
            Backoff::new(self.settings.reconnect_initial, self.settings.reconnect_max);
        loop {
            match self.connect(address).await {
                Ok(link) => {
                    tracing::info!(%address, peer = %link.peer_name(), "link up");
                    backoff.reset();
                    publish.send_replace(Some(link.clone()));
                    let reason = link.closed().await;
                    publish.send_replace(None);
                    tracing::warn!(%address, %reason, "link down; redialling");
                }
                Err(error) => {
                    let wait = backoff.next_wait(fastrand::f64());
                    tracing::warn!(%address, %error, retry_in = ?wait, "link dial failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl Link {
    async fn open_control(&self) -> Result<crate::channel::Channel, LinkError> {
        let (send, recv) = self.connection.open_bi().await?;
        Ok(crate::channel::Channel::new(
            send,
            recv,
            self.blender.clone(),
            0,
            // The control stream is not a hosted client connection: it must not raise N.
            ChannelCount::new().open_channel(),
        ))
    }
}

/// Exponential backoff with full jitter (a pure function of the attempt count and a random
/// draw), so front-ends that lost the same back-end do not redial in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// Starts again from `initial` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The wait before the next attempt, given a uniform draw in [0, 1).
    pub fn next_wait(&mut self, draw: f64) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Half fixed, half jitter: never hammer, never wait needlessly long.
        ceiling.mul_f64(0.5 + 0.5 * draw.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff.next_wait(1.0), Duration::from_millis(100));
        assert_eq!(backoff.next_wait(1.0), Duration::from_millis(200));
        assert_eq!(backoff.next_wait(0.0), Duration::from_millis(200));
        for _ in 0..20 {
            assert!(backoff.next_wait(1.0) <= Duration::from_secs(5));
        }
        assert_eq!(backoff.next_wait(0.0), Duration::from_millis(2500));
        backoff.reset();
        assert_eq!(backoff.next_wait(1.0), Duration::from_millis(100));
    }
}
