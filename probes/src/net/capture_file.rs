//! Reading tcpdump/Wireshark capture files (pcap and pcapng) without any privilege.
//!
//! libpcap's own reader does the work, so a file reads here exactly as `tcpdump -r` reads it:
//! frames cut by the snap length, FCS bits in the link type, pcapng's timestamp resolutions and
//! offsets, and its option quirks. One thing libpcap 1.10 (Debian 12) cannot do is a pcapng file
//! whose interfaces have different link types (it stops with "an interface has a type N different
//! from the type of the first interface"); there the rest of the file is read block by block with
//! pcap-file, frames of interfaces we cannot decode are skipped, and a note says how many.

#![allow(unsafe_code)] // memfd_create(2) for captures held in memory; with a SAFETY comment.

use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};

use super::Captured;
use crate::wire::link::LinkType;
use crate::{Error, Result};

/// What reading a file found besides its frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileNotes {
    /// Frames handed to the caller.
    pub frames: u64,
    /// Sentences about what was skipped, for the report.
    pub notes: Vec<String>,
}

const NOT_A_CAPTURE: &str = "not a pcap or pcapng capture (write one with `tcpdump -w FILE arp`)";
const MIXED_LINK_TYPES: &str = "different from the type of the first interface";

/// A capture held in memory (an anonymous memfd) that reads by path like a file on disk:
/// `/proc/self/fd/N`. The fuzzer's inputs go through libpcap's own reader this way without
/// touching a disk.
pub struct InMemory {
    file: std::fs::File,
}

impl InMemory {
    pub fn new(bytes: &[u8]) -> std::io::Result<InMemory> {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        // SAFETY: memfd_create takes a NUL-terminated name and flags; the fd it returns is
        // fresh and owned by the File right after.
        let fd = unsafe { libc::memfd_create(c"netprobe-capture".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above, nothing else owns fd.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.write_all(bytes)?;
        Ok(InMemory { file })
    }

    /// A path that opens the capture from its start (each open has an offset of its own).
    pub fn path(&self) -> std::path::PathBuf {
        use std::os::fd::AsRawFd;
        format!("/proc/self/fd/{}", self.file.as_raw_fd()).into()
    }
}

/// Calls `each` with every frame of the capture at `path`, in file order.
pub fn for_each_frame(path: &Path, mut each: impl FnMut(Captured)) -> Result<FileNotes> {
    let bad = |detail: String| Error::BadCapture { path: path.to_path_buf(), detail };
    super::input::require_regular_file(path).map_err(|e| bad(e.to_string()))?;
    let mut capture = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano)
        .map_err(|e| bad(open_error(&e.to_string())))?;
    let dlt = capture.get_datalink().0;
    let mut notes = FileNotes::default();
    let Some(link) = u32::try_from(dlt).ok().and_then(LinkType::from_dlt) else {
        // A pcapng whose first interface is of another type (a tun0 beside eth0): its
        // Ethernet and SLL interfaces are read, the others skipped with a note.
        if !is_pcapng(path) {
            return Err(bad(unsupported(dlt)));
        }
        drop(capture);
        continue_mixed_pcapng(path, 0, &mut notes, &mut each).map_err(bad)?;
        if notes.frames == 0 {
            return Err(bad(format!("none of its interfaces can be read: {}", unsupported(dlt))));
        }
        return Ok(notes);
    };
    loop {
        match capture.next_packet() {
            Ok(packet) => {
                notes.frames += 1;
                let at = timestamp(packet.header.ts.tv_sec, packet.header.ts.tv_usec);
                each(Captured { at, link, data: packet.data.to_vec() });
            }
            Err(pcap::Error::NoMorePackets) => return Ok(notes),
            Err(e) if e.to_string().contains(MIXED_LINK_TYPES) => {
                drop(capture);
                continue_mixed_pcapng(path, notes.frames, &mut notes, &mut each).map_err(bad)?;
                return Ok(notes);
            }
            Err(e) => return Err(bad(format!("damaged after {} frame(s): {e}", notes.frames))),
        }
    }
}

/// libpcap's "unknown file format" and friends, in our words.
/// Whether the file starts with a pcapng section header block.
fn is_pcapng(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && magic == [0x0a, 0x0d, 0x0d, 0x0a]
}

fn open_error(text: &str) -> String {
    if text.contains("unknown file format")
        || text.contains("truncated dump file")
        || text.contains("too short")
    {
        NOT_A_CAPTURE.to_string()
    } else {
        format!("cannot read it as a capture: {text}")
    }
}

fn unsupported(dlt: i32) -> String {
    format!(
        "link type {dlt} is not supported (Ethernet, Linux SLL and SLL2 are): capture on an Ethernet interface or with -i any"
    )
}

/// A libpcap timestamp (seconds, nanoseconds with nanosecond precision) as time since the epoch.
/// Timestamps before 1970, or with a fraction out of range, are clamped rather than trusted.
fn timestamp(secs: i64, nanos: i64) -> Duration {
    Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
}

/// Reads the pcapng file again with pcap-file, skipping the `already` packets libpcap delivered,
/// and hands on the rest from interfaces whose link type we decode.
fn continue_mixed_pcapng(
    path: &Path,
    already: u64,
    notes: &mut FileNotes,
    each: &mut impl FnMut(Captured),
) -> std::result::Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open capture: {e}"))?;
    let mut ng = PcapNgReader::new(BufReader::new(file)).map_err(|e| format!("bad pcapng section: {e}"))?;
    // (link type, if_tsresol, if_tsoffset) of each interface of the current section.
    let mut interfaces: Vec<(u32, Option<LinkType>, u8, u64)> = Vec::new();
    let mut packets = 0u64;
    let mut skipped: std::collections::BTreeMap<u32, u64> = Default::default();
    while let Some(block) = ng.next_block() {
        let block = block.map_err(|e| format!("damaged pcapng block after {packets} frame(s): {e}"))?;
        let (interface_id, raw_time, data) = match block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                let dlt = u32::from(idb.linktype);
                let (resolution, offset) = time_options(&idb.options);
                interfaces.push((dlt, LinkType::from_dlt(dlt), resolution, offset));
                continue;
            }
            // pcap-file hands back the raw 64-bit timestamp as if it were nanoseconds.
            Block::EnhancedPacket(p) => {
                (p.interface_id, Some(u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX)), p.data)
            }
            Block::SimplePacket(p) => (0, None, p.data),
            Block::Packet(p) => (u32::from(p.interface_id), Some(p.timestamp), p.data),
            _ => continue,
        };
        packets += 1;
        if packets <= already {
            continue;
        }
        let &(dlt, link, resolution, offset) = interfaces
            .get(interface_id as usize)
            .ok_or_else(|| format!("a packet names interface {interface_id}, which was never described"))?;
        let Some(link) = link else {
            *skipped.entry(dlt).or_default() += 1;
            continue;
        };
        let at = raw_time.map(|raw| pcapng_time(raw, resolution, offset)).unwrap_or_default();
        notes.frames += 1;
        each(Captured { at, link, data: data.into_owned() });
    }
    for (dlt, count) in skipped {
        notes.notes.push(format!(
            "{count} frame(s) of an interface with link type {dlt} were skipped (only Ethernet, Linux SLL and SLL2 are read)"
        ));
    }
    Ok(())
}

/// The interface's if_tsresol (6, microseconds, when absent, as the pcapng spec says) and
/// if_tsoffset (seconds added to every timestamp).
fn time_options(options: &[InterfaceDescriptionOption]) -> (u8, u64) {
    let mut resolution = 6;
    let mut offset = 0;
    for option in options {
        match option {
            InterfaceDescriptionOption::IfTsResol(r) => resolution = *r,
            InterfaceDescriptionOption::IfTsOffset(o) => offset = *o,
            _ => {}
        }
    }
    (resolution, offset)
}

/// A raw 64-bit pcapng timestamp scaled by the interface's resolution (10^-n seconds, or 2^-n
/// when the top bit is set), plus its offset. Saturates instead of overflowing on absurd values.
fn pcapng_time(ticks: u64, resolution: u8, offset: u64) -> Duration {
    let base = if resolution & 0x80 != 0 {
        let shift = u32::from(resolution & 0x7f).min(63);
        let secs = ticks >> shift;
        let frac = ticks & ((1u64 << shift) - 1);
        Duration::new(secs, ((u128::from(frac) * 1_000_000_000) >> shift) as u32)
    } else {
        let per_sec = 10u64.checked_pow(u32::from(resolution)).unwrap_or(u64::MAX);
        let nanos = (u128::from(ticks % per_sec) * 1_000_000_000 / u128::from(per_sec)) as u32;
        Duration::new(ticks / per_sec, nanos)
    };
    base.saturating_add(Duration::from_secs(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_resolutions_and_offsets() {
        assert_eq!(time_options(&[]), (6, 0));
        let options = [InterfaceDescriptionOption::IfTsResol(9), InterfaceDescriptionOption::IfTsOffset(10)];
        assert_eq!(time_options(&options), (9, 10));
        assert_eq!(pcapng_time(1_500_000, 6, 0), Duration::from_millis(1500));
        assert_eq!(pcapng_time(1_500_000, 9, 0), Duration::from_micros(1500));
        assert_eq!(pcapng_time(3 << 9, 0x80 | 10, 0), Duration::from_millis(1500));
        assert_eq!(pcapng_time(1_000_000, 6, 5), Duration::from_secs(6));
        // if_tsresol=0 with a huge count, and a huge offset: no overflow.
        let huge = pcapng_time(u64::MAX, 0, u64::MAX);
        assert_eq!(huge, Duration::MAX);
        assert_eq!(timestamp(-5, -1), Duration::ZERO);
        assert_eq!(timestamp(1, 2_000_000_000), Duration::new(1, 999_999_999));
    }

    #[test]
    fn a_capture_in_memory_reads_as_its_file_does() {
        let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/capture_file");
        for name in ["arp-duplicate.pcap", "arp-duplicate.pcapng"] {
            let path = Path::new(seeds).join(name);
            let frames = |path: &Path| {
                let mut frames = Vec::new();
                let notes = for_each_frame(path, |f| frames.push((f.at, f.data))).unwrap();
                (frames, notes)
            };
            let memory = InMemory::new(&std::fs::read(&path).unwrap()).unwrap();
            let (from_file, from_memory) = (frames(&path), frames(&memory.path()));
            assert!(!from_file.0.is_empty(), "{name}");
            assert_eq!(from_file, from_memory, "{name}");
            // Read twice: each open starts at the beginning.
            assert_eq!(frames(&memory.path()), from_memory, "{name}");
        }
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
        let err = for_each_frame(&dir, |_| {}).unwrap_err();
        assert!(err.is_bad_input() && err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
