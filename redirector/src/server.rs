//! The authoritative server's sockets: UDP and TCP on one address, each packet handed to
//! [`wire::respond`] with the index in force.
//!
//! hickory-proto reads and writes the messages; the sockets are ours rather than
//! hickory-server's, because its `Authority` model serves records stored per zone, while
//! every answer here is computed per client from a snapshot swapped on change, and we want
//! to account for every dropped or malformed packet and keep the query path free of a task
//! spawn per UDP packet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::metrics::{Metrics, Recorder};
use crate::source::Published;
use crate::wire::{self, Limits, Malformed, Transport};

/// How long a TCP connection may stay idle between queries (RFC 7766 suggests seconds).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TCP connections served at once; more wait for a slot in the kernel's backlog.
pub const MAX_TCP_CONNECTIONS: usize = 1024;

/// The server's settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The address to serve UDP and TCP on.
    pub listen: SocketAddr,
    /// Response limits.
    pub limits: Limits,
    /// UDP receive loops sharing the socket (one per worker thread fills the CPUs).
    pub udp_workers: usize,
    /// Seed of the answer RNGs (worker `i` uses `seed + i`); random when `None`.
    pub seed: Option<u64>,
}

/// Bound sockets, ready to serve.
#[derive(Debug)]
pub struct Server {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    config: ServerConfig,
}

impl Server {
    /// Binds UDP and TCP on `config.listen` (port 0 picks one port free for both).
    ///
    /// # Errors
    /// When either socket cannot be bound.
    pub async fn bind(config: ServerConfig) -> Result<Self> {
        let listen_error = |address, source| Error::Listen { address, source };
        // With port 0 the UDP socket picks the port, and that port may already be a TCP
        // socket's (any outgoing connection's, say): pick again rather than fail.
        let mut tries_left = if config.listen.port() == 0 { 16 } else { 1 };
        loop {
            tries_left -= 1;
            let udp = UdpSocket::bind(config.listen)
                .await
                .map_err(|e| listen_error(config.listen, e))?;
            let address = udp
                .local_addr()
                .map_err(|e| listen_error(config.listen, e))?;
            match TcpListener::bind(address).await {
                Ok(tcp) => {
                    return Ok(Self {
                        udp: Arc::new(udp),
                        tcp,
                        config,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries_left > 0 => {}
                Err(e) => return Err(listen_error(address, e)),
            }
        }
    }

    /// The bound address.
    ///
    /// # Errors
    /// When the socket cannot tell.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.udp.local_addr().map_err(|source| Error::Listen {
            address: self.config.listen,
            source,
        })
    }

    /// Serves until the process stops. Before the first directory, queries are dropped
    /// (the readiness probe keeps clients away until then).
    pub async fn serve(self, published: Arc<Published>, metrics: Metrics) {
        let Self { udp, tcp, config } = self;
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..config.udp_workers.max(1) {
            let rng = rng_for(config.seed, worker);
            tasks.spawn(udp_loop(
                Arc::clone(&udp),
                Arc::clone(&published),
                metrics.recorder(),
                config.limits,
                rng,
            ));
        }
        tasks.spawn(tcp_loop(
            tcp,
            published,
            metrics,
            config.limits,
            rng_for(config.seed, config.udp_workers.max(1)),
        ));
        while tasks.join_next().await.is_some() {}
    }
}

fn rng_for(seed: Option<u64>, worker: usize) -> fastrand::Rng {
    match seed {
        Some(seed) => fastrand::Rng::with_seed(seed.wrapping_add(worker as u64)),
        None => fastrand::Rng::new(),
    }
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    published: Arc<Published>,
    mut recorder: Recorder,
    limits: Limits,
    mut rng: fastrand::Rng,
) {
    // One byte more than the largest query accepted, so an oversized one is recognised.
    let mut buffer = vec![0u8; wire::MAX_QUERY + 1];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors from earlier sends surface here on some systems: not fatal.
                tracing::debug!(%error, "UDP receive");
                continue;
            }
        };
        let started = Instant::now();
        let Some(index) = published.load() else {
            continue;
        };
        let outcome = wire::respond(
            &index,
            &buffer[..len],
            peer.ip(),
            Transport::Udp,
            limits,
            &mut rng,
        );
        if let Some(response) = &outcome.response
            && let Err(error) = socket.send_to(response, peer).await
        {
            tracing::debug!(%error, %peer, "UDP send");
        }
        recorder.record(
            &index,
            &outcome,
            Transport::Udp,
            started.elapsed().as_secs_f64(),
        );
    }
}

async fn tcp_loop(
    listener: TcpListener,
    published: Arc<Published>,
    metrics: Metrics,
    limits: Limits,
    mut seeds: fastrand::Rng,
) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                tracing::warn!(%error, "TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let published = Arc::clone(&published);
        let recorder = metrics.recorder();
        let rng = fastrand::Rng::with_seed(seeds.u64(..));
        tokio::spawn(async move {
            let _permit = permit;
            tcp_connection(stream, peer, published, recorder, limits, rng).await;
        });
    }
}

/// Serves one TCP connection: length-prefixed queries, answered in order, until the client
/// closes, stays idle for [`TCP_IDLE_TIMEOUT`], or sends a length above
/// [`wire::MAX_QUERY`] (the connection is then closed: its framing cannot be trusted).
async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    published: Arc<Published>,
    mut recorder: Recorder,
    limits: Limits,
    mut rng: fastrand::Rng,
) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    loop {
        let mut prefix = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut prefix)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let len = usize::from(u16::from_be_bytes(prefix));
        if len > wire::MAX_QUERY {
            recorder.malformed(Transport::Tcp, Malformed::Oversized);
            return;
        }
        buffer.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut buffer)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let started = Instant::now();
        let Some(index) = published.load() else {
            return;
        };
        let outcome = wire::respond(&index, &buffer, peer.ip(), Transport::Tcp, limits, &mut rng);
        recorder.record(
            &index,
            &outcome,
            Transport::Tcp,
            started.elapsed().as_secs_f64(),
        );
        let Some(response) = outcome.response else {
            // A dropped packet on a stream would leave the client waiting: close instead.
            return;
        };
        let Ok(len) = u16::try_from(response.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&response);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
