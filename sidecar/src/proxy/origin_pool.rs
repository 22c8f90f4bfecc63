//! Each origin's own HTTP/1.1 connections: a stack of idle kept-alive connections per origin,
//! checked out by the request that holds the origin's lease and given back by its answer's
//! body when the last byte has come.
//!
//! The pool is per origin, so a request finds its connection by the origin its lease names —
//! no lookup by URI, no shared map across origins. Idle connections are taken last in, first
//! out: the most recently used one is the one least likely to have been closed by the origin,
//! and the rarely used ones at the bottom age out (they are dropped once older than the idle
//! timeout, or when the stack is full). A connection goes back only when its answer was read to
//! the end; an answer abandoned midway closes it, as the bytes still on the wire would
//! otherwise be read as the next answer.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::origin_connection::{ConnectionHistory, CountedTcp};
use crate::message::request_body::RequestBody;

/// How long an idle kept-alive connection is kept for reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept per origin; more idle than that are closed.
pub const MAX_IDLE: usize = 1024;

/// TCP keep-alive probes on origin connections, so a silently vanished origin is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Why no connection to an origin could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The origin's host name gave no address.
    #[error("no address for {authority}")]
    Resolve {
        /// The origin's `host:port`.
        authority: Authority,
        /// The resolver's error.
        source: io::Error,
    },
    /// Every address refused or failed.
    #[error("tcp connect to {address}")]
    Refused {
        /// The last address tried.
        address: SocketAddr,
        /// The socket's error.
        source: io::Error,
    },
    /// Nothing answered within the connect timeout.
    #[error("tcp connect to {authority} timed out after {timeout:?}")]
    TimedOut {
        /// The origin's `host:port`.
        authority: Authority,
        /// The Site's connect timeout.
        timeout: Duration,
    },
    /// The HTTP/1.1 handshake on the new connection failed.
    #[error("http/1.1 handshake: {0}")]
    Handshake(#[source] hyper::Error),
}

/// A failed send, with the request when none of it was written.
pub type Unsent = hyper::client::conn::TrySendError<http::Request<RequestBody>>;

/// Whether an origin's pool keeps connections for later requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Idle connections are kept (up to [`IDLE_TIMEOUT`]) and reused.
    KeepAlive,
    /// Every request opens a connection of its own, closed after the answer.
    None,
}

/// One origin's connections.
#[derive(Debug)]
pub struct OriginPool {
    authority: Authority,
    connect_timeout: Duration,
    pooling: Pooling,
    idle: Mutex<Vec<IdleConnection>>,
}

#[derive(Debug)]
struct IdleConnection {
    sender: SendRequest<RequestBody>,
    history: ConnectionHistory,
    since: Instant,
}

/// A connection to an origin, checked out for one request.
#[derive(Debug)]
pub struct OriginConnection {
    sender: SendRequest<RequestBody>,
    history: ConnectionHistory,
}

impl OriginConnection {
    /// How the connection has been used, for telling a lost kept-alive race from a failure.
    pub fn history(&self) -> &ConnectionHistory {
        &self.history
    }

    /// Sends `request`; the answer head comes from the returned future. A request the
    /// connection closed under before writing a byte of it comes back with the error.
    pub fn send(
        &mut self,
        request: http::Request<RequestBody>,
    ) -> impl Future<Output = Result<http::Response<hyper::body::Incoming>, Unsent>> + Send + 'static
    {
        self.sender.try_send_request(request)
    }
}

/// A connection that goes back to its pool when its answer has been read to the end.
#[derive(Debug)]
pub struct PooledConnection {
    pool: Arc<OriginPool>,
    connection: OriginConnection,
}

impl PooledConnection {
    /// `connection`, to go back to `pool`.
    pub fn new(pool: Arc<OriginPool>, connection: OriginConnection) -> Self {
        Self { pool, connection }
    }

    /// The answer was read to its end: the connection may carry another request.
    pub fn give_back(self) {
        self.pool.give_back(self.connection);
    }
}

impl OriginPool {
    /// The pool of the origin at `authority`.
    pub fn new(authority: Authority, connect_timeout: Duration, pooling: Pooling) -> Self {
        Self {
            authority,
            connect_timeout,
            pooling,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Where the origin is.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The longest wait for a new connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// A connection ready to take a request: the most recently idle one that still is, or a
    /// new one. `fresh` asks for a new connection whatever is idle.
    ///
    /// # Errors
    /// [`ConnectError`] when a new connection was needed and could not be made.
    pub async fn connection(&self, fresh: bool) -> Result<OriginConnection, ConnectError> {
        if !fresh && let Some(connection) = self.take_idle() {
            return Ok(connection);
        }
        self.connect().await
    }

    fn take_idle(&self) -> Option<OriginConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // A connection whose task has not yet taken in the end of its last answer is not
        // ready for a moment; it stays for a later request. One the origin closed, or idle
        // too long, goes.
        let mut not_yet_ready = Vec::new();
        let mut found = None;
        while let Some(candidate) = idle.pop() {
            if candidate.sender.is_closed() || candidate.since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            if candidate.sender.is_ready() {
                found = Some(OriginConnection {
                    sender: candidate.sender,
                    history: candidate.history,
                });
                break;
            }
            not_yet_ready.push(candidate);
        }
        idle.extend(not_yet_ready.into_iter().rev());
        found
    }

    /// Takes back a connection whose answer was read to its end.
    pub fn give_back(&self, connection: OriginConnection) {
        if self.pooling == Pooling::None || connection.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The bottom of the stack is the longest idle: it is the first to go.
        if idle
            .first()
            .is_some_and(|oldest| oldest.since.elapsed() >= IDLE_TIMEOUT)
        {
            idle.retain(|c| c.since.elapsed() < IDLE_TIMEOUT && !c.sender.is_closed());
        }
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(IdleConnection {
            sender: connection.sender,
            history: connection.history,
            since: Instant::now(),
        });
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn connect(&self) -> Result<OriginConnection, ConnectError> {
        let tcp = tokio::time::timeout(self.connect_timeout, self.dial())
            .await
            .map_err(|_| ConnectError::TimedOut {
                authority: self.authority.clone(),
                timeout: self.connect_timeout,
            })??;
        let history = ConnectionHistory::default();
        let io = TokioIo::new(CountedTcp::new(tcp, history.clone()));
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(ConnectError::Handshake)?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(origin = %authority, %error, "origin connection ended");
            }
        });
        Ok(OriginConnection { sender, history })
    }

    /// A TCP connection to the first of the origin's addresses that takes one.
    async fn dial(&self) -> Result<TcpStream, ConnectError> {
        let port = self.authority.port_u16().unwrap_or(80);
        let addresses = tokio::net::lookup_host((self.authority.host(), port))
            .await
            .map_err(|source| ConnectError::Resolve {
                authority: self.authority.clone(),
                source,
            })?;
        let mut last = None;
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(tcp) => {
                    configure(&tcp);
                    return Ok(tcp);
                }
                Err(source) => last = Some(ConnectError::Refused { address, source }),
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::Resolve {
            authority: self.authority.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "the name has no address"),
        }))
    }
}

/// Socket options of an origin connection: no Nagle delay on small heads, and keep-alive
/// probes. Failing to set them costs latency, not correctness, so it is only logged.
fn configure(tcp: &TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set on an origin connection");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(error) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "TCP keep-alive not set on an origin connection");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An origin on loopback answering `ok` to every request; with `close_after_answer` it
    /// says `Connection: close` and hangs up after each answer. Counts connections accepted.
    async fn origin(close_after_answer: bool) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let Ok(n) = tcp.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            head.drain(..end + 4);
                            let answer: &[u8] = if close_after_answer {
                                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            if tcp.write_all(answer).await.is_err() || close_after_answer {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let authority = address.to_string().parse().expect("authority");
        (authority, accepted)
    }

    fn get() -> http::Request<RequestBody> {
        http::Request::get("/")
            .header(http::header::HOST, "pool.test")
            .body(RequestBody::Empty)
            .expect("request")
    }

    /// Sends one GET and reads the answer to its end.
    async fn exchange(connection: &mut OriginConnection) {
        let response = connection.send(get()).await.expect("answer");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), "ok");
    }

    /// Waits, with a generous deadline, for the pool to hand out a ready idle connection.
    async fn ready_idle(pool: &OriginPool) -> OriginConnection {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(connection) = pool.take_idle() {
                return connection;
            }
            assert!(Instant::now() < deadline, "no idle connection became ready");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_is_reused_last_in_first_out() {
        let (authority, accepted) = origin(false).await;
        let pool = OriginPool::new(authority, Duration::from_secs(2), Pooling::KeepAlive);
        let mut first = pool.connection(false).await.expect("first");
        let mut second = pool.connection(false).await.expect("second");
        exchange(&mut first).await;
        exchange(&mut second).await;
        let second_history = second.history().clone();
        pool.give_back(first);
        pool.give_back(second);
        assert_eq!(pool.idle_count(), 2);

        let mut again = ready_idle(&pool).await;
        assert!(
            again.history().same_connection(&second_history),
            "the last given back comes first"
        );
        exchange(&mut again).await;
        assert_eq!(
            again.history().write_state().0,
            2,
            "a second request on the same connection"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "no third connection was opened"
        );
    }

    #[tokio::test]
    async fn a_fresh_connection_is_new_whatever_is_idle() {
        let (authority, accepted) = origin(false).await;
        let pool = OriginPool::new(authority, Duration::from_secs(2), Pooling::KeepAlive);
        let mut first = pool.connection(false).await.expect("first");
        exchange(&mut first).await;
        pool.give_back(first);
        let mut fresh = pool.connection(true).await.expect("fresh");
        exchange(&mut fresh).await;
        assert_eq!(fresh.history().write_state().0, 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unpooled_origin_keeps_nothing() {
        let (authority, _) = origin(false).await;
        let pool = OriginPool::new(authority, Duration::from_secs(2), Pooling::None);
        let mut connection = pool.connection(false).await.expect("connection");
        exchange(&mut connection).await;
        pool.give_back(connection);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_origin_closed_is_never_handed_out() {
        let (authority, accepted) = origin(true).await;
        let pool = OriginPool::new(authority, Duration::from_secs(2), Pooling::KeepAlive);
        let mut connection = pool.connection(false).await.expect("connection");
        exchange(&mut connection).await;
        // The answer said `Connection: close`: hyper's connection task ends; wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !connection.sender.is_closed() {
            assert!(
                Instant::now() < deadline,
                "the closed connection never said so"
            );
            tokio::task::yield_now().await;
        }
        pool.give_back(connection);
        assert_eq!(pool.idle_count(), 0, "a closed connection is not kept");
        let mut next = pool.connection(false).await.expect("next");
        exchange(&mut next).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_typed_error() {
        // Bind and drop a listener: its port then refuses connections.
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("address")
        };
        let authority: Authority = address.to_string().parse().expect("authority");
        let pool = OriginPool::new(authority, Duration::from_secs(2), Pooling::KeepAlive);
        match pool.connection(false).await {
            Err(ConnectError::Refused {
                address: refused, ..
            }) => assert_eq!(refused, address),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
