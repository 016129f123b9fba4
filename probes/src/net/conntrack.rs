//! Connection tracking as this network namespace's kernel sees it, read from files only:
//!
//! - its counters, /proc/net/stat/nf_conntrack: one row per CPU, hexadecimal columns named by the
//!   header line. The names changed over kernel versions (`searched` and `delete_list` went,
//!   `clashres` and `chainlength` came in 5.x), so columns are found by name, never by position;
//! - the table's size and limit, /proc/sys/net/netfilter/nf_conntrack_{count,max} (the count is
//!   the namespace's own; the limit is the host's, read-only in a child namespace);
//! - its entries, /proc/net/nf_conntrack (root), tallied by source, destination and protocol;
//! - the kernel's own words about it, from /dev/kmsg ("nf_conntrack: table full, dropping packet";
//!   newer kernels name the namespace's inode, which tells this namespace's from another's).

use std::collections::HashMap;
use std::io::BufRead;

/// The counters that tell a full table and a conntrack insert race (kubernetes#56903) from other
/// loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    /// A new entry could not be inserted because another with the same tuple won the race (and
    /// clash resolution could not merge them): the packet is dropped.
    pub insert_failed: u64,
    /// Packets dropped because no entry could be made (a full table, a failed insert).
    pub drop: u64,
    /// Entries the kernel evicted to make room in a full table (flows never answered: it takes
    /// those first, and drops the new packet when it finds none).
    pub early_drop: u64,
    /// Clashes resolved by reusing the winner's entry (kernels 5.x and later; `None` before).
    pub clash_resolved: Option<u64>,
}

impl ConntrackStats {
    /// Sums each column over the CPU rows; `None` when the text has no header with
    /// `insert_failed` and `drop`, or a row is not hexadecimal.
    pub fn parse(text: &str) -> Option<ConntrackStats> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split_whitespace().collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (insert_failed, drop) = (column("insert_failed")?, column("drop")?);
        let clash = column("clashres");
        let early_drop = column("early_drop");
        let mut stats = ConntrackStats { clash_resolved: clash.map(|_| 0), ..ConntrackStats::default() };
        for line in lines {
            let cells: Vec<u64> =
                line.split_whitespace().map(|c| u64::from_str_radix(c, 16).ok()).collect::<Option<_>>()?;
            if cells.len() != header.len() {
                return None;
            }
            stats.insert_failed += cells[insert_failed];
            stats.drop += cells[drop];
            stats.early_drop += early_drop.map_or(0, |index| cells[index]);
            if let (Some(total), Some(index)) = (stats.clash_resolved.as_mut(), clash) {
                *total += cells[index];
            }
        }
        Some(stats)
    }

    /// How much each counter grew from `before` to `self` (a counter that went down, which a
    /// namespace's counters never do, counts as no growth).
    pub fn since(&self, before: &ConntrackStats) -> ConntrackStats {
        ConntrackStats {
            insert_failed: self.insert_failed.saturating_sub(before.insert_failed),
            drop: self.drop.saturating_sub(before.drop),
            early_drop: self.early_drop.saturating_sub(before.early_drop),
            clash_resolved: match (self.clash_resolved, before.clash_resolved) {
                (Some(now), Some(then)) => Some(now.saturating_sub(then)),
                _ => None,
            },
        }
    }
}

/// Reads this network namespace's counters.
pub fn read() -> Result<ConntrackStats, String> {
    let path = "/proc/net/stat/nf_conntrack";
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{path} is missing: conntrack is not loaded on this host"),
        _ => format!("reading {path}: {e}"),
    })?;
    ConntrackStats::parse(&text).ok_or_else(|| format!("{path} is not in the layout this tool reads"))
}

/// How full this namespace's table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSize {
    pub entries: u64,
    pub max: u64,
}

/// This namespace's entry count and the limit; `Ok(None)` when conntrack is not loaded (the
/// files are missing).
pub fn table_size() -> Result<Option<TableSize>, String> {
    let read = |name: &str| -> Result<Option<u64>, String> {
        let path = format!("/proc/sys/net/netfilter/{name}");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                text.trim().parse().map(Some).map_err(|_| format!("{path} is not a number: {text:?}"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {path}: {e}")),
        }
    };
    Ok(match (read("nf_conntrack_count")?, read("nf_conntrack_max")?) {
        (Some(entries), Some(max)) => Some(TableSize { entries, max }),
        _ => None,
    })
}

/// The entries of the table, tallied: who fills it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryTally {
    /// Entries read (at most [`MAX_ENTRIES_READ`]).
    pub read: u64,
    /// Per original source address, per original destination address, per protocol.
    pub sources: HashMap<String, u64>,
    pub destinations: HashMap<String, u64>,
    pub protocols: HashMap<String, u64>,
    /// Entries that never saw a reply (`[UNREPLIED]`): flows to a peer that does not answer.
    pub unreplied: u64,
    /// Whether reading stopped at [`MAX_ENTRIES_READ`].
    pub cut: bool,
}

/// A table is read up to this many entries (a full default table on a 64-core node holds about
/// 4 million; the first million say who fills it).
pub const MAX_ENTRIES_READ: u64 = 1_000_000;

impl EntryTally {
    /// Tallies /proc/net/nf_conntrack's lines (`ipv4 2 tcp 6 599 ESTABLISHED src=.. dst=.. sport=..
    /// dport=.. src=.. dst=.. [ASSURED] ..`: the first src= and dst= are the original direction).
    /// Lines that are not entries are skipped.
    pub fn read_from(reader: impl BufRead, limit: u64) -> std::io::Result<EntryTally> {
        let mut tally = EntryTally::default();
        for line in reader.lines() {
            if tally.read >= limit {
                tally.cut = true;
                break;
            }
            let line = line?;
            let mut fields = line.split_whitespace();
            let Some(protocol) = fields.nth(2) else { continue };
            let (mut source, mut destination) = (None, None);
            for field in line.split_whitespace() {
                match field.split_once('=') {
                    Some(("src", ip)) if source.is_none() => source = Some(ip),
                    Some(("dst", ip)) if destination.is_none() => destination = Some(ip),
                    _ => {}
                }
            }
            let (Some(source), Some(destination)) = (source, destination) else { continue };
            tally.read += 1;
            *tally.sources.entry(source.to_string()).or_default() += 1;
            *tally.destinations.entry(destination.to_string()).or_default() += 1;
            *tally.protocols.entry(protocol.to_string()).or_default() += 1;
            tally.unreplied += u64::from(line.contains("[UNREPLIED]"));
        }
        Ok(tally)
    }
}

/// Tallies this namespace's entries; an error when the list is not there (a kernel built without
/// CONFIG_NF_CONNTRACK_PROCFS) or not readable (root only).
pub fn entries() -> Result<EntryTally, String> {
    let path = "/proc/net/nf_conntrack";
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{path} is missing (a kernel without CONFIG_NF_CONNTRACK_PROCFS): `conntrack -L` lists the entries"),
        std::io::ErrorKind::PermissionDenied => format!("{path} is readable by root only"),
        _ => format!("reading {path}: {e}"),
    })?;
    EntryTally::read_from(std::io::BufReader::with_capacity(1 << 16, file), MAX_ENTRIES_READ)
        .map_err(|e| format!("reading {path}: {e}"))
}

/// One kernel log message about a full table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFullMessage {
    /// When, in microseconds of the kernel's monotonic clock (as /dev/kmsg stamps it).
    pub at_us: u64,
    /// The message as the kernel wrote it.
    pub text: String,
    /// The network namespace's inode the kernel named (newer kernels), else `None`.
    pub netns: Option<u64>,
}

/// The kernel's words for a full table.
pub const TABLE_FULL: &str = "table full";

impl TableFullMessage {
    /// Reads one /dev/kmsg record (`PRIORITY,SEQ,MICROSECONDS,FLAGS;MESSAGE`); `None` unless it
    /// is conntrack's "table full ... dropping packet".
    pub fn from_record(record: &str) -> Option<TableFullMessage> {
        let (prefix, text) = record.split_once(';')?;
        let text = text.lines().next()?.trim();
        if !(text.contains("nf_conntrack") && text.contains(TABLE_FULL) && text.contains("dropping packet")) {
            return None;
        }
        let at_us = prefix.split(',').nth(2)?.parse().ok()?;
        // "nf_conntrack: table full in netns 4026532174, dropping packet" (kernels that name it).
        let netns = text.split_once("in netns ").and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok())
        });
        Some(TableFullMessage { at_us, text: text.to_string(), netns })
    }
}

impl TableFullMessage {
    /// Whether this line may be about the namespace `netns`: it names it, or names none.
    pub fn may_be_about(&self, netns: Option<u64>) -> bool {
        self.netns.is_none() || self.netns == netns
    }
}

/// Every "table full" message in the kernel's log buffer (as `dmesg` shows it), and the kernel's
/// monotonic clock now in microseconds, to tell how long ago each was. Reading /dev/kmsg needs
/// root where kernel.dmesg_restrict is 1.
pub fn table_full_messages() -> Result<(Vec<TableFullMessage>, u64), String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = "/dev/kmsg";
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("reading the kernel log ({path}): {e}"))?;
    let mut found = Vec::new();
    // One record per read; the buffer holds about 1 MiB of them, so this is bounded.
    let mut record = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(n) => found.extend(TableFullMessage::from_record(&String::from_utf8_lossy(&record[..n]))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // Older records were overwritten while reading: go on from the oldest left.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(format!("reading the kernel log ({path}): {e}")),
        }
    }
    Ok((found, u64::try_from(super::monotonic_now().as_micros()).unwrap_or(u64::MAX)))
}

/// This process's network namespace, by the inode the kernel names it with.
pub fn this_netns() -> Option<u64> {
    netns_of("self")
}

/// Whether this process runs in the host's network namespace (PID 1's, as an agent with
/// hostNetwork does), where an inode is never reused. Unknown (PID 1's not readable) counts as no.
pub fn in_host_netns() -> bool {
    matches!((netns_of("self"), netns_of("1")), (Some(ours), Some(host)) if ours == host)
}

fn netns_of(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/proc/");
        std::fs::read_to_string(format!("{path}{name}")).unwrap()
    }

    #[test]
    fn a_real_kernel_6_table_is_summed_over_its_cpus() {
        let stats = ConntrackStats::parse(&corpus("nf_conntrack-kernel-6.18")).unwrap();
        assert_eq!(
            stats,
            ConntrackStats { insert_failed: 0, drop: 0, early_drop: 0, clash_resolved: Some(0) }
        );
    }

    #[test]
    fn columns_are_found_by_name_in_the_older_layout() {
        // The 4.x header (with searched and delete_list, without clashres), two CPUs.
        let text = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
            0000001a  00000000 00000003 00000000 00000002 00000000 00000000 00000000 00000000 00000005 00000001 00000000 00000000  00000000 00000000 00000000 00000000\n\
            0000001a  00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 0000000b 00000002 00000000 00000000  00000000 00000000 00000000 00000000\n";
        let stats = ConntrackStats::parse(text).unwrap();
        assert_eq!(stats, ConntrackStats { insert_failed: 16, drop: 3, early_drop: 0, clash_resolved: None });
    }

    #[test]
    fn what_is_not_the_table_is_refused() {
        assert_eq!(ConntrackStats::parse(""), None);
        assert_eq!(ConntrackStats::parse("entries found\n00000001 00000002\n"), None);
        assert_eq!(ConntrackStats::parse("insert_failed drop\n0000000z 00000000\n"), None);
        assert_eq!(ConntrackStats::parse("insert_failed drop\n00000001\n"), None);
    }

    #[test]
    fn growth_never_goes_below_zero() {
        let before = ConntrackStats { insert_failed: 5, drop: 9, early_drop: 2, clash_resolved: Some(1) };
        let after = ConntrackStats { insert_failed: 7, drop: 8, early_drop: 6, clash_resolved: Some(4) };
        assert_eq!(
            after.since(&before),
            ConntrackStats { insert_failed: 2, drop: 0, early_drop: 4, clash_resolved: Some(3) }
        );
    }

    #[test]
    fn entries_are_tallied_by_their_original_direction() {
        let text = "ipv4     2 tcp      6 599 CLOSE src=127.0.0.1 dst=127.1.0.1 sport=42808 dport=7000 src=127.1.0.1 dst=127.0.0.1 sport=7000 dport=42808 [ASSURED] mark=0 zone=0 use=2\n\
            ipv4     2 udp      17 29 src=192.0.2.1 dst=198.51.100.4 sport=51163 dport=53 [UNREPLIED] src=198.51.100.4 dst=192.0.2.1 sport=53 dport=51163 mark=0 zone=0 use=2\n\
            ipv6     10 udp      17 29 src=2001:db8::1 dst=2001:db8::53 sport=5353 dport=53 [UNREPLIED] src=2001:db8::53 dst=2001:db8::1 sport=53 dport=5353 mark=0 zone=0 use=2\n\
            not an entry\n";
        let tally = EntryTally::read_from(text.as_bytes(), 10).unwrap();
        assert_eq!((tally.read, tally.unreplied, tally.cut), (3, 2, false));
        assert_eq!(tally.sources["127.0.0.1"], 1);
        assert_eq!(tally.destinations["198.51.100.4"], 1, "the reply direction's addresses are not counted");
        assert!(!tally.destinations.contains_key("127.0.0.1"));
        assert_eq!((tally.protocols["udp"], tally.protocols["tcp"]), (2, 1));
        let cut = EntryTally::read_from(text.as_bytes(), 2).unwrap();
        assert_eq!((cut.read, cut.cut), (2, true));
    }

    #[test]
    fn table_full_is_read_from_the_kernel_log_with_its_namespace_when_named() {
        // Kernel 6.18 in this lab, and the older wording without the namespace.
        let new = TableFullMessage::from_record(
            "4,1722,7957896550,-;nf_conntrack: nf_conntrack: table full in netns 4026532174, dropping packet",
        )
        .unwrap();
        assert_eq!((new.at_us, new.netns), (7_957_896_550, Some(4_026_532_174)));
        let old = TableFullMessage::from_record(
            "4,88,123456,-;nf_conntrack: table full, dropping packet\n SUBSYSTEM=x",
        )
        .unwrap();
        assert_eq!(
            (old.at_us, old.netns, old.text.as_str()),
            (123_456, None, "nf_conntrack: table full, dropping packet")
        );
        assert_eq!(TableFullMessage::from_record("6,1,1,-;br0: port 3(p2) entered forwarding state"), None);
        assert_eq!(TableFullMessage::from_record("garbage"), None);
    }
}
