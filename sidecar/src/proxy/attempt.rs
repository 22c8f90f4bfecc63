//! One attempt on an origin, holding the origin's slot until the origin has answered — even
//! when the client goes away first.
//!
//! An origin keeps working on a request whose caller hung up (an application server does not
//! notice until it writes). Releasing the slot at the hang-up would let the balancer send the
//! origin another request while it is still busy with the abandoned one, so the origin would
//! see more than its high-water mark in flight. An abandoned attempt is therefore left to
//! finish in the background, bounded by the response timeout, and only then frees its slot.
//!
//! An attempt also watches the connection hyper's pool hands it. On a busy host, one request
//! in about 20 000 was handed a kept-alive connection that then never wrote it: the origin saw
//! nothing, the socket held nothing, and the request waited out the whole response timeout
//! (a pooled HTTP/1 connection whose dispatcher is not woken; hyper#2312 reports the like).
//! A request its connection has not begun to write within the connect timeout is abandoned
//! and sent again on a new connection: no byte of it left, so that is safe for any method.

use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::ResponseFuture;
use hyper_util::client::legacy::connect::{CaptureConnection, capture_connection};

use super::origin_connection::ConnectionHistory;
use crate::balancer::Lease;
use crate::message::request_body::RequestBody;
use crate::sites::{OriginClient, SiteRuntime};

/// What waiting for an origin's answer head gave.
pub enum AttemptResult {
    /// The origin answered, or the exchange failed.
    Answered(Result<Response<Incoming>, hyper_util::client::legacy::Error>),
    /// No answer head within the response timeout.
    TimedOut,
    /// The connection never began writing the request, which was abandoned: nothing of it
    /// reached the origin.
    NeverWritten,
    /// The connection stalled and the request was abandoned, but the connection began writing
    /// it as it was: the origin may have part of it.
    Stalled,
}

/// A request sent to an origin, with the slot it holds there.
pub struct Attempt {
    in_progress: Option<(ResponseFuture, Lease)>,
    connection: CaptureConnection,
    write_grace: Duration,
    deadline: tokio::time::Instant,
    sent: Instant,
}

impl Attempt {
    /// Sends `request` on the slot `lease` with one of `site`'s clients; the answer head is
    /// awaited with [`Attempt::answer`].
    pub fn send(
        site: &SiteRuntime,
        client: &OriginClient,
        mut request: Request<RequestBody>,
        lease: Lease,
    ) -> Self {
        let connection = capture_connection(&mut request);
        Self {
            in_progress: Some((client.request(request), lease)),
            connection,
            write_grace: site.connect_timeout,
            deadline: tokio::time::Instant::now() + site.response_timeout,
            sent: Instant::now(),
        }
    }

    /// When the request was sent.
    pub fn sent(&self) -> Instant {
        self.sent
    }

    /// Waits for the answer head, the response timeout, or the connection failing to write
    /// the request, and gives the slot back to the caller. `None` only if called twice.
    pub async fn answer(&mut self) -> Option<(AttemptResult, Lease)> {
        let (response, _) = self.in_progress.as_mut()?;
        let answered = tokio::select! {
            biased;
            answer = tokio::time::timeout_at(self.deadline, response) => Ok(answer),
            unwritten = unwritten_after(&mut self.connection, self.write_grace) => Err(unwritten),
        };
        let (response, lease) = self.in_progress.take()?;
        let result = match answered {
            Ok(Ok(answer)) => AttemptResult::Answered(answer),
            Ok(Err(_)) => AttemptResult::TimedOut,
            Err((history, requests)) => {
                // Dropping the response cancels the request; hyper does not write a request
                // whose caller is gone. A write that began in between is told apart.
                drop(response);
                if history.write_state().0 == requests {
                    AttemptResult::NeverWritten
                } else {
                    AttemptResult::Stalled
                }
            }
        };
        Some((result, lease))
    }
}

/// Resolves, with the connection's history and its request count then, once the connection
/// hyper's pool handed the request to has not begun writing it for `grace`; never while the
/// request is written, waiting for a connection, or moved to another connection.
async fn unwritten_after(
    connection: &mut CaptureConnection,
    grace: Duration,
) -> (ConnectionHistory, u32) {
    loop {
        let captured = connection
            .wait_for_connection_metadata()
            .await
            .as_ref()
            .and_then(ConnectionHistory::of_connected);
        let Some(history) = captured else {
            return std::future::pending().await;
        };
        let (requests, between_requests) = history.write_state();
        if !between_requests {
            // Already writing this request: the answer or the response timeout decides.
            return std::future::pending().await;
        }
        tokio::time::sleep(grace).await;
        let still_there = connection
            .connection_metadata()
            .as_ref()
            .and_then(ConnectionHistory::of_connected)
            .is_some_and(|now| now.same_connection(&history));
        if !still_there {
            // hyper moved the request to another connection: watch that one.
            continue;
        }
        if history.write_state().0 == requests {
            return (history, requests);
        }
        return std::future::pending().await;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Some((response, lease)) = self.in_progress.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (deadline, sent) = (self.deadline, self.sent);
        // The client left while the origin works: keep the slot until the origin is done.
        runtime.spawn(async move {
            let result = tokio::time::timeout_at(deadline, response).await;
            let succeeded =
                matches!(&result, Ok(Ok(answer)) if !super::is_gateway_error(answer.status()));
            let client_fault =
                matches!(&result, Ok(Err(error)) if super::client_body_error(error).is_some());
            if !client_fault {
                lease.record(sent.elapsed(), succeeded);
            }
            // Dropping the answer unread closes that origin connection; then the slot frees.
            drop(result);
            drop(lease);
        });
    }
}
