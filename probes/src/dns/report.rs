//! What `netprobe dns` found, as plain data (the JSON output is this, serialised).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::Health;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointVerdict {
    /// Every query answered, quickly, with the majority's answers.
    Ok,
    /// No query answered.
    Failing,
    /// Some queries lost, failed with a server error, or slow.
    Degraded,
    /// Answers, but not the same answers as the majority of endpoints.
    Inconsistent,
}

impl EndpointVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointVerdict::Ok => "ok",
            EndpointVerdict::Failing => "failing",
            EndpointVerdict::Degraded => "degraded",
            EndpointVerdict::Inconsistent => "inconsistent",
        }
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
    /// The Service VIP, queried like an endpoint; `None` when not known.
    pub service: Option<EndpointReport>,
    pub findings: Vec<Finding>,
    /// `ok` when every endpoint is ok, else `fault`.
    pub verdict: Health,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointReport {
    pub address: IpAddr,
    pub port: u16,
    pub node: Option<String>,
    pub pod: Option<String>,
    /// The EndpointSlice's ready and serving conditions, when discovered.
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    #[serde(flatten)]
    pub totals: ProtocolReport,
    /// The distinct answers, sorted, TTLs ignored.
    pub answers: Vec<String>,
    /// Per protocol (`udp`, `tcp`), when both were asked.
    pub protocols: BTreeMap<String, ProtocolReport>,
    pub verdict: EndpointVerdict,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProtocolReport {
    pub sent: u32,
    pub answered: u32,
    pub timeouts: u32,
    /// Exchanges that failed outright (refused, unreachable), with the first reason.
    pub errors: u32,
    pub first_error: Option<String>,
    /// Answered replies per RCODE, as dig names them.
    pub rcodes: BTreeMap<String, u32>,
    pub latency_ms: Option<Latency>,
    /// UDP replies with the TC bit that were asked again over TCP.
    pub truncated_retried: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `endpoint-unreachable`, `inconsistent-answers`, `service-failures-explained`, `cross-node`.
    pub kind: &'static str,
    pub message: String,
}
