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
    /// The Ethernet destination, where the capture keeps it (not in Linux cooked captures).
    pub link_destination: Option<MacAddr>,
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

    /// The one host this frame was sent to at layer 2; `None` for broadcast and multicast (the
    /// I/G bit of the destination set), and where the capture does not keep the destination.
    pub fn sent_to_one_host(&self) -> Option<MacAddr> {
        self.link_destination.filter(|mac| mac.0[0] & 1 == 0)
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

/// Who has `target`, asked of `owner` alone: an ARP request to its MAC, or a Neighbor Solicitation
/// to its MAC and the target address (how a cached entry is re-checked); `None` when `source_ip`
/// is not of the target's family.
pub fn ask_unicast(
    owner: MacAddr,
    source_mac: MacAddr,
    source_ip: IpAddr,
    target: IpAddr,
) -> Option<Vec<u8>> {
    match (source_ip, target) {
        (IpAddr::V4(source), IpAddr::V4(target)) => {
            Some(arp::unicast_request(owner, source_mac, source, target).to_vec())
        }
        (IpAddr::V6(source), IpAddr::V6(target)) => {
            Some(ndp::unicast_solicitation(owner, source_mac, source, target))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkType;

    #[test]
    fn a_request_sent_to_one_host_says_which_and_a_cooked_capture_cannot() {
        let (us, speaker) = (MacAddr([0x02, 0, 0, 0, 0, 0x01]), MacAddr([0x02, 0, 0, 0, 0, 0x11]));
        for (source, target) in [("192.0.2.1", "192.0.2.100"), ("2001:db8::1", "2001:db8::100")] {
            let (source, target): (IpAddr, IpAddr) = (source.parse().unwrap(), target.parse().unwrap());
            let read = |bytes: Vec<u8>| NeighbourFrame::from_link(LinkType::Ethernet, &bytes).unwrap();
            assert_eq!(
                read(ask(us, source, target).unwrap()).sent_to_one_host(),
                None,
                "broadcast or a group"
            );
            let unicast = read(ask_unicast(speaker, us, source, target).unwrap());
            assert_eq!(unicast.sent_to_one_host(), Some(speaker));
            // Linux cooked (SLL): the same request, its destination gone.
            let bytes = ask_unicast(speaker, us, source, target).unwrap();
            let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
            sll.extend_from_slice(&bytes[12..]);
            let cooked = NeighbourFrame::from_link(LinkType::LinuxSll, &sll).unwrap();
            assert_eq!((cooked.op, cooked.sent_to_one_host()), (Op::Request, None));
        }
    }
}
