//! Accepting client connections — plain or TLS, HTTP/1.1 or HTTP/2 — with header, idle and
//! connection limits, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::framing_guard::{AmbiguousLength, AmbiguousRequest, Finding, FramingTracker};
use crate::preface_guard::{self, Expected, PrefaceGuard, Verdict};

/// Limits applied to every client connection of a listener.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Longest time to receive a whole request head; an idle HTTP/1 keep-alive connection is
    /// closed after it too, which is what stops slowloris clients.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no byte moving for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most client connections open at once; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Most connections open at once from one client address (one /64 for IPv6, where a
    /// client holds the whole prefix); more are closed at once. 0: no per-client limit.
    pub max_connections_per_ip: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_connections: 16_384,
            max_connections_per_ip: 1024,
            max_concurrent_streams: 256,
        }
    }
}

/// What a request handler knows about the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the client connected with TLS.
    pub tls: bool,
}

/// A request handler shared by every connection of a listener.
pub trait Handler: Send + Sync + 'static {
    /// The response body type.
    type Body: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;

    /// Answers one request; errors are answered inside, so this cannot fail.
    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static;
}

/// Counters a listener keeps about its connections.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections currently open.
    pub open: AtomicUsize,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections closed because of a protocol error (malformed request, oversized head, …).
    pub protocol_errors: AtomicU64,
    /// Connections closed at once because their client address had too many open.
    pub refused_per_ip: AtomicU64,
}

/// Connections open per client address, for the per-client limit.
#[derive(Debug, Default)]
struct OpenPerClient {
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One admitted connection's place in [`OpenPerClient`], given back when dropped.
struct ClientSlot {
    table: Arc<OpenPerClient>,
    client: IpAddr,
}

impl OpenPerClient {
    /// A slot for a connection from `peer`, unless it already has `limit` open (0: no limit).
    fn admit(self: &Arc<Self>, peer: IpAddr, limit: usize) -> Option<ClientSlot> {
        let client = client_key(peer);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(client).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: Arc::clone(self),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// The address a per-client limit counts by: the address itself for IPv4 (and IPv4-mapped
/// IPv6), its /64 for IPv6.
fn client_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets in-flight
/// requests finish for up to `drain`, and returns.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    stats: Arc<ListenerStats>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): a client that opens and cancels streams faster than
        // they are served has its connection closed instead of costing work per stream.
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(OpenPerClient::default());

    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = crate::shutdown::requested(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of descriptors is transient; back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::shutdown::requested(&mut shutdown) => break,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = per_client.admit(peer.ip(), limits.max_connections_per_ip) else {
            // Closed unanswered: anything written would cost the work the limit saves.
            stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, limit = limits.max_connections_per_ip, "too many connections from this client; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            handler: handler.clone(),
            tls: tls.clone(),
            limits: limits.clone(),
            stats: stats.clone(),
        };
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            connection.run(stream, peer, watcher).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "drain period over with requests still in flight");
    }
}

struct Connection<H> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: Arc<H>,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    stats: Arc<ListenerStats>,
}

impl<H: Handler> Connection<H> {
    async fn run(self, stream: TcpStream, peer: SocketAddr, watcher: Watcher) {
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        let flagged = Arc::new(AmbiguousRequest::default());
        let max_head = self.limits.max_header_bytes;
        match &self.tls {
            None => {
                let io = ClientIo::new(
                    stream,
                    Expected::Either,
                    activity.clone(),
                    max_head,
                    flagged.clone(),
                );
                let info = ConnectionInfo { peer, tls: false };
                self.drive(io, info, activity, flagged, watcher).await;
            }
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(tls_stream)) => {
                        // hyper's server picks the protocol from the first bytes alone; the
                        // guard holds the connection to what ALPN agreed.
                        let expected = Expected::from_alpn(tls_stream.get_ref().1.alpn_protocol());
                        let io = ClientIo::new(
                            tls_stream,
                            expected,
                            activity.clone(),
                            max_head,
                            flagged.clone(),
                        );
                        let info = ConnectionInfo { peer, tls: true };
                        self.drive(io, info, activity, flagged, watcher).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }

    async fn drive<IO>(
        &self,
        io: IO,
        info: ConnectionInfo,
        activity: Arc<Activity>,
        flagged: Arc<AmbiguousRequest>,
        watcher: Watcher,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.handler.clone();
        let requests = activity.clone();
        let sequence = Arc::new(AtomicU64::new(0));
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let handler = handler.clone();
            // HTTP/1 requests reach the service in the order their heads were read, so the
            // count of requests so far is the index the framing guard used.
            if flagged.is(sequence.fetch_add(1, Ordering::Relaxed)) {
                request.extensions_mut().insert(AmbiguousLength);
            }
            let in_flight = RequestInFlight::begin(requests.clone());
            async move {
                let response = handler.handle(request, info).await;
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = watcher.watch(connection);
        tokio::pin!(connection);
        let check_every = (self.limits.idle_timeout / 4).max(Duration::from_millis(100));
        let mut idle = IdleClock::new(&activity);
        loop {
            tokio::select! {
                result = &mut connection => {
                    if let Err(error) = result {
                        self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %info.peer, %error, "client connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep(check_every) => {
                    if idle.idle_for(&activity) >= self.limits.idle_timeout {
                        tracing::debug!(peer = %info.peer, "closing idle client connection");
                        return;
                    }
                }
            }
        }
    }
}

type Watcher = hyper_util::server::graceful::Watcher;

/// What a connection has been doing: I/O operations that moved bytes, and requests being
/// answered. Counting instead of time-stamping keeps the clock off the I/O path; the idle
/// check compares counts between its own ticks.
#[derive(Default)]
struct Activity {
    moved: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }
}

/// The idle check's memory: the activity count it last saw and since when.
struct IdleClock {
    seen: u64,
    since: Instant,
}

impl IdleClock {
    fn new(activity: &Activity) -> Self {
        Self {
            seen: activity.moved.load(Ordering::Relaxed),
            since: Instant::now(),
        }
    }

    /// How long nothing has moved and no request has been in flight, as of this check.
    fn idle_for(&mut self, activity: &Activity) -> Duration {
        let moved = activity.moved.load(Ordering::Relaxed);
        if moved != self.seen || activity.in_flight.load(Ordering::Relaxed) > 0 {
            self.seen = moved;
            self.since = Instant::now();
        }
        self.since.elapsed()
    }
}

struct RequestInFlight(Arc<Activity>);

impl RequestInFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A client stream as the server reads it: every operation that moves bytes is counted
    /// for the idle check, every byte read is followed by the framing guard, and the first
    /// bytes must be the protocol the connection agreed on (the preface guard).
    struct ClientIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
        framing: FramingTracker,
        flagged: Arc<AmbiguousRequest>,
        preface: PrefaceGuard,
        // Bytes of the GOAWAY already written, once the preface guard refused.
        goaway_sent: usize,
    }
}

impl<T> ClientIo<T> {
    fn new(
        inner: T,
        expected: Expected,
        activity: Arc<Activity>,
        max_head: usize,
        flagged: Arc<AmbiguousRequest>,
    ) -> Self {
        Self {
            inner,
            activity,
            framing: FramingTracker::new(max_head),
            flagged,
            preface: PrefaceGuard::new(expected),
            goaway_sent: 0,
        }
    }
}

/// The read error that ends a connection the preface guard refused.
fn refused_preface() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "the connection's first bytes are not the protocol it agreed on",
    )
}

/// Carries out a refusal of the preface guard: for [`Verdict::GoAway`], SETTINGS and GOAWAY
/// written (from the read side: hyper never writes on a connection whose first read fails,
/// and has seen none of its bytes), then the read error that ends the connection.
fn poll_refuse<T: AsyncWrite>(
    mut inner: Pin<&mut T>,
    sent: &mut usize,
    verdict: Verdict,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    if verdict == Verdict::GoAway {
        let goaway = &preface_guard::GOAWAY_PROTOCOL_ERROR;
        while *sent < goaway.len() {
            match inner.as_mut().poll_write(cx, &goaway[*sent..]) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Err(refused_preface())),
                Poll::Ready(Ok(n)) => *sent += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        if inner.poll_flush(cx).is_pending() {
            return Poll::Pending;
        }
    }
    Poll::Ready(Err(refused_preface()))
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut this = self.project();
        let refusing = |verdict| matches!(verdict, Verdict::GoAway | Verdict::Close);
        if !this.preface.passed() && refusing(this.preface.verdict()) {
            let verdict = this.preface.verdict();
            return poll_refuse(this.inner, this.goaway_sent, verdict, cx);
        }
        let before = buf.filled().len();
        let result = this.inner.as_mut().poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.activity.touch();
            if let Finding::Ambiguous(index) = this.framing.feed(read) {
                this.flagged.flag(index);
            }
            if !this.preface.passed() {
                let verdict = this.preface.feed(read);
                if refusing(verdict) {
                    // hyper must not see these bytes.
                    buf.set_filled(before);
                    return poll_refuse(this.inner, this.goaway_sent, verdict, cx);
                }
            }
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for ClientIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Binds a TCP listener with `SO_REUSEADDR` and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_client_limit_counts_v4_by_address_and_v6_by_64() {
        let table = Arc::new(OpenPerClient::default());
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let first = table.admit(a, 2);
        let second = table.admit(a, 2);
        assert!(first.is_some() && second.is_some());
        assert!(table.admit(a, 2).is_none(), "a third from one address");
        assert!(table.admit("192.0.2.2".parse().expect("ip"), 2).is_some());
        drop(first);
        assert!(table.admit(a, 2).is_some(), "a slot given back is reused");
        let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(client_key(v6a), client_key(v6b));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(client_key(mapped), a);
        assert!(table.admit(v6a, 0).is_some(), "0 means no limit");
    }

    #[test]
    fn idle_time_restarts_when_bytes_move_and_stops_while_requests_run() {
        let activity = Activity::default();
        let mut clock = IdleClock::new(&activity);
        std::thread::sleep(Duration::from_millis(30));
        assert!(clock.idle_for(&activity) >= Duration::from_millis(30));
        activity.touch();
        assert!(clock.idle_for(&activity) < Duration::from_millis(30));
        let request = RequestInFlight::begin(Arc::new(Activity::default()));
        let busy = request.0.clone();
        let mut busy_clock = IdleClock::new(&busy);
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            busy_clock.idle_for(&busy) < Duration::from_millis(30),
            "a request is in flight"
        );
        drop(request);
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            busy_clock.idle_for(&busy) < Duration::from_millis(30),
            "the answer moved bytes"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert!(busy_clock.idle_for(&busy) >= Duration::from_millis(30));
    }
}
