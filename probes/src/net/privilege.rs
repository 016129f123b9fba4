//! Privilege checks made before any socket is opened, so a missing capability is one clear line
//! with its fix instead of a libpcap message halfway through a probe.

use caps::{CapSet, Capability};

use crate::{Error, Result};

/// Fails with [`Error::NoPrivilege`] unless the effective set holds CAP_NET_RAW.
pub fn require_net_raw(op: &str) -> Result<()> {
    match caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_RAW) {
        Ok(true) => Ok(()),
        // An unreadable capability set is treated as "missing": the fix is the same.
        Ok(false) | Err(_) => Err(Error::NoPrivilege { op: op.to_string() }),
    }
}
