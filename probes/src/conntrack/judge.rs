//! From what the kernel shows to a verdict, the sentence and the fix. Pure: [`super::run`] reads,
//! this judges, so each rule is tested without a kernel.

use std::collections::HashMap;
use std::time::Duration;

use super::report::{ConntrackReport, Count, Counters, KernelLog, Verdict};
use crate::net::conntrack::{ConntrackStats, EntryTally, TableFullMessage, TableSize};
use crate::round3;

/// At this share of the limit, the table is near full.
pub const NEAR_FULL_PERCENT: f64 = 90.0;
/// A "table full" message this recent makes a table with room `was-full`.
pub const RECENT: Duration = Duration::from_secs(24 * 3600);

/// Everything one run read.
pub struct Evidence {
    /// `None`: conntrack is not loaded.
    pub size: Option<TableSize>,
    /// The counters at the end of the window, and their growth during it.
    pub now: ConntrackStats,
    pub during: ConntrackStats,
    pub window: Duration,
    /// The kernel's "table full" messages and its monotonic clock then (µs), or why not read.
    pub kernel_log: Result<(Vec<TableFullMessage>, u64), String>,
    /// The network namespace this ran in, by inode (to keep the kernel's messages about it).
    pub netns: Option<u64>,
    /// Whether that is the host's own namespace (PID 1's): a child namespace's inode may be a gone
    /// one's, which the kernel's older messages name.
    pub host_netns: bool,
    pub entries: Result<EntryTally, String>,
    /// How many sources, destinations and protocols to list.
    pub top: usize,
}

fn counters(stats: &ConntrackStats) -> Counters {
    Counters { drop: stats.drop, early_drop: stats.early_drop, insert_failed: stats.insert_failed }
}

/// The `top` largest of a tally, most first, ties by name.
fn top(counts: &HashMap<String, u64>, top: usize) -> Vec<Count> {
    let mut all: Vec<Count> =
        counts.iter().map(|(name, n)| Count { name: name.clone(), entries: *n }).collect();
    all.sort_by(|a, b| b.entries.cmp(&a.entries).then_with(|| a.name.cmp(&b.name)));
    all.truncate(top);
    all
}

pub fn judge(e: Evidence) -> ConntrackReport {
    let mut notes = Vec::new();
    let window_s = round3(e.window.as_secs_f64());

    // The kernel's words: those about this namespace, or naming none (older kernels).
    let mut log = KernelLog::default();
    match &e.kernel_log {
        Ok((messages, now_us)) => {
            log.readable = true;
            let (ours, others): (Vec<&TableFullMessage>, Vec<&TableFullMessage>) =
                messages.iter().partition(|m| m.may_be_about(e.netns));
            if !others.is_empty() {
                notes.push(format!(
                    "{} \"table full\" message(s) in the kernel log are about other network namespaces (a pod's own table, say), not this one",
                    others.len()
                ));
            }
            if !e.host_netns && ours.iter().any(|m| m.netns.is_some()) {
                notes.push("this is not the host's network namespace, and the kernel names namespaces by inode, which a new namespace can reuse: its \"table full\" lines may be about a gone one, so they are shown, not judged by".into());
            }
            if ours.iter().any(|m| m.netns.is_none()) {
                notes.push("this kernel's \"table full\" messages do not name the namespace: they may be about another one (a pod's own table)".into());
            }
            log.table_full = u32::try_from(ours.len()).unwrap_or(u32::MAX);
            if let Some(last) = ours.iter().max_by_key(|m| m.at_us) {
                log.last = Some(last.text.clone());
                log.last_ago_s = Some(round3(now_us.saturating_sub(last.at_us) as f64 / 1e6));
            }
        }
        Err(why) => notes.push(format!("the kernel log was not read: {why}")),
    }

    let (top_sources, top_destinations, protocols, entries_listed, unreplied) = match &e.entries {
        Ok(tally) => {
            if tally.cut {
                notes.push(format!("only the first {} entries were listed", tally.read));
            }
            (
                top(&tally.sources, e.top),
                top(&tally.destinations, e.top),
                top(&tally.protocols, e.top),
                Some(tally.read),
                Some(tally.unreplied),
            )
        }
        Err(why) => {
            notes.push(format!("the entries were not listed: {why}"));
            (Vec::new(), Vec::new(), Vec::new(), None, None)
        }
    };

    let since = counters(&e.now);
    if e.host_netns && (since.drop > 0 || since.early_drop > 0) {
        notes.push(format!("since boot: {} new flow(s) dropped, {} evicted", since.drop, since.early_drop));
    }
    let who = fillers(&top_sources, &top_destinations, unreplied, entries_listed);
    let named = matches!(&e.kernel_log, Ok((messages, _)) if messages.iter().any(|m| m.netns.is_some() && m.netns == e.netns));
    let (verdict, summary, next_step, used_percent) = match e.size {
        None => (
            Verdict::NotLoaded,
            "conntrack is not loaded in this network namespace: no flow is tracked, so no table can fill"
                .into(),
            None,
            None,
        ),
        Some(size) => {
            let table = Table {
                size,
                during: &e.during,
                since,
                window_s,
                host_netns: e.host_netns,
                named,
                log: &log,
            };
            let (verdict, summary, percent) = table.judge();
            (verdict, summary, next_step(verdict, size, &who), Some((percent * 10.0).round() / 10.0))
        }
    };
    ConntrackReport {
        probe: "conntrack",
        verdict,
        summary,
        next_step,
        entries: e.size.map(|s| s.entries),
        max: e.size.map(|s| s.max),
        used_percent,
        window_s,
        during_window: counters(&e.during),
        since_start: since,
        kernel_log: log,
        top_sources,
        top_destinations,
        protocols,
        entries_listed,
        unreplied,
        notes,
    }
}

/// A loaded table and what was seen of it, for its verdict.
struct Table<'a> {
    size: TableSize,
    during: &'a ConntrackStats,
    since: Counters,
    window_s: f64,
    host_netns: bool,
    /// Whether a "table full" line names this namespace (not only lines that name none).
    named: bool,
    log: &'a KernelLog,
}

impl Table<'_> {
    /// The verdict, its sentence, and the share of the limit in use.
    fn judge(&self) -> (Verdict, String, f64) {
        let (size, during, since, window_s) = (self.size, self.during, self.since, self.window_s);
        let percent = if size.max == 0 { 0.0 } else { size.entries as f64 * 100.0 / size.max as f64 };
        let used = format!("{} of {} entries ({percent:.1}%)", size.entries, size.max);
        let dropped_since = since.drop > 0 || since.early_drop > 0;
        // Evidence of a full table before the window. In the host's namespace, the kernel's recent
        // "table full" lines (its counters run since boot, months maybe), when they name it or its
        // counters show drops too (lines that name no namespace may be a pod's). In a child
        // namespace (a pod's), its own counters, which began with it (an inode the kernel's lines
        // name may have been a gone namespace's).
        let was_full = if self.host_netns {
            let recent = self.log.last_ago_s.filter(|ago| *ago <= RECENT.as_secs_f64());
            recent.filter(|_| self.named || dropped_since).map(|last| {
                format!(
                    "the kernel logged \"table full, dropping packet\" {} time(s), the last {} ago",
                    self.log.table_full,
                    ago(last)
                )
            })
        } else {
            dropped_since.then(|| {
                format!(
                    "since this network namespace was made {} new flow(s) were dropped and {} evicted",
                    since.drop, since.early_drop
                )
            })
        };
        let lost = format!(
            "in {window_s} s {} new flow(s) dropped, {} evicted, {} insert(s) failed",
            during.drop, during.early_drop, during.insert_failed
        );
        let (verdict, summary) = if size.entries >= size.max || during.drop > 0 || during.early_drop > 0 {
            (Verdict::Full, format!("the connection tracking table is full: {used}; {lost}"))
        } else if percent >= NEAR_FULL_PERCENT {
            (
                Verdict::NearFull,
                format!(
                    "the connection tracking table is near full: {used}; new flows are dropped at {}",
                    size.max
                ),
            )
        } else if during.insert_failed > 0 {
            (
                Verdict::InsertFailures,
                format!(
                    "{} insert(s) failed in {window_s} s: packets of new flows lost to the conntrack insert race (kubernetes#56903); {used}",
                    during.insert_failed
                ),
            )
        } else if let Some(was) = was_full {
            (Verdict::WasFull, format!("{used} now, but {was}"))
        } else {
            (Verdict::Ok, format!("{used}; {lost}"))
        };
        (verdict, summary, percent)
    }
}

/// Where to look next for a verdict about a table of `size`.
fn next_step(verdict: Verdict, size: TableSize, who: &str) -> Option<String> {
    match verdict {
        Verdict::Full | Verdict::NearFull | Verdict::WasFull => Some(format!(
            "Raise the limit (sysctl -w net.netfilter.nf_conntrack_max={}; kube-proxy sets it when it starts from conntrack.maxPerCore times the cores and overrides a sysctl, so change its configuration), make idle flows go sooner (net.netfilter.nf_conntrack_udp_timeout, nf_conntrack_tcp_timeout_established), and find what fills it: {who}.",
            size.max.saturating_mul(2).max(131_072)
        )),
        Verdict::InsertFailures => Some(
            "Two packets of one new flow raced to insert its entry (glibc sends A and AAAA queries from one socket at once): netprobe dns --like-glibc shows it on DNS; use single-request-reopen in the pods' resolv.conf (dnsConfig options), NodeLocal DNSCache, or a kernel with clash resolution (5.x and later resolve most).".to_string(),
        ),
        _ => None,
    }
}

/// Who fills the table, from its entries; how to list them where they were not read.
fn fillers(sources: &[Count], destinations: &[Count], unreplied: Option<u64>, listed: Option<u64>) -> String {
    let (Some(first_source), Some(first_destination), Some(unreplied), Some(listed)) =
        (sources.first(), destinations.first(), unreplied, listed)
    else {
        return "list the entries as root (conntrack -L, or /proc/net/nf_conntrack) and count them by source and destination".into();
    };
    format!(
        "most entries come from {} ({}) and go to {} ({}); {unreplied} of {listed} never saw a reply",
        first_source.name, first_source.entries, first_destination.name, first_destination.entries
    )
}

/// A duration as a person says it: 42 s, 7 min, 3.5 h.
fn ago(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(drop: u64, early_drop: u64, insert_failed: u64) -> ConntrackStats {
        ConntrackStats { drop, early_drop, insert_failed, clash_resolved: Some(0) }
    }

    fn evidence(entries: u64, during: ConntrackStats) -> Evidence {
        let mut tally = EntryTally { read: 3, unreplied: 2, ..EntryTally::default() };
        tally.sources.insert("192.0.2.1".into(), 2);
        tally.sources.insert("192.0.2.2".into(), 1);
        tally.destinations.insert("198.51.100.53".into(), 3);
        tally.protocols.insert("udp".into(), 3);
        Evidence {
            size: Some(TableSize { entries, max: 1000 }),
            now: during,
            during,
            window: Duration::from_secs(1),
            kernel_log: Ok((Vec::new(), 10_000_000_000)),
            netns: Some(7),
            host_netns: true,
            entries: Ok(tally),
            top: 5,
        }
    }

    fn message(at_s: u64, netns: Option<u64>) -> TableFullMessage {
        TableFullMessage {
            at_us: at_s * 1_000_000,
            text: "nf_conntrack: table full, dropping packet".into(),
            netns,
        }
    }

    #[test]
    fn room_and_nothing_lost_is_ok_and_a_full_table_is_full_whatever_shows_it() {
        let report = judge(evidence(100, stats(0, 0, 0)));
        assert_eq!((report.verdict, report.used_percent), (Verdict::Ok, Some(10.0)));
        assert_eq!(report.next_step, None);
        // At the limit; or below it (entries expired meanwhile) while drops or evictions grew.
        for (entries, during) in [(1000, stats(0, 0, 0)), (500, stats(3, 0, 0)), (500, stats(0, 9, 0))] {
            let report = judge(evidence(entries, during));
            assert_eq!(report.verdict, Verdict::Full, "{entries} {during:?}");
            assert!(report.summary.contains(&format!("{entries} of 1000 entries")), "{}", report.summary);
            let next = report.next_step.unwrap();
            assert!(next.contains("nf_conntrack_max=131072") && next.contains("most entries come from 192.0.2.1 (2) and go to 198.51.100.53 (3); 2 of 3 never saw a reply"), "{next}");
        }
        assert_eq!(judge(evidence(900, stats(0, 0, 0))).verdict, Verdict::NearFull);
        assert_eq!(judge(evidence(100, stats(0, 0, 4))).verdict, Verdict::InsertFailures);
    }

    #[test]
    fn a_recent_table_full_in_the_kernel_log_about_this_namespace_is_was_full() {
        let with_log = |messages: Vec<TableFullMessage>| {
            let mut e = evidence(100, stats(0, 0, 0));
            e.kernel_log = Ok((messages, 10_000 * 1_000_000));
            judge(e)
        };
        let report = with_log(vec![message(9_400, Some(7)), message(9_000, None)]);
        assert_eq!((report.verdict, report.kernel_log.table_full), (Verdict::WasFull, 2));
        assert_eq!(report.kernel_log.last_ago_s, Some(600.0));
        assert!(report.summary.contains("2 time(s), the last 10 min ago"), "{}", report.summary);
        assert!(report.notes.iter().any(|n| n.contains("do not name the namespace")), "{:?}", report.notes);
        // Lines that name no namespace (older kernels) may be a pod's table: they count when this
        // namespace's own counters show drops too.
        let report = with_log(vec![message(9_400, None)]);
        assert_eq!((report.verdict, report.kernel_log.table_full), (Verdict::Ok, 1), "{report:?}");
        let mut e = evidence(100, ConntrackStats::default());
        e.now = stats(3, 0, 0);
        e.kernel_log = Ok((vec![message(9_400, None)], 10_000 * 1_000_000));
        assert_eq!(judge(e).verdict, Verdict::WasFull);
        // Another namespace's (a pod's) table, or a day and more ago: not this table's fault now.
        let report = with_log(vec![message(9_400, Some(8))]);
        assert_eq!((report.verdict, report.kernel_log.table_full), (Verdict::Ok, 0));
        assert!(report.notes[0].contains("other network namespaces"), "{:?}", report.notes);
        let mut e = evidence(100, stats(0, 0, 0));
        e.kernel_log = Ok((vec![message(1, Some(7))], 100_000 * 1_000_000));
        assert_eq!(judge(e).verdict, Verdict::Ok);
    }

    #[test]
    fn in_a_child_namespace_its_own_counters_say_was_full_and_the_log_alone_does_not() {
        let child = |stats: ConntrackStats, messages: Vec<TableFullMessage>| {
            let mut e = evidence(100, ConntrackStats::default());
            e.now = stats;
            e.host_netns = false;
            e.kernel_log = Ok((messages, 10_000 * 1_000_000));
            judge(e)
        };
        // A line naming this inode, ten minutes ago: perhaps a gone namespace's. Shown, not judged.
        let report = child(ConntrackStats::default(), vec![message(9_400, Some(7))]);
        assert_eq!((report.verdict, report.kernel_log.table_full), (Verdict::Ok, 1));
        assert!(report.notes.iter().any(|n| n.contains("can reuse")), "{:?}", report.notes);
        let report = child(stats(5, 2, 0), vec![]);
        assert_eq!(report.verdict, Verdict::WasFull);
        assert!(
            report.summary.ends_with(
                "now, but since this network namespace was made 5 new flow(s) were dropped and 2 evicted"
            ),
            "{}",
            report.summary
        );
    }

    #[test]
    fn what_could_not_be_read_is_said_and_conntrack_not_loaded_is_not_a_fault() {
        let mut e = evidence(1000, stats(0, 0, 0));
        e.entries = Err("/proc/net/nf_conntrack is readable by root only".into());
        e.kernel_log = Err("reading the kernel log (/dev/kmsg): Operation not permitted".into());
        let report = judge(e);
        assert_eq!(report.verdict, Verdict::Full);
        assert!(report.next_step.unwrap().contains("conntrack -L"));
        assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
        let mut e = evidence(0, stats(0, 0, 0));
        e.size = None;
        let report = judge(e);
        assert_eq!((report.verdict, report.health()), (Verdict::NotLoaded, crate::Health::Ok));
    }
}
