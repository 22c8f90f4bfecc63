//! Test-bed slots: several test beds may run on one machine at once (test binaries run in
//! parallel, or several checkouts are tested side by side), so each takes a slot, held by a
//! file lock for as long as its process lives, and derives its loopback address ranges and
//! run dir from the slot number. The lock is released by the kernel when the process exits.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// How many test beds may run on one machine at once.
pub const SLOTS: u8 = 32;

/// A held slot.
#[derive(Debug)]
pub struct Slot {
    index: u8,
    dir: PathBuf,
    _lock: File,
}

impl Slot {
    /// Takes the first free slot under `base` (normally [`default_base`]) and empties its run
    /// dir, which holds only leftovers of a run that ended without cleaning up.
    ///
    /// # Errors
    /// [`Error::NoFreeSlot`] when every slot is held; I/O errors on the base dir.
    pub fn acquire(base: &Path) -> Result<Self> {
        std::fs::create_dir_all(base).context(|| format!("creating {}", base.display()))?;
        for index in 0..SLOTS {
            let lock_path = base.join(format!("slot-{index}.lock"));
            let lock =
                File::create(&lock_path).context(|| format!("opening {}", lock_path.display()))?;
            if lock.try_lock().is_ok() {
                let dir = base.join(format!("slot-{index}"));
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .context(|| format!("removing the stale {}", dir.display()))?;
                }
                std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
                return Ok(Self {
                    index,
                    dir,
                    _lock: lock,
                });
            }
        }
        Err(Error::NoFreeSlot(SLOTS))
    }

    /// The slot number.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The lock file; a process holding a duplicate of it keeps the slot taken.
    pub fn lock(&self) -> &File {
        &self._lock
    }

    /// The run dir: certificates, etcd data, logs and pod files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The base dir of all slots: `$TMPDIR/causeway-testbed`.
pub fn default_base() -> PathBuf {
    std::env::temp_dir().join("causeway-testbed")
}

/// The address of node `node` (0-based) of slot `slot`: `127.(64+slot).(node+1).1`. The node's
/// pods get the other addresses of that /24.
pub fn node_address(slot: u8, node: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 64 + slot, node.saturating_add(1), 1)
}

/// The service cluster-IP range of slot `slot`: `127.(128+slot).0.0/16`, on loopback so that
/// no address the test bed hands out ever leads off the machine.
pub fn service_range(slot: u8) -> String {
    format!("127.{}.0.0/16", 128 + u16::from(slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_share_addresses() {
        assert_eq!(node_address(0, 0), Ipv4Addr::new(127, 64, 1, 1));
        assert_eq!(node_address(3, 2), Ipv4Addr::new(127, 67, 3, 1));
        assert_eq!(service_range(1), "127.129.0.0/16");
        assert!(node_address(SLOTS - 1, 10).octets()[1] < 128);
    }

    #[test]
    fn a_held_slot_is_not_handed_out_twice() -> Result<()> {
        let base = std::env::temp_dir().join(format!("causeway-slot-test-{}", std::process::id()));
        let first = Slot::acquire(&base)?;
        let second = Slot::acquire(&base)?;
        assert_ne!(first.index(), second.index());
        assert!(first.dir().is_dir());
        drop((first, second));
        std::fs::remove_dir_all(&base).context(|| "cleaning up".to_owned())?;
        Ok(())
    }
}
