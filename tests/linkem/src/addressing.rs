//! The lab's naming and addressing plan: namespace names, 127/8 addresses, interfaces, routes.
//!
//! Pure: it produces names and `ip -batch` lines; [`crate::netns`] carries them out.
//!
//! Every namespace `i` of lab `L` gets `127.77.L.(i+1)/32` on each of its TUN interfaces
//! (`lk-prev` towards namespace `i-1`, `lk-next` towards `i+1`) and a `/32` route to every
//! other namespace's address through the interface on that side. `lo` keeps only
//! `127.0.0.1/32`: the kernel's default `127.0.0.1/8` on `lo` would put a
//! `local 127.0.0.0/8` route in the local table and swallow traffic meant for the others.
//! Namespaces are isolated, so two labs with the same octet `L` do not collide; `L` is
//! derived from the pid and a per-process counter only to tell labs apart in captures.

use std::net::Ipv4Addr;

use crate::error::Error;

/// Prefix of every namespace this crate creates, followed by the owner's pid.
pub const NETNS_PREFIX: &str = "cwl";
/// Interface name of a namespace's TUN towards the previous namespace of the chain.
pub const PREV_INTERFACE: &str = "lk-prev";
/// Interface name of a namespace's TUN towards the next namespace of the chain.
pub const NEXT_INTERFACE: &str = "lk-next";
/// Largest number of namespaces in one lab (the last address octet is `1..=254`).
pub const MAX_NAMESPACES: usize = 254;
const MAX_NAME_LEN: usize = 24;

/// Kernel settings written in every namespace (path under `/proc/sys`, value).
///
/// Forwarding and no reverse-path filter let middle namespaces route; `route_localnet`
/// lets 127/8 addresses be routed over non-loopback interfaces instead of being martians.
pub const SYSCTLS: &[(&str, &str)] = &[
    ("net/ipv4/conf/all/route_localnet", "1"),
    ("net/ipv4/conf/default/route_localnet", "1"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv4/ip_forward", "1"),
];

/// Kernel settings written where they exist, before the TUNs are created: no IPv6 on the
/// links (no router solicitations crossing them), while `lo` keeps `::1`.
pub const OPTIONAL_SYSCTLS: &[(&str, &str)] = &[("net/ipv6/conf/default/disable_ipv6", "1")];

/// Identity of one lab: the owning process and its per-process sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabId {
    /// Pid of the process owning the lab (used to find stale namespaces).
    pub pid: u32,
    /// Sequence number of the lab within that process.
    pub seq: u32,
}

impl LabId {
    /// `cwl<pid>x<seq>`, the prefix of all of this lab's namespace names.
    pub fn prefix(&self) -> String {
        format!("{NETNS_PREFIX}{}x{}", self.pid, self.seq)
    }

    /// The system-wide network namespace name for the lab's namespace `name`.
    pub fn netns_name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix())
    }

    /// The third octet shared by the lab's addresses.
    pub fn octet(&self) -> u8 {
        (self.pid.wrapping_add(self.seq) % 256) as u8
    }

    /// Address of the namespace at `index` in the chain.
    pub fn address(&self, index: usize) -> Ipv4Addr {
        let host = u8::try_from(index + 1).unwrap_or(u8::MAX);
        Ipv4Addr::new(127, 77, self.octet(), host)
    }
}

/// Pid of the process that created a namespace named by this crate, if `netns` is one.
pub fn owner_pid(netns: &str) -> Option<u32> {
    let rest = netns.strip_prefix(NETNS_PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

/// Checks a chain of namespace names: 2..=254 of them, unique, short, `[A-Za-z0-9_-]`.
///
/// # Errors
/// [`Error::InvalidTopology`] saying what is wrong.
pub fn validate_chain(names: &[String]) -> Result<(), Error> {
    if names.len() < 2 || names.len() > MAX_NAMESPACES {
        return Err(Error::InvalidTopology(format!(
            "a chain has 2..={MAX_NAMESPACES} namespaces, not {}",
            names.len()
        )));
    }
    for (i, name) in names.iter().enumerate() {
        let ok_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name.starts_with('-') {
            return Err(Error::InvalidTopology(format!(
                "namespace name {name:?} must be 1..={MAX_NAME_LEN} characters of [A-Za-z0-9_-]"
            )));
        }
        if names[..i].contains(name) {
            return Err(Error::InvalidTopology(format!(
                "namespace {name:?} appears twice"
            )));
        }
    }
    Ok(())
}

/// TUN interfaces of the namespace at `index` in a chain of `count`.
pub fn interfaces(index: usize, count: usize) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(2);
    if index > 0 {
        out.push(PREV_INTERFACE);
    }
    if index + 1 < count {
        out.push(NEXT_INTERFACE);
    }
    out
}

/// `ip -batch` lines configuring the namespace at `index` once its TUNs exist.
pub fn ip_batch(lab: &LabId, index: usize, count: usize) -> Vec<String> {
    let own = lab.address(index);
    let mut lines = vec![
        "link set lo up".to_owned(),
        "addr del 127.0.0.1/8 dev lo".to_owned(),
        "addr add 127.0.0.1/32 dev lo".to_owned(),
    ];
    for dev in interfaces(index, count) {
        lines.push(format!("addr add {own}/32 dev {dev}"));
        lines.push(format!("link set {dev} up"));
    }
    for other in (0..count).filter(|&j| j != index) {
        let dev = if other < index {
            PREV_INTERFACE
        } else {
            NEXT_INTERFACE
        };
        lines.push(format!(
            "route add {}/32 dev {dev} src {own}",
            lab.address(other)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: LabId = LabId { pid: 4242, seq: 3 };

    #[test]
    fn names_carry_the_owner_pid() {
        let name = LAB.netns_name("client");
        assert_eq!(name, "cwl4242x3-client");
        assert_eq!(owner_pid(&name), Some(4242));
        assert_eq!(owner_pid("cwlabc"), None);
        assert_eq!(owner_pid("other-ns"), None);
    }

    #[test]
    fn addresses_are_in_loopback_and_not_127_0_0_1() {
        for i in 0..MAX_NAMESPACES {
            let a = LAB.address(i);
            assert!(a.is_loopback());
            assert_ne!(a, Ipv4Addr::LOCALHOST);
            assert_eq!(a.octets()[3] as usize, i + 1);
        }
        assert_ne!(LAB.address(0), LabId { pid: 4242, seq: 4 }.address(0));
    }

    #[test]
    fn middle_namespace_routes_each_side_through_its_interface() {
        let lines = ip_batch(&LAB, 1, 3);
        let own = LAB.address(1);
        assert!(lines.contains(&format!("addr add {own}/32 dev lk-prev")));
        assert!(lines.contains(&format!("addr add {own}/32 dev lk-next")));
        assert!(lines.contains(&format!(
            "route add {}/32 dev lk-prev src {own}",
            LAB.address(0)
        )));
        assert!(lines.contains(&format!(
            "route add {}/32 dev lk-next src {own}",
            LAB.address(2)
        )));
        assert!(lines.contains(&"addr del 127.0.0.1/8 dev lo".to_owned()));
    }

    #[test]
    fn end_namespace_reaches_everyone_through_its_only_interface() {
        let lines = ip_batch(&LAB, 0, 3);
        assert_eq!(interfaces(0, 3), vec![NEXT_INTERFACE]);
        let routes: Vec<_> = lines.iter().filter(|l| l.starts_with("route")).collect();
        assert_eq!(routes.len(), 2);
        assert!(routes.iter().all(|l| l.contains("dev lk-next")));
        assert!(!lines.iter().any(|l| l.contains("lk-prev")));
    }

    #[test]
    fn chain_validation() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(validate_chain(&names(&["client", "front", "back"])).is_ok());
        assert!(validate_chain(&names(&["only"])).is_err());
        assert!(validate_chain(&names(&["a", "a"])).is_err());
        assert!(validate_chain(&names(&["a", "b c"])).is_err());
        assert!(validate_chain(&names(&["a", "-b"])).is_err());
        assert!(validate_chain(&names(&["a", &"x".repeat(25)])).is_err());
    }
}
