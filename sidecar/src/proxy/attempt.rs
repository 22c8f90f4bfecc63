//! One attempt on an origin, holding the origin's slot until the origin has answered — even
//! when the client goes away first.
//!
//! An origin keeps working on a request whose caller hung up (an application server does not
//! notice until it writes). Releasing the slot at the hang-up would let the balancer send the
//! origin another request while it is still busy with the abandoned one, so the origin would
//! see more than its high-water mark in flight. An abandoned attempt is therefore left to
//! finish in the background, bounded by the response timeout, and only then frees its slot.
//!
//! An attempt also watches the connection it was given. With hyper-util's pool, one request in
//! about 20 000 on a busy host was handed a kept-alive connection that then never wrote it: the
//! origin saw nothing, the socket held nothing, and the request waited out the whole response
//! timeout (a pooled HTTP/1 connection whose dispatcher is not woken; hyper#2312 reports the
//! like). The origin pool now checks a connection is ready before handing it out, and the
//! watch stays as the guard: a request its connection has not begun to write within the
//! connect timeout is abandoned and sent again on a new connection — no byte of it left, so
//! that is safe for any method. The watch and the response timeout share one timer.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;

use super::origin_connection::ConnectionHistory;
use super::origin_pool::{ConnectError, OriginConnection, OriginPool, PooledConnection};
use crate::balancer::Lease;
use crate::message::request_body::RequestBody;

/// Why an exchange with an origin failed.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// No connection could be had.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection failed while the request went out or the answer head came in.
    #[error("http/1.1 exchange")]
    Exchange {
        /// hyper's error.
        #[source]
        error: hyper::Error,
        /// How the connection had been used, to tell a lost kept-alive race.
        history: ConnectionHistory,
    },
}

impl OriginError {
    /// Whether no connection to the origin was made: the request cannot have reached it.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// What waiting for an origin's answer head gave.
pub enum AttemptResult {
    /// The origin answered (with the connection its body comes on), or the exchange failed.
    Answered(Result<(Response<Incoming>, PooledConnection), OriginError>),
    /// No answer head within the response timeout.
    TimedOut,
    /// The connection never began writing the request, which was abandoned: nothing of it
    /// reached the origin.
    NeverWritten,
}

type Exchange = Pin<Box<dyn Future<Output = AttemptResult> + Send>>;

/// A request sent to an origin, with the slot it holds there.
pub struct Attempt {
    in_progress: Option<(Exchange, Lease)>,
    sent: Instant,
}

/// How an attempt is made: on which pool, with what bounds.
#[derive(Clone, Copy, Debug)]
pub struct AttemptBounds {
    /// The longest wait for a connection, and for a checked-out one to begin writing.
    pub write_grace: Duration,
    /// The longest wait for the answer head, from the attempt's start.
    pub response_timeout: Duration,
    /// Whether the request must go on a new connection.
    pub fresh_connection: bool,
}

impl Attempt {
    /// Sends `request` on the slot `lease`, over a connection of `pool`; the answer head is
    /// awaited with [`Attempt::answer`].
    pub fn send(
        pool: Arc<OriginPool>,
        request: Request<RequestBody>,
        lease: Lease,
        bounds: AttemptBounds,
    ) -> Self {
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent) + bounds.response_timeout;
        Self {
            in_progress: Some((Box::pin(exchange(pool, request, bounds, deadline)), lease)),
            sent,
        }
    }

    /// When the request was sent.
    pub fn sent(&self) -> Instant {
        self.sent
    }

    /// Waits for the answer head, the response timeout, or the connection failing to write
    /// the request, and gives the slot back to the caller. `None` only if called twice.
    pub async fn answer(&mut self) -> Option<(AttemptResult, Lease)> {
        let (exchange, _) = self.in_progress.as_mut()?;
        let result = exchange.await;
        let (_, lease) = self.in_progress.take()?;
        Some((result, lease))
    }
}

/// Gets a connection, sends the request, and waits for the answer head, within `deadline`
/// and the write watch. A kept-alive connection that closes before writing a byte of the
/// request hands it back; it goes once more on a new connection, as nothing of it left.
async fn exchange(
    pool: Arc<OriginPool>,
    mut request: Request<RequestBody>,
    bounds: AttemptBounds,
    deadline: tokio::time::Instant,
) -> AttemptResult {
    let mut fresh = bounds.fresh_connection;
    loop {
        let connection = tokio::time::timeout_at(deadline, pool.connection(fresh)).await;
        let connection = match connection {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return AttemptResult::Answered(Err(error.into())),
            Err(_) => return AttemptResult::TimedOut,
        };
        return match exchange_on(connection, request, bounds.write_grace, deadline).await {
            Exchanged::Answered(head, connection) => {
                AttemptResult::Answered(Ok((head, PooledConnection::new(pool, connection))))
            }
            Exchanged::Failed(error) => AttemptResult::Answered(Err(error)),
            Exchanged::TimedOut => AttemptResult::TimedOut,
            Exchanged::NeverWritten => AttemptResult::NeverWritten,
            Exchanged::Unsent(back) if !fresh => {
                request = back;
                fresh = true;
                continue;
            }
            Exchanged::Unsent(_) => AttemptResult::NeverWritten,
        };
    }
}

/// What one connection did with a request.
enum Exchanged {
    Answered(Response<Incoming>, OriginConnection),
    Failed(OriginError),
    TimedOut,
    NeverWritten,
    /// The connection closed before writing any of the request, and gave it back.
    Unsent(Request<RequestBody>),
}

async fn exchange_on(
    mut connection: OriginConnection,
    request: Request<RequestBody>,
    write_grace: Duration,
    deadline: tokio::time::Instant,
) -> Exchanged {
    let (requests_before, between_requests) = connection.history().write_state();
    let response = connection.send(request);
    tokio::pin!(response);
    let watch_until = tokio::time::Instant::now() + write_grace;
    let mut watching = between_requests && watch_until < deadline;
    let timer = tokio::time::sleep_until(if watching { watch_until } else { deadline });
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            answer = &mut response => {
                return match answer {
                    Ok(head) => Exchanged::Answered(head, connection),
                    Err(mut unsent) => match unsent.take_message() {
                        Some(request) => Exchanged::Unsent(request),
                        None => Exchanged::Failed(OriginError::Exchange {
                            error: unsent.into_error(),
                            history: connection.history().clone(),
                        }),
                    },
                };
            }
            () = &mut timer => {
                if !watching {
                    return Exchanged::TimedOut;
                }
                if connection.history().write_state().0 == requests_before {
                    // Returning drops the response future, which cancels the request: hyper
                    // does not write a request whose caller is gone.
                    return Exchanged::NeverWritten;
                }
                watching = false;
                timer.as_mut().reset(deadline);
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Some((exchange, lease)) = self.in_progress.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let sent = self.sent;
        // The client left while the origin works: keep the slot until the origin is done.
        runtime.spawn(async move {
            let result = exchange.await;
            let (succeeded, counts) = match &result {
                AttemptResult::Answered(Ok((answer, _))) => {
                    (!super::is_gateway_error(answer.status()), true)
                }
                // The client's body broke, not the origin: nothing is known against it.
                AttemptResult::Answered(Err(error)) => {
                    (false, super::client_body_error(error).is_none())
                }
                AttemptResult::TimedOut => (false, true),
                // Nothing reached the origin.
                AttemptResult::NeverWritten => (false, false),
            };
            if counts {
                lease.record(sent.elapsed(), succeeded);
            }
            // Dropping the answer unread closes that origin connection; then the slot frees.
            drop(result);
            drop(lease);
        });
    }
}
