//! A neighbour claim or question, whichever family carried it: an ARP request or reply (IPv4,
//! RFC 826) or an IPv6 Neighbor Solicitation or Advertisement (RFC 4861). [`super::arp`] and
//! [`super::ndp`] each read their own frames into a [`NeighbourFrame`], so one tally counts the
//! claims of both families; neither knows the other.

use std::net::IpAddr;

use super::link::LinkType;
use super::{arp, ndp, MacAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Request,
    Reply,
    Other(u16),
}

/// One captured ARP (Ethernet/IPv4) frame or NDP solicitation or advertisement (IPv6), with the
/// Ethernet-level source kept beside the sender so a proxy or a bridge that rewrites one but not
/// the other shows up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourFrame {
    pub op: Op,
    pub link_source: Option<MacAddr>,
    pub sender_mac: MacAddr,
    pub sender_ip: IpAddr,
    pub target_mac: MacAddr,
    pub target_ip: IpAddr,
}

impl NeighbourFrame {
    /// Reads an ARP frame, or an NDP NS/NA, out of a captured link-layer frame; `None` for
    /// anything else (other EtherTypes, other hardware or protocol types, truncated bodies).
    pub fn from_link(link: LinkType, bytes: &[u8]) -> Option<NeighbourFrame> {
        arp::from_link(link, bytes).or_else(|| ndp::from_link(link, bytes))
    }

    /// Gratuitous ARP: a host announcing its own address (sender IP == target IP), as a new
    /// MetalLB leader or keepalived master does on takeover.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }
}

/// Who has `target`: a broadcast ARP request for an IPv4 address, a Neighbor Solicitation for an
/// IPv6 one; `None` when `source_ip` is not of the target's family.
pub fn ask(source_mac: MacAddr, source_ip: IpAddr, target: IpAddr) -> Option<Vec<u8>> {
    match (source_ip, target) {
        (IpAddr::V4(source), IpAddr::V4(target)) => Some(arp::request(source_mac, source, target).to_vec()),
        (IpAddr::V6(source), IpAddr::V6(target)) => Some(ndp::solicitation(source_mac, source, target)),
        _ => None,
    }
}
