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
pub mod judge;
pub mod mesh;
pub mod metrics;
pub mod mtu;
pub mod report;
pub mod rules;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::net::agent_client::{AgentAddr, AgentApi, HttpAgents};
use crate::{Error, Result};
use api::*;
pub use report::*;

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
    let mut exchanged: Vec<Option<batch::Exchanged>> = vec![None; jobs.len()];
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    // An agent at its caps (another driver, or the agents' own mesh, is using it) refuses some
    // entries as busy, and a lossy network breaks a call now and then: those pairs go again in a
    // later round, twice at most, before they are called untested.
    for attempt in 0..3 {
        let mut busy = Vec::new();
        for wave in batch::waves(&jobs, &pending) {
            for (i, outcome) in
                batch::exchange_all(agents.as_ref(), &config, &jobs, &wave, ANSWER_WITHIN, in_flight).await
            {
                exchanged[i] = Some(match outcome {
                    Err(e) if e.is_transient() && attempt < 2 => {
                        busy.push(i);
                        continue;
                    }
                    outcome => outcome,
                });
            }
        }
        if busy.is_empty() {
            break;
        }
        pending = busy;
    }
    // Each pair is judged with what every agent said of its devices: the overlay as a whole.
    let mut judged = batch::judge_all(&config, &jobs, exchanged);
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
        // A change seen in any round stays said.
        found.route_cache = match (found.route_cache.take(), sent.route_cache) {
            (Some(seen), _) if seen != "unchanged" => Some(seen),
            (earlier, now) => now.or(earlier),
        };
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
        arrived_on: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;
    use serde::Serialize;
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
        /// This many collect-many calls break on the way (a lost packet the connection did not
        /// survive).
        broken_collects: std::sync::atomic::AtomicU32,
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
            let take = |count: &std::sync::atomic::AtomicU32| {
                use std::sync::atomic::Ordering::SeqCst;
                count.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
            };
            if path == "/v1/collect-many" && take(&self.broken_collects) {
                return Err(Error::Unreachable {
                    op: format!("agent {} ({})", agent.label, agent.address),
                    detail: "unreachable (connection reset by peer)".into(),
                });
            }
            if let Some((single, entries)) = batch::as_single_requests(path, &body) {
                if path == "/v1/expect-many" && take(&self.busy_expects) {
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
    async fn a_call_the_network_broke_is_measured_again_never_left_untested() {
        // Both collects of the first round lose their connection (30% loss on TCP does this
        // now and then): the pairs go again and are judged.
        let agents = healthy(FakeAgents::default());
        agents.broken_collects.store(2, std::sync::atomic::Ordering::SeqCst);
        let report = probe(Arc::new(agents), two_nodes()).await.unwrap();
        assert!(report.pairs.iter().all(|p| p.verdict == PairVerdict::Ok), "{:?}", report.pairs);
        // Broken every time: untested after three rounds, naming the broken call.
        let agents = healthy(FakeAgents::default());
        agents.broken_collects.store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
        let report = probe(Arc::new(agents), two_nodes()).await.unwrap();
        for pair in &report.pairs {
            assert_eq!(pair.verdict, PairVerdict::Untested);
            assert!(pair.diagnosis.contains("connection reset by peer"), "{}", pair.diagnosis);
        }
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
