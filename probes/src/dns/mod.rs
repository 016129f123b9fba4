//! `netprobe dns`: the same question to every DNS endpoint (each CoreDNS pod) and to the Service
//! VIP in front of them, all at once, and what the differences mean.

pub mod message;
mod report;
mod stats;
mod verdict;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use message::rcode_name;
pub use report::{
    ConntrackReport, DnsReport, EndpointReport, EndpointVerdict, Finding, FindingKind, GroupReport, Latency,
    ProtocolReport,
};
pub use verdict::share_explains;

pub use crate::cluster::ServiceEndpoint;
use crate::net::dns::{DnsSockets, Exchange, Pacing, Transport};
use crate::{Error, Health, Result};
use stats::{Outcome, Tally};

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

/// Which address families to probe among discovered endpoints and Service addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub const BOTH: Families = Families { v4: true, v6: true };

    pub fn allows(self, ip: IpAddr) -> bool {
        if ip.is_ipv4() {
            self.v4
        } else {
            self.v6
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub endpoints: Vec<ServiceEndpoint>,
    /// The Service's addresses (each ClusterIP), each queried as a row of its own.
    pub services: Vec<SocketAddr>,
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
    /// Offer this EDNS UDP payload size (dig's +bufsize); `None` sends no OPT record, as glibc.
    pub edns_bufsize: Option<u16>,
    /// Ask as glibc's getaddrinfo does: A and AAAA from one socket, back to back (the pattern of
    /// the conntrack insert race), instead of `record_type` alone; conntrack's counters are read
    /// before and after.
    pub like_glibc: bool,
    /// A socket per query (the default) or reused ones (`--reuse-sockets`).
    pub sockets: crate::net::dns::SocketUse,
}

impl Config {
    /// The record types each socket asks, in the order they are sent.
    fn asked(&self) -> Vec<RecordType> {
        if self.like_glibc {
            vec![RecordType::A, RecordType::AAAA]
        } else {
            vec![self.record_type]
        }
    }

    /// How long past the timeout a query keeps listening for a late answer: twice the timeout,
    /// 1 to 5 s. Queries in their grace period hold no concurrency slot, so this costs a run one
    /// grace period at most, not one per query.
    fn grace(&self) -> Duration {
        (self.timeout * 2).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }
}

/// Parses a query name; a name without the final dot is taken as absolute, as dig does.
pub fn parse_name(text: &str) -> Result<Name> {
    let bad = |why: String| Error::invalid(format!("--name {text:?}"), why);
    if let Some(why) = name_problem(text) {
        return Err(bad(why));
    }
    // What the checks above let through, hickory reads; its own words are not shown (they are
    // Rust debug text), a plain sentence is.
    let mut name = Name::from_utf8(text).map_err(|_| {
        bad("not a DNS name: write it as dig takes it, e.g. kubernetes.default.svc.cluster.local".into())
    })?;
    name.set_fqdn(true);
    Ok(name)
}

/// Why `text` is not a DNS name, in one plain sentence; `None` when it may be one.
fn name_problem(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("empty: give the name to ask for, e.g. kubernetes.default.svc.cluster.local".into());
    }
    if text.contains(',') {
        return Some("a name has no commas: give --name once for each name to ask".into());
    }
    if text == "." {
        return None;
    }
    let labels = text.strip_suffix('.').unwrap_or(text);
    if labels.len() > 253 {
        return Some(format!("{} characters long: a DNS name has at most 253", labels.len()));
    }
    for label in labels.split('.') {
        if label.is_empty() {
            return Some("an empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > 63 {
            return Some(format!("the label {label:?} is {} characters long: at most 63", label.len()));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*')))
        {
            return Some(format!("{c:?} cannot be in a DNS name: letters, digits, '-' and '_' between dots"));
        }
    }
    None
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

/// Runs the probe on a runtime of its own, over the real sockets, and returns the report.
pub fn run(config: Config) -> Result<DnsReport> {
    // One thread: the work is syscalls, and a second worker only adds wake-ups between threads.
    let runtime = crate::net::runtime("starting the DNS runtime", None)?;
    runtime.block_on(probe(Arc::new(DnsSockets), config))
}

pub async fn probe<N: Transport>(net: Arc<N>, config: Config) -> Result<DnsReport> {
    if config.endpoints.is_empty() && config.services.is_empty() {
        return Err(Error::invalid(
            "endpoints",
            "nothing to query: give --endpoints or let discovery find some",
        ));
    }
    let conntrack_before = config.like_glibc.then(|| net.conntrack());
    let config = Arc::new(config);
    let mut targets: Vec<ServiceEndpoint> = config.endpoints.clone();
    targets.extend(config.services.iter().map(|s| ServiceEndpoint::at(*s)));
    // Every endpoint and protocol at once: a slow one cannot hide another's failures in time.
    let mut series = JoinSet::new();
    for (index, target) in targets.iter().enumerate() {
        for &protocol in &config.protocols {
            let (config, net) = (config.clone(), net.clone());
            let address = target.socket();
            series.spawn(async move { (index, protocol, run_series(&net, address, protocol, config).await) });
        }
    }
    let mut tallies: Vec<BTreeMap<&'static str, Tally>> = vec![BTreeMap::new(); targets.len()];
    while let Some(done) = series.join_next().await {
        // A series that panicked is an error, never a verdict.
        let (index, protocol, tally) =
            done.map_err(|e| Error::could_not_run("running DNS queries", e.to_string()))?;
        tallies[index].insert(protocol.name(), tally?);
    }

    let mut reports: Vec<EndpointReport> = targets
        .iter()
        .zip(&tallies)
        .map(|(target, by_protocol)| endpoint_report(target, by_protocol, config.protocols.len() > 1))
        .collect();
    let conntrack = conntrack_before.map(|before| ConntrackReport::between(before, net.conntrack()));
    let mut services = reports.split_off(config.endpoints.len());
    let judge = verdict::Judge::new(&reports, &services, config.slow);
    for report in reports.iter_mut().chain(services.iter_mut()) {
        report.verdict = judge.verdict(report);
    }
    let name = config.name.to_string();
    let findings = verdict::findings(&verdict::Context {
        endpoints: &reports,
        services: &services,
        this_node: config.this_node.as_deref(),
        name: &name,
        timeout: config.timeout,
        slow: config.slow,
        conntrack: conntrack.as_ref(),
    });
    let fault = reports.iter().chain(&services).any(|r| r.verdict.is_fault());
    Ok(DnsReport {
        probe: "dns",
        name,
        record_type: config.asked().iter().map(ToString::to_string).collect::<Vec<_>>().join("+"),
        this_node: config.this_node.clone(),
        endpoints: reports,
        services,
        findings,
        conntrack,
        udp_sockets: config.sockets,
        verdict: if fault { Health::Fault } else { Health::Ok },
        other_names: Vec::new(),
    })
}

fn endpoint_report(
    target: &ServiceEndpoint,
    by_protocol: &BTreeMap<&'static str, Tally>,
    per_protocol: bool,
) -> EndpointReport {
    let mut total = Tally::default();
    for tally in by_protocol.values() {
        total.merge(tally);
    }
    let mut answers: Vec<String> = total.answers.iter().cloned().collect();
    // Addresses in address order (10.96.0.9 before 10.96.0.10), other records after them.
    answers.sort_by_key(|a| (a.parse::<IpAddr>().map_err(|_| a.clone()), a.clone()));
    EndpointReport {
        endpoint: target.clone(),
        totals: total.finish(),
        answers,
        protocols: if per_protocol {
            by_protocol.iter().map(|(name, tally)| (name.to_string(), tally.finish())).collect()
        } else {
            BTreeMap::new()
        },
        verdict: EndpointVerdict::Ok,
    }
}

/// `count` queries to one server over one protocol, `interval` apart, at most `concurrency` in flight.
async fn run_series<N: Transport>(
    net: &Arc<N>,
    server: SocketAddr,
    protocol: Protocol,
    config: Arc<Config>,
) -> Result<Tally> {
    match protocol {
        Protocol::Udp => run_udp_series(net, server, config).await,
        Protocol::Tcp => Ok(run_tcp_series(net, server, config).await),
    }
}

/// UDP on a thread of its own (one poll(2) for all sockets in flight), each socket asking every
/// type of [`Config::asked`]; replies with the TC bit are asked again over TCP afterwards, as a
/// resolver would, at most `concurrency` at once, and counted as such.
async fn run_udp_series<N: Transport>(
    net: &Arc<N>,
    server: SocketAddr,
    config: Arc<Config>,
) -> Result<Tally> {
    let (shared, transport) = (config.clone(), net.clone());
    let asked = config.asked();
    let groups = tokio::task::spawn_blocking(move || {
        let asked = shared.asked();
        let group: Vec<Vec<u8>> =
            asked.iter().map(|&rtype| message::query(0, &shared.name, rtype, shared.edns_bufsize)).collect();
        let pacing = Pacing {
            count: shared.count,
            interval: shared.interval,
            concurrency: shared.concurrency,
            timeout: shared.timeout,
            grace: shared.grace(),
            sockets: shared.sockets,
        };
        // Replies to one question are nearly always the same bytes but for the ID: decode each
        // distinct one once.
        let mut last: Vec<Option<(Vec<u8>, message::Reply)>> = vec![None; asked.len()];
        let accept = |index: usize, id: u16, bytes: &[u8]| {
            if bytes.get(..2) != Some(&id.to_be_bytes()[..]) {
                return None;
            }
            if let Some((body, reply)) = &last[index] {
                if body[..] == bytes[2..] {
                    return Some(reply.clone());
                }
            }
            let reply = message::check_reply(bytes, id, &shared.name, asked[index])?;
            last[index] = Some((bytes[2..].to_vec(), reply.clone()));
            Some(reply)
        };
        transport.udp_series(server, &group, pacing, next_id, accept)
    })
    .await
    .map_err(|e| Error::could_not_run(format!("querying {server} over UDP"), e.to_string()))?;
    let mut tally = Tally::default();
    let mut retries = Vec::new();
    for group in groups {
        if group.len() > 1 {
            tally.add_group(group.iter().map(|e| matches!(e, Exchange::Timeout)));
        }
        for (index, outcome) in group.into_iter().enumerate() {
            match outcome {
                Exchange::Reply(reply, latency) if reply.truncated => retries.push((asked[index], latency)),
                other => tally.add(outcome_of(other)),
            }
        }
    }
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1) as usize));
    let mut queries = JoinSet::new();
    for (rtype, udp_latency) in retries {
        let (net, config, permits) = (net.clone(), config.clone(), permits.clone());
        queries.spawn(async move {
            let permit = permits.acquire_owned().await.ok();
            match tcp_query(&net, server, &config, rtype, permit).await {
                Outcome::Replied { rcode, answers, latency, .. } => Outcome::Replied {
                    rcode,
                    answers,
                    latency: udp_latency + latency,
                    truncated_retried: true,
                },
                Outcome::Failed(_, reason) => {
                    Outcome::RetryFailed(format!("TCP retry after truncation: {reason}"))
                }
                Outcome::Timeout => Outcome::RetryFailed("TCP retry after truncation: timed out".into()),
                other => other,
            }
        });
    }
    while let Some(outcome) = queries.join_next().await {
        tally.add(
            outcome
                .map_err(|e| Error::could_not_run(format!("retrying {server} over TCP"), e.to_string()))?,
        );
    }
    Ok(tally)
}

/// TCP queries as tasks, at most `concurrency` within their timeout at once, taking the types of
/// [`Config::asked`] in turn.
async fn run_tcp_series<N: Transport>(net: &Arc<N>, server: SocketAddr, config: Arc<Config>) -> Tally {
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1) as usize));
    let mut queries = JoinSet::new();
    let mut next = tokio::time::Instant::now();
    for rtype in config.asked().into_iter().cycle().take(config.count as usize) {
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let (net, shared) = (net.clone(), config.clone());
        queries.spawn(async move { tcp_query(&net, server, &shared, rtype, Some(permit)).await });
        if !config.interval.is_zero() {
            next += config.interval;
            tokio::time::sleep_until(next).await;
        }
    }
    let mut tally = Tally::default();
    while let Some(outcome) = queries.join_next().await {
        tally.add(outcome.unwrap_or_else(|e| {
            Outcome::Failed(crate::net::dns::FailureKind::Other, format!("query task: {e}"))
        }));
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

/// One TCP query for `rtype`. `permit` (a concurrency slot) is given back when the timeout passes, so a query
/// listening in its grace period does not hold up the next.
async fn tcp_query<N: Transport>(
    net: &Arc<N>,
    server: SocketAddr,
    config: &Config,
    rtype: RecordType,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Outcome {
    let id = next_id();
    let query = message::query(id, &config.name, rtype, config.edns_bufsize);
    let name = config.name.clone();
    let accept = move |bytes: &[u8]| message::check_reply(bytes, id, &name, rtype);
    let exchange = net.tcp(server, &query, config.timeout, config.grace(), accept);
    tokio::pin!(exchange);
    let result = match tokio::time::timeout(config.timeout, &mut exchange).await {
        Ok(result) => result,
        Err(_) => {
            drop(permit);
            exchange.await
        }
    };
    outcome_of(result)
}

fn outcome_of(exchange: Exchange<message::Reply>) -> Outcome {
    match exchange {
        Exchange::Reply(reply, latency) => {
            Outcome::Replied { rcode: reply.rcode, answers: reply.answers, latency, truncated_retried: false }
        }
        Exchange::Late(_, latency) => Outcome::Late(latency),
        Exchange::Timeout => Outcome::Timeout,
        Exchange::Failed(kind, reason) => Outcome::Failed(kind, reason),
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn every_bad_name_gets_one_plain_sentence() {
        for (text, says) in [
            ("a,b", "a name has no commas: give --name once for each name to ask"),
            ("", "empty"),
            ("a..b", "an empty label"),
            ("exa mple.com", "' ' cannot be in a DNS name"),
            ("bücher.example", "'ü' cannot be in a DNS name"),
        ] {
            let err = parse_name(text).unwrap_err();
            assert!(err.is_bad_input());
            let line = err.to_string();
            assert!(line.contains(says), "{text:?}: {line}");
            assert!(!line.contains("Err(") && !line.contains('\n'), "{line}");
        }
        let long = "x".repeat(64);
        assert!(parse_name(&long).unwrap_err().to_string().contains("64 characters long: at most 63"));
        for good in [
            "kubernetes.default.svc.cluster.local",
            "example.com.",
            "_dns._udp.example.com",
            "*.example.com",
            ".",
        ] {
            assert!(parse_name(good).is_ok(), "{good}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dns::{ConntrackStats, FailureKind};
    use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    use std::time::Duration;

    /// What a fake server does with one query.
    #[derive(Clone)]
    enum Act {
        Answer(&'static str, Duration),
        Rcode(ResponseCode),
        Truncated,
        Late(Duration),
        Silence,
        Refuse,
    }

    /// A transport whose servers follow scripts: `udp(server, socket, index)` gives the act for
    /// the index-th query of the socket-th socket (from 1), `tcp(server)` for each TCP query.
    /// TCP acts take their latency in (paused) tokio time. Conntrack's counters grow by 3 at
    /// each read.
    struct Fake {
        udp: fn(SocketAddr, u32, usize) -> Act,
        tcp: fn(SocketAddr) -> Act,
        conntrack_grows: AtomicU32,
    }

    fn fake(udp: fn(SocketAddr, u32, usize) -> Act, tcp: fn(SocketAddr) -> Act) -> Fake {
        Fake { udp, tcp, conntrack_grows: AtomicU32::new(0) }
    }

    fn reply_bytes(query: &[u8], act: &Act) -> Vec<u8> {
        let asked = Message::from_vec(query).unwrap();
        let mut reply = Message::response(asked.metadata.id, OpCode::Query);
        let q: &Query = &asked.queries[0];
        reply.add_query(q.clone());
        match act {
            Act::Answer(ip, _) => {
                let ip: std::net::Ipv4Addr = ip.parse().unwrap();
                reply.add_answer(Record::from_rdata(q.name().clone(), 30, RData::A(A(ip))));
            }
            Act::Rcode(rcode) => reply.metadata.response_code = *rcode,
            Act::Truncated => reply.metadata.truncation = true,
            _ => {}
        }
        reply.to_vec().unwrap()
    }

    impl Transport for Fake {
        fn udp_series<T>(
            &self,
            server: SocketAddr,
            group: &[Vec<u8>],
            pacing: Pacing,
            mut next_id: impl FnMut() -> u16,
            mut accept: impl FnMut(usize, u16, &[u8]) -> Option<T>,
        ) -> Vec<Vec<Exchange<T>>> {
            let mut socket = 0;
            (0..pacing.count)
                .map(|_| {
                    socket += 1;
                    let mut exchanges = Vec::new();
                    for (index, template) in group.iter().enumerate() {
                        let id = next_id();
                        let mut query = template.clone();
                        query[..2].copy_from_slice(&id.to_be_bytes());
                        let act = (self.udp)(server, socket, index);
                        let mut reply = || accept(index, id, &reply_bytes(&query, &act)).expect("accepted");
                        exchanges.push(match act {
                            Act::Answer(_, latency) => Exchange::Reply(reply(), latency),
                            Act::Rcode(_) | Act::Truncated => {
                                Exchange::Reply(reply(), Duration::from_millis(1))
                            }
                            Act::Late(latency) => Exchange::Late(reply(), latency),
                            Act::Silence => Exchange::Timeout,
                            Act::Refuse => Exchange::Failed(
                                FailureKind::Refused,
                                "udp receive: Connection refused".into(),
                            ),
                        });
                    }
                    exchanges
                })
                .collect()
        }

        fn conntrack(&self) -> std::result::Result<ConntrackStats, String> {
            let grown = self.conntrack_grows.fetch_add(1, Ordering::Relaxed) as u64;
            Ok(ConntrackStats {
                insert_failed: 3 * grown,
                drop: 3 * grown,
                early_drop: 0,
                clash_resolved: Some(0),
            })
        }

        async fn tcp<T: Send>(
            &self,
            server: SocketAddr,
            query: &[u8],
            timeout: Duration,
            _grace: Duration,
            accept: impl Fn(&[u8]) -> Option<T> + Send,
        ) -> Exchange<T> {
            let act = (self.tcp)(server);
            match act {
                Act::Answer(_, latency) => {
                    tokio::time::sleep(latency).await;
                    let reply = accept(&reply_bytes(query, &act)).expect("accepted");
                    if latency <= timeout {
                        Exchange::Reply(reply, latency)
                    } else {
                        Exchange::Late(reply, latency)
                    }
                }
                Act::Refuse => {
                    Exchange::Failed(FailureKind::Refused, "tcp connect: Connection refused".into())
                }
                _ => {
                    tokio::time::sleep(timeout).await;
                    Exchange::Timeout
                }
            }
        }
    }

    fn config(endpoints: &[&str], protocols: Vec<Protocol>) -> Config {
        Config {
            endpoints: endpoints.iter().map(|e| ServiceEndpoint::at(e.parse().unwrap())).collect(),
            services: vec![],
            name: parse_name("kubernetes.default.svc.cluster.local").unwrap(),
            record_type: RecordType::A,
            count: 10,
            interval: Duration::ZERO,
            concurrency: 10,
            timeout: Duration::from_secs(1),
            protocols,
            slow: Duration::from_millis(250),
            this_node: None,
            edns_bufsize: None,
            like_glibc: false,
            sockets: Default::default(),
        }
    }

    async fn run_fake(fake: Fake, config: Config) -> DnsReport {
        probe(Arc::new(fake), config).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn truncated_answers_are_retried_over_tcp_at_the_concurrency_asked() {
        let fake = fake(|_, _, _| Act::Truncated, |_| Act::Answer("10.96.0.1", Duration::from_millis(900)));
        let started = tokio::time::Instant::now();
        let slow_ok =
            Config { slow: Duration::from_secs(2), ..config(&["192.0.2.53:53"], vec![Protocol::Udp]) };
        let report = run_fake(fake, slow_ok).await;
        let e = &report.endpoints[0];
        assert_eq!((e.totals.answered, e.totals.truncated_retried), (10, 10));
        assert_eq!(e.verdict, EndpointVerdict::Ok);
        // Ten retries of 900 ms at concurrency 10 take 900 ms, not 9 s.
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn truncated_answers_whose_tcp_retry_fails_are_too_big_for_udp() {
        let fake = fake(|_, _, _| Act::Truncated, |_| Act::Refuse);
        let report = run_fake(fake, config(&["192.0.2.53:53"], vec![Protocol::Udp])).await;
        let e = &report.endpoints[0];
        assert_eq!((e.totals.tcp_retry_failed, e.verdict), (10, EndpointVerdict::Failing));
        let kinds: Vec<FindingKind> = report.findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![FindingKind::TooBigForUdp]);
    }

    #[tokio::test(start_paused = true)]
    async fn udp_blocked_while_tcp_answers_names_the_protocol() {
        let fake = fake(|_, _, _| Act::Silence, |_| Act::Answer("10.96.0.1", Duration::from_millis(2)));
        let report = run_fake(fake, config(&["192.0.2.53:53"], vec![Protocol::Udp, Protocol::Tcp])).await;
        assert_eq!(report.endpoints[0].verdict, EndpointVerdict::Degraded);
        assert_eq!(report.findings[0].kind, FindingKind::ProtocolBlocked);
        assert!(report.findings[0].message.contains("answers over TCP but not over UDP"));
    }

    #[tokio::test(start_paused = true)]
    async fn error_replies_late_answers_and_refusals_each_get_their_verdict() {
        let fake = fake(
            |server, _, _| match server.port() {
                53 => Act::Answer("10.96.0.1", Duration::from_millis(2)),
                54 => Act::Rcode(ResponseCode::ServFail),
                55 => Act::Rcode(ResponseCode::NXDomain),
                56 => Act::Late(Duration::from_millis(1500)),
                _ => Act::Refuse,
            },
            |_| Act::Silence,
        );
        let servers = ["192.0.2.53:53", "192.0.2.53:54", "192.0.2.53:55", "192.0.2.53:56", "192.0.2.53:57"];
        let report = run_fake(fake, config(&servers, vec![Protocol::Udp])).await;
        let verdicts: Vec<EndpointVerdict> = report.endpoints.iter().map(|e| e.verdict).collect();
        use EndpointVerdict::*;
        assert_eq!(verdicts, vec![Ok, Failing, Inconsistent, Failing, Failing]);
        assert_eq!(report.endpoints[1].totals.rcodes["SERVFAIL"], 10);
        assert_eq!(report.endpoints[3].totals.late_max_ms, Some(1500.0));
        assert_eq!(report.verdict, Health::Fault);
        let kinds: Vec<FindingKind> = report.findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            vec![
                FindingKind::EndpointUnreachable,
                FindingKind::ServerErrors,
                FindingKind::InconsistentAnswers,
                FindingKind::LateAnswers
            ]
        );
        assert!(
            report.findings[0].message.starts_with("192.0.2.53:57 refused 10 of 10"),
            "{}",
            report.findings[0].message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn like_glibc_pairs_that_lose_one_answer_are_named_with_conntrack_growth() {
        // The Service path loses the second query of every third socket; the endpoint loses none.
        let fake = fake(
            |server, socket, index| match (server.port(), socket % 3, index) {
                (54, 0, 1) => Act::Silence,
                _ => Act::Answer("10.96.0.1", Duration::from_millis(2)),
            },
            |_| Act::Silence,
        );
        let mut glibc = config(&["192.0.2.53:53"], vec![Protocol::Udp]);
        glibc.services = vec!["192.0.2.10:54".parse().unwrap()];
        glibc.like_glibc = true;
        glibc.count = 9;
        let report = run_fake(fake, glibc).await;
        assert_eq!(report.record_type, "A+AAAA");
        let (endpoint, service) = (&report.endpoints[0].totals, &report.services[0].totals);
        assert_eq!(endpoint.sent, 18, "two queries per socket");
        assert_eq!(endpoint.pairs, Some(GroupReport { sent: 9, part_lost: 0, all_lost: 0 }));
        assert_eq!(service.pairs, Some(GroupReport { sent: 9, part_lost: 3, all_lost: 0 }));
        assert_eq!((service.answered, service.timeouts), (15, 3));
        assert_eq!(report.services[0].verdict, EndpointVerdict::Degraded);
        let conntrack = report.conntrack.as_ref().unwrap();
        assert_eq!(
            (conntrack.insert_failed, conntrack.drop, conntrack.error.as_deref()),
            (Some(3), Some(3), None)
        );
        let kinds: Vec<FindingKind> = report.findings.iter().map(|f| f.kind).collect();
        // The Service path is also named: it lost queries while the endpoint answered every one.
        assert_eq!(kinds, vec![FindingKind::HalfAnsweredPairs, FindingKind::ServicePath]);
        let message = &report.findings[0].message;
        assert!(message.starts_with("192.0.2.10:54: 3 of 9 A+AAAA pairs"), "{message}");
        assert!(
            message.contains("insert_failed +3 and drop +3") && message.contains("single-request-reopen")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_like_glibc_there_are_no_pairs_and_no_conntrack_read() {
        let fake = fake(|_, _, _| Act::Answer("10.96.0.1", Duration::from_millis(2)), |_| Act::Silence);
        let report = run_fake(fake, config(&["192.0.2.53:53"], vec![Protocol::Udp])).await;
        assert_eq!((report.endpoints[0].totals.pairs.as_ref(), report.conntrack.as_ref()), (None, None));
        let json = serde_json::to_value(&report).unwrap();
        assert!(json.get("conntrack").is_none() && json["endpoints"][0].get("pairs").is_none());
    }

    struct Panics;
    impl Transport for Panics {
        fn udp_series<T>(
            &self,
            _: SocketAddr,
            _: &[Vec<u8>],
            _: Pacing,
            _: impl FnMut() -> u16,
            _: impl FnMut(usize, u16, &[u8]) -> Option<T>,
        ) -> Vec<Vec<Exchange<T>>> {
            panic!("a thread's failure")
        }

        fn conntrack(&self) -> std::result::Result<ConntrackStats, String> {
            Err("not here".into())
        }

        async fn tcp<T: Send>(
            &self,
            _: SocketAddr,
            _: &[u8],
            _: Duration,
            _: Duration,
            _: impl Fn(&[u8]) -> Option<T> + Send,
        ) -> Exchange<T> {
            Exchange::Timeout
        }
    }

    #[tokio::test]
    async fn a_series_that_panics_is_an_error_not_a_verdict() {
        let err = probe(Arc::new(Panics), config(&["192.0.2.53:53"], vec![Protocol::Udp])).await.unwrap_err();
        assert!(!err.is_bad_input() && err.to_string().contains("querying 192.0.2.53:53 over UDP"), "{err}");
    }
}
