//! The always-on mesh's beacon: each agent sends each peer one a period, a real VXLAN frame (the
//! probes' VNI and inner frame) whose inner payload says who sent it, in which run of its agent
//! (the epoch, new at each start), its number in the sender's series to this peer, and when it
//! left. From the numbers alone a receiver knows how many were sent to it and how many were lost;
//! from the times, the one-way delay's jitter.
//!
//! ```text
//! inner UDP payload: "NPBC" sender(4) epoch(4) seq(8) sent-at(8: microseconds since the epoch)
//! ```

use std::net::Ipv4Addr;

use crate::vxlan;

const MAGIC: &[u8; 4] = b"NPBC";

/// Where each field lies, each range named once.
mod field {
    pub type Field = std::ops::Range<usize>;
    pub const MAGIC: Field = 0..4;
    pub const SENDER: Field = 4..8;
    pub const EPOCH: Field = 8..12;
    pub const SEQ: Field = 12..20;
    pub const SENT_AT: Field = 20..28;
    pub const LEN: usize = 28;
}

/// The length of a beacon's outer IPv4 packet: small enough never to fragment.
pub const PACKET_LEN: usize = vxlan::OUTER_HEADERS + vxlan::HEADER_LEN + 14 + 20 + 8 + field::LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Beacon {
    /// The sending node's address (the one its route to the receiver uses).
    pub sender: Ipv4Addr,
    /// Chosen at random when the sending agent starts: a restart begins a new series.
    pub epoch: u32,
    /// 0, 1, 2, ... in the sender's series to this receiver.
    pub seq: u64,
    /// When it left, in microseconds since the Unix epoch (the sender's clock).
    pub sent_at_us: u64,
}

impl Beacon {
    /// The UDP payload to send to the receiver's VXLAN port.
    pub fn emit(&self, vni: u32) -> Vec<u8> {
        let mut body = [0u8; field::LEN];
        body[field::MAGIC].copy_from_slice(MAGIC);
        body[field::SENDER].copy_from_slice(&self.sender.octets());
        body[field::EPOCH].copy_from_slice(&self.epoch.to_be_bytes());
        body[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        body[field::SENT_AT].copy_from_slice(&self.sent_at_us.to_be_bytes());
        vxlan::encapsulated(vni, &body)
    }

    /// A beacon in a captured VXLAN UDP payload for `vni`; `None` for anything else.
    pub fn parse(udp_payload: &[u8], vni: u32) -> Option<Beacon> {
        let body = vxlan::decapsulated(udp_payload, vni)?.get(..field::LEN)?;
        if &body[field::MAGIC] != MAGIC {
            return None;
        }
        let be =
            |range: field::Field| -> u64 { body[range].iter().fold(0u64, |n, b| n << 8 | u64::from(*b)) };
        Some(Beacon {
            sender: Ipv4Addr::from(be(field::SENDER) as u32),
            epoch: be(field::EPOCH) as u32,
            seq: be(field::SEQ),
            sent_at_us: be(field::SENT_AT),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beacon_reads_back_and_nothing_else_reads_as_one() {
        let beacon = Beacon {
            sender: Ipv4Addr::new(198, 51, 100, 7),
            epoch: 0xdead_beef,
            seq: 1 << 40 | 5,
            sent_at_us: 1_800_000_000_123_456,
        };
        let payload = beacon.emit(0xfffff0);
        assert_eq!(payload.len() + vxlan::OUTER_HEADERS, PACKET_LEN);
        assert_eq!(Beacon::parse(&payload, 0xfffff0), Some(beacon));
        assert_eq!(Beacon::parse(&payload, 1), None, "another VNI");
        for len in 0..payload.len() {
            assert_eq!(Beacon::parse(&payload[..len], 0xfffff0), None, "cut at {len}");
        }
        let probe = vxlan::probe_payload(0xfffff0, 7, 1);
        assert_eq!(Beacon::parse(&probe, 0xfffff0), None, "a one-shot probe is not a beacon");
    }
}
