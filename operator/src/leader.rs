//! Lease-based leader election, so that two operator replicas are safe: only the replica
//! holding the Lease runs the controllers (and so writes); the other waits. The holder renews
//! every `renew_every`; a holder that cannot renew before its lease would run out stops
//! leading (the process exits and restarts as a follower), and a holder that shuts down
//! releases the Lease so another replica takes over at once.
//!
//! Writes to the Lease use its resourceVersion, so two replicas that both see an expired
//! lease cannot both take it: the second write fails with a conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

use crate::error::{Error, Result};

/// What a replica should do about a Lease, given its current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, the holder's term ran out, or we hold it: write ourselves in.
    Take,
    /// Another replica holds it until the given time.
    Wait(Timestamp),
}

/// Decides from the Lease's spec (`None`: no Lease yet) whether `identity` may take it `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Take;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return Decision::Take;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let expires = renewed.checked_add(duration).unwrap_or(renewed);
    if expires <= now {
        Decision::Take
    } else {
        Decision::Wait(expires)
    }
}

/// One replica's side of the election for a Lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_every: Duration,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Elector {
    /// An elector for Lease `name` in `namespace`, as `identity`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this replica holds the Lease.
    ///
    /// # Errors
    /// Only when the API refuses the Lease for good (for example RBAC); conflicts and
    /// transient failures are retried.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            match self.try_take().await {
                Ok(None) => return Ok(()),
                Ok(Some(until)) => {
                    let wait = until
                        .duration_since(Timestamp::now())
                        .unsigned_abs()
                        .min(self.renew_every);
                    tokio::time::sleep(wait.max(Duration::from_millis(200))).await;
                }
                Err(Error::Kube(kube::Error::Api(status))) if status.code == 403 => {
                    return Err(Error::Leadership(format!(
                        "the Lease {:?} may not be written: {}",
                        self.name, status.message
                    )));
                }
                Err(error) => {
                    tracing::warn!(%error, "leader election: retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Renews the Lease until it cannot; returns the reason leadership was lost.
    pub async fn hold(&self) -> Error {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_take().await {
                Ok(None) => last_renewed = tokio::time::Instant::now(),
                Ok(Some(_)) => {
                    return Error::Leadership(format!(
                        "another replica took the Lease {:?}",
                        self.name
                    ));
                }
                Err(error) if last_renewed.elapsed() + self.renew_every >= self.lease_duration => {
                    return Error::Leadership(format!(
                        "could not renew the Lease {:?} in time: {error}",
                        self.name
                    ));
                }
                Err(error) => tracing::warn!(%error, "leader election: renewal failed, retrying"),
            }
        }
    }

    /// Gives the Lease up, so that another replica need not wait for it to run out.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "leader election: could not release the Lease");
        }
    }

    /// Writes this replica into the Lease when [`decide`] allows; `Ok(None)` when it holds
    /// the Lease now, `Ok(Some(until))` when another holds it until then.
    async fn try_take(&self) -> Result<Option<Timestamp>> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await?;
        match decide(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        ) {
            Decision::Wait(until) => Ok(Some(until)),
            Decision::Take => {
                let duration = i32::try_from(self.lease_duration.as_secs()).unwrap_or(15);
                match existing {
                    None => {
                        let lease = Lease {
                            metadata: ObjectMeta {
                                name: Some(self.name.clone()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(LeaseSpec {
                                holder_identity: Some(self.identity.clone()),
                                lease_duration_seconds: Some(duration),
                                acquire_time: Some(MicroTime(now)),
                                renew_time: Some(MicroTime(now)),
                                lease_transitions: Some(0),
                                ..LeaseSpec::default()
                            }),
                        };
                        match self.api.create(&PostParams::default(), &lease).await {
                            Ok(_) => Ok(None),
                            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Some(now)),
                            Err(e) => Err(e.into()),
                        }
                    }
                    Some(mut lease) => {
                        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                        if !ours {
                            spec.acquire_time = Some(MicroTime(now));
                            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                        }
                        spec.holder_identity = Some(self.identity.clone());
                        spec.lease_duration_seconds = Some(duration);
                        spec.renew_time = Some(MicroTime(now));
                        match self
                            .api
                            .replace(&self.name, &PostParams::default(), &lease)
                            .await
                        {
                            Ok(_) => Ok(None),
                            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Some(now)),
                            Err(e) => Err(e.into()),
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(duration),
            renew_time: Timestamp::from_second(renewed_secs).ok().map(MicroTime),
            ..LeaseSpec::default()
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn takes_a_missing_free_or_own_lease() {
        assert_eq!(decide(None, "a", at(100)), Decision::Take);
        assert_eq!(
            decide(Some(&lease(None, 90, 15)), "a", at(100)),
            Decision::Take
        );
        assert_eq!(
            decide(Some(&lease(Some("a"), 99, 15)), "a", at(100)),
            Decision::Take
        );
    }

    #[test]
    fn waits_for_another_holder_until_its_term_runs_out() {
        let held = lease(Some("b"), 95, 15);
        assert_eq!(decide(Some(&held), "a", at(100)), Decision::Wait(at(110)));
        assert_eq!(decide(Some(&held), "a", at(110)), Decision::Take);
    }
}
