//! IPv6 Neighbor Discovery (RFC 4861) as ARP's IPv6 twin: a Neighbor Solicitation asks who has an
//! address, a Neighbor Advertisement claims it. MetalLB's layer-2 mode answers NDP for IPv6 VIPs as
//! it answers ARP for IPv4 ones. Both are read into the same [`NeighbourFrame`], so one tally counts
//! claims of either family:
//!
//! - NS: a request; the sender is the IPv6 source and its source link-layer address option (the
//!   Ethernet source without one), the target is the target address.
//! - NA: a reply from the target address, by the MAC of its target link-layer address option (the
//!   Ethernet source without one), to the IPv6 destination. An unsolicited one (S flag clear, as a
//!   new owner sends to all nodes) is an announcement: its target is itself, as in gratuitous ARP.
//!
//! Building and checksums are etherparse's.

use std::net::{IpAddr, Ipv6Addr};

use etherparse::{Icmpv6Slice, Icmpv6Type, IpNumber, Ipv6Slice, PacketBuilder};

use super::link::{self, LinkType};
use super::neighbour::{NeighbourFrame, Op};
use super::MacAddr;

pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// NDP messages must come with hop limit 255: proof they were not routed (RFC 4861 7.1.1).
const HOP_LIMIT: u8 = 255;
const NS_TYPE: u8 = 135;
const NA_TYPE: u8 = 136;
/// Options: source link-layer address (1), target link-layer address (2).
const SOURCE_LL: u8 = 1;
const TARGET_LL: u8 = 2;

/// The solicited-node multicast address of `target` (ff02::1:ffXX:XXXX, RFC 4291 2.7.1): where a
/// solicitation for it goes, and the group every owner of it has joined.
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let o = target.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]))
}

/// The Ethernet multicast MAC of an IPv6 multicast address (33:33 and its low 32 bits).
fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// A Neighbor Solicitation for `target` from `source_mac`/`source_ip`, to the target's
/// solicited-node group, with our link-layer address so the owner can answer at once.
pub fn solicitation(source_mac: MacAddr, source_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    solicitation_to((multicast_mac(group), group), source_mac, source_ip, target)
}

/// A Neighbor Solicitation for `target` sent to `owner`'s MAC and to the target address itself:
/// neighbour unreachability detection, as the kernel and routers re-check a cached entry (RFC 4861
/// 7.3.1).
pub fn unicast_solicitation(
    owner: MacAddr,
    source_mac: MacAddr,
    source_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Vec<u8> {
    solicitation_to((owner, target), source_mac, source_ip, target)
}

fn solicitation_to(
    (to_mac, to_ip): (MacAddr, Ipv6Addr),
    source_mac: MacAddr,
    source_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(24);
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[SOURCE_LL, 1]);
    body.extend_from_slice(&source_mac.0);
    let packet = PacketBuilder::ethernet2(source_mac.0, to_mac.0)
        .ipv6(source_ip.octets(), to_ip.octets(), HOP_LIMIT)
        .icmpv6(Icmpv6Type::Unknown { type_u8: NS_TYPE, code_u8: 0, bytes5to8: [0; 4] });
    let mut out = Vec::with_capacity(packet.size(body.len()));
    packet.write(&mut out, &body).expect("a solicitation fits");
    out
}

/// A Neighbor Advertisement: `owner_mac` says it has `target`, to `to_ip`/`to_mac` (solicited),
/// or to all nodes with the S flag clear (`to` = `None`: an unsolicited announcement).
pub fn advertisement(owner_mac: MacAddr, target: Ipv6Addr, to: Option<(MacAddr, Ipv6Addr)>) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let (to_mac, to_ip) = to.unwrap_or((multicast_mac(all_nodes), all_nodes));
    // R (router) clear; S (solicited) when answering; O (override) set, as MetalLB sends.
    let flags = if to.is_some() { 0x60 } else { 0x20 };
    let mut body = Vec::with_capacity(24);
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[TARGET_LL, 1]);
    body.extend_from_slice(&owner_mac.0);
    // The source of an NA is an address of the owner's interface; the target itself will do.
    let packet = PacketBuilder::ethernet2(owner_mac.0, to_mac.0)
        .ipv6(target.octets(), to_ip.octets(), HOP_LIMIT)
        .icmpv6(Icmpv6Type::Unknown { type_u8: NA_TYPE, code_u8: 0, bytes5to8: [flags, 0, 0, 0] });
    let mut out = Vec::with_capacity(packet.size(body.len()));
    packet.write(&mut out, &body).expect("an advertisement fits");
    out
}

/// Reads an NS or NA out of a captured frame; `None` for anything else, for NDP with a hop limit
/// other than 255, and for truncated or malformed messages.
pub fn from_link(link: LinkType, bytes: &[u8]) -> Option<NeighbourFrame> {
    let frame = link::decode(link, bytes)?;
    if frame.ethertype != ETHERTYPE_IPV6 {
        return None;
    }
    let ip = Ipv6Slice::from_slice(frame.payload).ok()?;
    let header = ip.header();
    if ip.payload().ip_number != IpNumber::IPV6_ICMP || header.hop_limit() != HOP_LIMIT {
        return None;
    }
    let icmp = Icmpv6Slice::from_slice(ip.payload().payload).ok()?;
    let (kind, code) = (icmp.type_u8(), icmp.code_u8());
    if code != 0 || !(kind == NS_TYPE || kind == NA_TYPE) {
        return None;
    }
    // Type-specific bytes 4..8 (flags for an NA), then the 16-byte target, then options.
    let message = icmp.slice();
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(message.get(8..24)?).ok()?);
    let option = |wanted: u8| link_layer_option(message.get(24..)?, wanted);
    let (source_ip, destination_ip) = (header.source_addr(), header.destination_addr());
    let link_source = frame.source;
    if kind == NS_TYPE {
        return Some(NeighbourFrame {
            op: Op::Request,
            link_source,
            link_destination: frame.destination,
            sender_mac: option(SOURCE_LL).or(link_source)?,
            sender_ip: IpAddr::V6(source_ip),
            target_mac: MacAddr::ZERO,
            target_ip: IpAddr::V6(target),
        });
    }
    let solicited = message[4] & 0x40 != 0;
    Some(NeighbourFrame {
        op: Op::Reply,
        link_source,
        link_destination: frame.destination,
        sender_mac: option(TARGET_LL).or(link_source)?,
        sender_ip: IpAddr::V6(target),
        target_mac: MacAddr::ZERO,
        // Unsolicited: an announcement, the owner's own address as its target.
        target_ip: IpAddr::V6(if solicited { destination_ip } else { target }),
    })
}

/// The MAC of the first link-layer address option of type `wanted` (1 source, 2 target).
fn link_layer_option(mut options: &[u8], wanted: u8) -> Option<MacAddr> {
    // Each option: type(1) length(1, in units of 8 bytes) value; a zero length is invalid.
    while options.len() >= 8 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == wanted && len == 8 {
            return MacAddr::from_slice(&options[2..8]);
        }
        options = &options[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
    const SPEAKER: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x07]);

    fn ip(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    #[test]
    fn the_solicited_node_group_and_its_mac() {
        assert_eq!(solicited_node(ip("2001:db8::1:100")), ip("ff02::1:ff01:100"));
        assert_eq!(multicast_mac(ip("ff02::1:ff01:100")), MacAddr([0x33, 0x33, 0xff, 0x01, 0x01, 0x00]));
    }

    #[test]
    fn a_solicitation_reads_back_as_a_request() {
        let bytes = solicitation(OURS, ip("2001:db8::1"), ip("2001:db8::100"));
        assert_eq!(&bytes[..6], &[0x33, 0x33, 0xff, 0x00, 0x01, 0x00], "to the solicited-node group");
        let frame = from_link(LinkType::Ethernet, &bytes).unwrap();
        assert_eq!(frame.op, Op::Request);
        assert_eq!((frame.sender_mac, frame.sender_ip), (OURS, IpAddr::V6(ip("2001:db8::1"))));
        assert_eq!(frame.target_ip, IpAddr::V6(ip("2001:db8::100")));
        // (That the kernel takes its checksum is the lab's to show: tests/arp_lab.rs.)
    }

    #[test]
    fn a_unicast_solicitation_goes_to_the_owner_and_the_target_itself() {
        let vip = ip("2001:db8::100");
        let bytes = unicast_solicitation(SPEAKER, OURS, ip("2001:db8::1"), vip);
        assert_eq!(&bytes[..6], &SPEAKER.0, "to the owner's MAC");
        assert_eq!(&bytes[14 + 24..14 + 40], &vip.octets(), "IPv6 destination: the target address");
        let frame = from_link(LinkType::Ethernet, &bytes).unwrap();
        assert_eq!((frame.op, frame.sender_mac, frame.target_ip), (Op::Request, OURS, IpAddr::V6(vip)));
    }

    #[test]
    fn advertisements_are_replies_and_unsolicited_ones_announcements() {
        let vip = ip("2001:db8::100");
        let solicited =
            from_link(LinkType::Ethernet, &advertisement(SPEAKER, vip, Some((OURS, ip("2001:db8::1")))))
                .unwrap();
        assert_eq!(
            (solicited.op, solicited.sender_mac, solicited.sender_ip),
            (Op::Reply, SPEAKER, IpAddr::V6(vip))
        );
        assert_eq!(solicited.target_ip, IpAddr::V6(ip("2001:db8::1")));
        assert!(!solicited.is_gratuitous());
        let unsolicited = from_link(LinkType::Ethernet, &advertisement(SPEAKER, vip, None)).unwrap();
        assert!(unsolicited.is_gratuitous(), "an unsolicited NA is the owner's announcement");
    }

    #[test]
    fn other_packets_truncation_and_routed_ndp_are_not_read() {
        let bytes = advertisement(SPEAKER, ip("2001:db8::100"), None);
        for len in 0..bytes.len() {
            assert_eq!(from_link(LinkType::Ethernet, &bytes[..len]), None, "len {len}");
        }
        let mut routed = bytes.clone();
        routed[14 + 7] = 64; // hop limit
        assert_eq!(from_link(LinkType::Ethernet, &routed), None);
        let arp =
            super::super::arp::request(OURS, "192.0.2.1".parse().unwrap(), "192.0.2.100".parse().unwrap());
        assert_eq!(from_link(LinkType::Ethernet, &arp), None);
    }
}
