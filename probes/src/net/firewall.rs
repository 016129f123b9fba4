//! This node's firewall rules with their packet counters, as text: `iptables-save -c` of each
//! backend and `nft -j list ruleset` for native nftables rules (which iptables-save does not show).
//! What the agent compares before and after a probe; [`crate::vxlan::rules`] reads it.
//!
//! Reads are shared ([`SharedReads`]): one reader at a time, a few a second at most, each bounded
//! in time and killed when it runs over.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::budget::Budget;

/// The firewall of this node at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// (tool, `iptables-save -c` text) for each iptables backend that answered.
    pub iptables: Vec<(String, String)>,
    /// `nft -j list ruleset`, when nft is installed and answered.
    pub nft_json: Option<String>,
    /// What could not be read, and why.
    pub errors: Vec<String>,
    /// The kernel's own drop counters at the same moment (bad checksums, closed ports, the
    /// reverse-path filter).
    pub kernel: super::snmp::KernelCounters,
}

impl Snapshot {
    /// Nothing at all could be read: no rule could be checked.
    pub fn unreadable(&self) -> Option<String> {
        (self.iptables.is_empty() && self.nft_json.is_none())
            .then(|| self.errors.first().cloned().unwrap_or_else(|| "no firewall tool answered".into()))
    }
}

/// Where the agent's counters come from: the node's tools, or a fake in tests.
pub trait RuleCounters: Send + Sync + 'static {
    /// A snapshot whose read began after the call began: it can serve as the "after" of a probe.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// A snapshot read before the call returns, perhaps a little before the call: it can serve as
    /// the "before" of a probe sent after it returns (any earlier moment will do; it only lets the
    /// counters' growth cover a little more time).
    fn earlier(&self) -> Arc<Snapshot> {
        self.snapshot()
    }
}

/// The node's own tools (`read_firewall`), read as [`SharedReads`] share them.
pub struct NodeFirewall(SharedReads<fn() -> Snapshot>);

impl Default for NodeFirewall {
    fn default() -> Self {
        NodeFirewall(SharedReads::new(read_firewall))
    }
}

impl RuleCounters for NodeFirewall {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.0.after()
    }
    fn earlier(&self) -> Arc<Snapshot> {
        self.0.before()
    }
}

/// A read of the rules may take this long at most (a 300,000-rule node takes seconds).
const READ_LIMIT: Duration = Duration::from_secs(10);
/// More output than this is not read (about 1.5 million rules).
const MAX_OUTPUT: u64 = 256 << 20;
/// Reads a second, on average: an agent asked for many "after" reads (in the agents' mesh each
/// peer's round collects from it at its own time) reads once a second, not once per probe; the
/// callers in between wait for the next read and share it.
const READS_PER_SECOND: f64 = 1.0;
/// Reads at once before the pace applies: a pair's own expect, send and collect wait for none.
const READS_AT_ONCE: f64 = 3.0;
/// A "before" may be a snapshot whose read began at most this long ago.
const BEFORE_AT_MOST: Duration = Duration::from_secs(2);

/// One reader at a time (a read of a big rule set takes seconds: concurrent probes must not pile
/// readers up), [`READS_PER_SECOND`] on average, and every caller served by the fewest reads that
/// are still right for it.
pub struct SharedReads<F> {
    read: F,
    reading: Mutex<()>,
    pace: Budget,
    /// The last snapshot and when its read began.
    last: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl<F: Fn() -> Snapshot> SharedReads<F> {
    pub fn new(read: F) -> Self {
        SharedReads {
            read,
            reading: Mutex::new(()),
            pace: Budget::new(READS_PER_SECOND, READS_AT_ONCE),
            last: Mutex::new(None),
        }
    }

    fn last(&self) -> Option<(Instant, Arc<Snapshot>)> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A read that began after this call did: a caller that waited while another read ran takes
    /// the next read, so a burst of N callers costs two reads, not N.
    pub fn after(&self) -> Arc<Snapshot> {
        let asked = Instant::now();
        let _one = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((began, snapshot)) = self.last() {
            if began >= asked {
                return snapshot;
            }
        }
        // Holding the reader's place: whoever asks meanwhile shares the read that follows.
        self.pace.take();
        let began = Instant::now();
        let snapshot = Arc::new((self.read)());
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((began, snapshot.clone()));
        snapshot
    }

    /// The last read if it began at most [`BEFORE_AT_MOST`] ago, else a new one.
    pub fn before(&self) -> Arc<Snapshot> {
        match self.last() {
            Some((began, snapshot)) if began.elapsed() <= BEFORE_AT_MOST => snapshot,
            _ => self.after(),
        }
    }
}

fn read_firewall() -> Snapshot {
    let mut snapshot = Snapshot { kernel: super::snmp::KernelCounters::read(), ..Snapshot::default() };
    match run_bounded("nft", &["-j", "list", "ruleset"], READ_LIMIT) {
        Ok(json) => snapshot.nft_json = Some(json),
        Err(e) => snapshot.errors.push(format!("nft: {e}")),
    }
    // A backend with no tables has no rules to show: its save tool is not run (a read runs for
    // every probe on a busy agent, and each tool is a process).
    let nft_tables = snapshot.nft_json.as_deref().map(has_tables);
    let legacy_tables = legacy_tables_exist();
    // Whether both backends' tools are installed is asked once: each ask is a process.
    static BOTH_BACKENDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let tools: Vec<&str> = if *BOTH_BACKENDS.get_or_init(|| super::iptables::exists("iptables-legacy-save")) {
        let mut tools = Vec::new();
        if nft_tables != Some(false) {
            tools.push("iptables-nft-save");
        }
        if legacy_tables != Some(false) {
            tools.push("iptables-legacy-save");
        }
        tools
    } else {
        vec!["iptables-save"]
    };
    for tool in tools {
        match run_bounded(tool, &["-c"], READ_LIMIT) {
            Ok(text) => snapshot.iptables.push((tool.to_string(), text)),
            Err(e) => snapshot.errors.push(format!("{tool}: {e}")),
        }
    }
    snapshot
}

/// Whether `nft -j list ruleset` output lists any table (iptables-nft's tables are nf_tables
/// tables too).
fn has_tables(json: &str) -> bool {
    json.contains("\"table\":")
}

/// Whether this network namespace has legacy (x_tables) tables, from /proc/net/ip_tables_names
/// and ip6_tables_names; `None` when neither can be read (then the tool is asked).
fn legacy_tables_exist() -> Option<bool> {
    let mut readable = false;
    for path in ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"] {
        if let Ok(names) = std::fs::read_to_string(path) {
            readable = true;
            if !names.trim().is_empty() {
                return Some(true);
            }
        }
    }
    // Neither file readable (the module not loaded, or /proc hidden from us): ask the tool.
    if readable {
        Some(false)
    } else {
        None
    }
}

/// Runs `program ARGS`, returns its stdout; fails when it is missing, fails, or runs over `limit`
/// (then it is killed).
pub fn run_bounded(program: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "not installed".into()
            } else {
                e.to_string()
            }
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut stdout).take(MAX_OUTPUT).read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("took longer than {} s; killed", limit.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let first = err.lines().next().unwrap_or("").trim().to_string();
        return Err(format!("failed ({status}): {first}"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::super::snmp::KernelCounters;
    use super::*;

    #[test]
    fn bounded_commands() {
        assert_eq!(run_bounded("sh", &["-c", "echo hi"], Duration::from_secs(5)).unwrap(), "hi\n");
        assert!(run_bounded("sh", &["-c", "echo no >&2; exit 3"], Duration::from_secs(5))
            .unwrap_err()
            .contains("no"));
        assert_eq!(
            run_bounded("no-such-tool-here", &[], Duration::from_secs(1)).unwrap_err(),
            "not installed"
        );
        let err = run_bounded("sleep", &["5"], Duration::from_millis(100)).unwrap_err();
        assert!(err.contains("killed"), "{err}");
        assert_eq!(Snapshot::default().unreadable().as_deref(), Some("no firewall tool answered"));
    }

    /// Shared reads over a read that counts itself and takes `lasting`.
    fn counted_lasting(
        lasting: Duration,
    ) -> (Arc<std::sync::atomic::AtomicUsize>, SharedReads<impl Fn() -> Snapshot>) {
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reads.clone();
        let read = move || {
            std::thread::sleep(lasting);
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as u64;
            Snapshot {
                kernel: KernelCounters { udp_in_csum_errors: Some(n), ..Default::default() },
                ..Snapshot::default()
            }
        };
        (reads, SharedReads::new(read))
    }

    fn counted() -> (Arc<std::sync::atomic::AtomicUsize>, SharedReads<impl Fn() -> Snapshot>) {
        counted_lasting(Duration::ZERO)
    }

    #[test]
    fn an_after_is_a_read_that_began_after_it_was_asked_and_reads_are_paced() {
        // Taken before the bucket is made: the pace cannot let a fourth read end before a second
        // has passed since (999 ms: the bucket computes in floating point).
        let first = Instant::now();
        let (reads, shared) = counted();
        for n in 0..READS_AT_ONCE as u64 {
            assert_eq!(shared.after().kernel.udp_in_csum_errors, Some(n), "a new read, never the one before");
        }
        assert_eq!(shared.after().kernel.udp_in_csum_errors, Some(READS_AT_ONCE as u64));
        assert!(first.elapsed() >= Duration::from_millis(999), "the fourth waited for the pace");
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), READS_AT_ONCE as usize + 1);
    }

    #[test]
    fn a_before_reuses_a_recent_read() {
        let (reads, shared) = counted();
        assert_eq!(shared.before().kernel.udp_in_csum_errors, Some(0), "nothing read yet: it reads");
        assert_eq!(shared.before().kernel.udp_in_csum_errors, Some(0));
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn concurrent_afters_share_reads() {
        // A read that takes a while, as a real one does: the others ask while it runs.
        let (reads, shared) = counted_lasting(Duration::from_millis(200));
        let start = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    start.wait();
                    shared.after();
                });
            }
        });
        // Those that asked before the first read began share it, the rest the next one (a third
        // only for a thread held up longer than a read between its start and its asking).
        let n = reads.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=3).contains(&n), "{n} reads for 8 callers");
    }

    #[test]
    fn the_real_files_of_tests_corpus() {
        let corpus = |name: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus").join(name);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        assert!(!has_tables(&corpus("nft/empty-ruleset.json")));
        assert!(has_tables(&corpus("nft/iptables-nft-drop-8472.json")));
    }

    #[test]
    fn an_empty_nft_ruleset_lists_no_table() {
        assert!(!has_tables(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}]}"#
        ));
        assert!(has_tables(
            r#"{"nftables": [{"metainfo": {"json_schema_version": 1}}, {"table": {"family": "ip", "name": "filter", "handle": 1}}]}"#
        ));
    }
}
