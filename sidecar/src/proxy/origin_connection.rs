//! Origin connections that remember how they were used, so the proxy can tell a kept-alive
//! connection the origin closed under a request from an origin that failed the request.
//!
//! An origin closes an idle kept-alive connection whenever it likes: its keep-alive timeout,
//! a restart, a pod leaving the Site. A request written on that connection just as the close
//! is on its way fails with no answer byte, and the origin's application never saw it; the
//! origin itself is fine. Such a request is sent again — for any method, when its body can be
//! sent again — at no cost to the retry budget and with no mark against the origin's health,
//! as browsers do with a reused connection that closes before any answer byte and as HAProxy's
//! `retry-on empty-response` does. A *fresh* connection that closes under a request is the
//! origin failing it, and is retried only as any other failure is.
//!
//! Each origin connection's TCP stream is a [`CountedTcp`] that counts the requests written on
//! it and the answer bytes read since the last one began; the pool keeps that
//! [`ConnectionHistory`] beside the connection, and the attempt reads it when the request fails.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How one origin connection has been used, shared between the stream and hyper-util.
#[derive(Clone, Debug, Default)]
pub struct ConnectionHistory(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    /// Requests begun on the connection: the first write after the previous answer's bytes.
    requests: AtomicU32,
    /// Bytes read since the current request began.
    answer_bytes: AtomicU64,
    /// Whether the last I/O was a read, so the next write begins a new request.
    reading: AtomicBool,
}

impl ConnectionHistory {
    /// Notes bytes written; the first write after a read (or ever) begins a request.
    fn wrote(&self) {
        let counters = &self.0;
        if counters.reading.swap(false, Ordering::Relaxed)
            || counters.requests.load(Ordering::Relaxed) == 0
        {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            counters.answer_bytes.store(0, Ordering::Relaxed);
        }
    }

    /// Notes `bytes` read from the origin.
    fn read(&self, bytes: usize) {
        if bytes > 0 {
            self.0.reading.store(true, Ordering::Relaxed);
            self.0
                .answer_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// The connection carried an earlier request and nothing of the current one's answer has
    /// arrived: a close now is the origin closing a connection it considered idle.
    pub fn reused_with_no_answer(&self) -> bool {
        self.0.requests.load(Ordering::Relaxed) > 1
            && self.0.answer_bytes.load(Ordering::Relaxed) == 0
    }

    /// How many requests the connection has begun writing, and whether it is between
    /// requests (nothing written since the last answer bytes, or nothing ever): the state a
    /// pooled connection is in when a request is handed to it.
    pub fn write_state(&self) -> (u32, bool) {
        let counters = &self.0;
        let requests = counters.requests.load(Ordering::Relaxed);
        (
            requests,
            requests == 0 || counters.reading.load(Ordering::Relaxed),
        )
    }

    /// Whether both are the history of the same connection.
    pub fn same_connection(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Whether a failed request is one a kept-alive connection lost as the origin closed it: the
/// connection was reused, no answer byte came, and it ended in a close or a reset (not a
/// timeout or a malformed answer, which the origin did send).
pub fn lost_to_a_closing_connection(error: &hyper::Error, history: &ConnectionHistory) -> bool {
    history.reused_with_no_answer() && ends_in_a_close(error)
}

fn ends_in_a_close(error: &(dyn std::error::Error + 'static)) -> bool {
    super::error_sources(error).any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
            || e.downcast_ref::<io::Error>().is_some_and(|io_error| {
                matches!(
                    io_error.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                )
            })
    })
}

/// An origin's TCP stream, counting at tokio's level, where a read's size is visible without
/// unsafe code.
#[derive(Debug)]
pub struct CountedTcp {
    tcp: TcpStream,
    history: ConnectionHistory,
}

impl CountedTcp {
    /// `tcp`, its use counted in `history`.
    pub fn new(tcp: TcpStream, history: ConnectionHistory) -> Self {
        Self { tcp, history }
    }
}

impl AsyncRead for CountedTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.history.read(buf.filled().len() - before);
        }
        poll
    }
}

impl AsyncWrite for CountedTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.history.wrote();
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.history.wrote();
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
