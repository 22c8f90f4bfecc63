//! [`NetLab`]: a chain of network namespaces joined by emulated links, for tests and benchmarks.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tun_rs::{DeviceBuilder, SyncDevice};

use crate::addressing::{self, LabId};
use crate::error::Error;
use crate::forwarder::{Counters, DirectionPlan, Forwarder, LinkStats};
use crate::impairment::Impairment;
use crate::netns;

/// MTU of the emulated links.
pub const LINK_MTU: u16 = 1500;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Describes a lab to build: a chain of namespaces and the impairment of each link direction.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct NetLabBuilder {
    names: Vec<String>,
    impairments: Vec<(String, String, Impairment)>,
    seed: Option<u64>,
}

impl NetLabBuilder {
    /// Appends a namespace to the chain; it is linked to the one added before it.
    pub fn namespace(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// Sets both directions of the link between neighbours `a` and `b`.
    pub fn link(self, a: &str, b: &str, impairment: Impairment) -> Self {
        self.direction(a, b, impairment).direction(b, a, impairment)
    }

    /// Sets the direction `from` → `to` of the link between neighbours `from` and `to`.
    pub fn direction(mut self, from: &str, to: &str, impairment: Impairment) -> Self {
        self.impairments
            .push((from.to_owned(), to.to_owned(), impairment));
        self
    }

    /// Seeds the loss and jitter RNGs, for repeatable runs (default: random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Creates the namespaces, TUN links, addresses and routes, and starts forwarding.
    ///
    /// First deletes namespaces left by labs of processes that no longer exist. Needs root.
    /// On error, whatever was created is removed again.
    ///
    /// # Errors
    /// [`Error::InvalidTopology`], [`Error::NotNeighbours`], [`Error::UnknownNamespace`] or
    /// [`Error::InvalidImpairment`] for a bad description; [`Error::Io`] or
    /// [`Error::Command`] when the system refuses (e.g. not root, no `/dev/net/tun`).
    pub fn build(self) -> Result<NetLab, Error> {
        addressing::validate_chain(&self.names)?;
        let count = self.names.len();
        let mut settings = vec![Impairment::NONE; 2 * (count - 1)];
        for (from, to, impairment) in &self.impairments {
            impairment.validate()?;
            let i = index_of(&self.names, from)?;
            let j = index_of(&self.names, to)?;
            settings[direction_slot(i, j).ok_or_else(|| not_neighbours(from, to))?] = *impairment;
        }

        for stale in netns::remove_stale() {
            tracing::info!(netns = %stale, "removed a namespace left by a dead lab");
        }
        let id = LabId {
            pid: std::process::id(),
            seq: NEXT_LAB.fetch_add(1, Ordering::Relaxed),
        };
        let mut lab = NetLab {
            id,
            names: self.names,
            netns: Vec::with_capacity(count),
            directions: Vec::with_capacity(settings.len()),
            forwarder: None,
        };
        // From here on, dropping `lab` on an error deletes what exists so far.
        let mut devices: Vec<SyncDevice> = Vec::with_capacity(2 * (count - 1));
        for (index, name) in lab.names.iter().enumerate() {
            let netns_name = id.netns_name(name);
            netns::create(&netns_name)?;
            lab.netns.push(netns_name.clone());
            netns::write_sysctls(
                &netns_name,
                addressing::SYSCTLS,
                addressing::OPTIONAL_SYSCTLS,
            )?;
            let interfaces = addressing::interfaces(index, count);
            let created = netns::enter(&netns_name, || {
                interfaces
                    .iter()
                    .map(|name| open_tun(name))
                    .collect::<Result<Vec<_>, _>>()
            })?
            .map_err(|e| Error::io(format!("create TUN devices in {netns_name}"), e))?;
            devices.extend(created);
        }
        for index in 0..count {
            netns::ip_batch(&lab.netns[index], &addressing::ip_batch(&id, index, count))?;
        }

        // Devices were created namespace by namespace: [next(0), prev(1), next(1), ..., prev(n-1)],
        // so link k joins device 2k (in namespace k) and 2k+1 (in namespace k+1).
        let seed = self.seed.unwrap_or_else(|| fastrand::u64(..));
        let mut plans = Vec::with_capacity(settings.len());
        for (slot, impairment) in settings.into_iter().enumerate() {
            let (link, towards_next) = (slot / 2, slot % 2 == 0);
            let (src, dst) = if towards_next {
                (2 * link, 2 * link + 1)
            } else {
                (2 * link + 1, 2 * link)
            };
            let (tx, rx) = watch::channel(impairment);
            let counters = Arc::new(Counters::default());
            plans.push(DirectionPlan {
                src,
                dst,
                settings: rx,
                counters: counters.clone(),
                seed: seed.wrapping_add(slot as u64),
            });
            lab.directions.push(DirectionHandle {
                settings: tx,
                counters,
            });
        }
        lab.forwarder = Some(Forwarder::start(
            format!("{}-fwd", id.prefix()),
            devices,
            plans,
        )?);
        Ok(lab)
    }
}

fn open_tun(name: &str) -> std::io::Result<SyncDevice> {
    DeviceBuilder::new()
        .name(name)
        .mtu(LINK_MTU)
        .enable(true)
        .build_sync()
}

fn index_of(names: &[String], name: &str) -> Result<usize, Error> {
    names
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| Error::UnknownNamespace(name.to_owned()))
}

fn not_neighbours(a: &str, b: &str) -> Error {
    Error::NotNeighbours(a.to_owned(), b.to_owned())
}

/// Slot of the direction `i` → `j`: `2k` is namespace k → k+1, `2k+1` is k+1 → k.
fn direction_slot(i: usize, j: usize) -> Option<usize> {
    if j == i + 1 {
        Some(2 * i)
    } else if i == j + 1 {
        Some(2 * j + 1)
    } else {
        None
    }
}

struct DirectionHandle {
    settings: watch::Sender<Impairment>,
    counters: Arc<Counters>,
}

/// A running chain of network namespaces with emulated links between neighbours.
///
/// Dropping it stops forwarding, removes the TUN devices and deletes the namespaces. If the
/// process dies instead, the TUN devices vanish with it and the next lab built on the machine
/// deletes the namespaces (their names carry the dead pid).
pub struct NetLab {
    id: LabId,
    names: Vec<String>,
    netns: Vec<String>,
    directions: Vec<DirectionHandle>,
    forwarder: Option<Forwarder>,
}

/// JSON-friendly description of a lab (what the `causeway-linkem` binary prints).
#[derive(Debug, Clone, Serialize)]
pub struct LabDescription {
    /// The lab's id, the prefix of its namespace names.
    pub lab: String,
    /// Pid of the process that owns the lab.
    pub pid: u32,
    /// The chain, in order.
    pub namespaces: Vec<NamespaceDescription>,
    /// Every direction of every link.
    pub links: Vec<DirectionDescription>,
}

/// One namespace of a [`LabDescription`].
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceDescription {
    /// The name given when building the lab.
    pub name: String,
    /// The system-wide namespace name, for `ip netns exec`.
    pub netns: String,
    /// The namespace's address.
    pub address: Ipv4Addr,
}

/// One link direction of a [`LabDescription`].
#[derive(Debug, Clone, Serialize)]
pub struct DirectionDescription {
    /// Sending namespace.
    pub from: String,
    /// Receiving namespace.
    pub to: String,
    /// One-way delay in milliseconds.
    pub delay_ms: f64,
    /// Jitter half-width in milliseconds.
    pub jitter_ms: f64,
    /// Loss probability.
    pub loss: f64,
    /// Rate limit, if any.
    pub rate_bits_per_sec: Option<u64>,
    /// Drop-tail queue limit in bytes.
    pub queue_limit_bytes: u64,
}

impl NetLab {
    /// Starts describing a lab.
    pub fn builder() -> NetLabBuilder {
        NetLabBuilder::default()
    }

    /// The lab's id (`cwl<pid>x<seq>`), which prefixes its namespace names.
    pub fn id(&self) -> String {
        self.id.prefix()
    }

    /// The namespace names, in chain order.
    pub fn namespaces(&self) -> &[String] {
        &self.names
    }

    /// The address of namespace `ns`, reachable from every namespace of the lab.
    ///
    /// # Panics
    /// If `ns` is not a namespace of this lab (a mistake in the test, not a runtime condition).
    pub fn address(&self, ns: &str) -> Ipv4Addr {
        match self.try_index(ns) {
            Ok(i) => self.id.address(i),
            Err(e) => panic!("{e}"),
        }
    }

    /// The system-wide name of namespace `ns` (for `ip netns exec`).
    ///
    /// # Errors
    /// [`Error::UnknownNamespace`].
    pub fn netns_name(&self, ns: &str) -> Result<&str, Error> {
        Ok(&self.netns[self.try_index(ns)?])
    }

    /// A command running `program` inside namespace `ns` (via `ip netns exec`).
    ///
    /// # Panics
    /// If `ns` is not a namespace of this lab.
    pub fn command(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let netns = match self.netns_name(ns) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]).arg(program);
        cmd
    }

    /// Runs `f` on a thread inside namespace `ns`: sockets it creates live in that namespace
    /// and may be used from any thread or runtime afterwards.
    ///
    /// # Errors
    /// [`Error::UnknownNamespace`], or [`Error::Io`] if the namespace cannot be joined.
    pub fn in_namespace<T, F>(&self, ns: &str, f: F) -> Result<T, Error>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        netns::enter(self.netns_name(ns)?, f)
    }

    /// Changes the impairment of the direction `from` → `to` while the lab runs.
    ///
    /// Packets already in flight keep their delivery times; the next packet sees the change.
    ///
    /// # Errors
    /// [`Error::UnknownNamespace`], [`Error::NotNeighbours`] or [`Error::InvalidImpairment`].
    pub fn set_impairment(
        &self,
        from: &str,
        to: &str,
        impairment: Impairment,
    ) -> Result<(), Error> {
        impairment.validate()?;
        self.direction(from, to)?.settings.send_replace(impairment);
        Ok(())
    }

    /// The current impairment of the direction `from` → `to`.
    ///
    /// # Errors
    /// [`Error::UnknownNamespace`] or [`Error::NotNeighbours`].
    pub fn impairment(&self, from: &str, to: &str) -> Result<Impairment, Error> {
        Ok(*self.direction(from, to)?.settings.borrow())
    }

    /// What the forwarder did so far on the direction `from` → `to`.
    ///
    /// # Errors
    /// [`Error::UnknownNamespace`] or [`Error::NotNeighbours`].
    pub fn stats(&self, from: &str, to: &str) -> Result<LinkStats, Error> {
        Ok(self.direction(from, to)?.counters.snapshot())
    }

    /// The lab as data: namespaces with addresses, and every link direction's settings.
    pub fn describe(&self) -> LabDescription {
        let namespaces = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| NamespaceDescription {
                name: name.clone(),
                netns: self.netns[i].clone(),
                address: self.id.address(i),
            })
            .collect();
        let links = self
            .directions
            .iter()
            .enumerate()
            .map(|(slot, handle)| {
                let (link, towards_next) = (slot / 2, slot % 2 == 0);
                let (from, to) = if towards_next {
                    (link, link + 1)
                } else {
                    (link + 1, link)
                };
                let s = *handle.settings.borrow();
                DirectionDescription {
                    from: self.names[from].clone(),
                    to: self.names[to].clone(),
                    delay_ms: millis(s.delay),
                    jitter_ms: millis(s.jitter),
                    loss: s.loss,
                    rate_bits_per_sec: s.rate_bits_per_sec,
                    queue_limit_bytes: s.queue_limit_bytes,
                }
            })
            .collect();
        LabDescription {
            lab: self.id.prefix(),
            pid: self.id.pid,
            namespaces,
            links,
        }
    }

    fn try_index(&self, ns: &str) -> Result<usize, Error> {
        index_of(&self.names, ns)
    }

    fn direction(&self, from: &str, to: &str) -> Result<&DirectionHandle, Error> {
        let slot = direction_slot(self.try_index(from)?, self.try_index(to)?)
            .ok_or_else(|| not_neighbours(from, to))?;
        Ok(&self.directions[slot])
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Stop forwarding first so the TUNs are closed before their namespaces go.
        drop(self.forwarder.take());
        for name in &self.netns {
            if let Err(e) = netns::delete(name) {
                tracing::warn!(netns = %name, error = %e, "could not delete a lab namespace");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_slots_follow_the_chain() {
        assert_eq!(direction_slot(0, 1), Some(0));
        assert_eq!(direction_slot(1, 0), Some(1));
        assert_eq!(direction_slot(1, 2), Some(2));
        assert_eq!(direction_slot(2, 1), Some(3));
        assert_eq!(direction_slot(0, 2), None);
        assert_eq!(direction_slot(1, 1), None);
    }

    #[test]
    fn build_rejects_bad_descriptions_before_touching_the_system() {
        let err = |b: NetLabBuilder| b.build().err().map(|e| e.to_string()).unwrap_or_default();
        let chain = || {
            NetLab::builder()
                .namespace("a")
                .namespace("b")
                .namespace("c")
        };
        assert!(err(NetLab::builder().namespace("a")).contains("2..="));
        assert!(err(chain().link("a", "c", Impairment::NONE)).contains("not neighbours"));
        assert!(err(chain().link("a", "x", Impairment::NONE)).contains("no namespace"));
        assert!(err(chain().link("a", "b", Impairment::NONE.with_loss(2.0))).contains("loss"));
    }
}
