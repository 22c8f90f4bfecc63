//! One attempt on an origin, holding the origin's slot until the origin has answered — even
//! when the client goes away first.
//!
//! An origin keeps working on a request whose caller hung up (an application server does not
//! notice until it writes). Releasing the slot at the hang-up would let the balancer send the
//! origin another request while it is still busy with the abandoned one, so the origin would
//! see more than its high-water mark in flight. An abandoned attempt is therefore left to
//! finish in the background, bounded by the response timeout, and only then frees its slot.

use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::ResponseFuture;
use tokio::time::error::Elapsed;

use super::body::RequestBody;
use crate::balancer::Lease;
use crate::sites::{OriginClient, SiteRuntime};

/// What waiting for an origin's answer head gave.
pub type AttemptResult =
    Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, Elapsed>;

/// A request sent to an origin, with the slot it holds there.
pub struct Attempt {
    in_progress: Option<(ResponseFuture, Lease)>,
    deadline: tokio::time::Instant,
    sent: Instant,
}

impl Attempt {
    /// Sends `request` on the slot `lease` with one of `site`'s clients; the answer head is
    /// awaited with [`Attempt::answer`].
    pub fn send(
        site: &SiteRuntime,
        client: &OriginClient,
        request: Request<RequestBody>,
        lease: Lease,
    ) -> Self {
        Self {
            in_progress: Some((client.request(request), lease)),
            deadline: tokio::time::Instant::now() + site.response_timeout,
            sent: Instant::now(),
        }
    }

    /// When the request was sent.
    pub fn sent(&self) -> Instant {
        self.sent
    }

    /// Waits for the answer head or the response timeout, and gives the slot back to the
    /// caller. `None` only if called twice.
    pub async fn answer(&mut self) -> Option<(AttemptResult, Lease)> {
        let (response, _) = self.in_progress.as_mut()?;
        let result = tokio::time::timeout_at(self.deadline, response).await;
        let (_, lease) = self.in_progress.take()?;
        Some((result, lease))
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
