//! `netprobe vxlan`: does VXLAN (UDP 8472) get from node to node, and where is it lost? Agents on
//! the nodes ([`agent`]) capture and send on request; this side drives every ordered pair at once
//! and judges each from three counts: sent, seen leaving the source's interface, seen arriving on
//! the destination's interface, plus a control datagram to another UDP port and the firewall rules
//! (that can match the probes) whose drop counters grew by at least the probes that went missing.
//!
//! The driver reaches the agents through [`AgentApi`], so its paths run in tests on a fake.

pub mod agent;
pub mod api;
mod batch;
pub mod mesh;
pub mod metrics;
pub mod mtu;
pub mod rules;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::net::agent_client::{AgentAddr, AgentApi, HttpAgents};
use crate::{Error, Health, Result};
use api::*;

/// Default VNI of the probes: far above flannel's 1, Calico's 4096 and Cilium's per-cluster
/// identities (below 65,536); only a Cilium cluster mesh member with cluster id 255 could use it.
pub const DEFAULT_VNI: u32 = 0x00ff_fff0;

/// A node as given on the command line: its agent's address, and the node IP probes go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub label: String,
    pub agent: SocketAddr,
    pub ip: Ipv4Addr,
}

/// `IP`, `IP:PORT`, `HOST` or `HOST:PORT` (the agent on `default_port` when none is given). The
/// node's address is the agent's: run the agent on the host network.
pub fn parse_node(text: &str, default_port: u16) -> Result<Node> {
    // Refuse what cannot be a host name before anything is looked up.
    let host = text.rsplit_once(':').map_or(text, |(h, _)| h);
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return Err(Error::invalid(format!("node {text:?}"), "write IP, IP:PORT or HOST[:PORT]"));
    }
    let with_port = if text.contains(':') { text.to_string() } else { format!("{text}:{default_port}") };
    let agent = with_port
        .to_socket_addrs()
        .map_err(|e| {
            Error::invalid(format!("node {text:?}"), format!("{e}: write IP, IP:PORT or HOST[:PORT]"))
        })?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| Error::invalid(format!("node {text:?}"), "has no IPv4 address"))?;
    let IpAddr::V4(ip) = agent.ip() else { unreachable!("filtered to IPv4") };
    Ok(Node { label: text.to_string(), agent, ip })
}

/// A node that was not probed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UntestedNode {
    pub node: String,
    pub ip: Option<Ipv4Addr>,
    pub reason: String,
}

/// What to do where no agent runs: the DaemonSet of deploy/kubernetes/ puts one on every node.
pub const DEPLOY_HINT: &str =
    "to run one on every node: kubectl apply -k deploy/kubernetes/ (README: In the cluster), then kubectl -n netprobe get pods -o wide";

/// The nodes of the cluster as probe targets: each Node's InternalIP, its agent on `agent_port`,
/// labelled by the node's name. A node without an IPv4 InternalIP cannot carry these probes.
pub fn nodes_from_cluster(
    nodes: &[crate::k8s::ClusterNode],
    agent_port: u16,
) -> (Vec<Node>, Vec<UntestedNode>) {
    let mut probed = Vec::new();
    let mut untested = Vec::new();
    for node in nodes {
        match node.internal_ip {
            Some(IpAddr::V4(ip)) => {
                probed.push(Node { label: node.name.clone(), agent: SocketAddr::from((ip, agent_port)), ip })
            }
            other => untested.push(UntestedNode {
                node: node.name.clone(),
                ip: None,
                reason: match other {
                    Some(ip) => format!("its InternalIP {ip} is IPv6: the probes are VXLAN over IPv4"),
                    None => "its status lists no InternalIP".into(),
                },
            }),
        }
    }
    (probed, untested)
}

#[derive(Clone, Debug)]
pub struct Config {
    pub nodes: Vec<Node>,
    pub token: String,
    pub port: u16,
    pub vni: u32,
    pub count: u32,
    /// How long to wait for probes to arrive after sending.
    pub timeout: Duration,
    /// A node whose agent does not answer is listed as untested (`--all-nodes`) instead of being
    /// an error (nodes named by hand).
    pub skip_unanswering: bool,
    /// `--mtu`: after the probes, search each pair's path MTU with sized Don't Fragment probes.
    pub mtu: bool,
}

impl Node {
    pub(crate) fn agent_addr(&self) -> AgentAddr {
        AgentAddr { label: self.label.clone(), address: self.agent }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairVerdict {
    Ok,
    /// Every probe reached the destination's interface, but whether its firewall let them through
    /// could not be read (its counters were unreadable): not a fault found, not an ok either.
    Unverified,
    PartialLoss,
    BlockedAtSource,
    LostInNetwork,
    DroppedAtDestination,
    /// Probes arrive, but the pod network's MTU (the source's vxlan device) does not fit in
    /// the largest packet the path carries (`--mtu`): pods' large packets are lost.
    PathMtuTooSmall,
    /// The pair could not be measured (an agent failed or refused a step): no verdict on the
    /// network, and the run could not check everything.
    Untested,
}

impl PairVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            PairVerdict::Ok => "ok",
            PairVerdict::Unverified => "unverified",
            PairVerdict::PartialLoss => "partial-loss",
            PairVerdict::BlockedAtSource => "blocked-at-source",
            PairVerdict::LostInNetwork => "lost-in-network",
            PairVerdict::DroppedAtDestination => "dropped-at-destination",
            PairVerdict::PathMtuTooSmall => "path-mtu-too-small",
            PairVerdict::Untested => "untested",
        }
    }

    pub fn health(self) -> Health {
        match self {
            PairVerdict::Ok | PairVerdict::Unverified => Health::Ok,
            PairVerdict::Untested => Health::CouldNotRun,
            _ => Health::Fault,
        }
    }
}

/// Whether the other UDP port of the destination was reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlUdp {
    Ok,
    Lost,
    /// The pair was not measured.
    NotMeasured,
}

/// How delivery past the destination's firewall is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Its firewall counters were read and no rule that can match the probes dropped them.
    Counters,
    /// Its firewall counters could not be read: see `delivery_note`.
    Unverified,
    /// Its kernel said so: it dropped the probes past every firewall, at the tunnel's socket
    /// (VXLAN_VNI_NOT_FOUND: no VTEP has the probes' VNI; NO_SOCKET: no VTEP listens).
    Kernel,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairReport {
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    /// The nodes' labels: their names from the API, or the NODE arguments as given.
    pub from_node: String,
    pub to_node: String,
    pub sent: u32,
    pub left_source: u32,
    pub arrived: u32,
    pub verdict: PairVerdict,
    /// `ok` when a datagram to another UDP port of the destination arrived, else `lost`.
    pub control_udp: ControlUdp,
    /// For probes that reached the destination's interface: how their delivery past its
    /// firewall is known.
    pub delivery: Option<Delivery>,
    /// Why delivery is unverified, when it is.
    pub delivery_note: Option<String>,
    /// Not measured: probes are one-way (the destination's VTEP swallows them).
    pub rtt_ms: Option<f64>,
    /// The firewall rule that dropped the probes, when one was found.
    pub rule: Option<String>,
    /// Why the destination's kernel dropped probes that reached its interface, when known: the
    /// kernel's own reason from skb:kfree_skb (`NETFILTER_DROP`, `UDP_CSUM`, ...), or `UDP_CSUM`
    /// from the checksum counter.
    pub drop_reason: Option<String>,
    /// The kernel function that dropped them, when traced (`nft_do_chain`, `ipt_do_table`, ...).
    pub drop_location: Option<String>,
    /// What the drop reason rests on, e.g. the counter that grew.
    pub evidence: Option<String>,
    pub diagnosis: String,
    /// With `--mtu`: the largest packet the path carries and what it leaves the pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<mtu::MtuReport>,
    /// The source node's vxlan device (the pod network's) as its agent saw it: its MTU and
    /// whether it offloads the transmit checksum; `null` when it has none (or did not say).
    pub source_vxlan_device: Option<VxlanDeviceSeen>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VxlanReport {
    pub probe: &'static str,
    pub port: u16,
    pub vni: u32,
    pub count: u32,
    pub verdict: Health,
    pub pairs: Vec<PairReport>,
    /// Nodes that were not probed (no agent answered, no IPv4 address), each with why.
    pub untested: Vec<UntestedNode>,
}

impl VxlanReport {
    /// A fault found anywhere wins; else pairs or nodes left untested mean the mesh could not be
    /// checked.
    pub fn health_of(pairs: &[PairReport], untested: &[UntestedNode]) -> Health {
        if pairs.iter().any(|p| p.verdict.health() == Health::Fault) {
            Health::Fault
        } else if !untested.is_empty() || pairs.iter().any(|p| p.verdict == PairVerdict::Untested) {
            Health::CouldNotRun
        } else {
            Health::Ok
        }
    }
}

/// Probes every ordered pair of `config.nodes`, all at once, through the agents over HTTP.
pub fn run(config: Config) -> Result<VxlanReport> {
    if config.nodes.len() < 2 && config.skip_unanswering {
        return Err(Error::could_not_run(
            "probing the cluster's nodes",
            format!("the API lists {} node(s) with an IPv4 InternalIP: a mesh needs two", config.nodes.len()),
        ));
    }
    if config.nodes.len() < 2 {
        return Err(Error::invalid("nodes", "give at least two nodes (their agents' addresses)"));
    }
    if config.count == 0 || config.count > MAX_COUNT {
        return Err(Error::invalid("--count", format!("between 1 and {MAX_COUNT}")));
    }
    if config.vni > crate::wire::vxlan::MAX_VNI {
        return Err(Error::invalid("--vni", format!("at most {}", crate::wire::vxlan::MAX_VNI)));
    }
    if config.port == 0 {
        return Err(Error::invalid("--port 0", "give the VXLAN port, e.g. 8472"));
    }
    let mut seen = std::collections::HashMap::new();
    for node in &config.nodes {
        if let Some(other) = seen.insert(node.agent, &node.label) {
            return Err(Error::invalid(
                format!("nodes {other} and {}", node.label),
                format!("both are the agent at {}: give each node once", node.agent),
            ));
        }
    }
    // Each pair in flight holds a connection at a time, and the pool keeps some idle: a third of
    // the open-file limit for pairs leaves room for the rest.
    let in_flight = (crate::net::raise_open_files_limit().saturating_sub(128) / 3).max(16) as usize;
    let runtime = crate::net::runtime("starting the vxlan runtime", Some(2))?;
    let agents = Arc::new(HttpAgents::new(config.token.clone(), Duration::from_secs(30))?);
    runtime.block_on(probe_within(agents, config, in_flight))
}

/// The driver on any [`AgentApi`]: every agent answers and takes the token before any probe is
/// sent, then every ordered pair is probed at once.
pub async fn probe<A: AgentApi>(agents: Arc<A>, config: Config) -> Result<VxlanReport> {
    probe_within(agents, config, usize::MAX >> 4).await
}

/// [`probe`] with at most `in_flight` pairs under way at once.
pub async fn probe_within<A: AgentApi>(
    agents: Arc<A>,
    mut config: Config,
    in_flight: usize,
) -> Result<VxlanReport> {
    let mut checks = tokio::task::JoinSet::new();
    for (index, node) in config.nodes.iter().cloned().enumerate() {
        let agents = agents.clone();
        checks.spawn(async move {
            (index, agents.call::<(), AgentHealth>(&node.agent_addr(), "/v1/health", None).await)
        });
    }
    let mut silent = Vec::new();
    while let Some(done) = checks.join_next().await {
        let (index, answer) = done.map_err(|e| Error::could_not_run("checking agents", e.to_string()))?;
        let node = &config.nodes[index];
        match answer {
            // Nodes from the API: an agent that says it runs on another node is not this node's.
            Ok(AgentHealth { node: Some(name), .. }) if config.skip_unanswering && name != node.label => {
                silent.push((index, format!("the agent at {} says it runs on node {name}", node.agent)))
            }
            Ok(_) => {}
            Err(e) if config.skip_unanswering => silent.push((index, format!("{e}; {DEPLOY_HINT}"))),
            Err(e) => return Err(e),
        }
    }
    silent.sort_by_key(|(index, _)| *index);
    let untested: Vec<UntestedNode> = silent
        .iter()
        .map(|(index, reason)| {
            let node = &config.nodes[*index];
            UntestedNode { node: node.label.clone(), ip: Some(node.ip), reason: reason.clone() }
        })
        .collect();
    let silent: Vec<usize> = silent.into_iter().map(|(index, _)| index).collect();
    config.nodes =
        config.nodes.into_iter().enumerate().filter(|(i, _)| !silent.contains(i)).map(|(_, n)| n).collect();
    if config.nodes.len() < 2 {
        // The deploy hint once, after every node's own reason.
        let hint = format!("; {DEPLOY_HINT}");
        let named: Vec<String> =
            untested.iter().map(|u| format!("{} ({})", u.node, u.reason.trim_end_matches(&hint))).collect();
        let any_hint = untested.iter().any(|u| u.reason.ends_with(&hint));
        return Err(Error::could_not_run(
            "probing the nodes",
            format!(
                "{} agent(s) answered, a mesh needs two; not probed: {}{}",
                config.nodes.len(),
                named.join("; "),
                if any_hint { hint.as_str() } else { "" }
            ),
        ));
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let (jobs, order): (Vec<batch::Job>, Vec<(usize, usize)>) =
        batch::mesh_jobs(&config.nodes, seed).into_iter().unzip();
    let mut judged: Vec<Option<Result<PairReport>>> = vec![None; jobs.len()];
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    // An agent at its caps (another driver, or the agents' own mesh, is using it) refuses some
    // entries as busy: those pairs go again in a later round, twice at most.
    for attempt in 0..3 {
        let mut busy = Vec::new();
        for wave in batch::waves(&jobs, &pending) {
            for (i, outcome) in
                batch::exchange_all(agents.as_ref(), &config, &jobs, &wave, ANSWER_WITHIN, in_flight).await
            {
                let job = &jobs[i];
                judged[i] = Some(match outcome {
                    Err(e) if e.is_busy() && attempt < 2 => {
                        busy.push(i);
                        continue;
                    }
                    Err(e) => Err(e),
                    Ok((sent, arrived)) => {
                        let mut pair = judge(&config, job.from.ip, job.to.ip, &sent, &arrived);
                        pair.from_node = job.from.label.clone();
                        pair.to_node = job.to.label.clone();
                        Ok(pair)
                    }
                });
            }
        }
        if busy.is_empty() {
            break;
        }
        pending = busy;
    }
    if config.mtu {
        search_mtus(&agents, &config, &jobs, &mut judged, in_flight).await;
    }
    let mut results = Vec::new();
    for (i, pair) in judged.into_iter().enumerate() {
        let (a, b) = order[i];
        // A pair an agent could not measure is untested, with why; the other pairs still count.
        let pair = match pair {
            Some(Ok(pair)) => pair,
            Some(Err(e)) => untested_pair(&config.nodes[a], &config.nodes[b], &e),
            None => untested_pair(
                &config.nodes[a],
                &config.nodes[b],
                &Error::could_not_run("probing the pair", "it was never probed"),
            ),
        };
        results.push(((a, b), pair));
    }
    results.sort_by_key(|(order, _)| *order);
    let pairs: Vec<PairReport> = results.into_iter().map(|(_, pair)| pair).collect();
    Ok(VxlanReport {
        probe: "vxlan",
        port: config.port,
        vni: config.vni,
        count: config.count,
        verdict: VxlanReport::health_of(&pairs, &untested),
        pairs,
        untested,
    })
}

/// How long an agent may take to answer a call of a round (its probes' sending time aside).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// What the driver may ask of one agent at once.
struct Slots {
    sends: Arc<tokio::sync::Semaphore>,
    expects: Arc<tokio::sync::Semaphore>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            sends: Arc::new(tokio::sync::Semaphore::new(MAX_SENDS)),
            expects: Arc::new(tokio::sync::Semaphore::new(MAX_OPEN)),
        }
    }
}

/// `--mtu`: each pair whose probes arrived has its path MTU searched, pairs at once within the
/// agents' caps (the source's send slots, the destination's expectations).
async fn search_mtus<A: AgentApi>(
    agents: &Arc<A>,
    config: &Config,
    jobs: &[batch::Job],
    judged: &mut [Option<Result<PairReport>>],
    in_flight: usize,
) {
    let slots: std::collections::HashMap<SocketAddr, Slots> =
        config.nodes.iter().map(|n| (n.agent, Slots::default())).collect();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(in_flight.min(tokio::sync::Semaphore::MAX_PERMITS)));
    let config = Arc::new(config.clone());
    let mut searches = tokio::task::JoinSet::new();
    for (i, job) in jobs.iter().enumerate() {
        if !matches!(&judged[i], Some(Ok(pair)) if pair.arrived > 0) {
            continue;
        }
        let (agents, config, job, in_flight) =
            (agents.clone(), config.clone(), job.clone(), in_flight.clone());
        let (sends, expects) = (slots[&job.from.agent].sends.clone(), slots[&job.to.agent].expects.clone());
        searches.spawn(async move {
            let _under_way = in_flight.acquire_owned().await.ok();
            // The source's send slot first, then the destination's expectation: a listener is
            // never opened long before its probes can go, and no two pairs wait on each other.
            let _send = sends.acquire_owned().await.ok();
            let _expect = expects.acquire_owned().await.ok();
            (i, search_mtu(agents.as_ref(), &config, &job.from, &job.to, job.probe_id).await)
        });
    }
    while let Some(done) = searches.join_next().await {
        let Ok((i, found)) = done else { continue };
        let job = &jobs[i];
        if let Some(Ok(pair)) = judged[i].as_mut() {
            match found {
                Ok(found) => add_mtu(pair, mtu::judge(job.from.ip, job.to.ip, found)),
                Err(e) => pair.diagnosis.push_str(&format!(" (path MTU not measured: {e})")),
            }
        }
    }
}

/// One round with one pair's agents (the MTU search's, each round sized by the last): the
/// destination expects probe `probe_id`, the source sends one probe per entry of `sizes`, and
/// after the timeout the destination says what arrived.
async fn exchange<A: AgentApi>(
    agents: &A,
    config: &Config,
    from: &Node,
    to: &Node,
    probe_id: u64,
    sizes: Vec<u16>,
) -> Result<(SendResponse, CollectResponse)> {
    let count = if sizes.is_empty() { config.count } else { sizes.len() as u32 };
    let window = batch::listen_window(config, batch::send_time(count, 1));
    let expect = ExpectRequest {
        probe_id,
        from: from.ip,
        to: Some(to.ip),
        port: config.port,
        vni: config.vni,
        window_ms: (window.as_millis() as u64).min(MAX_WINDOW_MS),
    };
    let (to_agent, from_agent) = (to.agent_addr(), from.agent_addr());
    let listening: ExpectResponse = patiently(|| agents.call(&to_agent, "/v1/expect", Some(&expect))).await?;
    let send = SendRequest {
        probe_id,
        to: to.ip,
        port: config.port,
        control_port: listening.control_port,
        vni: config.vni,
        count,
        sizes,
    };
    let sent: SendResponse = match patiently(|| agents.call(&from_agent, "/v1/send", Some(&send))).await {
        Ok(sent) => sent,
        Err(e) => {
            // Free the destination's expectation now, not at its expiry: it counts against its cap.
            let release = CollectRequest { probe_id };
            let _ = agents.call::<_, CollectResponse>(&to_agent, "/v1/collect", Some(&release)).await;
            return Err(e);
        }
    };
    tokio::time::sleep(config.timeout).await;
    let arrived: CollectResponse =
        agents.call(&to_agent, "/v1/collect", Some(&CollectRequest { probe_id })).await?;
    Ok((sent, arrived))
}

/// Searches the pair's path MTU (see [`mtu`]): rounds of sized probes, each size sent
/// [`mtu::COPIES`] times, until the bounds meet.
async fn search_mtu<A: AgentApi>(
    agents: &A,
    config: &Config,
    from: &Node,
    to: &Node,
    probe_id: u64,
) -> Result<mtu::Found> {
    let mut search = mtu::Search::new(api::MAX_PROBE_PACKET);
    let mut found = mtu::Found::default();
    while !search.done() && found.rounds < mtu::MAX_ROUNDS {
        found.rounds += 1;
        let sizes = search.sizes();
        let sent_sizes: Vec<u16> = sizes.iter().flat_map(|&s| [s; mtu::COPIES]).collect();
        found.probes += sent_sizes.len() as u32;
        // A probe id of its own per round: a late probe of one round never counts in the next.
        let round_id = probe_id ^ (u64::from(found.rounds) << 56);
        let (sent, arrived) = exchange(agents, config, from, to, round_id, sent_sizes.clone()).await?;
        let fate = |size: u16| {
            let copies = sent_sizes.iter().enumerate().filter(|(_, s)| **s == size).map(|(i, _)| i as u32);
            let seqs: Vec<u32> = copies.collect();
            if seqs.iter().any(|seq| arrived.arrived_seqs.contains(seq)) {
                mtu::Fate::Arrived
            } else if seqs.iter().any(|seq| sent.left_seqs.contains(seq)) {
                mtu::Fate::Lost
            } else {
                mtu::Fate::NotSent
            }
        };
        let tried: Vec<(u16, mtu::Fate)> = sizes.iter().map(|&s| (s, fate(s))).collect();
        search.narrow(&tried, sent.interface_mtu);
        found.interface_mtu = sent.interface_mtu.or(found.interface_mtu);
        found.vxlan_device = sent.vxlan_device.map(|d| (d.name, d.mtu)).or(found.vxlan_device);
        found.frag_needed = found.frag_needed.or(sent.frag_needed);
    }
    found.path_mtu = search.path_mtu();
    Ok(found)
}

/// Adds the MTU search's report to a pair: a pod network that does not fit in the path makes a
/// pair whose probes got through `path-mtu-too-small`.
fn add_mtu(pair: &mut PairReport, report: mtu::MtuReport) {
    if report.too_small && matches!(pair.verdict, PairVerdict::Ok | PairVerdict::Unverified) {
        pair.verdict = PairVerdict::PathMtuTooSmall;
        pair.diagnosis = report.finding.clone();
    }
    pair.mtu = Some(report);
}

/// A pair that could not be measured: why, and no counts.
fn untested_pair(from: &Node, to: &Node, why: &Error) -> PairReport {
    PairReport {
        from: from.ip,
        to: to.ip,
        from_node: from.label.clone(),
        to_node: to.label.clone(),
        sent: 0,
        left_source: 0,
        arrived: 0,
        verdict: PairVerdict::Untested,
        control_udp: ControlUdp::NotMeasured,
        delivery: None,
        delivery_note: None,
        rtt_ms: None,
        rule: None,
        drop_reason: None,
        drop_location: None,
        evidence: None,
        diagnosis: format!("not measured: {why}"),
        mtu: None,
        source_vxlan_device: None,
    }
}

/// Calls again while the agent says it is at its limits (429), pausing longer each time, up to
/// about 1.5 s in all: a busy agent delays a pair, it does not fail it.
async fn patiently<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(50);
    for _ in 0..5 {
        match call().await {
            Err(e) if e.is_busy() => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            done => return done,
        }
    }
    call().await
}

/// The first rule that grew by at least `missing` packets (the probes it would have to explain).
fn blamed(rules: &[GrownRule], missing: u32) -> Option<&GrownRule> {
    (missing > 0).then(|| rules.iter().find(|r| r.packets >= u64::from(missing))).flatten()
}

/// The pair's verdict and the sentence that says where packets die. A rule is blamed only when it
/// can match the probes (the agent filters) and its counter grew by at least the probes missing.
pub fn judge(
    config: &Config,
    from: Ipv4Addr,
    to: Ipv4Addr,
    sent: &SendResponse,
    arrived: &CollectResponse,
) -> PairReport {
    let port = config.port;
    let control_ok = arrived.control_arrived > 0;
    let never_left = sent.sent.saturating_sub(sent.left_source);
    let mut delivery = None;
    let mut delivery_note = None;
    let mut drop_reason = None;
    let mut evidence = None;
    let mut drop_location = None;
    // The destination's UDP checksum drops grew by at least the probes that reached it: its
    // kernel threw them away after the capture saw them.
    let bad_checksums =
        arrived.udp_csum_errors.filter(|n| arrived.arrived > 0 && *n >= u64::from(arrived.arrived));
    // What the destination's kernel said it dropped of these very probes (matched by packet).
    let traced = Traced::of(arrived, to);
    let (verdict, rule, diagnosis) = if sent.left_source == 0 {
        let rule = blamed(&sent.dropping_rules, never_left).map(|r| r.rule.clone());
        let cause = match (&rule, &sent.send_error) {
            (Some(rule), _) => format!("{from}'s own firewall drops it: {rule}"),
            (None, Some(e)) => {
                format!("{from}'s kernel refused to send it ({e}): check its OUTPUT rules and routes")
            }
            (None, None) => format!("check {from}'s OUTPUT firewall (iptables/nft) and routes"),
        };
        // The kernel's own answer for our own socket: sendto(2) failed for these very probes.
        evidence = sent.send_error.as_ref().map(|e| {
            format!("sendto(2) on {from} failed ({e}): its kernel refused the probes before they left (its netfilter output path, or an LSM or cgroup BPF program)")
        });
        (
            PairVerdict::BlockedAtSource,
            rule,
            format!("UDP {port} from {from} to {to} never left {from}: {cause}"),
        )
    } else if arrived.arrived == 0 {
        let diagnosis = if control_ok {
            format!(
                "UDP {port} from {from} to {to} is dropped in the network while other UDP passes: allow UDP {port} between nodes in the security group, NACL or firewall"
            )
        } else {
            format!(
                "all UDP from {from} to {to} is dropped in the network (UDP {port} and the control port): allow UDP (at least {port}) between nodes in the security group, NACL or firewall"
            )
        };
        (PairVerdict::LostInNetwork, None, diagnosis)
    } else if let Some(rule) = blamed(&arrived.dropping_rules, arrived.arrived) {
        delivery = Some(Delivery::Counters);
        if let Some(firewall) = traced.firewall() {
            (drop_reason, drop_location, evidence) = firewall.named();
        }
        (
            PairVerdict::DroppedAtDestination,
            Some(rule.rule.clone()),
            format!(
                "UDP {port} from {from} reached {to}'s interface but {to} dropped it: {} (counted {} of {} probes)",
                rule.rule, rule.packets, arrived.arrived
            ),
        )
    } else if let Some(tunnel) = traced.delivered() {
        // Past every firewall to the tunnel's socket: the kernel's word, whatever the counters.
        delivery = Some(Delivery::Kernel);
        delivery_note = arrived.counters_error.clone();
        (_, drop_location, evidence) = tunnel.named();
        (PairVerdict::Ok, None, format!("VXLAN on UDP {port} from {from} reaches {to}"))
    } else if let Some(firewall) = traced.firewall() {
        delivery = Some(Delivery::Kernel);
        (drop_reason, drop_location, evidence) = firewall.named();
        (
            PairVerdict::DroppedAtDestination,
            None,
            format!(
                "UDP {port} from {from} reached {to}'s interface and {to}'s firewall dropped it: the kernel says NETFILTER_DROP in {} for {} of {} probes, though no counted rule grew: look for a DROP rule for UDP {port} without a counter in {to}'s input path (nft list ruleset)",
                firewall.location, firewall.count, arrived.arrived
            ),
        )
    } else if let (Some(dropped), _) | (None, Some(dropped)) =
        (bad_checksums, traced.reason("UDP_CSUM").map(|d| u64::from(d.count)))
    {
        delivery = Some(Delivery::Counters);
        drop_reason = Some("UDP_CSUM".to_string());
        let counted = bad_checksums.map(|n| {
            format!(
                "{to}'s Udp InCsumErrors grew by {n} while {} probe(s) reached its interface",
                arrived.arrived
            )
        });
        let said = traced.reason("UDP_CSUM").map(|d| {
            drop_location = Some(d.location.clone());
            traced.words(&d)
        });
        evidence = Some([counted, said].into_iter().flatten().collect::<Vec<_>>().join("; "));
        (
            PairVerdict::DroppedAtDestination,
            None,
            format!(
                "UDP {port} from {from} reached {to}'s interface with a bad UDP checksum and {to}'s kernel dropped it ({}): something on the path or the sender's checksum offload breaks it; on the nodes' vxlan devices: ethtool -K flannel.1 tx-checksum-ip-generic off (or the CNI's option){}",
                match bad_checksums {
                    Some(_) => format!("Udp InCsumErrors grew by {dropped}"),
                    None => format!("the kernel says UDP_CSUM for {dropped}"),
                },
                match &sent.vxlan_device {
                    Some(d) if d.tx_checksum_offload == Some(true) => format!(
                        " ({from}'s {} has tx-checksum-ip-generic on: with a broken offload its own VXLAN traffic leaves like this)",
                        d.name
                    ),
                    _ => String::new(),
                }
            ),
        )
    } else if arrived.arrived < sent.sent {
        delivery =
            Some(if arrived.counters_error.is_some() { Delivery::Unverified } else { Delivery::Counters });
        delivery_note = arrived.counters_error.clone();
        (
            PairVerdict::PartialLoss,
            None,
            format!("{} of {} UDP {port} probes from {from} reached {to}: look for congestion, rate limits or MTU trouble on the path", arrived.arrived, sent.sent),
        )
    } else if let Some(other) = traced.other_drop() {
        delivery = Some(Delivery::Kernel);
        (drop_reason, drop_location, evidence) = other.named();
        (
            PairVerdict::DroppedAtDestination,
            None,
            format!(
                "UDP {port} from {from} reached {to}'s interface and {to}'s kernel dropped it: {} in {} ({} of {} probes)",
                other.reason, other.location, other.count, arrived.arrived
            ),
        )
    } else if let Some(why) = &arrived.counters_error {
        delivery = Some(Delivery::Unverified);
        // Which evidence there was: the counters failed, and the kernel was not asked (or had
        // nothing to say of these probes).
        delivery_note = Some(match &arrived.trace_error {
            Some(trace) => format!("{why}; the kernel's drop reasons were not traced: {trace}"),
            None => why.clone(),
        });
        (
            PairVerdict::Unverified,
            None,
            format!(
                "every UDP {port} probe from {from} reached {to}'s interface; whether {to}'s firewall let them through is unverified: {why}"
            ),
        )
    } else {
        delivery = Some(Delivery::Counters);
        (PairVerdict::Ok, None, format!("VXLAN on UDP {port} from {from} reaches {to}"))
    };
    PairReport {
        from,
        to,
        from_node: from.to_string(),
        to_node: to.to_string(),
        sent: sent.sent,
        left_source: sent.left_source,
        arrived: arrived.arrived,
        verdict,
        control_udp: if control_ok { ControlUdp::Ok } else { ControlUdp::Lost },
        delivery,
        delivery_note,
        rtt_ms: None,
        rule,
        drop_reason,
        drop_location,
        evidence,
        diagnosis,
        mtu: None,
        source_vxlan_device: sent.vxlan_device.clone(),
    }
}

/// The destination kernel's drops of a pair's probes, as its agent traced them. Each probe is
/// freed once, so more drops than probes that arrived means some are other packets that looked
/// alike (same length, an interface of the same name in another namespace): then a reason counts
/// only if it alone accounts for every probe.
struct Traced<'a> {
    drops: &'a [crate::net::drop_trace::KernelDrop],
    to: Ipv4Addr,
    arrived: u32,
}

/// Reasons that mean the probes got through every firewall to the UDP socket of a VTEP (or to
/// where one would be).
const PAST_THE_FIREWALLS: [&str; 3] = ["VXLAN_VNI_NOT_FOUND", "NO_SOCKET", "VXLAN_INVALID_HDR"];

impl<'a> Traced<'a> {
    fn of(arrived: &'a CollectResponse, to: Ipv4Addr) -> Traced<'a> {
        Traced { drops: arrived.kernel_drops.as_deref().unwrap_or(&[]), to, arrived: arrived.arrived }
    }

    /// Whether `drop` can be told to be the probes': every traced drop fits in the probes that
    /// arrived, or this one alone covers them.
    fn attributable(&self, drop: &crate::net::drop_trace::KernelDrop) -> bool {
        let total: u32 = self.drops.iter().map(|d| d.count).sum();
        total <= self.arrived || drop.count >= self.arrived
    }

    fn reason(&self, reason: &str) -> Option<Named<'_>> {
        let found = self.drops.iter().find(|d| d.reason == reason && self.attributable(d));
        found.map(|d| Named { drop: d, traced: self })
    }

    fn firewall(&self) -> Option<Named<'_>> {
        self.reason("NETFILTER_DROP")
    }

    /// A drop for any other reason than the firewall, a checksum or the tunnel's socket.
    fn other_drop(&self) -> Option<Named<'_>> {
        let other = |d: &&crate::net::drop_trace::KernelDrop| {
            !PAST_THE_FIREWALLS.contains(&d.reason.as_str())
                && d.reason != "NETFILTER_DROP"
                && d.reason != "UDP_CSUM"
        };
        self.drops
            .iter()
            .filter(|d| self.attributable(d))
            .find(other)
            .map(|d| Named { drop: d, traced: self })
    }

    /// Every probe that arrived was dropped at the tunnel's socket.
    fn delivered(&self) -> Option<Named<'_>> {
        let at_socket: u32 = self
            .drops
            .iter()
            .filter(|d| PAST_THE_FIREWALLS.contains(&d.reason.as_str()))
            .map(|d| d.count)
            .sum();
        let first = self.drops.iter().find(|d| PAST_THE_FIREWALLS.contains(&d.reason.as_str()))?;
        (self.arrived > 0 && at_socket >= self.arrived).then_some(Named { drop: first, traced: self })
    }

    fn words(&self, d: &crate::net::drop_trace::KernelDrop) -> String {
        format!(
            "{}'s kernel (skb:kfree_skb) dropped {} of the {} probes that reached its interface with {} in {}, matched by packet (its address, the probes' length, the interface)",
            self.to, d.count, self.arrived, d.reason, d.location
        )
    }
}

/// One traced drop, with what it says of the pair.
struct Named<'a> {
    drop: &'a crate::net::drop_trace::KernelDrop,
    traced: &'a Traced<'a>,
}

impl std::ops::Deref for Named<'_> {
    type Target = crate::net::drop_trace::KernelDrop;
    fn deref(&self) -> &Self::Target {
        self.drop
    }
}

impl Named<'_> {
    /// (drop_reason, drop_location, evidence) for the pair's report.
    fn named(&self) -> (Option<String>, Option<String>, Option<String>) {
        (Some(self.reason.clone()), Some(self.location.clone()), Some(self.traced.words(self.drop)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn config() -> Config {
        Config {
            nodes: vec![],
            token: "t".into(),
            port: 8472,
            vni: DEFAULT_VNI,
            count: 5,
            timeout: Duration::ZERO,
            skip_unanswering: false,
            mtu: false,
        }
    }

    fn rules(rules: &[(&str, u64)]) -> Vec<GrownRule> {
        rules.iter().map(|(r, p)| GrownRule { rule: r.to_string(), packets: *p }).collect()
    }

    fn sent(left: u32, dropping: &[(&str, u64)]) -> SendResponse {
        SendResponse {
            sent: 5,
            left_source: left,
            control_left: 5,
            send_error: None,
            dropping_rules: rules(dropping),
            counters_error: None,
            ..Default::default()
        }
    }

    fn arrived(n: u32, control: u32, dropping: &[(&str, u64)]) -> CollectResponse {
        CollectResponse {
            arrived: n,
            control_arrived: control,
            dropping_rules: rules(dropping),
            counters_error: None,
            udp_csum_errors: Some(0),
            ..Default::default()
        }
    }

    const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    const DROP_IN: &str = "-t filter -A INPUT -p udp -m udp --dport 8472 -j DROP";
    const DROP_OUT: &str = "-t filter -A OUTPUT -p udp -m udp --dport 8472 -j DROP";

    #[test]
    fn verdicts_follow_the_counts() {
        let c = config();
        let cases = [
            (sent(5, &[]), arrived(5, 5, &[]), PairVerdict::Ok, ControlUdp::Ok),
            (sent(5, &[]), arrived(3, 5, &[]), PairVerdict::PartialLoss, ControlUdp::Ok),
            (sent(0, &[(DROP_OUT, 5)]), arrived(0, 5, &[]), PairVerdict::BlockedAtSource, ControlUdp::Ok),
            (sent(5, &[]), arrived(0, 5, &[]), PairVerdict::LostInNetwork, ControlUdp::Ok),
            (sent(5, &[]), arrived(0, 0, &[]), PairVerdict::LostInNetwork, ControlUdp::Lost),
            (sent(5, &[]), arrived(5, 5, &[(DROP_IN, 5)]), PairVerdict::DroppedAtDestination, ControlUdp::Ok),
        ];
        for (s, a, verdict, control) in cases {
            let pair = judge(&c, A, B, &s, &a);
            assert_eq!((pair.verdict, pair.control_udp), (verdict, control), "{}", pair.diagnosis);
        }
        let lost = judge(&c, A, B, &sent(5, &[]), &arrived(0, 5, &[]));
        assert_eq!(
            lost.diagnosis,
            "UDP 8472 from 198.51.100.1 to 203.0.113.2 is dropped in the network while other UDP passes: allow UDP 8472 between nodes in the security group, NACL or firewall"
        );
        let blocked = judge(&c, A, B, &sent(0, &[(DROP_OUT, 5)]), &arrived(0, 5, &[]));
        assert_eq!(blocked.rule.as_deref(), Some(DROP_OUT));
        let dropped = judge(&c, A, B, &sent(5, &[]), &arrived(5, 5, &[(DROP_IN, 5)]));
        assert!(dropped.diagnosis.contains(DROP_IN));
        assert_eq!(dropped.delivery, Some(Delivery::Counters));
    }

    #[test]
    fn a_busy_rule_that_counted_fewer_than_the_missing_probes_is_not_blamed() {
        // On a busy node a DROP rule that can match grew by 2 while 5 probes went missing.
        let pair = judge(&config(), A, B, &sent(5, &[]), &arrived(5, 5, &[(DROP_IN, 2)]));
        assert_eq!((pair.verdict, pair.rule), (PairVerdict::Ok, None));
        let pair = judge(&config(), A, B, &sent(0, &[(DROP_OUT, 1)]), &arrived(0, 5, &[]));
        assert_eq!((pair.verdict, pair.rule), (PairVerdict::BlockedAtSource, None), "no rule named");
    }

    #[test]
    fn probes_the_destination_dropped_for_a_bad_checksum_are_not_ok() {
        // All five reached B's interface and B's UDP checksum drops grew by five.
        let mut a = arrived(5, 5, &[]);
        a.udp_csum_errors = Some(5);
        let pair = judge(&config(), A, B, &sent(5, &[]), &a);
        assert_eq!(pair.verdict, PairVerdict::DroppedAtDestination, "{}", pair.diagnosis);
        assert_eq!(pair.drop_reason.as_deref(), Some("UDP_CSUM"));
        assert!(pair.diagnosis.contains("bad UDP checksum"), "{}", pair.diagnosis);
        assert!(pair.evidence.unwrap().contains("InCsumErrors grew by 5 while 5 probe(s)"));
        // Fewer checksum drops than probes that arrived cannot explain them all: not blamed.
        a.udp_csum_errors = Some(2);
        assert_eq!(judge(&config(), A, B, &sent(5, &[]), &a).verdict, PairVerdict::Ok);
        // Unreadable (an older agent, or /proc/net/snmp hidden): as before.
        a.udp_csum_errors = None;
        assert_eq!(judge(&config(), A, B, &sent(5, &[]), &a).verdict, PairVerdict::Ok);
    }

    #[test]
    fn the_kernels_own_drop_reasons_decide_what_counters_cannot() {
        use crate::net::drop_trace::KernelDrop;
        let drop = |reason: &str, location: &str, count| KernelDrop {
            reason: reason.into(),
            location: location.into(),
            count,
        };
        // Counters unreadable, but the kernel dropped every probe at the tunnel's socket: past
        // every firewall, so ok (not unverified), and the kernel's word is the evidence.
        let mut a = arrived(5, 5, &[]);
        a.counters_error = Some("nft: not installed".into());
        a.kernel_drops = Some(vec![drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 5)]);
        let pair = judge(&config(), A, B, &sent(5, &[]), &a);
        assert_eq!(
            (pair.verdict, pair.delivery),
            (PairVerdict::Ok, Some(Delivery::Kernel)),
            "{}",
            pair.diagnosis
        );
        assert_eq!((pair.drop_reason, pair.drop_location.as_deref()), (None, Some("vxlan_rcv")));
        assert!(pair.evidence.unwrap().contains(
            "dropped 5 of the 5 probes that reached its interface with VXLAN_VNI_NOT_FOUND in vxlan_rcv"
        ));
        // An uncounted firewall rule: the kernel names the firewall.
        let mut a = arrived(5, 5, &[]);
        a.kernel_drops = Some(vec![drop("NETFILTER_DROP", "nft_do_chain", 5)]);
        let pair = judge(&config(), A, B, &sent(5, &[]), &a);
        assert_eq!(pair.verdict, PairVerdict::DroppedAtDestination);
        assert_eq!(
            (pair.drop_reason.as_deref(), pair.drop_location.as_deref()),
            (Some("NETFILTER_DROP"), Some("nft_do_chain"))
        );
        assert!(
            pair.diagnosis.contains("the kernel says NETFILTER_DROP in nft_do_chain for 5 of 5"),
            "{}",
            pair.diagnosis
        );
        // Some other reason is named as the kernel's.
        a.kernel_drops = Some(vec![drop("IP_RPFILTER", "ip_rcv_finish_core", 5)]);
        let pair = judge(&config(), A, B, &sent(5, &[]), &a);
        assert_eq!(
            (pair.verdict, pair.drop_reason.as_deref()),
            (PairVerdict::DroppedAtDestination, Some("IP_RPFILTER"))
        );
        // More drops than probes: another packet that looked alike (the lab's namespaces all have
        // an eth0) is not taken for one of ours when the socket drops account for every probe.
        let mut a = arrived(5, 5, &[]);
        a.kernel_drops =
            Some(vec![drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 5), drop("IP_INNOROUTES", "ip_error", 1)]);
        let pair = judge(&config(), A, B, &sent(5, &[]), &a);
        assert_eq!(
            (pair.verdict, pair.delivery),
            (PairVerdict::Ok, Some(Delivery::Kernel)),
            "{}",
            pair.diagnosis
        );
        // ... and no reason that covers only some of them is believed when drops outnumber probes.
        a.kernel_drops = Some(vec![
            drop("NETFILTER_DROP", "nft_do_chain", 3),
            drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 2),
            drop("IP_INNOROUTES", "ip_error", 1),
        ]);
        let pair = judge(&config(), A, B, &sent(5, &[]), &a);
        assert_eq!(
            (pair.verdict, pair.delivery),
            (PairVerdict::Ok, Some(Delivery::Counters)),
            "{}",
            pair.diagnosis
        );
        // Fewer socket drops than probes that arrived prove nothing: as without tracing.
        let mut a = arrived(5, 5, &[]);
        a.counters_error = Some("nft: not installed".into());
        a.kernel_drops = Some(vec![drop("NO_SOCKET", "__udp4_lib_rcv", 3)]);
        assert_eq!(judge(&config(), A, B, &sent(5, &[]), &a).verdict, PairVerdict::Unverified);
    }

    #[test]
    fn unreadable_counters_are_unverified_never_a_silent_ok() {
        let mut a = arrived(5, 5, &[]);
        a.counters_error = Some("iptables-nft-save: failed".into());
        let pair = judge(&config(), A, B, &sent(5, &[]), &a);
        assert_eq!((pair.verdict, pair.delivery), (PairVerdict::Unverified, Some(Delivery::Unverified)));
        assert!(pair.diagnosis.contains("unverified: iptables-nft-save: failed"), "{}", pair.diagnosis);
        assert_eq!(pair.verdict.health(), Health::Ok, "nothing wrong was found");
    }

    #[test]
    fn nodes_parse_with_default_port() {
        let n = parse_node("198.51.100.1", DEFAULT_AGENT_PORT).unwrap();
        assert_eq!((n.agent.port(), n.ip), (DEFAULT_AGENT_PORT, Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(parse_node("198.51.100.1:7000", 1).unwrap().agent.port(), 7000);
        assert!(parse_node("not a host!", 1).unwrap_err().is_bad_input());
    }

    /// Agents that answer from a script: per (agent, path), a JSON value or an error.
    #[derive(Default)]
    struct FakeAgents {
        answers: Mutex<HashMap<(SocketAddr, String), std::result::Result<serde_json::Value, String>>>,
        /// This many expect-many calls have every entry refused as busy (the agent at its cap).
        busy_expects: std::sync::atomic::AtomicU32,
    }

    impl FakeAgents {
        fn answer(
            self,
            agent: &str,
            path: &str,
            value: std::result::Result<serde_json::Value, &str>,
        ) -> Self {
            self.answers
                .lock()
                .unwrap()
                .insert((agent.parse().unwrap(), path.into()), value.map_err(str::to_string));
            self
        }
    }

    impl AgentApi for FakeAgents {
        async fn call<B: Serialize + Sync, R: serde::de::DeserializeOwned>(
            &self,
            agent: &AgentAddr,
            path: &str,
            body: Option<&B>,
        ) -> Result<R> {
            let body = serde_json::to_value(body).unwrap();
            if let Some((single, entries)) = batch::as_single_requests(path, &body) {
                let busy = path == "/v1/expect-many"
                    && self
                        .busy_expects
                        .fetch_update(
                            std::sync::atomic::Ordering::SeqCst,
                            std::sync::atomic::Ordering::SeqCst,
                            |n| n.checked_sub(1),
                        )
                        .is_ok();
                if busy {
                    let refused = serde_json::json!({"refused": {"status": 429, "error": "too many open expectations on this agent: try again"}});
                    return Ok(serde_json::from_value(serde_json::Value::Array(vec![
                        refused;
                        entries.len()
                    ]))
                    .unwrap());
                }
                // Each entry as the single route's answer: its value, or its error refused.
                let answer = self.answers.lock().unwrap().get(&(agent.address, single)).cloned();
                let entry = match answer {
                    Some(Ok(value)) => serde_json::json!({"ok": value}),
                    Some(Err(e)) => serde_json::json!({"refused": {"status": 503, "error": e}}),
                    None => {
                        return Err(Error::could_not_run(
                            format!("agent {} ({})", agent.label, agent.address),
                            "unreachable",
                        ))
                    }
                };
                return Ok(
                    serde_json::from_value(serde_json::Value::Array(vec![entry; entries.len()])).unwrap()
                );
            }
            let answer = self.answers.lock().unwrap().get(&(agent.address, path.to_string())).cloned();
            match answer {
                Some(Ok(value)) => Ok(serde_json::from_value(value).unwrap()),
                Some(Err(e)) => Err(Error::could_not_run(format!("agent {} {path}", agent.label), e)),
                None => Err(Error::could_not_run(
                    format!("agent {} ({})", agent.label, agent.address),
                    "unreachable",
                )),
            }
        }
    }

    fn two_nodes() -> Config {
        let node = |ip: &str| Node {
            label: ip.into(),
            agent: format!("{ip}:9473").parse().unwrap(),
            ip: ip.parse().unwrap(),
        };
        Config { nodes: vec![node("198.51.100.1"), node("203.0.113.2")], ..config() }
    }

    fn healthy(agents: FakeAgents) -> FakeAgents {
        use serde_json::json;
        let collect = json!({"arrived": 5, "control_arrived": 5, "dropping_rules": []});
        let send =
            json!({"sent": 5, "left_source": 5, "control_left": 5, "send_error": null, "dropping_rules": []});
        let expect = json!({"control_port": 40000, "interface": "eth0"});
        let mut agents = agents;
        for a in ["198.51.100.1:9473", "203.0.113.2:9473"] {
            for (path, value) in [
                ("/v1/health", json!({"version": "t"})),
                ("/v1/expect", expect.clone()),
                ("/v1/send", send.clone()),
            ] {
                if !agents.answers.lock().unwrap().contains_key(&(a.parse().unwrap(), path.to_string())) {
                    agents = agents.answer(a, path, Ok(value));
                }
            }
            if !agents.answers.lock().unwrap().contains_key(&(a.parse().unwrap(), "/v1/collect".to_string()))
            {
                agents = agents.answer(a, "/v1/collect", Ok(collect.clone()));
            }
        }
        agents
    }

    /// Agents on a path that carries 1,400-byte packets from interfaces of 1,500: plain probes
    /// all arrive, sized ones as their size allows. Each node has flannel.1 at 1450.
    #[derive(Default)]
    struct PathAgents {
        sizes: Mutex<HashMap<u64, Vec<u16>>>,
        sends: Mutex<u32>,
    }

    impl AgentApi for PathAgents {
        async fn call<B: Serialize + Sync, R: serde::de::DeserializeOwned>(
            &self,
            _: &AgentAddr,
            path: &str,
            body: Option<&B>,
        ) -> Result<R> {
            let body = serde_json::to_value(body).unwrap();
            let answer = match batch::as_single_requests(path, &body) {
                Some((single, entries)) => serde_json::Value::Array(
                    entries.iter().map(|e| serde_json::json!({"ok": self.single(&single, e)})).collect(),
                ),
                None => self.single(path, &body),
            };
            Ok(serde_json::from_value(answer).unwrap())
        }
    }

    impl PathAgents {
        fn single(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
            use serde_json::json;
            let id = body["probe_id"].as_u64().unwrap_or(0);
            let seqs = |sizes: &[u16], fits: u16| -> Vec<u32> {
                (0..sizes.len() as u32).filter(|&i| sizes[i as usize] <= fits).collect()
            };
            let answer = match path {
                "/v1/health" => json!({"version": "t"}),
                "/v1/expect" => json!({"control_port": 40000, "interface": "eth0", "interface_mtu": 1500}),
                "/v1/send" => {
                    *self.sends.lock().unwrap() += 1;
                    let sizes: Vec<u16> = serde_json::from_value(body["sizes"].clone()).unwrap_or_default();
                    let count = body["count"].as_u64().unwrap() as u32;
                    let left = if sizes.is_empty() { (0..count).collect() } else { seqs(&sizes, 1500) };
                    self.sizes.lock().unwrap().insert(id, sizes);
                    json!({"sent": count, "left_source": left.len(), "control_left": count, "dropping_rules": [],
                           "left_seqs": left, "interface_mtu": 1500,
                           "vxlan_device": {"name": "flannel.1", "mtu": 1450}})
                }
                "/v1/collect" => {
                    let sizes = self.sizes.lock().unwrap().remove(&id).unwrap_or_default();
                    let arrived = if sizes.is_empty() { (0..5).collect() } else { seqs(&sizes, 1400) };
                    json!({"arrived": arrived.len(), "control_arrived": 5, "dropping_rules": [], "arrived_seqs": arrived})
                }
                other => panic!("{other}"),
            };
            answer
        }
    }

    #[tokio::test]
    async fn the_mtu_search_finds_the_path_and_says_the_pod_network_does_not_fit() {
        let agents = Arc::new(PathAgents::default());
        let report = probe(agents.clone(), Config { mtu: true, ..two_nodes() }).await.unwrap();
        for pair in &report.pairs {
            let m = pair.mtu.as_ref().unwrap();
            assert_eq!((m.path_mtu, m.inner_mtu, m.vxlan_mtu), (Some(1400), Some(1350), Some(1450)), "{m:?}");
            assert!(m.too_small && m.black_hole, "{m:?}");
            assert!(m.rounds <= 4 && m.probes <= m.rounds * 32, "{m:?}");
            assert_eq!(pair.verdict, PairVerdict::PathMtuTooSmall);
            assert_eq!(pair.diagnosis, m.finding);
        }
        assert_eq!(report.verdict, Health::Fault);
        // Without --mtu: one send per pair, no search.
        let plain = Arc::new(PathAgents::default());
        let report = probe(plain.clone(), two_nodes()).await.unwrap();
        assert!(report.pairs.iter().all(|p| p.mtu.is_none() && p.verdict == PairVerdict::Ok));
        assert_eq!(*plain.sends.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn the_driver_judges_every_pair() {
        let report = probe(Arc::new(healthy(FakeAgents::default())), two_nodes()).await.unwrap();
        assert_eq!(report.pairs.len(), 2);
        assert_eq!(report.verdict, Health::Ok);
    }

    #[tokio::test]
    async fn a_capture_that_failed_on_an_agent_leaves_the_pair_untested_naming_it_never_lost() {
        let agents = FakeAgents::default().answer(
            "203.0.113.2:9473",
            "/v1/collect",
            Err("capturing on eth0: the capture thread failed"),
        );
        let report = probe(Arc::new(healthy(agents)), two_nodes()).await.unwrap();
        let failed = report.pairs.iter().find(|p| p.to == Ipv4Addr::new(203, 0, 113, 2)).unwrap();
        assert_eq!((failed.verdict, failed.control_udp), (PairVerdict::Untested, ControlUdp::NotMeasured));
        assert!(
            failed
                .diagnosis
                .contains("agent 203.0.113.2 (203.0.113.2:9473) /v1/collect-many: capturing on eth0"),
            "{}",
            failed.diagnosis
        );
        let other = report.pairs.iter().find(|p| p.to == Ipv4Addr::new(198, 51, 100, 1)).unwrap();
        assert_eq!(other.verdict, PairVerdict::Ok, "the other direction still counts");
        assert_eq!(report.verdict, Health::CouldNotRun, "exit 3: not everything could be checked");
    }

    #[tokio::test(start_paused = true)]
    async fn entries_refused_as_busy_go_again_in_a_later_round_and_fail_only_if_they_stay_busy() {
        let agents = healthy(FakeAgents::default());
        // Both destinations at their cap in the first round: the second takes them.
        agents.busy_expects.store(2, std::sync::atomic::Ordering::SeqCst);
        let report = probe(Arc::new(agents), two_nodes()).await.unwrap();
        assert!(report.pairs.iter().all(|p| p.verdict == PairVerdict::Ok), "{:?}", report.pairs);
        // Busy every time: untested after three rounds, saying why, never a network verdict.
        let agents = healthy(FakeAgents::default());
        agents.busy_expects.store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
        let agents = Arc::new(agents);
        let report = probe(agents.clone(), two_nodes()).await.unwrap();
        for pair in &report.pairs {
            assert_eq!(pair.verdict, PairVerdict::Untested);
            assert!(
                pair.diagnosis.contains("/v1/expect-many: too many open expectations"),
                "{}",
                pair.diagnosis
            );
        }
        assert_eq!(
            u32::MAX - agents.busy_expects.load(std::sync::atomic::Ordering::SeqCst),
            6,
            "2 destinations, 3 rounds"
        );
        assert_eq!(report.verdict, Health::CouldNotRun);
    }

    #[tokio::test]
    async fn an_agent_that_does_not_answer_is_named() {
        let agents = healthy(FakeAgents::default());
        agents.answers.lock().unwrap().retain(|(a, _), _| a.ip() != "203.0.113.2".parse::<IpAddr>().unwrap());
        let err = probe(Arc::new(agents), two_nodes()).await.unwrap_err();
        assert!(err.to_string().contains("agent 203.0.113.2 (203.0.113.2:9473): unreachable"), "{err}");
    }

    #[tokio::test]
    async fn with_all_nodes_a_node_without_an_agent_is_named_untested_and_the_rest_probed() {
        let agents = healthy(FakeAgents::default());
        let mut config = two_nodes();
        config.skip_unanswering = true;
        config.nodes.push(Node {
            label: "node-c".into(),
            agent: "192.0.2.3:9473".parse().unwrap(),
            ip: "192.0.2.3".parse().unwrap(),
        });
        let report = probe(Arc::new(agents), config.clone()).await.unwrap();
        assert_eq!(report.pairs.len(), 2, "only the two nodes with agents");
        assert_eq!(report.untested.len(), 1);
        assert_eq!(report.untested[0].node, "node-c");
        assert!(
            report.untested[0].reason.contains("kubectl apply -k deploy/kubernetes/"),
            "{:?}",
            report.untested
        );
        assert_eq!(report.verdict, Health::CouldNotRun, "a mesh with a node unchecked is not ok");

        // One answering agent is not a mesh: an error naming the silent ones.
        config.nodes.remove(0);
        let err = probe(Arc::new(healthy(FakeAgents::default())), config).await.unwrap_err();
        assert!(
            err.to_string().contains("not probed: node-c (agent node-c (192.0.2.3:9473): unreachable"),
            "{err}"
        );
        assert_eq!(err.to_string().matches(DEPLOY_HINT).count(), 1, "the hint once: {err}");
    }

    #[tokio::test]
    async fn an_agent_that_names_another_node_is_not_taken_for_this_one() {
        use serde_json::json;
        let agents = healthy(FakeAgents::default()).answer(
            "203.0.113.2:9473",
            "/v1/health",
            Ok(json!({"version": "t", "node": "somewhere-else"})),
        );
        let mut config = two_nodes();
        config.skip_unanswering = true;
        config.nodes[1].label = "node-b".into();
        let err = probe(Arc::new(agents), config).await.unwrap_err();
        assert!(
            err.to_string().contains(
                "not probed: node-b (the agent at 203.0.113.2:9473 says it runs on node somewhere-else)"
            ),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_agent_delays_a_pair_and_fails_it_only_if_it_stays_busy() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let busy =
            || Error::Busy { op: "agent b /v1/expect".into(), detail: "too many open expectations".into() };
        let calls = AtomicU32::new(0);
        let answer = patiently(|| async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(busy())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!((answer.unwrap(), calls.load(Ordering::SeqCst)), (7, 4));

        let calls = AtomicU32::new(0);
        let answer: Result<u32> = patiently(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(busy())
        })
        .await;
        assert!(answer.unwrap_err().is_busy());
        assert_eq!(calls.load(Ordering::SeqCst), 6, "five pauses, then the last answer stands");

        // Any other error is not retried.
        let calls = AtomicU32::new(0);
        let answer: Result<u32> = patiently(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::could_not_run("agent b", "unreachable"))
        })
        .await;
        assert!(!answer.unwrap_err().is_busy());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn cluster_nodes_become_targets_by_internal_ip() {
        use crate::k8s::ClusterNode;
        let nodes = [
            ClusterNode {
                name: "cp-1".into(),
                internal_ip: Some("192.0.2.1".parse().unwrap()),
                control_plane: true,
            },
            ClusterNode {
                name: "v6-only".into(),
                internal_ip: Some("2001:db8::2".parse().unwrap()),
                control_plane: false,
            },
            ClusterNode { name: "new".into(), internal_ip: None, control_plane: false },
        ];
        let (probed, untested) = nodes_from_cluster(&nodes, 9999);
        assert_eq!(
            probed,
            vec![Node {
                label: "cp-1".into(),
                agent: "192.0.2.1:9999".parse().unwrap(),
                ip: "192.0.2.1".parse().unwrap()
            }]
        );
        let names: Vec<&str> = untested.iter().map(|u| u.node.as_str()).collect();
        assert_eq!(names, ["v6-only", "new"]);
    }
}
