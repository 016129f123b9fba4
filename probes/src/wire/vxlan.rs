//! VXLAN (RFC 7348) and netprobe's probe payloads. No crate covers VXLAN: the header is 8 bytes,
//! read and written here.
//!
//! ```text
//! VXLAN header:  flags(1: 0x08 = VNI valid) reserved(3) VNI(3) reserved(1)
//! probe frame:   VXLAN header, inner Ethernet, inner IPv4, inner UDP, "NPVX" probe-id(8) seq(4)
//! control:       "NPCT" probe-id(8) seq(4), sent as plain UDP
//! ```

use std::net::Ipv4Addr;

use etherparse::{LaxIpv4Slice, LaxSlicedPacket, PacketBuilder, TransportSlice};

use super::link::{self, LinkType};

pub const HEADER_LEN: usize = 8;
pub const FLAG_VNI_VALID: u8 = 0x08;
/// The highest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

const PROBE_MAGIC: &[u8; 4] = b"NPVX";
const CONTROL_MAGIC: &[u8; 4] = b"NPCT";
const MARK_LEN: usize = 16;

/// Inner addresses of probe frames: locally administered MACs and TEST-NET-3 addresses, which no
/// pod network uses; with a VNI no CNI uses, a receiving VTEP drops the frame before learning.
pub const INNER_SOURCE_MAC: [u8; 6] = [0x02, 0x4e, 0x50, 0x00, 0x00, 0x01];
pub const INNER_DESTINATION_MAC: [u8; 6] = [0x02, 0x4e, 0x50, 0x00, 0x00, 0x02];
pub const INNER_SOURCE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 251);
pub const INNER_DESTINATION_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 252);
const INNER_PORT: u16 = 9473;

/// The 8-byte VXLAN header for `vni` (the low 24 bits are used).
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let v = (vni & MAX_VNI).to_be_bytes();
    [FLAG_VNI_VALID, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// The VNI of a VXLAN header, `None` when `bytes` is too short or the VNI-valid flag is clear.
pub fn vni(bytes: &[u8]) -> Option<u32> {
    let h = bytes.get(..HEADER_LEN)?;
    (h[0] & FLAG_VNI_VALID != 0).then(|| u32::from_be_bytes([0, h[4], h[5], h[6]]))
}

fn mark(magic: &[u8; 4], probe_id: u64, seq: u32) -> [u8; MARK_LEN] {
    let mut out = [0u8; MARK_LEN];
    out[..4].copy_from_slice(magic);
    out[4..12].copy_from_slice(&probe_id.to_be_bytes());
    out[12..].copy_from_slice(&seq.to_be_bytes());
    out
}

fn read_mark(magic: &[u8; 4], bytes: &[u8], probe_id: u64) -> Option<u32> {
    let m = bytes.get(..MARK_LEN)?;
    if &m[..4] != magic || m[4..12] != probe_id.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes([m[12], m[13], m[14], m[15]]))
}

/// The UDP payload of probe `seq`: a VXLAN header and a whole inner Ethernet/IPv4/UDP frame,
/// padded so that its outer packet is [`probe_packet_len`] bytes.
pub fn probe_payload(vni: u32, probe_id: u64, seq: u32) -> Vec<u8> {
    sized_probe_payload(vni, probe_id, seq, usize::from(probe_packet_len(probe_id)))
}

/// The outer IPv4 length of probe `probe_id`'s plain probes: 94 to 493 bytes, set by the id, so
/// that the kernel's receive tracepoint (which gives a packet's length, not its ports) tells one
/// probe's packets from most other traffic and other probes (small enough never to fragment).
pub fn probe_packet_len(probe_id: u64) -> u16 {
    MIN_PROBE_PACKET as u16 + (probe_id % 400) as u16
}

/// Outer IPv4 and UDP headers around a probe payload: what the path carries is the payload plus these.
pub const OUTER_HEADERS: usize = 20 + 8;
/// What VXLAN adds to an inner frame's IP packet: outer IPv4, UDP, VXLAN and the inner Ethernet
/// header. A path that carries N-byte packets carries pods' packets of N - 50 bytes.
pub const OVERHEAD: u16 = 50;
/// The smallest outer IPv4 packet a probe can be.
pub const MIN_PROBE_PACKET: usize = OUTER_HEADERS + HEADER_LEN + 14 + 20 + 8 + MARK_LEN;

/// A probe whose outer IPv4 packet is `packet` bytes long (the inner UDP payload padded with
/// zeros after the mark); a `packet` below [`MIN_PROBE_PACKET`] gives the plain probe.
pub fn sized_probe_payload(vni: u32, probe_id: u64, seq: u32, packet: usize) -> Vec<u8> {
    let inner = PacketBuilder::ethernet2(INNER_SOURCE_MAC, INNER_DESTINATION_MAC)
        .ipv4(INNER_SOURCE_IP.octets(), INNER_DESTINATION_IP.octets(), 64)
        .udp(INNER_PORT, INNER_PORT);
    let mut body = mark(PROBE_MAGIC, probe_id, seq).to_vec();
    body.resize(MARK_LEN + packet.saturating_sub(MIN_PROBE_PACKET), 0);
    let mut out = Vec::with_capacity(HEADER_LEN + inner.size(body.len()));
    out.extend_from_slice(&header(vni));
    // Writing into a Vec cannot fail; the callers keep `packet` within a jumbo frame.
    inner.write(&mut out, &body).expect("a probe frame fits");
    out
}

/// An ICMP "fragmentation needed" (type 3, code 4) for a UDP packet we sent: who said so, the
/// next-hop MTU it gave, and the quoted packet's destination and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragNeeded {
    pub from: Ipv4Addr,
    pub mtu: u16,
    pub quoted_destination: Ipv4Addr,
    pub quoted_port: u16,
}

/// Reads a captured frame as an ICMP fragmentation-needed about a UDP packet; `None` otherwise.
pub fn frag_needed(link: LinkType, bytes: &[u8]) -> Option<FragNeeded> {
    let frame = link::decode(link, bytes)?;
    if frame.ethertype != 0x0800 {
        return None;
    }
    let (ip, _) = LaxIpv4Slice::from_slice(frame.payload).ok()?;
    if ip.payload_ip_number() != etherparse::IpNumber::ICMP {
        return None;
    }
    let icmp = etherparse::Icmpv4Slice::from_slice(ip.payload().payload).ok()?;
    use etherparse::icmpv4::DestUnreachableHeader;
    let etherparse::Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu,
    }) = icmp.icmp_type()
    else {
        return None;
    };
    // The quoted packet: its IPv4 header and at least the first 8 bytes after it (RFC 792).
    let quoted = icmp.payload();
    let header = etherparse::Ipv4HeaderSlice::from_slice(quoted).ok()?;
    if header.protocol() != etherparse::IpNumber::UDP {
        return None;
    }
    let udp = quoted.get(header.slice().len()..header.slice().len() + 4)?;
    Some(FragNeeded {
        from: ip.header().source_addr(),
        mtu: next_hop_mtu,
        quoted_destination: header.destination_addr(),
        quoted_port: u16::from_be_bytes([udp[2], udp[3]]),
    })
}

/// The sequence number of a probe in a VXLAN UDP payload, if it is ours (VNI and probe id). A
/// payload cut short by the capture's snap length still counts: the mark is at the start.
pub fn probe_seq(udp_payload: &[u8], expected_vni: u32, probe_id: u64) -> Option<u32> {
    if vni(udp_payload)? != expected_vni & MAX_VNI {
        return None;
    }
    let inner = LaxSlicedPacket::from_ethernet(&udp_payload[HEADER_LEN..]).ok()?;
    let Some(TransportSlice::Udp(udp)) = inner.transport else { return None };
    read_mark(PROBE_MAGIC, udp.payload(), probe_id)
}

/// The UDP payload of control datagram `seq`.
pub fn control_payload(probe_id: u64, seq: u32) -> [u8; MARK_LEN] {
    mark(CONTROL_MAGIC, probe_id, seq)
}

pub fn control_seq(udp_payload: &[u8], probe_id: u64) -> Option<u32> {
    read_mark(CONTROL_MAGIC, udp_payload, probe_id)
}

/// The outer IPv4/UDP of a captured frame: (source, destination, destination port, UDP payload).
/// A frame cut short by the capture's snap length (large `--mtu` probes) gives the part captured.
pub fn outer_udp(link: LinkType, bytes: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, &[u8])> {
    let frame = link::decode(link, bytes)?;
    if frame.ethertype != 0x0800 {
        return None;
    }
    let (ip, _) = LaxIpv4Slice::from_slice(frame.payload).ok()?;
    if ip.payload_ip_number() != etherparse::IpNumber::UDP || ip.is_payload_fragmented() {
        return None;
    }
    let udp = etherparse::UdpSlice::from_slice_lax(ip.payload().payload).ok()?;
    Some((ip.header().source_addr(), ip.header().destination_addr(), udp.destination_port(), udp.payload()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        assert_eq!(header(0xfffff0), [0x08, 0, 0, 0, 0xff, 0xff, 0xf0, 0]);
        assert_eq!(header(1), [0x08, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(vni(&header(4096)), Some(4096));
        assert_eq!(vni(&[0x00, 0, 0, 0, 0, 0, 1, 0]), None, "VNI-valid flag clear");
        assert_eq!(vni(&[0x08, 0, 0]), None);
    }

    #[test]
    fn probe_frames_round_trip_and_carry_their_inner_frame() {
        let payload = probe_payload(0xfffff0, 0x1122_3344_5566_7788, 7);
        #[rustfmt::skip]
        let start = [
            0x08, 0x00, 0x00, 0x00, 0xff, 0xff, 0xf0, 0x00, // VXLAN: flags, VNI 0xfffff0
            0x02, 0x4e, 0x50, 0x00, 0x00, 0x02,             // inner destination MAC
            0x02, 0x4e, 0x50, 0x00, 0x00, 0x01,             // inner source MAC
            0x08, 0x00,                                     // inner EtherType IPv4
        ];
        assert_eq!(&payload[..start.len()], &start);
        assert_eq!(payload.len() + OUTER_HEADERS, usize::from(probe_packet_len(0x1122_3344_5566_7788)));
        assert_eq!(MIN_PROBE_PACKET, 28 + 8 + 14 + 20 + 8 + 16);
        assert_eq!((probe_packet_len(0), probe_packet_len(399), probe_packet_len(400)), (94, 493, 94));
        let mark = 8 + 14 + 20 + 8;
        assert_eq!(&payload[mark..mark + 4], b"NPVX");
        assert_eq!(probe_seq(&payload, 0xfffff0, 0x1122_3344_5566_7788), Some(7));
        assert_eq!(probe_seq(&payload, 1, 0x1122_3344_5566_7788), None, "another VNI");
        assert_eq!(probe_seq(&payload, 0xfffff0, 99), None, "another probe");
        for len in 0..payload.len() {
            let _ = probe_seq(&payload[..len], 0xfffff0, 0x1122_3344_5566_7788);
        }
        // A large probe as a 512-byte snap length captures it: still read.
        let big = sized_probe_payload(0xfffff0, 0x1122_3344_5566_7788, 9, 1400);
        assert_eq!(probe_seq(&big[..512 - 14 - OUTER_HEADERS], 0xfffff0, 0x1122_3344_5566_7788), Some(9));
        let frame = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 51, 100, 1], [203, 0, 113, 2], 64)
            .udp(40000, 8472);
        let mut bytes = Vec::new();
        frame.write(&mut bytes, &big).unwrap();
        let (_, to, port, payload) = outer_udp(LinkType::Ethernet, &bytes[..512]).unwrap();
        assert_eq!(
            (to, port, probe_seq(payload, 0xfffff0, 0x1122_3344_5566_7788)),
            (Ipv4Addr::new(203, 0, 113, 2), 8472, Some(9))
        );
    }

    #[test]
    fn sized_probes_are_as_long_as_asked_and_still_read() {
        for packet in [0, MIN_PROBE_PACKET, 1200, 1400, 1500, 9000] {
            let payload = sized_probe_payload(7, 99, 3, packet);
            assert_eq!(payload.len() + OUTER_HEADERS, packet.max(MIN_PROBE_PACKET), "{packet}");
            assert_eq!(probe_seq(&payload, 7, 99), Some(3));
        }
        assert_eq!(usize::from(OVERHEAD), OUTER_HEADERS + HEADER_LEN + 14);
    }

    #[test]
    fn fragmentation_needed_is_read_with_its_quoted_packet() {
        // What a router sends back for a 1500-byte probe to 203.0.113.2:8472 on a 1400-byte link.
        let probe = sized_probe_payload(7, 99, 0, 1500);
        let quoted = PacketBuilder::ipv4([198, 51, 100, 1], [203, 0, 113, 2], 63).udp(40000, 8472);
        let mut original = Vec::new();
        quoted.write(&mut original, &probe).unwrap();
        let icmp = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 51, 100, 254], [198, 51, 100, 1], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
            ));
        let mut frame = Vec::new();
        icmp.write(&mut frame, &original[..28 + 8]).unwrap();
        let said = frag_needed(LinkType::Ethernet, &frame).unwrap();
        assert_eq!(
            said,
            FragNeeded {
                from: Ipv4Addr::new(198, 51, 100, 254),
                mtu: 1400,
                quoted_destination: Ipv4Addr::new(203, 0, 113, 2),
                quoted_port: 8472
            }
        );
        for len in 0..frame.len() {
            let _ = frag_needed(LinkType::Ethernet, &frame[..len]);
        }
        assert_eq!(frag_needed(LinkType::Ethernet, &original), None, "not an ICMP frame");
    }

    #[test]
    fn control_datagrams() {
        let c = control_payload(42, 3);
        assert_eq!(control_seq(&c, 42), Some(3));
        assert_eq!(control_seq(&c, 43), None);
        assert_eq!(control_seq(b"NPCT", 42), None);
    }
}
