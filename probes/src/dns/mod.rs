//! `netprobe dns`: the same question to every DNS endpoint (each CoreDNS pod) and to the Service
//! VIP in front of them, all at once, and what the differences mean.

mod message;
mod report;
mod stats;
mod verdict;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use message::rcode_name;
pub use report::{DnsReport, EndpointReport, EndpointVerdict, Finding, Latency, ProtocolReport};

use crate::net::dns::{self as exchange, Exchange};
use crate::{Error, Health, Result};
use stats::{Outcome, Tally};

/// One server to query, with what discovery knows about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub address: SocketAddr,
    pub node: Option<String>,
    pub pod: Option<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
}

impl Target {
    pub fn new(address: SocketAddr) -> Target {
        Target { address, node: None, pod: None, ready: None, serving: None }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub endpoints: Vec<Target>,
    pub service: Option<SocketAddr>,
    pub name: Name,
    pub record_type: RecordType,
    /// Queries per endpoint and protocol.
    pub count: u32,
    /// Time between query starts; zero sends as fast as `concurrency` allows.
    pub interval: Duration,
    /// Queries in flight per endpoint and protocol.
    pub concurrency: u32,
    pub timeout: Duration,
    pub protocols: Vec<Protocol>,
    /// A p95 latency above this makes an endpoint `degraded`.
    pub slow: Duration,
    pub this_node: Option<String>,
}

/// Parses a query name; a name without the final dot is taken as absolute, as dig does.
pub fn parse_name(text: &str) -> Result<Name> {
    let mut name =
        Name::from_utf8(text).map_err(|e| Error::invalid(format!("--name {text:?}"), e.to_string()))?;
    name.set_fqdn(true);
    Ok(name)
}

/// Parses a record type like dig's: A, AAAA, SRV, TXT, ... (any case).
pub fn parse_type(text: &str) -> Result<RecordType> {
    match text.to_ascii_uppercase().parse::<RecordType>() {
        Ok(RecordType::Unknown(_)) | Err(_) => {
            Err(Error::invalid(format!("--type {text:?}"), "not a DNS record type (A, AAAA, SRV, TXT, ...)"))
        }
        Ok(rtype) => Ok(rtype),
    }
}

/// Runs the probe on a runtime of its own and returns the report.
pub fn run(config: Config) -> Result<DnsReport> {
    // One thread: the work is syscalls, and a second worker only adds wake-ups between threads.
    let runtime = crate::net::runtime("starting the DNS runtime", None)?;
    runtime.block_on(probe(config))
}

pub async fn probe(config: Config) -> Result<DnsReport> {
    if config.endpoints.is_empty() && config.service.is_none() {
        return Err(Error::invalid(
            "endpoints",
            "nothing to query: give --endpoints or let discovery find some",
        ));
    }
    let config = Arc::new(config);
    let mut targets: Vec<Target> = config.endpoints.clone();
    if let Some(service) = config.service {
        targets.push(Target::new(service));
    }
    // Every endpoint and protocol at once: a slow one cannot hide another's failures in time.
    let mut series = JoinSet::new();
    for (index, target) in targets.iter().enumerate() {
        for &protocol in &config.protocols {
            let config = config.clone();
            let address = target.address;
            series.spawn(async move { (index, protocol, run_series(address, protocol, config).await) });
        }
    }
    let mut tallies: Vec<BTreeMap<&'static str, Tally>> = vec![BTreeMap::new(); targets.len()];
    while let Some(done) = series.join_next().await {
        let (index, protocol, tally) =
            done.map_err(|e| Error::could_not_run("running DNS queries", e.to_string()))?;
        tallies[index].insert(protocol.name(), tally);
    }

    let mut reports: Vec<EndpointReport> = targets
        .iter()
        .zip(&tallies)
        .map(|(target, by_protocol)| endpoint_report(target, by_protocol, config.protocols.len() > 1))
        .collect();
    let mut service = config.service.map(|_| reports.pop().expect("service row was added last"));
    let majority = verdict::majority_answers(&reports, service.as_ref());
    for report in reports.iter_mut().chain(service.iter_mut()) {
        report.verdict = verdict::endpoint_verdict(report, majority.as_ref(), config.slow);
    }
    let findings = verdict::findings(&reports, service.as_ref(), config.this_node.as_deref());
    let healthy = reports.iter().chain(service.as_ref()).all(|r| r.verdict == EndpointVerdict::Ok);
    Ok(DnsReport {
        probe: "dns",
        name: config.name.to_string(),
        record_type: config.record_type.to_string(),
        this_node: config.this_node.clone(),
        endpoints: reports,
        service,
        findings,
        verdict: if healthy { Health::Ok } else { Health::Fault },
    })
}

fn endpoint_report(
    target: &Target,
    by_protocol: &BTreeMap<&'static str, Tally>,
    per_protocol: bool,
) -> EndpointReport {
    let mut total = Tally::default();
    for tally in by_protocol.values() {
        total.merge(tally);
    }
    EndpointReport {
        address: target.address.ip(),
        port: target.address.port(),
        node: target.node.clone(),
        pod: target.pod.clone(),
        ready: target.ready,
        serving: target.serving,
        totals: total.finish(),
        answers: total.answers.iter().cloned().collect(),
        protocols: if per_protocol {
            by_protocol.iter().map(|(name, tally)| (name.to_string(), tally.finish())).collect()
        } else {
            BTreeMap::new()
        },
        verdict: EndpointVerdict::Ok,
    }
}

/// `count` queries to one server over one protocol, `interval` apart, at most `concurrency` in flight.
async fn run_series(server: SocketAddr, protocol: Protocol, config: Arc<Config>) -> Tally {
    match protocol {
        Protocol::Udp => run_udp_series(server, config).await,
        Protocol::Tcp => run_tcp_series(server, config).await,
    }
}

/// UDP on a thread of its own (one poll(2) for all sockets in flight); replies with the TC bit are
/// asked again over TCP afterwards, as a resolver would, and counted as such.
async fn run_udp_series(server: SocketAddr, config: Arc<Config>) -> Tally {
    let shared = config.clone();
    let exchanges = tokio::task::spawn_blocking(move || {
        let template = message::query(0, &shared.name, shared.record_type);
        let pacing = exchange::Pacing {
            count: shared.count,
            interval: shared.interval,
            concurrency: shared.concurrency,
            timeout: shared.timeout,
        };
        // Replies are nearly always the same bytes but for the ID: decode each distinct one once.
        let mut last: Option<(Vec<u8>, message::Reply)> = None;
        let accept = |id: u16, bytes: &[u8]| {
            if bytes.get(..2) != Some(&id.to_be_bytes()[..]) {
                return None;
            }
            if let Some((body, reply)) = &last {
                if body[..] == bytes[2..] {
                    return Some(reply.clone());
                }
            }
            let reply = message::check_reply(bytes, id, &shared.name, shared.record_type)?;
            last = Some((bytes[2..].to_vec(), reply.clone()));
            Some(reply)
        };
        exchange::udp_series(server, &template, pacing, next_id, accept)
    })
    .await
    .unwrap_or_default();
    let mut tally = Tally::default();
    for outcome in exchanges {
        tally.add(match outcome {
            Exchange::Reply(reply, latency) if reply.truncated => match tcp_query(server, &config).await {
                Outcome::Answered { rcode, answers, latency: more, .. } => {
                    Outcome::Answered { rcode, answers, latency: latency + more, truncated_retried: true }
                }
                Outcome::Failed(reason) => Outcome::Failed(format!("TCP retry after truncation: {reason}")),
                timeout => timeout,
            },
            other => outcome_of(other),
        });
    }
    tally
}

/// TCP queries as tasks, at most `concurrency` at once.
async fn run_tcp_series(server: SocketAddr, config: Arc<Config>) -> Tally {
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1) as usize));
    let mut queries = JoinSet::new();
    let mut next = tokio::time::Instant::now();
    for _ in 0..config.count {
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let shared = config.clone();
        queries.spawn(async move {
            let outcome = tcp_query(server, &shared).await;
            drop(permit);
            outcome
        });
        if !config.interval.is_zero() {
            next += config.interval;
            tokio::time::sleep_until(next).await;
        }
    }
    let mut tally = Tally::default();
    while let Some(outcome) = queries.join_next().await {
        tally.add(outcome.unwrap_or_else(|e| Outcome::Failed(format!("query task: {e}"))));
    }
    tally
}

/// A query ID: a process-wide counter (seeded from the clock), scrambled so consecutive queries
/// differ in many bits.
fn next_id() -> u16 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(seed);
    (n.wrapping_mul(0x9E37_79B1) >> 16) as u16
}

async fn tcp_query(server: SocketAddr, config: &Config) -> Outcome {
    let id = next_id();
    let query = message::query(id, &config.name, config.record_type);
    let accept = |bytes: &[u8]| message::check_reply(bytes, id, &config.name, config.record_type);
    outcome_of(exchange::tcp(server, &query, config.timeout, accept).await)
}

fn outcome_of(exchange: Exchange<message::Reply>) -> Outcome {
    match exchange {
        Exchange::Reply(reply, latency) => Outcome::Answered {
            rcode: reply.rcode,
            answers: reply.answers,
            latency,
            truncated_retried: false,
        },
        Exchange::Timeout => Outcome::Timeout,
        Exchange::Failed(reason) => Outcome::Failed(reason),
    }
}
