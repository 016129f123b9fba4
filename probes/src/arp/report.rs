//! What `netprobe arp` found, as plain data: the JSON output is this, serialised, and the table is
//! drawn from it.

use std::net::IpAddr;

use serde::Serialize;

use crate::wire::MacAddr;
use crate::Health;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Exactly one MAC answered.
    Ok,
    /// More than one MAC answered or announced the address at once: several hosts claim it.
    Duplicate,
    /// Several MACs claimed it one after the other, never two at once: it changed hands (a
    /// failover), with a gap in between.
    OwnerChanged,
    /// Nothing answered or announced.
    NoReply,
    /// One MAC answered the broadcast requests and none of those sent to its own MAC: neighbours
    /// that re-check a cached entry by unicast (routers, switches, the kernel) lose it.
    BroadcastOnly,
}

impl Verdict {
    pub fn health(self) -> Health {
        match self {
            Verdict::Ok => Health::Ok,
            Verdict::Duplicate | Verdict::NoReply | Verdict::OwnerChanged | Verdict::BroadcastOnly => {
                Health::Fault
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Duplicate => "duplicate",
            Verdict::NoReply => "no-reply",
            Verdict::OwnerChanged => "owner-changed",
            Verdict::BroadcastOnly => "broadcast-only",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArpReport {
    pub probe: &'static str,
    pub target: IpAddr,
    /// The interface probed (live) or `None` (capture file).
    pub interface: Option<String>,
    pub source_ip: Option<IpAddr>,
    /// The capture analysed instead of probing, if any.
    pub capture_file: Option<String>,
    /// Requests for the target whose answers this run could see: sent by us (live), or in a
    /// capture those of the hosts that an answer for the target was addressed to.
    pub sent: u32,
    pub verdict: Verdict,
    /// The verdict in one sentence.
    pub summary: String,
    /// One entry per MAC that answered, in order of first reply.
    pub responders: Vec<Responder>,
    /// The `--node` addresses and the MACs that answered for them.
    pub nodes: Vec<NodeAddress>,
    /// Where to look next, when something is wrong.
    pub next_step: Option<String>,
    /// What was left out and why (other hosts' requests in a capture, skipped frames).
    pub notes: Vec<String>,
    /// With `owner-changed`: each hand-over, when, and the gap.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_changes: Vec<OwnerChange>,
}

/// One MAC's claims on the address ended, and another's began.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OwnerChange {
    pub from: MacAddr,
    pub to: MacAddr,
    /// The old owner's last claim and the new one's first (RFC 3339).
    pub last_claim: String,
    pub first_claim: String,
    /// Seconds between them: how long nobody claimed the address.
    pub gap_s: f64,
}

impl ArpReport {
    pub fn health(&self) -> Health {
        self.verdict.health()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Responder {
    pub mac: MacAddr,
    /// ARP replies for the target from this MAC, to whoever asked.
    pub replies: u32,
    /// Gratuitous ARP and ARP announcements for the target from this MAC: claims made unasked,
    /// as a new MetalLB leader or keepalived master makes them.
    pub announcements: u32,
    /// Reply times, each reply matched to the earliest request of the host it is addressed to
    /// that this MAC had not answered yet (and at most the match window old); `None` when no
    /// reply could be matched.
    pub rtt_ms: Option<RttMs>,
    pub vendor: Option<String>,
    pub locally_administered: bool,
    /// The `--node` whose MAC this is; `None` when no listed node has it.
    pub node: Option<String>,
    /// Ethernet source addresses that differed from the ARP sender MAC (a proxy, a bridge that
    /// rewrites, or a forged reply). Empty when they always matched.
    pub ethernet_sources: Vec<MacAddr>,
    /// The requests sent to this MAC alone, after the broadcast ones, and its replies to them;
    /// `None` when it was not asked (a capture, `--no-unicast`, or it never answered broadcast).
    pub unicast: Option<Unicast>,
}

/// Requests (IPv6: solicitations) sent to one responder's MAC by unicast, and its replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Unicast {
    pub sent: u32,
    pub replies: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RttMs {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeAddress {
    pub name: String,
    pub ip: IpAddr,
    /// Every MAC that answered for the node's IP (normally one; empty when it did not answer).
    pub macs: Vec<MacAddr>,
}
