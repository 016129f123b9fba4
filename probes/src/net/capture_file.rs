//! Reading tcpdump/Wireshark capture files (pcap and pcapng) without any privilege.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

use super::Captured;
use crate::wire::link::LinkType;
use crate::{Error, Result};

/// Calls `each` with every frame of the capture at `path`, in file order.
pub fn for_each_frame(path: &Path, mut each: impl FnMut(Captured)) -> Result<()> {
    let bad = |detail: String| Error::BadCapture { path: path.to_path_buf(), detail };
    let mut file = File::open(path).map_err(|e| bad(format!("cannot open capture: {e}")))?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(|_| bad(NOT_A_CAPTURE.into()))?;
    let file = File::open(path).map_err(|e| bad(format!("cannot open capture: {e}")))?;
    let reader = BufReader::new(file);
    match magic {
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => {
            let mut pcap = PcapReader::new(reader).map_err(|e| bad(format!("bad pcap header: {e}")))?;
            let link = link_type(pcap.header().datalink).map_err(bad)?;
            while let Some(packet) = pcap.next_packet() {
                let packet = packet.map_err(|e| bad(format!("damaged packet record: {e}")))?;
                each(Captured { at: packet.timestamp, link, data: packet.data.into_owned() });
            }
            Ok(())
        }
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            let mut ng = PcapNgReader::new(reader).map_err(|e| bad(format!("bad pcapng section: {e}")))?;
            // (link type, timestamp resolution) of each interface of the current section.
            let mut interfaces: Vec<(std::result::Result<LinkType, String>, u8)> = Vec::new();
            while let Some(block) = ng.next_block() {
                match block.map_err(|e| bad(format!("damaged pcapng block: {e}")))? {
                    Block::SectionHeader(_) => interfaces.clear(),
                    Block::InterfaceDescription(idb) => {
                        interfaces.push((link_type(idb.linktype), ts_resolution(&idb.options)))
                    }
                    Block::EnhancedPacket(packet) => {
                        let (link, resolution) =
                            interfaces.get(packet.interface_id as usize).ok_or_else(|| {
                                bad(format!(
                                    "packet names interface {} that was never described",
                                    packet.interface_id
                                ))
                            })?;
                        let link = link.clone().map_err(bad)?;
                        let at = pcapng_time(packet.timestamp, *resolution);
                        each(Captured { at, link, data: packet.data.into_owned() });
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        _ => Err(bad(NOT_A_CAPTURE.into())),
    }
}

const NOT_A_CAPTURE: &str = "not a pcap or pcapng capture (write one with `tcpdump -w FILE arp`)";

fn link_type(datalink: DataLink) -> std::result::Result<LinkType, String> {
    LinkType::from_dlt(u32::from(datalink)).ok_or_else(|| {
        format!("link type {datalink:?} is not supported: capture on an Ethernet interface or with -i any")
    })
}

/// The interface's if_tsresol option; 6 (microseconds) when absent, as the pcapng spec says.
fn ts_resolution(options: &[InterfaceDescriptionOption]) -> u8 {
    options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(6)
}

/// pcap-file hands back the raw 64-bit pcapng timestamp as if it were nanoseconds; scale it by the
/// interface's resolution: 10^-n seconds, or 2^-n when the top bit is set.
fn pcapng_time(raw: Duration, resolution: u8) -> Duration {
    let ticks = raw.as_nanos() as u64;
    if resolution & 0x80 != 0 {
        let shift = u32::from(resolution & 0x7f).min(63);
        let secs = ticks >> shift;
        let frac = ticks & ((1u64 << shift) - 1);
        Duration::new(secs, ((u128::from(frac) * 1_000_000_000) >> shift) as u32)
    } else {
        let per_sec = 10u64.checked_pow(u32::from(resolution)).unwrap_or(u64::MAX);
        let nanos = (u128::from(ticks % per_sec) * 1_000_000_000 / u128::from(per_sec)) as u32;
        Duration::new(ticks / per_sec, nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_resolutions() {
        assert_eq!(ts_resolution(&[]), 6);
        assert_eq!(ts_resolution(&[InterfaceDescriptionOption::IfTsResol(9)]), 9);
        let micro = pcapng_time(Duration::from_nanos(1_500_000), 6);
        assert_eq!(micro, Duration::from_millis(1500));
        let nano = pcapng_time(Duration::from_nanos(1_500_000), 9);
        assert_eq!(nano, Duration::from_micros(1500));
        let binary = pcapng_time(Duration::from_nanos(3 << 9), 0x80 | 10);
        assert_eq!(binary, Duration::from_millis(1500));
    }

    #[test]
    fn text_is_not_a_capture() {
        let dir = std::env::temp_dir().join(format!("netprobe-cf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, body) in [("text", &b"hello, this is not a capture"[..]), ("short", b"ab"), ("empty", b"")]
        {
            let path = dir.join(name);
            std::fs::write(&path, body).unwrap();
            let err = for_each_frame(&path, |_| panic!("no frames expected")).unwrap_err();
            assert!(err.is_bad_input(), "{name}: {err}");
            assert!(err.to_string().contains("not a pcap or pcapng capture"), "{name}: {err}");
        }
        let err = for_each_frame(&dir.join("missing"), |_| {}).unwrap_err();
        assert!(err.is_bad_input() && err.to_string().contains("cannot open"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
