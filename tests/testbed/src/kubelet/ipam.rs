//! Pod addresses: each node hands out the addresses of its loopback /24 (`.2` to `.254`; `.1`
//! is the node's own), lowest free first, and takes them back when a pod's processes are gone.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The free and used pod addresses of one node.
#[derive(Debug, Clone)]
pub struct NodeAddresses {
    prefix: [u8; 3],
    used: BTreeSet<u8>,
}

impl NodeAddresses {
    /// The pool of the /24 that holds `node_address`.
    pub fn new(node_address: Ipv4Addr) -> Self {
        let [a, b, c, _] = node_address.octets();
        Self {
            prefix: [a, b, c],
            used: BTreeSet::new(),
        }
    }

    /// Takes the lowest free address, or `None` when all 253 are in use.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let host = (2..=254).find(|host| !self.used.contains(host))?;
        self.used.insert(host);
        let [a, b, c] = self.prefix;
        Some(Ipv4Addr::new(a, b, c, host))
    }

    /// Gives `address` back; addresses of other pools are ignored.
    pub fn release(&mut self, address: Ipv4Addr) {
        let [a, b, c, host] = address.octets();
        if [a, b, c] == self.prefix {
            self.used.remove(&host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_lowest_free_address() {
        let mut pool = NodeAddresses::new(Ipv4Addr::new(127, 64, 1, 1));
        assert_eq!(pool.allocate(), Some(Ipv4Addr::new(127, 64, 1, 2)));
        assert_eq!(pool.allocate(), Some(Ipv4Addr::new(127, 64, 1, 3)));
        pool.release(Ipv4Addr::new(127, 64, 1, 2));
        assert_eq!(pool.allocate(), Some(Ipv4Addr::new(127, 64, 1, 2)));
        assert_eq!(pool.allocate(), Some(Ipv4Addr::new(127, 64, 1, 4)));
    }

    #[test]
    fn runs_out_after_253() {
        let mut pool = NodeAddresses::new(Ipv4Addr::new(127, 64, 1, 1));
        assert_eq!((0..300).filter_map(|_| pool.allocate()).count(), 253);
    }
}
