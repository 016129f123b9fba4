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

/// Whether the effective set holds CAP_NET_ADMIN, which reading the live firewall
/// (iptables-save, nft) needs.
pub fn may_read_firewall() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap_or(false)
}

/// What an agent keeps: raw sockets (captures) and network administration (firewall counters).
pub const AGENT_CAPABILITIES: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

/// Drops every capability but `keep` from this process, for good: the bounding set too, so the
/// commands it runs (iptables-save, nft) get no more than `keep` either. Returns the names kept
/// (those of `keep` the process had). Without the right to drop (not root), nothing changes and
/// the names of what it holds are returned.
pub fn keep_only(keep: &[Capability]) -> Vec<String> {
    let have = caps::read(None, CapSet::Permitted).unwrap_or_default();
    // The bounding set first: changing it needs CAP_SETPCAP, which goes with the rest below.
    for cap in caps::all() {
        if !keep.contains(&cap) {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    let kept: caps::CapsHashSet = have.iter().copied().filter(|c| keep.contains(c)).collect();
    let _ = caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new());
    let _ = caps::set(None, CapSet::Effective, &kept);
    let _ = caps::set(None, CapSet::Permitted, &kept);
    let mut names: Vec<String> =
        caps::read(None, CapSet::Effective).unwrap_or_default().iter().map(|c| c.to_string()).collect();
    names.sort();
    names
}
