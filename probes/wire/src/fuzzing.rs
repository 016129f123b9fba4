//! The body of the `wire` fuzz target (`fuzz/`), here so that it builds with this crate alone and
//! the stable test suite replays it on the fuzzer's seeds (`tests/fuzz_seeds.rs`). It takes
//! untrusted bytes and must return without panicking; its round trips assert what they build
//! reads back.

use std::net::Ipv4Addr;

use crate::arp;
use crate::link::{self, LinkType};
use crate::neighbour::NeighbourFrame;
use crate::{vxlan, MacAddr};

/// Wire views: every decoder on the bytes, and build -> parse round trips from them.
pub fn wire(bytes: &[u8]) {
    for link in [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2] {
        let _ = link::decode(link, bytes);
        let _ = NeighbourFrame::from_link(link, bytes);
        let _ = vxlan::unreachable(link, bytes);
        if let Some((_, _, _, payload)) = vxlan::outer_udp(link, bytes) {
            let _ = vxlan::probe_seq(payload, 1, 1);
            let _ = vxlan::control_seq(payload, 1);
            let _ = crate::beacon::Beacon::parse(payload, 1);
        }
    }
    let _ = vxlan::probe_seq(bytes, u32::from_le_bytes(word(bytes, 0)), 7);
    // Round trips: what we build, we read back as built.
    if bytes.len() >= 20 {
        let mac = |at: usize| MacAddr::from_slice(&bytes[at..at + 6]).unwrap_or(MacAddr::ZERO);
        let ip = |at: usize| Ipv4Addr::from(word(bytes, at));
        let (sender, target) = (mac(0), mac(6));
        let (sender_ip, target_ip) = (ip(12), ip(16));
        let frame = arp::reply(sender, sender_ip, target, target_ip);
        let parsed = NeighbourFrame::from_link(LinkType::Ethernet, &frame).expect("a built reply parses");
        assert_eq!(
            (parsed.sender_mac, parsed.sender_ip, parsed.target_ip),
            (sender, sender_ip.into(), target_ip.into())
        );
        let v6 = |at: usize| {
            std::net::Ipv6Addr::from(u128::from(u32::from_le_bytes(word(bytes, at))) | 0x2001_0db8 << 96)
        };
        let solicitation = crate::ndp::solicitation(sender, v6(12), v6(16));
        let parsed = NeighbourFrame::from_link(LinkType::Ethernet, &solicitation)
            .expect("a built solicitation parses");
        assert_eq!(
            (parsed.sender_mac, parsed.target_ip),
            (sender, v6(16).into()),
            "a solicitation reads back"
        );
        let vni = u32::from_le_bytes(word(bytes, 12)) & vxlan::MAX_VNI;
        let probe_id = u64::from(u32::from_le_bytes(word(bytes, 16)));
        let payload = vxlan::probe_payload(vni, probe_id, 3);
        assert_eq!(vxlan::probe_seq(&payload, vni, probe_id), Some(3), "a built probe reads back");
        let packet = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]) % 9216);
        let sized = vxlan::sized_probe_payload(vni, probe_id, 4, packet);
        assert_eq!(sized.len() + vxlan::OUTER_HEADERS, packet.max(vxlan::MIN_PROBE_PACKET), "sized as asked");
        assert_eq!(vxlan::probe_seq(&sized, vni, probe_id), Some(4), "a sized probe reads back");
        let beacon = crate::beacon::Beacon {
            sender: ip(12),
            epoch: u32::from_le_bytes(word(bytes, 4)),
            seq: u64::from(u32::from_le_bytes(word(bytes, 8))) << 20,
            sent_at_us: u64::from(u32::from_le_bytes(word(bytes, 16))),
        };
        assert_eq!(crate::beacon::Beacon::parse(&beacon.emit(vni), vni), Some(beacon), "a beacon reads back");
    }
}

fn word(bytes: &[u8], at: usize) -> [u8; 4] {
    let mut out = [0u8; 4];
    for (i, b) in bytes.iter().skip(at).take(4).enumerate() {
        out[i] = *b;
    }
    out
}
