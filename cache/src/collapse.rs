//! Request collapsing: concurrent misses (or revalidations) of one resource make one upstream
//! request. The first becomes the leader and fetches; the others follow and get what it
//! stored.
//!
//! Followers only ever receive a *stored* entry: when the leader's response is not storable
//! (private, too large, an error) or the leader fails or is dropped, followers are told to go
//! upstream themselves, so nobody is handed a response meant for someone else. Followers
//! per flight are bounded and wait at most a timeout, after which they go upstream too: a
//! slow origin then costs the requests it would have cost without a cache, never more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::watch;

use crate::key::PrimaryKey;
use crate::store::StoredEntry;

/// Bounds of collapsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollapseSettings {
    /// Followers per flight; later requests go upstream alone.
    pub max_waiters: usize,
    /// The longest a follower waits for its leader.
    pub timeout: Duration,
}

impl Default for CollapseSettings {
    fn default() -> Self {
        Self {
            max_waiters: 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

/// How a flight ended, as published to its followers.
#[derive(Debug, Clone)]
pub enum FlightOutcome {
    /// The leader stored (or revalidated) this entry.
    Stored(Arc<StoredEntry>),
    /// The leader's response may not be shared.
    NotShared,
    /// The leader failed or was dropped before publishing.
    Failed,
}

/// What one request does about the upstream fetch of its resource.
#[derive(Debug)]
pub enum Collapse {
    /// Fetch, then publish the outcome through the guard.
    Leader(FlightLeader),
    /// Wait for the leader's outcome.
    Follower(Follower),
    /// Fetch alone, publishing nothing (too many followers already, or a request that cannot
    /// lead, such as `HEAD` or one whose response will not be stored).
    Alone,
}

/// Why a follower goes upstream after all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoUpstream {
    /// The leader's response was not shareable.
    NotShared,
    /// The leader failed.
    LeaderFailed,
    /// The leader took longer than the collapse timeout.
    TimedOut,
    /// The stored entry is another `Vary` variant than this request selects.
    OtherVariant,
}

type Flights = Mutex<HashMap<PrimaryKey, Arc<Flight>>>;

#[derive(Debug)]
struct Flight {
    outcome: watch::Sender<Option<FlightOutcome>>,
    followers: AtomicUsize,
}

/// The flights in progress of one Site's cache.
#[derive(Debug, Default)]
pub struct Collapser {
    flights: Arc<Flights>,
    settings: CollapseSettings,
}

impl Collapser {
    /// No flights yet.
    #[must_use]
    pub fn new(settings: CollapseSettings) -> Self {
        Self {
            flights: Arc::default(),
            settings,
        }
    }

    /// Leads a new flight for `key`, or follows the one in progress (carrying the request's
    /// headers to check the `Vary` variant of what it gets). `may_lead` is false for requests
    /// whose response will not be stored: they follow a flight in progress or go alone.
    pub fn join(&self, key: &PrimaryKey, request_headers: &HeaderMap, may_lead: bool) -> Collapse {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = flights.get(key) {
            let reserved = flight
                .followers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.settings.max_waiters).then_some(n + 1)
                })
                .is_ok();
            if !reserved {
                return Collapse::Alone;
            }
            return Collapse::Follower(Follower {
                outcome: flight.outcome.subscribe(),
                timeout: self.settings.timeout,
                request_headers: request_headers.clone(),
            });
        }
        if !may_lead {
            return Collapse::Alone;
        }
        flights.insert(
            key.clone(),
            Arc::new(Flight {
                outcome: watch::channel(None).0,
                followers: AtomicUsize::new(0),
            }),
        );
        Collapse::Leader(FlightLeader {
            key: key.clone(),
            flights: Arc::clone(&self.flights),
            published: false,
        })
    }

    /// Leads a flight only if none is in progress: a background revalidation or refresh that
    /// someone else already runs is not duplicated.
    #[must_use]
    pub fn try_lead(&self, key: &PrimaryKey) -> Option<FlightLeader> {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if flights.contains_key(key) {
            return None;
        }
        flights.insert(
            key.clone(),
            Arc::new(Flight {
                outcome: watch::channel(None).0,
                followers: AtomicUsize::new(0),
            }),
        );
        Some(FlightLeader {
            key: key.clone(),
            flights: Arc::clone(&self.flights),
            published: false,
        })
    }

    /// Flights in progress.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The leader of a flight. Dropping it unpublished (an error, a cancelled request) tells the
/// followers the leader failed, so none waits for the timeout.
#[derive(Debug)]
#[must_use = "dropping the leader fails its followers"]
pub struct FlightLeader {
    key: PrimaryKey,
    flights: Arc<Flights>,
    published: bool,
}

impl FlightLeader {
    /// The resource this flight fetches.
    #[must_use]
    pub fn key(&self) -> &PrimaryKey {
        &self.key
    }

    /// Ends the flight, handing the outcome to every follower.
    pub fn publish(mut self, outcome: FlightOutcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: FlightOutcome) {
        if self.published {
            return;
        }
        self.published = true;
        let flight = self
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        if let Some(flight) = flight {
            // Followers that already gave up dropped their receivers; nothing to do for them.
            flight.outcome.send_replace(Some(outcome));
        }
    }
}

impl Drop for FlightLeader {
    fn drop(&mut self) {
        self.finish(FlightOutcome::Failed);
    }
}

/// A request waiting for a leader.
#[derive(Debug)]
pub struct Follower {
    outcome: watch::Receiver<Option<FlightOutcome>>,
    timeout: Duration,
    request_headers: HeaderMap,
}

impl Follower {
    /// Waits for the leader: the stored entry if it selects this request's variant, else why
    /// to go upstream.
    ///
    /// # Errors
    /// The reason this request must fetch for itself.
    pub async fn wait(mut self) -> Result<Arc<StoredEntry>, GoUpstream> {
        let outcome = match tokio::time::timeout(
            self.timeout,
            self.outcome.wait_for(Option::is_some),
        )
        .await
        {
            Err(_) => return Err(GoUpstream::TimedOut),
            // The sender is dropped only after publishing, so a closed channel is a failure.
            Ok(Err(_)) => return Err(GoUpstream::LeaderFailed),
            Ok(Ok(outcome)) => outcome.clone(),
        };
        match outcome {
            Some(FlightOutcome::Stored(entry))
                if entry.variant().matches(&self.request_headers) =>
            {
                Ok(entry)
            }
            Some(FlightOutcome::Stored(_)) => Err(GoUpstream::OtherVariant),
            Some(FlightOutcome::NotShared) => Err(GoUpstream::NotShared),
            Some(FlightOutcome::Failed) | None => Err(GoUpstream::LeaderFailed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ExchangeTimes;
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};
    use std::time::SystemTime;

    fn key() -> PrimaryKey {
        PrimaryKey::from_uri(&http::Uri::from_static("http://h/a")).expect("key")
    }

    fn stored(vary_on_lang: Option<&'static str>) -> Arc<StoredEntry> {
        let mut headers = HeaderMap::new();
        let mut request = HeaderMap::new();
        if let Some(lang) = vary_on_lang {
            headers.insert("vary", HeaderValue::from_static("accept-language"));
            request.insert("accept-language", HeaderValue::from_static(lang));
        }
        let now = SystemTime::UNIX_EPOCH;
        let times = ExchangeTimes {
            request_time: now,
            response_time: now,
        };
        Arc::new(StoredEntry::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(b"x"),
            &request,
            times,
            None,
        ))
    }

    fn leader(collapse: Collapse) -> FlightLeader {
        match collapse {
            Collapse::Leader(leader) => leader,
            other => panic!("expected a leader, got {other:?}"),
        }
    }

    fn follower(collapse: Collapse) -> Follower {
        match collapse {
            Collapse::Follower(follower) => follower,
            other => panic!("expected a follower, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_leader_many_followers_share_a_stored_entry() {
        let collapser = Collapser::new(CollapseSettings::default());
        let none = HeaderMap::new();
        let lead = leader(collapser.join(&key(), &none, true));
        let waits: Vec<_> = (0..10)
            .map(|_| tokio::spawn(follower(collapser.join(&key(), &none, true)).wait()))
            .collect();
        lead.publish(FlightOutcome::Stored(stored(None)));
        for wait in waits {
            assert!(wait.await.expect("task").is_ok());
        }
        assert_eq!(collapser.in_flight(), 0);
        // The next miss leads a new flight.
        assert!(matches!(
            collapser.join(&key(), &none, true),
            Collapse::Leader(_)
        ));
    }

    #[tokio::test]
    async fn a_failed_or_dropped_leader_sends_followers_upstream() {
        let collapser = Collapser::new(CollapseSettings::default());
        let none = HeaderMap::new();
        let lead = leader(collapser.join(&key(), &none, true));
        let waiting = follower(collapser.join(&key(), &none, true));
        drop(lead);
        assert_eq!(waiting.wait().await.err(), Some(GoUpstream::LeaderFailed));
        assert_eq!(collapser.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_private_response_is_not_shared() {
        let collapser = Collapser::new(CollapseSettings::default());
        let none = HeaderMap::new();
        let lead = leader(collapser.join(&key(), &none, true));
        let waiting = follower(collapser.join(&key(), &none, true));
        lead.publish(FlightOutcome::NotShared);
        assert_eq!(waiting.wait().await.err(), Some(GoUpstream::NotShared));
    }

    #[tokio::test]
    async fn another_variant_goes_upstream() {
        let collapser = Collapser::new(CollapseSettings::default());
        let french: HeaderMap = [(
            http::header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("fr"),
        )]
        .into_iter()
        .collect();
        let lead = leader(collapser.join(&key(), &HeaderMap::new(), true));
        let waiting = follower(collapser.join(&key(), &french, true));
        lead.publish(FlightOutcome::Stored(stored(Some("en"))));
        assert_eq!(waiting.wait().await.err(), Some(GoUpstream::OtherVariant));
    }

    #[tokio::test(start_paused = true)]
    async fn followers_time_out() {
        let settings = CollapseSettings {
            max_waiters: 4,
            timeout: Duration::from_secs(2),
        };
        let collapser = Collapser::new(settings);
        let none = HeaderMap::new();
        let _lead = leader(collapser.join(&key(), &none, true));
        let waiting = follower(collapser.join(&key(), &none, true));
        assert_eq!(waiting.wait().await.err(), Some(GoUpstream::TimedOut));
    }

    #[test]
    fn followers_are_bounded_and_non_leaders_go_alone() {
        let settings = CollapseSettings {
            max_waiters: 2,
            timeout: Duration::from_secs(2),
        };
        let collapser = Collapser::new(settings);
        let none = HeaderMap::new();
        assert!(matches!(
            collapser.join(&key(), &none, false),
            Collapse::Alone
        ));
        let _lead = leader(collapser.join(&key(), &none, true));
        let _a = follower(collapser.join(&key(), &none, true));
        let _b = follower(collapser.join(&key(), &none, false));
        assert!(matches!(
            collapser.join(&key(), &none, true),
            Collapse::Alone
        ));
        assert!(collapser.try_lead(&key()).is_none());
    }
}
