//! ARP for IPv4 over Ethernet (RFC 826): building the frames netprobe sends and reading the ones it
//! captures into a [`NeighbourFrame`]. Parsing of the ARP body itself is etherparse's; this module
//! adds the Ethernet framing.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{ArpEthIpv4Packet, ArpOperation, ArpPacket};

use super::link::{self, LinkType};
use super::neighbour::{NeighbourFrame, Op};
use super::MacAddr;

pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethernet header (14) + ARP for Ethernet/IPv4 (28). Drivers pad to the 60-byte minimum.
pub const FRAME_LEN: usize = 42;

/// Reads an ARP (Ethernet/IPv4) frame out of a captured link-layer frame; `None` for anything else.
pub fn from_link(link: LinkType, bytes: &[u8]) -> Option<NeighbourFrame> {
    let frame = link::decode(link, bytes)?;
    if frame.ethertype != ETHERTYPE_ARP {
        return None;
    }
    let arp = ArpPacket::from_slice(frame.payload).ok()?.try_eth_ipv4().ok()?;
    Some(NeighbourFrame {
        op: match arp.operation {
            ArpOperation::REQUEST => Op::Request,
            ArpOperation::REPLY => Op::Reply,
            other => Op::Other(other.0),
        },
        link_source: frame.source,
        link_destination: frame.destination,
        sender_mac: MacAddr(arp.sender_mac),
        sender_ip: IpAddr::V4(arp.sender_ipv4_addr()),
        target_mac: MacAddr(arp.target_mac),
        target_ip: IpAddr::V4(arp.target_ipv4_addr()),
    })
}

/// A broadcast who-has request for `target_ip`, from `source_mac`/`source_ip`.
pub fn request(source_mac: MacAddr, source_ip: Ipv4Addr, target_ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    frame(MacAddr::BROADCAST, ArpOperation::REQUEST, source_mac, source_ip, MacAddr::ZERO, target_ip)
}

/// A who-has request for `target_ip` sent to `owner`'s MAC alone, as the kernel re-checks a cached
/// neighbour (and routers and switches refresh theirs): the target MAC stays zero, as Linux sends it.
pub fn unicast_request(
    owner: MacAddr,
    source_mac: MacAddr,
    source_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> [u8; FRAME_LEN] {
    frame(owner, ArpOperation::REQUEST, source_mac, source_ip, MacAddr::ZERO, target_ip)
}

/// A unicast is-at reply saying `sender_ip` is at `sender_mac`, to the host that asked.
pub fn reply(
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> [u8; FRAME_LEN] {
    frame(target_mac, ArpOperation::REPLY, sender_mac, sender_ip, target_mac, target_ip)
}

fn frame(
    destination: MacAddr,
    operation: ArpOperation,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> [u8; FRAME_LEN] {
    let body = ArpEthIpv4Packet {
        operation,
        sender_mac: sender_mac.0,
        sender_ipv4: sender_ip.octets(),
        target_mac: target_mac.0,
        target_ipv4: target_ip.octets(),
    }
    .to_bytes();
    let mut out = [0u8; FRAME_LEN];
    out[0..6].copy_from_slice(&destination.0);
    out[6..12].copy_from_slice(&sender_mac.0);
    out[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    out[14..].copy_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
    const SPEAKER: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x07]);

    #[test]
    fn a_unicast_request_differs_from_the_broadcast_one_only_in_its_destination() {
        let (us, vip) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 100));
        let broadcast = request(OURS, us, vip);
        let unicast = unicast_request(SPEAKER, OURS, us, vip);
        assert_eq!(&unicast[..6], &SPEAKER.0);
        assert_eq!(&unicast[6..], &broadcast[6..], "the target MAC stays zero, as Linux sends it");
    }

    #[test]
    fn request_bytes() {
        let bytes = request(OURS, Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 100));
        #[rustfmt::skip]
        let want: [u8; FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast, every request
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, // Ethernet source: our MAC
            0x08, 0x06,                         // EtherType: ARP
            0x00, 0x01,                         // hardware type: Ethernet
            0x08, 0x00,                         // protocol type: IPv4
            0x06, 0x04,                         // hardware / protocol address lengths
            0x00, 0x01,                         // operation: request
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, // sender MAC: ours
            192, 0, 2, 1,                       // sender IP: our source address
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC: unknown, zero
            192, 0, 2, 100,                     // target IP: the VIP
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn reply_bytes() {
        let bytes = reply(SPEAKER, Ipv4Addr::new(192, 0, 2, 100), OURS, Ipv4Addr::new(192, 0, 2, 1));
        #[rustfmt::skip]
        let want: [u8; FRAME_LEN] = [
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, // Ethernet destination: the asker
            0x02, 0x00, 0x00, 0x00, 0x00, 0x07, // Ethernet source: the speaker
            0x08, 0x06,                         // EtherType: ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet / IPv4 / 6 / 4
            0x00, 0x02,                         // operation: reply
            0x02, 0x00, 0x00, 0x00, 0x00, 0x07, // sender MAC: the speaker
            192, 0, 2, 100,                     // sender IP: the VIP it claims
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, // target MAC: the asker
            192, 0, 2, 1,                       // target IP: the asker
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn parses_what_it_builds() {
        let bytes = reply(SPEAKER, Ipv4Addr::new(192, 0, 2, 100), OURS, Ipv4Addr::new(192, 0, 2, 1));
        let arp = NeighbourFrame::from_link(LinkType::Ethernet, &bytes).unwrap();
        assert_eq!(arp.op, Op::Reply);
        assert_eq!(arp.link_source, Some(SPEAKER));
        assert_eq!(arp.sender_mac, SPEAKER);
        assert_eq!(arp.sender_ip, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)));
        assert_eq!(arp.target_ip, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!arp.is_gratuitous());
    }

    #[test]
    fn rejects_other_ethertypes_and_truncation() {
        let mut bytes = request(OURS, Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 100));
        for len in 0..FRAME_LEN {
            assert_eq!(NeighbourFrame::from_link(LinkType::Ethernet, &bytes[..len]), None, "len {len}");
        }
        bytes[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(NeighbourFrame::from_link(LinkType::Ethernet, &bytes), None);
    }
}
