//! What `netprobe iptables` found, as plain data (the JSON output is this, serialised).

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Bloated,
}

impl Verdict {
    pub fn health(self) -> crate::Health {
        match self {
            Verdict::Ok => crate::Health::Ok,
            Verdict::Bloated => crate::Health::Fault,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Bloated => "bloated",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IptablesReport {
    pub probe: &'static str,
    /// `iptables-save` (live) or the file read.
    pub source: String,
    /// `nf_tables` or `legacy`, from the dump's header or `iptables --version`.
    pub backend: Option<String>,
    pub version: Option<String>,
    pub total_rules: u64,
    /// Rules that repeat an earlier rule of the same chain (copies beyond the first).
    pub duplicate_rules: u64,
    /// Every chain, the worst first (most duplicates, then most rules).
    pub chains: Vec<ChainSummary>,
    /// Every rule with more than one copy, the most copied first.
    pub duplicate_groups: Vec<DuplicateGroup>,
    /// Duplicates grouped by kube-router's comment hash, across chains.
    pub kube_router_hashes: Vec<HashGroup>,
    /// User chains that no rule jumps or goes to.
    pub orphan_chains: Vec<ChainRef>,
    pub verdict: Verdict,
    /// Each threshold the dump crossed, as a sentence.
    pub reasons: Vec<String>,
    /// What is likely going on, and the fix.
    pub explanation: Option<String>,
    /// Rule sets beside the one analysed (live only): IPv6, and the other backend.
    pub other_rulesets: Vec<OtherRuleset>,
    /// `iptables -C` timings (live, with --check-latency).
    pub check_latency: Option<CheckLatency>,
    /// Result of --self-test.
    pub self_test: Option<SelfTest>,
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OtherRuleset {
    /// The command that printed it, e.g. `ip6tables-save` or `iptables-legacy-save`.
    pub command: String,
    pub total_rules: u64,
    pub duplicate_rules: u64,
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
    /// True when `iptables -C` found the rule it had just been given: the check works.
    pub check_works: bool,
    pub iptables_version: String,
    pub detail: String,
}
