//! What `--watch` reports: the events as they happen and the summary at the end.

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::wire::MacAddr;
use crate::Health;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum WatchEvent {
    /// The VIP moved from one MAC to another (not emitted for the first owner).
    OwnerChange {
        at: String,
        from: MacAddr,
        to: MacAddr,
        from_node: Option<String>,
        to_node: Option<String>,
        seen_in: &'static str,
    },
    /// A gratuitous ARP for the VIP (a takeover announcement).
    Gratuitous {
        at: String,
        mac: MacAddr,
        node: Option<String>,
    },
    /// More than one MAC answered within one interval.
    DuplicateStart {
        at: String,
        owners: Vec<Claimant>,
    },
    DuplicateEnd {
        at: String,
    },
    /// An interval without any answer.
    NoReplyStart {
        at: String,
    },
    NoReplyEnd {
        at: String,
    },
    /// A TCP connect much slower than usual, or failed.
    TcpSpike {
        at: String,
        target: String,
        connect_ms: Option<f64>,
        error: Option<String>,
    },
}

/// A MAC that claims the VIP, with its node when known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Claimant {
    pub mac: MacAddr,
    pub node: Option<String>,
}

/// How the VIP's ownership went over the whole watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchVerdict {
    /// One MAC owned it all along, answering every interval.
    Stable,
    /// The owner changed, or there were intervals without one.
    Unstable,
    /// More than one MAC claimed it at once.
    Duplicate,
    /// Nothing ever answered or announced it.
    NoReply,
}

impl WatchVerdict {
    pub fn health(self) -> Health {
        match self {
            WatchVerdict::Stable => Health::Ok,
            _ => Health::Fault,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WatchVerdict::Stable => "stable",
            WatchVerdict::Unstable => "unstable",
            WatchVerdict::Duplicate => "duplicate",
            WatchVerdict::NoReply => "no-reply",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WatchSummary {
    /// Always "summary": the last NDJSON line.
    pub event: &'static str,
    pub target: IpAddr,
    pub duration_s: f64,
    pub probes: u32,
    /// Every owner with how long it held the VIP, in order of first ownership.
    pub owners: Vec<OwnerTime>,
    pub owner_changes: u32,
    /// The mean time between owner changes when they repeat regularly, else `None`.
    pub period_s: Option<f64>,
    pub longest_no_owner_s: f64,
    pub duplicate_intervals: u32,
    pub tcp: Option<TcpSummary>,
    pub verdict: WatchVerdict,
    /// The verdict in one sentence.
    pub summary: String,
    /// What was left out of a replayed capture, and why.
    pub notes: Vec<String>,
}

impl WatchSummary {
    pub fn health(&self) -> Health {
        self.verdict.health()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OwnerTime {
    pub mac: MacAddr,
    pub node: Option<String>,
    pub held_s: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcpSummary {
    pub target: String,
    pub probes: u32,
    pub failures: u32,
    /// Slow connects and failures.
    pub spikes: u32,
    pub correlated_with_owner_change: u32,
}

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z).
pub(super) const RFC3339_MAX: Duration = Duration::new(253_402_300_799, 999_000_000);

/// Wall-clock time as RFC 3339 with milliseconds, UTC. A capture's timestamp past year 9999 (a
/// damaged or forged file) is written as seconds since the epoch instead.
pub fn rfc3339(at: Duration) -> String {
    if at > RFC3339_MAX {
        return format!("@{}.{:03}", at.as_secs(), at.subsec_millis());
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + at).to_string()
}
