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

/// Where each field lies, each range named once.
mod field {
    pub type Field = std::ops::Range<usize>;

    /// flags(1) reserved(3) VNI(3) reserved(1)
    pub mod header {
        use super::Field;
        pub const FLAGS: usize = 0;
        pub const VNI: Field = 4..7;
    }

    /// magic(4) probe-id(8) seq(4): what marks a probe or a control datagram as ours.
    pub mod mark {
        use super::Field;
        pub const MAGIC: Field = 0..4;
        pub const PROBE_ID: Field = 4..12;
        pub const SEQ: Field = 12..16;
        pub const LEN: usize = 16;
    }
}
const MARK_LEN: usize = field::mark::LEN;

/// Inner addresses of probe frames: locally administered MACs and TEST-NET-3 addresses, which no
/// pod network uses; with a VNI no CNI uses, a receiving VTEP drops the frame before learning.
pub const INNER_SOURCE_MAC: [u8; 6] = [0x02, 0x4e, 0x50, 0x00, 0x00, 0x01];
pub const INNER_DESTINATION_MAC: [u8; 6] = [0x02, 0x4e, 0x50, 0x00, 0x00, 0x02];
pub const INNER_SOURCE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 251);
pub const INNER_DESTINATION_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 252);
const INNER_PORT: u16 = 9473;

/// The 8-byte VXLAN header for `vni` (the low 24 bits are used).
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[field::header::FLAGS] = FLAG_VNI_VALID;
    out[field::header::VNI].copy_from_slice(&(vni & MAX_VNI).to_be_bytes()[1..]);
    out
}

/// The VNI of a VXLAN header, `None` when `bytes` is too short or the VNI-valid flag is clear.
pub fn vni(bytes: &[u8]) -> Option<u32> {
    let h = bytes.get(..HEADER_LEN)?;
    let v = &h[field::header::VNI];
    (h[field::header::FLAGS] & FLAG_VNI_VALID != 0).then(|| u32::from_be_bytes([0, v[0], v[1], v[2]]))
}

fn mark(magic: &[u8; 4], probe_id: u64, seq: u32) -> [u8; MARK_LEN] {
    use field::mark;
    let mut out = [0u8; MARK_LEN];
    out[mark::MAGIC].copy_from_slice(magic);
    out[mark::PROBE_ID].copy_from_slice(&probe_id.to_be_bytes());
    out[mark::SEQ].copy_from_slice(&seq.to_be_bytes());
    out
}

fn read_mark(magic: &[u8; 4], bytes: &[u8], probe_id: u64) -> Option<u32> {
    use field::mark;
    let m = bytes.get(..MARK_LEN)?;
    if &m[mark::MAGIC] != magic || m[mark::PROBE_ID] != probe_id.to_be_bytes() {
        return None;
    }
    let seq = &m[mark::SEQ];
    Some(u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]))
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
    let mut body = mark(PROBE_MAGIC, probe_id, seq).to_vec();
    body.resize(MARK_LEN + packet.saturating_sub(MIN_PROBE_PACKET), 0);
    encapsulated(vni, &body)
}

/// A VXLAN UDP payload: the header for `vni` and a whole inner Ethernet/IPv4/UDP frame between the
/// inner addresses, carrying `body`.
pub(crate) fn encapsulated(vni: u32, body: &[u8]) -> Vec<u8> {
    let inner = PacketBuilder::ethernet2(INNER_SOURCE_MAC, INNER_DESTINATION_MAC)
        .ipv4(INNER_SOURCE_IP.octets(), INNER_DESTINATION_IP.octets(), 64)
        .udp(INNER_PORT, INNER_PORT);
    let mut out = Vec::with_capacity(HEADER_LEN + inner.size(body.len()));
    out.extend_from_slice(&header(vni));
    // Writing into a Vec cannot fail; the callers keep the body within a jumbo frame.
    inner.write(&mut out, body).expect("a probe frame fits");
    out
}

/// The inner UDP payload of a VXLAN UDP payload for `vni`, if it carries an inner UDP frame. A
/// payload cut short by a capture's snap length gives what was captured.
pub(crate) fn decapsulated(udp_payload: &[u8], vni: u32) -> Option<&[u8]> {
    if self::vni(udp_payload)? != vni & MAX_VNI {
        return None;
    }
    let inner = LaxSlicedPacket::from_ethernet(&udp_payload[HEADER_LEN..]).ok()?;
    let Some(TransportSlice::Udp(udp)) = inner.transport else { return None };
    Some(udp.payload())
}

/// A whole IPv4 packet carrying `payload` in UDP from `source:source_port` to `to:port`, with
/// Don't Fragment set and both checksums filled in: what the path MTU search sends on a raw
/// socket, so that no UDP socket of the node receives the ICMP that answers it (the kernel would
/// cache that path MTU for the destination, for every sender on the node).
pub fn ipv4_udp_packet(
    source: Ipv4Addr,
    source_port: u16,
    to: Ipv4Addr,
    port: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    let ip =
        etherparse::Ipv4Header::new(udp_len, 64, etherparse::IpNumber::UDP, source.octets(), to.octets())
            .ok()?;
    debug_assert!(ip.dont_fragment, "etherparse sets Don't Fragment by default");
    let udp = etherparse::UdpHeader::with_ipv4_checksum(source_port, port, &ip, payload).ok()?;
    let mut out = Vec::with_capacity(usize::from(ip.total_len));
    ip.write(&mut out).ok()?;
    udp.write(&mut out).ok()?;
    out.extend_from_slice(payload);
    Some(out)
}

/// An ICMP destination unreachable (type 3) about a UDP packet we sent: who said so, why (its
/// code), the next-hop MTU for "fragmentation needed", and the quoted packet's destination and
/// port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable {
    pub from: Ipv4Addr,
    pub code: u8,
    /// The next-hop MTU of a fragmentation-needed (code 4); `None` for the other codes.
    pub mtu: Option<u16>,
    pub quoted_destination: Ipv4Addr,
    pub quoted_port: u16,
}

/// ICMP destination-unreachable codes (RFC 792, RFC 1812).
pub mod unreachable_code {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    pub const FRAGMENTATION_NEEDED: u8 = 4;
    pub const NET_PROHIBITED: u8 = 9;
    pub const HOST_PROHIBITED: u8 = 10;
    pub const ADMIN_PROHIBITED: u8 = 13;

    /// Said by a firewall that rejects (iptables `REJECT --reject-with icmp-*-prohibited`),
    /// rather than by a stack that has nowhere to deliver.
    pub fn prohibited(code: u8) -> bool {
        matches!(code, NET_PROHIBITED | HOST_PROHIBITED | ADMIN_PROHIBITED)
    }

    /// The code in words, as tcpdump prints it.
    pub fn words(code: u8) -> String {
        match code {
            NET => "net unreachable".into(),
            HOST => "host unreachable".into(),
            PROTOCOL => "protocol unreachable".into(),
            PORT => "port unreachable".into(),
            FRAGMENTATION_NEEDED => "fragmentation needed".into(),
            NET_PROHIBITED => "net administratively prohibited".into(),
            HOST_PROHIBITED => "host administratively prohibited".into(),
            ADMIN_PROHIBITED => "administratively prohibited".into(),
            other => format!("unreachable, code {other}"),
        }
    }
}

impl Unreachable {
    pub fn prohibited(&self) -> bool {
        unreachable_code::prohibited(self.code)
    }

    pub fn words(&self) -> String {
        unreachable_code::words(self.code)
    }
}

/// Reads a captured frame as an ICMP destination unreachable about a UDP packet; `None`
/// otherwise.
pub fn unreachable(link: LinkType, bytes: &[u8]) -> Option<Unreachable> {
    let frame = link::decode(link, bytes)?;
    if frame.ethertype != 0x0800 {
        return None;
    }
    let (ip, _) = LaxIpv4Slice::from_slice(frame.payload).ok()?;
    if ip.payload_ip_number() != etherparse::IpNumber::ICMP {
        return None;
    }
    let icmp = etherparse::Icmpv4Slice::from_slice(ip.payload().payload).ok()?;
    if icmp.type_u8() != 3 {
        return None;
    }
    let code = icmp.code_u8();
    // type(1) code(1) checksum(2) unused(2) next-hop MTU(2), for code 4 (RFC 1191)
    let rest = icmp.bytes5to8();
    let mtu =
        (code == unreachable_code::FRAGMENTATION_NEEDED).then(|| u16::from_be_bytes([rest[2], rest[3]]));
    // The quoted packet: its IPv4 header and at least the first 8 bytes after it (RFC 792).
    let quoted = icmp.payload();
    let header = etherparse::Ipv4HeaderSlice::from_slice(quoted).ok()?;
    if header.protocol() != etherparse::IpNumber::UDP {
        return None;
    }
    let udp = quoted.get(header.slice().len()..header.slice().len() + 4)?;
    Some(Unreachable {
        from: ip.header().source_addr(),
        code,
        mtu,
        quoted_destination: header.destination_addr(),
        quoted_port: u16::from_be_bytes([udp[2], udp[3]]),
    })
}

/// The sequence number of a probe in a VXLAN UDP payload, if it is ours (VNI and probe id). A
/// payload cut short by the capture's snap length still counts: the mark is at the start.
pub fn probe_seq(udp_payload: &[u8], expected_vni: u32, probe_id: u64) -> Option<u32> {
    read_mark(PROBE_MAGIC, decapsulated(udp_payload, expected_vni)?, probe_id)
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

    /// What a router (or a host) sends back about a probe to 203.0.113.2:8472, as an Ethernet frame.
    fn unreachable_frame(
        from: [u8; 4],
        header: etherparse::icmpv4::DestUnreachableHeader,
    ) -> (Vec<u8>, Vec<u8>) {
        let probe = sized_probe_payload(7, 99, 0, 1500);
        let quoted = PacketBuilder::ipv4([198, 51, 100, 1], [203, 0, 113, 2], 63).udp(40000, 8472);
        let mut original = Vec::new();
        quoted.write(&mut original, &probe).unwrap();
        let icmp = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(from, [198, 51, 100, 1], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(header));
        let mut frame = Vec::new();
        icmp.write(&mut frame, &original[..28 + 8]).unwrap();
        (frame, original)
    }

    #[test]
    fn fragmentation_needed_is_read_with_its_quoted_packet() {
        // A 1500-byte probe on a 1400-byte link.
        use etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded;
        let (frame, original) =
            unreachable_frame([198, 51, 100, 254], FragmentationNeeded { next_hop_mtu: 1400 });
        let said = unreachable(LinkType::Ethernet, &frame).unwrap();
        assert_eq!(
            said,
            Unreachable {
                from: Ipv4Addr::new(198, 51, 100, 254),
                code: unreachable_code::FRAGMENTATION_NEEDED,
                mtu: Some(1400),
                quoted_destination: Ipv4Addr::new(203, 0, 113, 2),
                quoted_port: 8472
            }
        );
        assert!(!said.prohibited());
        for len in 0..frame.len() {
            let _ = unreachable(LinkType::Ethernet, &frame[..len]);
        }
        assert_eq!(unreachable(LinkType::Ethernet, &original), None, "not an ICMP frame");
    }

    #[test]
    fn a_reject_and_a_closed_port_are_told_apart_by_their_code() {
        use etherparse::icmpv4::DestUnreachableHeader::{FilterProhibited, Port};
        // iptables -j REJECT --reject-with icmp-admin-prohibited on a router: code 13.
        let (frame, _) = unreachable_frame([198, 51, 100, 254], FilterProhibited);
        let said = unreachable(LinkType::Ethernet, &frame).unwrap();
        assert_eq!((said.code, said.mtu, said.prohibited()), (13, None, true));
        assert_eq!(said.words(), "administratively prohibited");
        // The destination's own stack (nothing listens) or a plain REJECT: port unreachable.
        let (frame, _) = unreachable_frame([203, 0, 113, 2], Port);
        let said = unreachable(LinkType::Ethernet, &frame).unwrap();
        assert_eq!((said.code, said.prohibited(), said.words().as_str()), (3, false, "port unreachable"));
        assert_eq!(said.from, Ipv4Addr::new(203, 0, 113, 2));
    }

    #[test]
    fn a_raw_probe_packet_is_ipv4_udp_with_dont_fragment() {
        let payload = sized_probe_payload(7, 99, 2, 1400);
        let (a, b) = (Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(203, 0, 113, 2));
        let packet = ipv4_udp_packet(a, 40000, b, 8472, &payload).unwrap();
        assert_eq!(packet.len(), 1400);
        #[rustfmt::skip]
        let start = [
            0x45, 0x00, 0x05, 0x78, // version 4, IHL 5; DSCP/ECN 0; total length 1400
            0x00, 0x00, 0x40, 0x00, // identification 0; flags: Don't Fragment, offset 0
            0x40, 0x11,             // TTL 64, protocol UDP
        ];
        assert_eq!(&packet[..10], &start);
        let (ip, _) = LaxIpv4Slice::from_slice(&packet).unwrap();
        assert!(ip.header().dont_fragment());
        let udp = etherparse::UdpSlice::from_slice(ip.payload().payload).unwrap();
        assert_eq!((udp.source_port(), udp.destination_port()), (40000, 8472));
        let check =
            etherparse::UdpHeader::with_ipv4_checksum(40000, 8472, &ip.header().to_header(), &payload)
                .unwrap();
        assert_eq!(udp.checksum(), check.checksum, "the kernel would drop a bad one (UDP_CSUM)");
        assert_eq!(probe_seq(udp.payload(), 7, 99), Some(2));
    }

    #[test]
    fn control_datagrams() {
        let c = control_payload(42, 3);
        assert_eq!(control_seq(&c, 42), Some(3));
        assert_eq!(control_seq(&c, 43), None);
        assert_eq!(control_seq(b"NPCT", 42), None);
    }
}
