//! Conntrack's statistics for this network namespace, from /proc/net/stat/nf_conntrack: one row
//! per CPU, hexadecimal columns named by the header line. The names changed over kernel versions
//! (`searched` and `delete_list` went, `clashres` and `chainlength` came in 5.x), so columns are
//! found by name, never by position.

/// The counters that tell a conntrack insert race (kubernetes#56903) from other loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    /// A new entry could not be inserted because another with the same tuple won the race (and
    /// clash resolution could not merge them): the packet is dropped.
    pub insert_failed: u64,
    /// Packets dropped because no entry could be made (a full table, a failed insert).
    pub drop: u64,
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
        let mut stats = ConntrackStats { clash_resolved: clash.map(|_| 0), ..ConntrackStats::default() };
        for line in lines {
            let cells: Vec<u64> =
                line.split_whitespace().map(|c| u64::from_str_radix(c, 16).ok()).collect::<Option<_>>()?;
            if cells.len() != header.len() {
                return None;
            }
            stats.insert_failed += cells[insert_failed];
            stats.drop += cells[drop];
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
        assert_eq!(stats, ConntrackStats { insert_failed: 0, drop: 0, clash_resolved: Some(0) });
    }

    #[test]
    fn columns_are_found_by_name_in_the_older_layout() {
        // The 4.x header (with searched and delete_list, without clashres), two CPUs.
        let text = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
            0000001a  00000000 00000003 00000000 00000002 00000000 00000000 00000000 00000000 00000005 00000001 00000000 00000000  00000000 00000000 00000000 00000000\n\
            0000001a  00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 0000000b 00000002 00000000 00000000  00000000 00000000 00000000 00000000\n";
        let stats = ConntrackStats::parse(text).unwrap();
        assert_eq!(stats, ConntrackStats { insert_failed: 16, drop: 3, clash_resolved: None });
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
        let before = ConntrackStats { insert_failed: 5, drop: 9, clash_resolved: Some(1) };
        let after = ConntrackStats { insert_failed: 7, drop: 8, clash_resolved: Some(4) };
        assert_eq!(
            after.since(&before),
            ConntrackStats { insert_failed: 2, drop: 0, clash_resolved: Some(3) }
        );
    }
}
