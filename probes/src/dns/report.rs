//! What `netprobe dns` found, as plain data (the JSON output is this, serialised).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::cluster::ServiceEndpoint;
use crate::net::dns::SocketUse;
use crate::Health;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointVerdict {
    /// Every query answered (NOERROR), in time, quickly, with the majority's answers.
    Ok,
    /// No answer at all: silence, refused, no route, or nothing but SERVFAIL/REFUSED.
    Failing,
    /// Answers, but some queries lost, late, failed with a server error, or slow.
    Degraded,
    /// Answers unlike the other endpoints', or NXDOMAIN where the others resolve the name.
    Inconsistent,
    /// NXDOMAIN, and no endpoint resolves the name.
    Nxdomain,
    /// The EndpointSlice says it is not ready (or terminating): probed, shown, not judged.
    NotReady,
}

impl EndpointVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointVerdict::Ok => "ok",
            EndpointVerdict::Failing => "failing",
            EndpointVerdict::Degraded => "degraded",
            EndpointVerdict::Inconsistent => "inconsistent",
            EndpointVerdict::Nxdomain => "nxdomain",
            EndpointVerdict::NotReady => "not-ready",
        }
    }

    /// Whether this verdict makes the report a fault.
    pub fn is_fault(self) -> bool {
        !matches!(self, EndpointVerdict::Ok | EndpointVerdict::NotReady)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DnsReport {
    pub probe: &'static str,
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    /// The node netprobe runs on (NODE_NAME or --node), for the cross-node finding.
    pub this_node: Option<String>,
    pub endpoints: Vec<EndpointReport>,
    /// The Service's addresses (every ClusterIP of a dual-stack Service), each queried like an
    /// endpoint; empty when not known.
    pub services: Vec<EndpointReport>,
    pub findings: Vec<Finding>,
    /// With `--like-glibc`: how conntrack's counters in this network namespace grew over the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<ConntrackReport>,
    /// What UDP queries were sent from; shown when not a socket per query (`--reuse-sockets`).
    #[serde(skip_serializing_if = "SocketUse::is_per_query")]
    pub udp_sockets: SocketUse,
    /// `ok` when no endpoint or Service address is at fault (not-ready endpoints aside), for
    /// this name and every other one asked.
    pub verdict: Health,
    /// With `--name` given more than once: the report of each further name, asked of the same
    /// servers in the same run. The findings above then also compare the names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_names: Vec<DnsReport>,
}

impl DnsReport {
    pub fn health(&self) -> Health {
        self.verdict
    }

    /// Adds the reports of further names asked of the same servers, and what comparing the
    /// names says: one report, whose verdict is all of theirs.
    pub fn with_other_names(mut self, mut others: Vec<DnsReport>) -> DnsReport {
        if others.is_empty() {
            return self;
        }
        let compared = super::verdict::compare_names(&self, &others);
        // A server that answers another name is up and reachable: "unreachable" for one name
        // would contradict that.
        let answering: Vec<SocketAddr> = compared
            .iter()
            .filter(|f| f.kind == FindingKind::UpstreamBroken)
            .flat_map(|f| f.about.iter().copied())
            .collect();
        let contradicted = |f: &Finding| {
            f.kind == FindingKind::EndpointUnreachable && f.about.iter().any(|a| answering.contains(a))
        };
        self.findings.retain(|f| !contradicted(f));
        for other in &mut others {
            other.findings.retain(|f| !contradicted(f));
        }
        self.findings.extend(compared);
        self.verdict = Health::worst(std::iter::once(self.verdict).chain(others.iter().map(|o| o.verdict)));
        self.other_names = others;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointReport {
    /// Which endpoint: its fields first in the JSON, as they always were.
    #[serde(flatten)]
    pub endpoint: ServiceEndpoint,
    #[serde(flatten)]
    pub totals: ProtocolReport,
    /// The distinct answers of NOERROR replies, TTLs left out, addresses in address order.
    pub answers: Vec<String>,
    /// Per protocol (`udp`, `tcp`), when both were asked.
    pub protocols: BTreeMap<String, ProtocolReport>,
    pub verdict: EndpointVerdict,
}

impl EndpointReport {
    pub fn socket(&self) -> SocketAddr {
        self.endpoint.socket()
    }

    pub fn not_ready(&self) -> bool {
        self.endpoint.not_ready()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProtocolReport {
    pub sent: u32,
    /// NOERROR replies within the timeout.
    pub answered: u32,
    /// Replies with another RCODE (SERVFAIL, REFUSED, NXDOMAIN, ...): replies, not answers.
    pub error_replies: u32,
    /// Replies that came after the timeout, within the grace period.
    pub late: u32,
    pub late_max_ms: Option<f64>,
    /// No reply at all, grace period included.
    pub timeouts: u32,
    /// Exchanges refused at once (ICMP port unreachable, TCP RST).
    pub refused: u32,
    /// Exchanges with no route to the address.
    pub no_route: u32,
    /// TCP exchanges the server accepted and closed (or reset) without a reply, after reading
    /// the query: the server turns us away, not the path.
    pub closed: u32,
    /// Other socket failures.
    pub errors: u32,
    pub first_error: Option<String>,
    /// Replies within the timeout per RCODE, as dig names them.
    pub rcodes: BTreeMap<String, u32>,
    /// Latency of the replies within the timeout, every RCODE.
    pub latency_ms: Option<Latency>,
    /// UDP replies with the TC bit that were asked again over TCP and answered there.
    pub truncated_retried: u32,
    /// UDP replies with the TC bit whose retry over TCP failed.
    pub tcp_retry_failed: u32,
    /// With `--like-glibc`: the A+AAAA pairs, each sent from one socket back to back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairs: Option<GroupReport>,
}

/// Groups of queries sent from one socket back to back (A then AAAA), and how many of them lost
/// part of the group: a client like glibc waits its whole timeout (5 s) for the missing answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupReport {
    pub sent: u32,
    /// Some answers came, at least one never did (grace period included).
    pub part_lost: u32,
    /// No answer came at all.
    pub all_lost: u32,
}

/// How this network namespace's conntrack counters grew over the run (`null` each when they
/// could not be read, with `error` saying why).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConntrackReport {
    /// Entries that lost the insert race to another with the same tuple (the packet dropped).
    pub insert_failed: Option<u64>,
    /// Packets conntrack dropped.
    pub drop: Option<u64>,
    /// Clashes the kernel resolved by reusing the winner's entry (5.x kernels and later).
    pub clash_resolved: Option<u64>,
    pub error: Option<String>,
}

impl ConntrackReport {
    pub fn between(
        before: Result<crate::net::conntrack::ConntrackStats, String>,
        after: Result<crate::net::conntrack::ConntrackStats, String>,
    ) -> ConntrackReport {
        match before.and_then(|b| after.map(|a| a.since(&b))) {
            Ok(grew) => ConntrackReport {
                insert_failed: Some(grew.insert_failed),
                drop: Some(grew.drop),
                clash_resolved: grew.clash_resolved,
                error: None,
            },
            Err(why) => {
                ConntrackReport { insert_failed: None, drop: None, clash_resolved: None, error: Some(why) }
            }
        }
    }
}

impl ProtocolReport {
    /// Replies of any RCODE within the timeout.
    pub fn replies(&self) -> u32 {
        self.answered + self.error_replies
    }

    /// Queries that got nothing in time: lost, late, refused, unreachable or failed.
    pub fn unanswered(&self) -> u32 {
        self.sent.saturating_sub(self.replies())
    }

    /// UDP replies truncated (TC) although the same answer came whole in other UDP replies of
    /// this run: the truncation is not about size but the server's doing (a rate limiter's
    /// "slip", as BIND's RRL and dnsdist's TCAction send).
    pub fn truncated_needlessly(&self) -> u32 {
        let truncated = self.truncated_retried + self.tcp_retry_failed;
        let whole = self.answered.saturating_sub(self.truncated_retried);
        if whole > 0 {
            truncated
        } else {
            0
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// An endpoint got no reply at all (silence, refused, no route): the words say which.
    EndpointUnreachable,
    /// An endpoint replied with SERVFAIL or REFUSED.
    ServerErrors,
    /// Answers, or NXDOMAIN, unlike the other endpoints'.
    InconsistentAnswers,
    /// NXDOMAIN from every endpoint.
    NameExistsNowhere,
    /// One transport answers and the other does not.
    ProtocolBlocked,
    /// Truncated UDP answers whose TCP retry fails.
    TooBigForUdp,
    /// Losses, REFUSED, needless truncation or closed connections beside answers to the same
    /// question from the same server: its rate limiter, not the network and not an ACL.
    RateLimited,
    /// Some queries got no reply while others were answered, and nothing more tells why.
    SomeUnanswered,
    /// Answers slower than --slow.
    Slow,
    /// Replies that arrive after --timeout.
    LateAnswers,
    /// The Service fails while every endpoint answers: the path to it, not the pods.
    ServicePath,
    /// The Service's failure rate fits the share of failing endpoints behind it.
    ServiceFailuresExplained,
    /// Every failing endpoint is on another node while the local ones answer.
    CrossNode,
    /// A+AAAA pairs from one socket that lost one answer: the conntrack insert race's pattern.
    HalfAnsweredPairs,
    /// A server that answers one name and fails another: its upstream, not the pod or the path.
    UpstreamBroken,
    /// A server that fails every name asked: the pod or the path to it.
    FailsEveryName,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub message: String,
    /// The rows (endpoint or Service addresses) it is about, for the checks that every degraded
    /// row is explained and that no finding contradicts another; the message names them.
    #[serde(skip)]
    pub about: Vec<SocketAddr>,
}
