//! Link-layer headers as they appear in captures: Ethernet (what `tcpdump -i eth0` writes) and the
//! Linux "cooked" headers SLL and SLL2 (what `tcpdump -i any` writes). Each is reduced to the same
//! [`LinkFrame`]: who sent it at layer 2, which EtherType it carries, and the payload.

use super::MacAddr;

/// DLT/LINKTYPE numbers from the tcpdump.org registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    LinuxSll,
    LinuxSll2,
}

impl LinkType {
    pub fn from_dlt(dlt: u32) -> Option<LinkType> {
        match dlt {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            _ => None,
        }
    }
}

/// EtherTypes of VLAN tags: 802.1Q (C-tag), 802.1ad (S-tag), and the pre-standard QinQ values
/// some switches still send. Each tag is 4 bytes: TCI(2) and the next EtherType(2).
pub const VLAN_ETHERTYPES: [u16; 4] = [0x8100, 0x88a8, 0x9100, 0x9200];

/// Tags deeper than this are not VLAN stacks any real network builds: the frame is not decoded.
const MAX_VLAN_TAGS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFrame<'a> {
    /// The layer-2 source: Ethernet source address, or the SLL "link-layer address" (the sender for
    /// packets that came in). `None` when a cooked header carries no 6-byte address.
    pub source: Option<MacAddr>,
    /// The Ethernet destination; `None` in the cooked headers, which keep only one address (the
    /// sender's): whether a frame went to one host or to broadcast is lost there.
    pub destination: Option<MacAddr>,
    pub ethertype: u16,
    pub payload: &'a [u8],
    /// The interface the packet was captured on, where the header says (SLL2 does: `tcpdump -i
    /// any` on Linux).
    pub ifindex: Option<u32>,
}

/// Where each header's fields lie, each range named once.
mod field {
    pub type Field = std::ops::Range<usize>;

    /// dst(6) src(6) ethertype(2)
    pub mod ethernet {
        use super::Field;
        pub const DESTINATION: Field = 0..6;
        pub const SOURCE: Field = 6..12;
        pub const ETHERTYPE: Field = 12..14;
        pub const LEN: usize = 14;
    }

    /// packet type(2) ARPHRD(2) address length(2) address(8) protocol(2)
    pub mod sll {
        use super::Field;
        pub const ADDRESS_LEN: Field = 4..6;
        pub const ADDRESS: Field = 6..12;
        pub const PROTOCOL: Field = 14..16;
        pub const LEN: usize = 16;
    }

    /// protocol(2) reserved(2) ifindex(4) ARPHRD(2) packet type(1) address length(1) address(8)
    pub mod sll2 {
        use super::Field;
        pub const PROTOCOL: Field = 0..2;
        pub const IFINDEX: Field = 4..8;
        pub const ADDRESS_LEN: usize = 11;
        pub const ADDRESS: Field = 12..18;
        pub const LEN: usize = 20;
    }

    /// TCI(2) inner ethertype(2)
    pub mod vlan {
        use super::Field;
        pub const ETHERTYPE: Field = 2..4;
        pub const LEN: usize = 4;
    }
}

/// A big-endian 16-bit field of a header already checked to be long enough.
fn be16(header: &[u8], at: field::Field) -> u16 {
    u16::from_be_bytes([header[at.start], header[at.start + 1]])
}

/// Decodes a captured frame; `None` when it is too short for its header. Any stack of VLAN tags
/// (802.1Q, 802.1ad, QinQ) is skipped, so the EtherType is the one the tags carry.
pub fn decode(link: LinkType, bytes: &[u8]) -> Option<LinkFrame<'_>> {
    use field::{ethernet, sll, sll2, vlan};
    let mut frame = match link {
        LinkType::Ethernet => {
            let header = bytes.get(..ethernet::LEN)?;
            LinkFrame {
                source: MacAddr::from_slice(&header[ethernet::SOURCE]),
                destination: MacAddr::from_slice(&header[ethernet::DESTINATION]),
                ethertype: be16(header, ethernet::ETHERTYPE),
                payload: &bytes[ethernet::LEN..],
                ifindex: None,
            }
        }
        LinkType::LinuxSll => {
            let header = bytes.get(..sll::LEN)?;
            LinkFrame {
                source: (be16(header, sll::ADDRESS_LEN) == 6)
                    .then(|| MacAddr::from_slice(&header[sll::ADDRESS]))
                    .flatten(),
                destination: None,
                ethertype: be16(header, sll::PROTOCOL),
                payload: &bytes[sll::LEN..],
                ifindex: None,
            }
        }
        LinkType::LinuxSll2 => {
            let header = bytes.get(..sll2::LEN)?;
            let ifindex = &header[sll2::IFINDEX];
            LinkFrame {
                source: (header[sll2::ADDRESS_LEN] == 6)
                    .then(|| MacAddr::from_slice(&header[sll2::ADDRESS]))
                    .flatten(),
                destination: None,
                ethertype: be16(header, sll2::PROTOCOL),
                payload: &bytes[sll2::LEN..],
                ifindex: Some(u32::from_be_bytes([ifindex[0], ifindex[1], ifindex[2], ifindex[3]])),
            }
        }
    };
    for _ in 0..=MAX_VLAN_TAGS {
        if !VLAN_ETHERTYPES.contains(&frame.ethertype) {
            return Some(frame);
        }
        let tag = frame.payload.get(..vlan::LEN)?;
        frame.ethertype = be16(tag, vlan::ETHERTYPE);
        frame.payload = &frame.payload[vlan::LEN..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: [u8; 2] = [0xca, 0xfe];

    #[test]
    fn ethernet() {
        let mut bytes = vec![0xff; 6]; // destination: broadcast
        bytes.extend([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]); // source
        bytes.extend([0x08, 0x06]); // EtherType ARP
        bytes.extend(PAYLOAD);
        let frame = decode(LinkType::Ethernet, &bytes).unwrap();
        assert_eq!(frame.source.unwrap().to_string(), "00:00:5e:00:53:01");
        assert_eq!(frame.ethertype, 0x0806);
        assert_eq!(frame.payload, PAYLOAD);
    }

    #[test]
    fn ethernet_with_vlan_tag() {
        let mut bytes = vec![0xff; 6];
        bytes.extend([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
        bytes.extend([0x81, 0x00, 0x00, 0x64, 0x08, 0x06]); // 802.1Q, VLAN 100, then ARP
        bytes.extend(PAYLOAD);
        let frame = decode(LinkType::Ethernet, &bytes).unwrap();
        assert_eq!(frame.ethertype, 0x0806);
        assert_eq!(frame.payload, PAYLOAD);
    }

    #[test]
    fn ethernet_with_a_qinq_stack() {
        let mut bytes = vec![0xff; 6];
        bytes.extend([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
        bytes.extend([0x88, 0xa8, 0x00, 0xc8]); // 802.1ad S-tag, VLAN 200
        bytes.extend([0x81, 0x00, 0x07, 0xd1]); // 802.1Q C-tag, VLAN 2001
        bytes.extend([0x91, 0x00, 0x00, 0x0a]); // pre-standard QinQ tag, VLAN 10
        bytes.extend([0x08, 0x06]); // then ARP
        bytes.extend(PAYLOAD);
        let frame = decode(LinkType::Ethernet, &bytes).unwrap();
        assert_eq!(frame.ethertype, 0x0806);
        assert_eq!(frame.payload, PAYLOAD);
        // A stack deeper than any network builds, or cut inside a tag, is not decoded.
        let mut deep = vec![0xff; 12];
        for _ in 0..=MAX_VLAN_TAGS {
            deep.extend([0x81, 0x00, 0x00, 0x01]);
        }
        deep.extend([0x08, 0x06]);
        assert_eq!(decode(LinkType::Ethernet, &deep), None);
        assert_eq!(decode(LinkType::Ethernet, &bytes[..16]), None);
    }

    #[test]
    fn linux_sll() {
        let mut bytes = vec![0x00, 0x00]; // packet type: to us
        bytes.extend([0x00, 0x01]); // ARPHRD_ETHER
        bytes.extend([0x00, 0x06]); // address length
        bytes.extend([0x00, 0x00, 0x5e, 0x00, 0x53, 0x02, 0x00, 0x00]); // address, padded to 8
        bytes.extend([0x08, 0x06]); // protocol
        bytes.extend(PAYLOAD);
        let frame = decode(LinkType::LinuxSll, &bytes).unwrap();
        assert_eq!(frame.source.unwrap().to_string(), "00:00:5e:00:53:02");
        assert_eq!(frame.ethertype, 0x0806);
        assert_eq!(frame.payload, PAYLOAD);
    }

    #[test]
    fn linux_sll2() {
        let mut bytes = vec![0x08, 0x06]; // protocol
        bytes.extend([0x00, 0x00]); // reserved
        bytes.extend([0x00, 0x00, 0x00, 0x02]); // interface index
        bytes.extend([0x00, 0x01]); // ARPHRD_ETHER
        bytes.extend([0x00, 0x06]); // packet type, address length
        bytes.extend([0x00, 0x00, 0x5e, 0x00, 0x53, 0x03, 0x00, 0x00]); // address
        bytes.extend(PAYLOAD);
        let frame = decode(LinkType::LinuxSll2, &bytes).unwrap();
        assert_eq!(frame.source.unwrap().to_string(), "00:00:5e:00:53:03");
        assert_eq!(frame.ifindex, Some(2));
        assert_eq!(frame.ethertype, 0x0806);
        assert_eq!(frame.payload, PAYLOAD);
    }

    #[test]
    fn short_frames_are_none_not_panics() {
        for link in [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2] {
            for len in 0..20 {
                let _ = decode(link, &vec![0x81; len]);
            }
        }
        assert_eq!(decode(LinkType::Ethernet, &[0; 13]), None);
    }
}
