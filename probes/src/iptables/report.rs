//! What `netprobe iptables` found, as plain data (the JSON output is this, serialised).

use serde::Serialize;

use crate::Health;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Bloated,
    /// `iptables -C` does not find a rule it was just given (--self-test): duplicates will come.
    CheckBroken,
}

impl Verdict {
    pub fn health(self) -> Health {
        match self {
            Verdict::Ok => Health::Ok,
            Verdict::Bloated | Verdict::CheckBroken => Health::Fault,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Bloated => "bloated",
            Verdict::CheckBroken => "check-broken",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
    /// nftables' `inet` tables: IPv4 and IPv6 together.
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    /// As people say it: IPv4, IPv6, or the nft family's own name.
    pub fn word(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IptablesReport {
    pub probe: &'static str,
    /// The file read, or `live`.
    pub source: String,
    /// The worst of the rule sets' verdicts and the self-test's.
    pub verdict: Verdict,
    /// Every rule set read: one per backend and family live, one per dump in a file.
    pub rulesets: Vec<RulesetReport>,
    /// What the input was and what that means (`iptables -S` has no counters, ...).
    pub notes: Vec<String>,
    /// `iptables -C` timings (live, with --check-latency).
    pub check_latency: Option<CheckLatency>,
    /// Result of --self-test.
    pub self_test: Option<SelfTest>,
    /// What --apply did.
    pub applied: Option<Applied>,
}

impl IptablesReport {
    pub fn health(&self) -> Health {
        self.verdict.health()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RulesetReport {
    pub family: Family,
    /// `nf_tables` or `legacy`, from the dump's header or the command that printed it.
    pub backend: Option<String>,
    pub version: Option<String>,
    /// The command that printed it (live), or the one named in its header (file).
    pub save_command: Option<String>,
    /// What a cleanup script for this rule set is fed to, e.g. `ip6tables-legacy-restore --noflush`.
    pub restore_command: String,
    /// The input line this rule set starts on (files).
    pub first_line: u64,
    pub total_rules: u64,
    /// Rules that repeat an earlier rule of the same chain (copies beyond the first).
    pub duplicate_rules: u64,
    /// Every chain, the worst first (most duplicates, then most rules).
    pub chains: Vec<ChainSummary>,
    /// Every rule with more than one copy, the most copied first.
    pub duplicate_groups: Vec<DuplicateGroup>,
    /// Duplicates grouped by kube-router's comment hash, across chains.
    pub kube_router_hashes: Vec<HashGroup>,
    /// User chains that no rule jumps or goes to (markers such as KUBE-KUBELET-CANARY aside).
    pub orphan_chains: Vec<ChainRef>,
    /// Duplicates the cleanup keeps because their copies behave differently (each copy of a
    /// `-m statistic` rule samples on its own, ...), unless --dedupe-stateful.
    pub kept_stateful: Vec<DuplicateGroup>,
    pub verdict: Verdict,
    /// Each threshold the rule set crossed, as a sentence.
    pub reasons: Vec<String>,
    /// What is likely going on, and the fix.
    pub explanation: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    pub table: String,
    pub chain: String,
    pub owner: Option<&'static str>,
    pub rules: u64,
    pub duplicates: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DuplicateGroup {
    pub table: String,
    pub chain: String,
    pub rule: String,
    pub copies: u64,
    /// Who wrote this rule, by its chain, comment or target.
    pub owner: Option<&'static str>,
    /// Why its copies are not interchangeable, when they are not.
    pub stateful: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HashGroup {
    pub hash: String,
    pub comment: String,
    /// All copies of rules carrying this hash, in every chain.
    pub copies: u64,
    pub chains: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainRef {
    pub table: String,
    pub chain: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckLatency {
    /// The rule checked: `-t TABLE -C CHAIN ...`.
    pub rule: String,
    pub runs: u32,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SelfTest {
    /// The binary tested, e.g. `iptables-legacy`.
    pub command: String,
    /// True when `iptables -C` found the rule it had just been given: the check works.
    pub check_works: bool,
    pub iptables_version: String,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub restore_command: String,
    /// `table/chain` rewritten.
    pub chains: Vec<String>,
    pub removed: u64,
    /// Read back after applying: every rewritten chain holds exactly its distinct rules.
    pub verified: bool,
}
