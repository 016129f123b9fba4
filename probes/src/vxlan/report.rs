//! What `netprobe vxlan` reports: a verdict per ordered pair of nodes with the evidence it rests
//! on, and the nodes that could not be probed. [`super::judge`] fills a pair's report in.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::api::VxlanDeviceSeen;
use super::mtu;
use crate::Health;

/// A node that was not probed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UntestedNode {
    pub node: String,
    pub ip: Option<Ipv4Addr>,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairVerdict {
    Ok,
    /// Every probe reached the destination's interface, but whether its firewall let them through
    /// could not be read (its counters were unreadable): not a fault found, not an ok either.
    Unverified,
    PartialLoss,
    BlockedAtSource,
    LostInNetwork,
    DroppedAtDestination,
    /// An ICMP error came back for the probes: a firewall rejects them, on the path or at the
    /// destination.
    Rejected,
    /// The overlay's devices do not listen where the other node sends (another port, or none).
    VtepPortMismatch,
    /// Probes arrive, but the pod network's MTU (the source's vxlan device) does not fit in
    /// the largest packet the path carries (`--mtu`): pods' large packets are lost.
    PathMtuTooSmall,
    /// The pair could not be measured (an agent failed or refused a step): no verdict on the
    /// network, and the run could not check everything.
    Untested,
}

impl PairVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            PairVerdict::Ok => "ok",
            PairVerdict::Unverified => "unverified",
            PairVerdict::PartialLoss => "partial-loss",
            PairVerdict::BlockedAtSource => "blocked-at-source",
            PairVerdict::LostInNetwork => "lost-in-network",
            PairVerdict::DroppedAtDestination => "dropped-at-destination",
            PairVerdict::Rejected => "rejected",
            PairVerdict::VtepPortMismatch => "vtep-port-mismatch",
            PairVerdict::PathMtuTooSmall => "path-mtu-too-small",
            PairVerdict::Untested => "untested",
        }
    }

    pub fn health(self) -> Health {
        match self {
            PairVerdict::Ok | PairVerdict::Unverified => Health::Ok,
            PairVerdict::Untested => Health::CouldNotRun,
            _ => Health::Fault,
        }
    }
}

/// Whether the other UDP port of the destination was reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlUdp {
    Ok,
    Lost,
    /// The pair was not measured.
    NotMeasured,
}

/// How delivery past the destination's firewall is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Its firewall counters were read and no rule that can match the probes dropped them.
    Counters,
    /// Its firewall counters could not be read: see `delivery_note`.
    Unverified,
    /// Its kernel said so: it dropped the probes past every firewall, at the tunnel's socket
    /// (VXLAN_VNI_NOT_FOUND: no VTEP has the probes' VNI; NO_SOCKET: no VTEP listens).
    Kernel,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairReport {
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    /// The nodes' labels: their names from the API, or the NODE arguments as given.
    pub from_node: String,
    pub to_node: String,
    pub sent: u32,
    pub left_source: u32,
    pub arrived: u32,
    pub verdict: PairVerdict,
    /// `ok` when a datagram to another UDP port of the destination arrived, else `lost`.
    pub control_udp: ControlUdp,
    /// For probes that reached the destination's interface: how their delivery past its
    /// firewall is known.
    pub delivery: Option<Delivery>,
    /// Why delivery is unverified, when it is.
    pub delivery_note: Option<String>,
    /// Always null: probes are one-way (the destination's VTEP swallows them). Kept so that the
    /// JSON scripts read keeps its fields.
    pub rtt_ms: Option<f64>,
    /// The firewall rule that dropped the probes, when one was found.
    pub rule: Option<String>,
    /// Why the destination's kernel dropped probes that reached its interface, when known: the
    /// kernel's own reason from skb:kfree_skb (`NETFILTER_DROP`, `UDP_CSUM`, ...), or `UDP_CSUM`
    /// from the checksum counter.
    pub drop_reason: Option<String>,
    /// The kernel function that dropped them, when traced (`nft_do_chain`, `ipt_do_table`, ...).
    pub drop_location: Option<String>,
    /// What the drop reason rests on, e.g. the counter that grew.
    pub evidence: Option<String>,
    pub diagnosis: String,
    /// With `--mtu`: the largest packet the path carries and what it leaves the pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<mtu::MtuReport>,
    /// The source node's vxlan device (the pod network's) as its agent saw it: its MTU and
    /// whether it offloads the transmit checksum; `null` when it has none (or did not say).
    pub source_vxlan_device: Option<VxlanDeviceSeen>,
    /// The destination's interfaces the probes were captured arriving on (every interface is
    /// listened on: an asymmetric route brings them in where the route back does not leave).
    pub arrived_on: Vec<String>,
}

impl PairReport {
    /// A pair nothing was measured of: no counts, `untested`, `diagnosis` saying why. What was
    /// measured goes on top: `PairReport { sent: 5, ..PairReport::unmeasured(..) }`.
    pub fn unmeasured(
        from: Ipv4Addr,
        to: Ipv4Addr,
        from_node: &str,
        to_node: &str,
        diagnosis: String,
    ) -> PairReport {
        PairReport {
            from,
            to,
            from_node: from_node.to_string(),
            to_node: to_node.to_string(),
            sent: 0,
            left_source: 0,
            arrived: 0,
            verdict: PairVerdict::Untested,
            control_udp: ControlUdp::NotMeasured,
            delivery: None,
            delivery_note: None,
            rtt_ms: None,
            rule: None,
            drop_reason: None,
            drop_location: None,
            evidence: None,
            diagnosis,
            mtu: None,
            source_vxlan_device: None,
            arrived_on: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VxlanReport {
    pub probe: &'static str,
    pub port: u16,
    pub vni: u32,
    pub count: u32,
    pub verdict: Health,
    pub pairs: Vec<PairReport>,
    /// Nodes that were not probed (no agent answered, no IPv4 address), each with why.
    pub untested: Vec<UntestedNode>,
}

impl VxlanReport {
    /// The pairs' verdicts combined ([`Health::worst`]: a fault found anywhere wins), and a node
    /// left untested means the mesh could not be checked.
    pub fn health_of(pairs: &[PairReport], untested: &[UntestedNode]) -> Health {
        let nodes = (!untested.is_empty()).then_some(Health::CouldNotRun);
        Health::worst(pairs.iter().map(|p| p.verdict.health()).chain(nodes))
    }
}
