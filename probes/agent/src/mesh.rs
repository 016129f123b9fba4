//! `netprobe agent --mesh-every`: the agent probes, every period, each peer as `netprobe vxlan`
//! probes a pair (this node -> the peer, the peer's agent capturing) and records the outcomes in
//! its [`Metrics`]. All peers go in one round of `-many` calls (so the agent and each peer read
//! their firewall counters a few times a round, not a few times per pair); a peer that does not
//! answer a call within [`ANSWER_WITHIN`] is untested and delays the rest by that at most; a
//! round starts only when the last one is done; agents start at different offsets within the
//! period (from a hash of their name), so N agents do not fire at once.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use netprobe_probes::cluster::ApiConfig;
use netprobe_probes::net::interface::NodeFacts;
use netprobe_probes::vxlan::batch::{self, Job};
use netprobe_probes::vxlan::{nodes_from_cluster, AgentApi, Config, Node};

use crate::metrics::{Metrics, Outcome};

/// Where the peers come from.
#[derive(Clone, Debug)]
pub enum Peers {
    /// `--peers ADDR,...`: fixed.
    Fixed(Vec<Node>),
    /// `--peers-from-api`: every Node's InternalIP, read again each round (this node left out).
    FromApi { api: ApiConfig, agent_port: u16 },
}

#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub every: Duration,
    pub peers: Peers,
    /// This node's label in the metrics (its name, else its address).
    pub me: String,
    /// This agent's own address, for the sends it asks of itself.
    pub me_agent: SocketAddr,
    pub port: u16,
    pub vni: u32,
    pub count: u32,
    /// How long the peer listens after the probes were sent.
    pub timeout: Duration,
    /// `--mesh-sample K`: K peers a round, a window moving on by K each round (`None`: all).
    pub sample: Option<usize>,
}

/// A peer's agent that has not answered one of a round's calls within this is untested that round.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// The node name a peer's agent gave is asked again after this.
const NAME_FRESHNESS: Duration = Duration::from_secs(300);

impl MeshConfig {
    /// This agent's offset within the period: spread by name, the same on every start.
    pub fn stagger(&self) -> Duration {
        let period = self.every.as_millis().max(1) as u64;
        Duration::from_millis(self.name_hash() % period)
    }

    fn name_hash(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.me.hash(&mut hasher);
        hasher.finish()
    }

    fn probe_config(&self) -> Config {
        Config {
            nodes: Vec::new(),
            token: String::new(),
            port: self.port,
            vni: self.vni,
            count: self.count,
            timeout: self.timeout,
            skip_unanswering: true,
            mtu: false,
        }
    }
}

/// Runs rounds forever (the agent's runtime ends it).
pub async fn run<A: AgentApi, F: NodeFacts>(
    agents: Arc<A>,
    facts: Arc<F>,
    config: MeshConfig,
    metrics: Arc<Metrics>,
) {
    tokio::time::sleep(config.stagger()).await;
    let mut ticks = tokio::time::interval(config.every);
    // A round longer than the period delays the next one; rounds never overlap.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers: Vec<Node> = Vec::new();
    // The name each peer's agent gave (its NODE_NAME): the metrics name peers by it, so that
    // from and to agree when the peers were given by address.
    // Each is asked again after NAME_FRESHNESS (a node replaced may come back on the same address).
    let mut names: HashMap<SocketAddr, (String, Instant)> = Default::default();
    let mut rounds = 0u64;
    // The label each peer's series have now: a peer first named by its address (its agent did
    // not answer for its name yet) and then by its name must not leave the old series behind.
    let mut labels: HashMap<SocketAddr, String> = Default::default();
    loop {
        ticks.tick().await;
        match current_peers(&config, facts.as_ref()).await {
            Ok(now) => {
                for gone in peers.iter().filter(|p| !now.iter().any(|n| n.agent == p.agent)) {
                    if let Some(label) = labels.remove(&gone.agent) {
                        metrics.forget_pair(&config.me, &label);
                    }
                }
                peers = now;
            }
            // The API is away: probe the peers it gave last time.
            Err(e) => eprintln!("netprobe agent: mesh: keeping the last peers: {e}"),
        }
        let started = Instant::now();
        let probed = sampled(&peers, config.sample, rounds, config.name_hash());
        rounds += 1;
        // A name older than NAME_FRESHNESS is asked again, and labels the peer until answered.
        let known: HashMap<SocketAddr, String> = names
            .iter()
            .filter(|(_, (_, learned))| learned.elapsed() < NAME_FRESHNESS)
            .map(|(agent, (name, _))| (*agent, name.clone()))
            .collect();
        for (peer, name, outcome) in round(&agents, facts.as_ref(), &config, &probed, &known).await {
            if let Some(name) = name {
                if !known.contains_key(&peer.agent) {
                    names.insert(peer.agent, (name, Instant::now()));
                }
            }
            let label = names.get(&peer.agent).map_or(&peer.label, |(name, _)| name).clone();
            relabel(&metrics, &config.me, &mut labels, peer.agent, &label);
            metrics.record_pair(&config.me, &label, outcome);
        }
        metrics.record_round(started.elapsed(), SystemTime::now());
        // A round is a burst of allocations on many threads: what it freed goes back to the kernel.
        netprobe_probes::net::memory::give_back();
    }
}

/// Records that `peer`'s series are labelled `label` from now on, forgetting the ones under the
/// label it had before (a series nobody updates would show its last value for ever).
fn relabel(
    metrics: &Metrics,
    me: &str,
    labels: &mut HashMap<SocketAddr, String>,
    peer: SocketAddr,
    label: &str,
) {
    if let Some(old) = labels.insert(peer, label.to_string()) {
        if old != label {
            metrics.forget_pair(me, &old);
        }
    }
}

async fn current_peers<F: NodeFacts>(config: &MeshConfig, facts: &F) -> netprobe_probes::Result<Vec<Node>> {
    match &config.peers {
        // The same list may be given to every node: this node is left out of its own.
        Peers::Fixed(nodes) => {
            let own = facts.addresses();
            Ok(nodes.iter().filter(|p| !own.contains(&p.ip)).cloned().collect())
        }
        Peers::FromApi { api, agent_port } => {
            let nodes = tokio::time::timeout(Duration::from_secs(10), netprobe_k8s::nodes(api))
                .await
                .map_err(|_| {
                    netprobe_probes::Error::could_not_run(
                        "listing nodes",
                        "the API did not answer within 10 s",
                    )
                })??;
            let own = facts.addresses();
            let (peers, _) = nodes_from_cluster(&nodes, *agent_port);
            Ok(peers.into_iter().filter(|p| !own.contains(&p.ip)).collect())
        }
    }
}

/// One round: every peer at once (`batch::exchange_all`: one expect per peer, one send of this
/// node's probes to all of them, one collect per peer). A peer whose agent has not answered a call
/// within [`ANSWER_WITHIN`] is untested this round and holds the others back no longer than that.
/// Each peer comes back with the node name its agent gave (or `known` has for it), if any.
pub async fn round<A: AgentApi, F: NodeFacts>(
    agents: &Arc<A>,
    facts: &F,
    config: &MeshConfig,
    peers: &[Node],
    known: &HashMap<SocketAddr, String>,
) -> Vec<(Node, Option<String>, Outcome)> {
    let seed =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let probe_config = config.probe_config();
    // Each agent walks the peers from its own place in the list, so that agents whose rounds
    // overlap do not all ask the first peers first.
    let start = if peers.is_empty() { 0 } else { (config.name_hash() % peers.len() as u64) as usize };
    let walk: Vec<(usize, &Node)> = peers.iter().enumerate().cycle().skip(start).take(peers.len()).collect();
    let mut jobs = Vec::new();
    let mut job_of = vec![None; peers.len()];
    for &(index, peer) in &walk {
        let Some(ip) = facts.address_towards(peer.ip) else { continue };
        job_of[index] = Some(jobs.len());
        let from = Node { label: config.me.clone(), agent: config.me_agent, ip };
        let probe_id = seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        jobs.push(Job { from, to: peer.clone(), probe_id });
    }
    // The names come beside the probes: asking first would hold every pair back for a slow one.
    // A name known (and fresh) is not asked again.
    let names = futures_util::future::join_all(peers.iter().map(|peer| async move {
        if let Some(name) = known.get(&peer.agent) {
            return Some(name.clone());
        }
        let agent = peer.agent_addr();
        let asked = agents.health(&agent);
        tokio::time::timeout(ANSWER_WITHIN, asked)
            .await
            .ok()
            .and_then(|answer| answer.ok())
            .and_then(|h| h.node)
    }));
    let all: Vec<usize> = (0..jobs.len()).collect();
    let exchanged = async {
        let mut exchanged: Vec<Option<batch::Exchanged>> = vec![None; jobs.len()];
        // At most MAX_BATCH peers a call: more peers go in further rounds.
        for wave in batch::waves(&jobs, &all) {
            for (i, outcome) in
                batch::exchange_all(agents.as_ref(), &probe_config, &jobs, &wave, ANSWER_WITHIN, usize::MAX)
                    .await
            {
                exchanged[i] = Some(outcome);
            }
        }
        // A peer whose agent does not answer is untested, not a network fault.
        batch::judge_all(&probe_config, &jobs, exchanged)
            .into_iter()
            .map(|pair| {
                let pair = pair?.ok()?;
                Some(Outcome::Judged { verdict: pair.verdict, sent: pair.sent, arrived: pair.arrived })
            })
            .collect::<Vec<Option<Outcome>>>()
    };
    let (names, mut outcomes) = tokio::join!(names, exchanged);
    peers
        .iter()
        .zip(names)
        .enumerate()
        .map(|(index, (peer, name))| {
            let outcome = job_of[index].and_then(|j| outcomes[j].take()).unwrap_or(Outcome::Untested);
            (peer.clone(), name, outcome)
        })
        .collect()
}

/// The peers of round number `round`: all of them, or `sample` of them, a window over the list
/// that starts at `offset` (this agent's own place) and moves on by `sample` each round, so every
/// peer comes once in each ceil(len / sample) rounds.
pub fn sampled(peers: &[Node], sample: Option<usize>, round: u64, offset: u64) -> Vec<Node> {
    match sample {
        Some(k) if k < peers.len() => {
            let len = peers.len() as u64;
            let start = (offset % len + (round % len) * k as u64) % len;
            (0..k as u64).map(|i| peers[((start + i) % len) as usize].clone()).collect()
        }
        _ => peers.to_vec(),
    }
}

/// `ADDR[:PORT]` peers as given to `--peers`, labelled by what was written.
pub fn parse_peers(text: &str, agent_port: u16) -> netprobe_probes::Result<Vec<Node>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| netprobe_probes::vxlan::parse_node(p, agent_port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe_probes::net::interface::VxlanDevice;
    use netprobe_probes::vxlan::api::AgentHealth;
    use netprobe_probes::vxlan::client::fake::FakeAgents;
    use netprobe_probes::vxlan::PairVerdict;
    use std::net::Ipv4Addr;

    /// This node's address in the tests.
    const ME: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    /// Agents where one peer answers, one never does (its calls hang), one is gone.
    fn scripted() -> Arc<FakeAgents> {
        Arc::new(FakeAgents {
            health: Box::new(|agent, _| {
                Ok(AgentHealth { version: "t".into(), node: Some(format!("node-{}", agent.label)) })
            }),
            hung: ["slow".to_string()].into(),
            gone: ["gone".to_string()].into(),
            ..FakeAgents::default()
        })
    }

    struct Facts;
    impl NodeFacts for Facts {
        fn addresses(&self) -> Vec<Ipv4Addr> {
            vec![ME]
        }
        fn vxlan_devices(&self) -> Option<Vec<VxlanDevice>> {
            Some(vec![])
        }
        fn address_towards(&self, _: Ipv4Addr) -> Option<Ipv4Addr> {
            Some(ME)
        }
    }

    fn node(label: &str, ip: &str) -> Node {
        Node { label: label.into(), agent: format!("{ip}:9473").parse().unwrap(), ip: ip.parse().unwrap() }
    }

    fn config(peers: Vec<Node>) -> MeshConfig {
        MeshConfig {
            every: Duration::from_secs(10),
            peers: Peers::Fixed(peers),
            me: "node-a".into(),
            me_agent: "198.51.100.1:9473".parse().unwrap(),
            port: 8472,
            vni: netprobe_probes::vxlan::DEFAULT_VNI,
            count: 5,
            timeout: Duration::from_secs(1),
            sample: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_peer_is_untested_and_holds_back_the_others_no_longer_than_the_answer_deadline() {
        let peers = vec![node("fine", "203.0.113.2"), node("slow", "192.0.2.3"), node("gone", "192.0.2.4")];
        let config = config(peers.clone());
        let started = tokio::time::Instant::now();
        let mut outcomes: Vec<(String, Option<String>, Outcome)> =
            round(&scripted(), &Facts, &config, &peers, &HashMap::new())
                .await
                .into_iter()
                .map(|(peer, name, outcome)| (peer.label, name, outcome))
                .collect();
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        let judged = Outcome::Judged { verdict: PairVerdict::Ok, sent: 5, arrived: 5 };
        assert_eq!(
            outcomes,
            [
                ("fine".to_string(), Some("node-fine".to_string()), judged),
                ("gone".to_string(), None, Outcome::Untested),
                ("slow".to_string(), None, Outcome::Untested),
            ]
        );
        // The round lasted the slow peer's answer deadline and the probes' timeout, not its hour
        // (the clock is paused and jumps).
        assert_eq!(started.elapsed(), ANSWER_WITHIN + config.timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_whose_name_is_known_is_not_asked_for_it() {
        let peers = vec![node("fine", "203.0.113.2")];
        let known: HashMap<SocketAddr, String> = [(peers[0].agent, "node-known".to_string())].into();
        let outcomes = round(&scripted(), &Facts, &config(peers.clone()), &peers, &known).await;
        // The fake's health would say node-fine.
        assert_eq!(outcomes[0].1.as_deref(), Some("node-known"));
    }

    #[test]
    fn agents_start_spread_over_the_period() {
        let mut offsets: Vec<Duration> =
            (0..50).map(|i| MeshConfig { me: format!("node-{i}"), ..config(vec![]) }.stagger()).collect();
        assert!(offsets.iter().all(|o| *o < Duration::from_secs(10)));
        offsets.sort();
        offsets.dedup();
        assert!(offsets.len() > 45, "50 names, nearly 50 different start times: {offsets:?}");
    }

    #[test]
    fn a_sample_moves_on_each_round_and_covers_every_peer() {
        let peers: Vec<Node> = (1..=10).map(|i| node(&format!("p{i}"), &format!("192.0.2.{i}"))).collect();
        assert_eq!(sampled(&peers, None, 7, 3).len(), 10, "no sample: every peer");
        assert_eq!(sampled(&peers, Some(20), 7, 3).len(), 10, "a sample wider than the peers: every peer");
        // 4 of 10 a round: three rounds cover all ten, each round's four distinct.
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            let some = sampled(&peers, Some(4), round, 5);
            let labels: std::collections::HashSet<_> = some.iter().map(|p| p.label.clone()).collect();
            assert_eq!(labels.len(), 4, "{labels:?}");
            seen.extend(labels);
        }
        assert_eq!(seen.len(), 10);
        assert_ne!(
            sampled(&peers, Some(4), 0, 5)[0].label,
            sampled(&peers, Some(4), 0, 6)[0].label,
            "its own place"
        );
    }

    #[test]
    fn a_peer_first_named_by_address_then_by_name_leaves_no_series_behind() {
        let metrics = Metrics::default();
        let mut labels = HashMap::new();
        let peer: SocketAddr = "203.0.113.2:9473".parse().unwrap();
        let ok = Outcome::Judged { verdict: PairVerdict::Ok, sent: 5, arrived: 5 };
        relabel(&metrics, "node-a", &mut labels, peer, "203.0.113.2");
        metrics.record_pair("node-a", "203.0.113.2", ok);
        relabel(&metrics, "node-a", &mut labels, peer, "node-b");
        metrics.record_pair("node-a", "node-b", ok);
        let text = metrics.encode();
        assert!(text.contains(r#"netprobe_vxlan_pair_up{from="node-a",to="node-b"} 1"#), "{text}");
        assert!(!text.contains(r#"pair_up{from="node-a",to="203.0.113.2"}"#), "{text}");
        assert!(!text.contains(r#"pair_verdict{from="node-a",to="203.0.113.2""#), "{text}");
    }

    #[test]
    fn peers_parse_with_the_agents_port() {
        let peers = parse_peers("203.0.113.2, 192.0.2.3:7000", 9473).unwrap();
        assert_eq!(peers[0].agent, "203.0.113.2:9473".parse().unwrap());
        assert_eq!(peers[1].agent, "192.0.2.3:7000".parse().unwrap());
        assert!(parse_peers("not a host!", 9473).is_err());
    }
}
