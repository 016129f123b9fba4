//! What `netprobe conntrack` found, as plain data (the JSON output is this, serialised).

use serde::Serialize;

use crate::Health;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Room in the table, nothing dropped or evicted while watching, no recent "table full".
    Ok,
    /// At the limit, or new flows were dropped or evicted while watching.
    Full,
    /// At 90% of the limit or more: new flows are dropped at the limit.
    NearFull,
    /// Inserts failed while watching: packets of new flows lost to the insert race.
    InsertFailures,
    /// Room now, but the kernel logged "table full, dropping packet" within the last day.
    WasFull,
    /// Conntrack is not loaded here: nothing is tracked, so nothing can fill.
    NotLoaded,
}

impl Verdict {
    pub fn health(self) -> Health {
        match self {
            Verdict::Ok | Verdict::NotLoaded => Health::Ok,
            Verdict::Full | Verdict::NearFull | Verdict::InsertFailures | Verdict::WasFull => Health::Fault,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Full => "full",
            Verdict::NearFull => "near-full",
            Verdict::InsertFailures => "insert-failures",
            Verdict::WasFull => "was-full",
            Verdict::NotLoaded => "not-loaded",
        }
    }
}

/// The kernel's counters that say a flow was lost or evicted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// New flows whose first packet was dropped: no entry could be made (a full table with
    /// nothing to evict, a failed insert).
    pub drop: u64,
    /// Entries evicted to make room (flows never answered go first).
    pub early_drop: u64,
    /// Inserts that lost a race to another packet of the same new flow.
    pub insert_failed: u64,
}

/// One address (or protocol) and how many entries it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Count {
    pub name: String,
    pub entries: u64,
}

/// What the kernel log says about a full table.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KernelLog {
    /// Whether the log could be read (root, where kernel.dmesg_restrict is 1).
    pub readable: bool,
    /// "table full, dropping packet" messages about this namespace (or naming none) in the
    /// kernel's log buffer.
    pub table_full: u32,
    /// The last one, as the kernel wrote it, and about how long ago.
    pub last: Option<String>,
    pub last_ago_s: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConntrackReport {
    pub probe: &'static str,
    pub verdict: Verdict,
    /// The verdict in one sentence.
    pub summary: String,
    /// Where to look next, when something is wrong.
    pub next_step: Option<String>,
    /// The namespace's entries and the limit (`null` when conntrack is not loaded).
    pub entries: Option<u64>,
    pub max: Option<u64>,
    pub used_percent: Option<f64>,
    /// How long the counters were watched, and what they did meanwhile.
    pub window_s: f64,
    pub during_window: Counters,
    /// The counters since they started (boot, or the namespace's creation).
    pub since_start: Counters,
    pub kernel_log: KernelLog,
    /// The entries by original source and destination address and by protocol, most first
    /// (empty when the list could not be read: see `notes`).
    pub top_sources: Vec<Count>,
    pub top_destinations: Vec<Count>,
    pub protocols: Vec<Count>,
    /// Entries listed, and how many of them never saw a reply.
    pub entries_listed: Option<u64>,
    pub unreplied: Option<u64>,
    /// What could not be read, and what the numbers do not say.
    pub notes: Vec<String>,
}

impl ConntrackReport {
    pub fn health(&self) -> Health {
        self.verdict.health()
    }
}
