//! The kernel's own protocol counters for this network namespace: /proc/net/snmp (Ip, Udp, ...)
//! and /proc/net/netstat (TcpExt, IpExt), each a header line of names and a line of values per
//! group. The agent reads the few that say why probes that reached a node went no further.

/// The counters the agent compares before and after a probe; `None` where unreadable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Udp InCsumErrors: datagrams dropped for a bad checksum.
    pub udp_in_csum_errors: Option<u64>,
    /// Udp NoPorts: datagrams to a port nothing listens on.
    pub udp_no_ports: Option<u64>,
    /// TcpExt IPReversePathFilter: packets the reverse-path filter (rp_filter) dropped, of any
    /// protocol despite the group's name.
    pub reverse_path_filter: Option<u64>,
}

impl KernelCounters {
    /// This namespace's counters now.
    pub fn read() -> KernelCounters {
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
        KernelCounters::parse(&snmp, &netstat)
    }

    pub fn parse(snmp: &str, netstat: &str) -> KernelCounters {
        KernelCounters {
            udp_in_csum_errors: counter(snmp, "Udp", "InCsumErrors"),
            udp_no_ports: counter(snmp, "Udp", "NoPorts"),
            reverse_path_filter: counter(netstat, "TcpExt", "IPReversePathFilter"),
        }
    }

    /// How much each counter grew from `before` to `self`, where both could be read.
    pub fn since(&self, before: &KernelCounters) -> KernelCounters {
        let grown = |after: Option<u64>, before: Option<u64>| Some(after?.saturating_sub(before?));
        KernelCounters {
            udp_in_csum_errors: grown(self.udp_in_csum_errors, before.udp_in_csum_errors),
            udp_no_ports: grown(self.udp_no_ports, before.udp_no_ports),
            reverse_path_filter: grown(self.reverse_path_filter, before.reverse_path_filter),
        }
    }
}

/// Counter `name` of `group` in /proc/net/snmp or /proc/net/netstat text: the group's first line
/// names the columns, its second holds the values.
pub fn counter(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.split_whitespace().next() == Some(prefix.as_str()));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// The reverse-path filter in force on `interface`: the larger of `all` and the interface's own
/// (0 off, 1 strict, 2 loose), as the kernel applies it; `None` when unreadable.
pub fn rp_filter(interface: &str) -> Option<u8> {
    let read = |name: &str| -> Option<u8> {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter")).ok()?.trim().parse().ok()
    };
    // An interface name is never a path: refuse anything that could climb out of conf/.
    if interface.is_empty() || interface.contains('/') || interface.starts_with('.') {
        return None;
    }
    Some(read("all")?.max(read(interface)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/proc").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn counters_by_name_from_the_groups_header() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 10 7 5 3 0 0 5 0 0\nUdpLite: InDatagrams InCsumErrors\nUdpLite: 0 9\n";
        let read = KernelCounters::parse(snmp, "");
        assert_eq!(
            (read.udp_in_csum_errors, read.udp_no_ports, read.reverse_path_filter),
            (Some(5), Some(7), None)
        );
        assert_eq!(counter("Udp: InDatagrams\nUdp: 1\n", "Udp", "InCsumErrors"), None);
        assert_eq!(counter("", "Udp", "NoPorts"), None);
        assert_eq!(counter(snmp, "UdpLite", "InCsumErrors"), Some(9), "not Udp's");
    }

    #[test]
    fn growth_only_where_both_reads_have_the_counter() {
        let before =
            KernelCounters { udp_in_csum_errors: Some(1), udp_no_ports: Some(10), reverse_path_filter: None };
        let after = KernelCounters {
            udp_in_csum_errors: Some(1),
            udp_no_ports: Some(15),
            reverse_path_filter: Some(4),
        };
        assert_eq!(
            after.since(&before),
            KernelCounters { udp_in_csum_errors: Some(0), udp_no_ports: Some(5), reverse_path_filter: None }
        );
    }

    #[test]
    fn the_real_files_of_tests_corpus() {
        assert_eq!(KernelCounters::parse(&corpus("snmp-bad-udp-checksums"), "").udp_in_csum_errors, Some(5));
        let rpf = KernelCounters::parse(&corpus("snmp-rp-filter-drops"), &corpus("netstat-rp-filter-drops"));
        assert_eq!(rpf.reverse_path_filter, Some(5));
        let closed = KernelCounters::parse(&corpus("snmp-no-socket-on-8472"), "");
        assert_eq!(closed.udp_no_ports, Some(5));
    }
}
