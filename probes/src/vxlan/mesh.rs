//! `netprobe agent --mesh-every`: the agent probes, every period, each peer as `netprobe vxlan`
//! probes a pair (this node -> the peer, the peer's agent capturing) and records the outcomes in
//! its [`Metrics`]. Each pair has a deadline of its own, so one slow peer never delays the rest;
//! a round starts only when the last one is done; agents start at different offsets within the
//! period (from a hash of their name), so N agents do not fire at once; this agent asks itself for
//! no more sends at once than its own cap.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::api::{AgentHealth, MAX_SENDS, SEND_GAP_MS};
use super::metrics::{Metrics, Outcome};
use super::{nodes_from_cluster, probe_pair, Config, Node};
use crate::k8s::{self, ApiConfig};
use crate::net::agent_client::AgentApi;
use crate::net::interface::NodeFacts;

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
}

impl MeshConfig {
    /// A pair that takes longer than this is untested this round: the probes' window, and room for
    /// the three calls it makes.
    pub fn pair_deadline(&self) -> Duration {
        self.timeout + Duration::from_millis(SEND_GAP_MS * u64::from(self.count)) + Duration::from_secs(10)
    }

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
    let mut names: std::collections::HashMap<SocketAddr, String> = Default::default();
    loop {
        ticks.tick().await;
        match current_peers(&config, facts.as_ref()).await {
            Ok(now) => {
                for gone in peers.iter().filter(|p| !now.iter().any(|n| n.agent == p.agent)) {
                    metrics.forget_pair(&config.me, names.get(&gone.agent).unwrap_or(&gone.label));
                }
                peers = now;
            }
            // The API is away: probe the peers it gave last time.
            Err(e) => eprintln!("netprobe agent: mesh: keeping the last peers: {e}"),
        }
        let started = Instant::now();
        for (peer, name, outcome) in round(&agents, facts.as_ref(), &config, &peers).await {
            if let Some(name) = name {
                names.insert(peer.agent, name);
            }
            let label = names.get(&peer.agent).unwrap_or(&peer.label);
            metrics.record_pair(&config.me, label, outcome);
        }
        metrics.record_round(started.elapsed(), SystemTime::now());
    }
}

async fn current_peers<F: NodeFacts>(config: &MeshConfig, facts: &F) -> crate::Result<Vec<Node>> {
    match &config.peers {
        // The same list may be given to every node: this node is left out of its own.
        Peers::Fixed(nodes) => {
            let own = facts.addresses();
            Ok(nodes.iter().filter(|p| !own.contains(&p.ip)).cloned().collect())
        }
        Peers::FromApi { api, agent_port } => {
            let nodes =
                tokio::time::timeout(Duration::from_secs(10), k8s::nodes(api)).await.map_err(|_| {
                    crate::Error::could_not_run("listing nodes", "the API did not answer within 10 s")
                })??;
            let own = facts.addresses();
            let (peers, _) = nodes_from_cluster(&nodes, *agent_port);
            Ok(peers.into_iter().filter(|p| !own.contains(&p.ip)).collect())
        }
    }
}

/// One round: every peer once, at most MAX_SENDS at a time, each within its deadline. Each peer
/// comes back with the node name its agent gave, if it gave one.
pub async fn round<A: AgentApi, F: NodeFacts>(
    agents: &Arc<A>,
    facts: &F,
    config: &MeshConfig,
    peers: &[Node],
) -> Vec<(Node, Option<String>, Outcome)> {
    let seed =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let sends = Arc::new(tokio::sync::Semaphore::new(MAX_SENDS));
    let probe_config = Arc::new(config.probe_config());
    let mut pairs = tokio::task::JoinSet::new();
    // Each agent walks the peers from its own place in the list, so that agents whose rounds
    // overlap do not all ask the first peers first.
    let start = if peers.is_empty() { 0 } else { (config.name_hash() % peers.len() as u64) as usize };
    for (index, peer) in peers.iter().enumerate().cycle().skip(start).take(peers.len()) {
        let from = facts.address_towards(peer.ip).map(|ip| Node {
            label: config.me.clone(),
            agent: config.me_agent,
            ip,
        });
        let (agents, peer, sends, probe_config) =
            (agents.clone(), peer.clone(), sends.clone(), probe_config.clone());
        let deadline = config.pair_deadline();
        let probe_id = seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        pairs.spawn(async move {
            let Some(from) = from else { return (peer, None, Outcome::Untested) };
            let mut name = None;
            let outcome = tokio::time::timeout(deadline, async {
                // A peer whose agent does not answer is untested, not a network fault.
                let health: AgentHealth =
                    agents.call::<(), _>(&peer.agent_addr(), "/v1/health", None).await.ok()?;
                name = health.node;
                let slot = sends.acquire_owned().await.ok();
                let pair =
                    probe_pair(agents.as_ref(), &probe_config, &from, &peer, probe_id, slot).await.ok()?;
                Some(Outcome::Judged { verdict: pair.verdict, sent: pair.sent, arrived: pair.arrived })
            })
            .await;
            (peer, name, outcome.ok().flatten().unwrap_or(Outcome::Untested))
        });
    }
    let mut outcomes = Vec::with_capacity(peers.len());
    while let Some(done) = pairs.join_next().await {
        // A pair's task that failed leaves that pair untested, never a verdict.
        if let Ok(outcome) = done {
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// `ADDR[:PORT]` peers as given to `--peers`, labelled by what was written.
pub fn parse_peers(text: &str, agent_port: u16) -> crate::Result<Vec<Node>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| super::parse_node(p, agent_port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This node's address in the tests.
    const ME: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    use crate::net::agent_client::AgentAddr;
    use crate::net::interface::VxlanDevice;
    use crate::vxlan::PairVerdict;
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::json;
    use std::net::Ipv4Addr;

    /// Agents where one peer answers, one never does (its calls hang), one is gone.
    struct Scripted;

    impl AgentApi for Scripted {
        async fn call<B: Serialize + Sync, R: DeserializeOwned>(
            &self,
            agent: &AgentAddr,
            path: &str,
            _: Option<&B>,
        ) -> crate::Result<R> {
            let value = match (agent.label.as_str(), path) {
                ("slow", _) => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    unreachable!("the deadline ends it first")
                }
                ("gone", _) => return Err(crate::Error::could_not_run("agent gone", "unreachable")),
                (label, "/v1/health") => json!({"version": "t", "node": format!("node-{label}")}),
                (_, "/v1/expect") => json!({"control_port": 40000, "interface": "eth0"}),
                (_, "/v1/send") => {
                    json!({"sent": 5, "left_source": 5, "control_left": 5, "send_error": null, "dropping_rules": []})
                }
                (_, "/v1/collect") => json!({"arrived": 5, "control_arrived": 5, "dropping_rules": []}),
                _ => unreachable!("{path}"),
            };
            Ok(serde_json::from_value(value).unwrap())
        }
    }

    struct Facts;
    impl NodeFacts for Facts {
        fn addresses(&self) -> Vec<Ipv4Addr> {
            vec![ME]
        }
        fn vxlan_devices(&self) -> Vec<VxlanDevice> {
            vec![]
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
            vni: crate::vxlan::DEFAULT_VNI,
            count: 5,
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_peer_is_untested_and_never_holds_back_the_others() {
        let peers = vec![node("fine", "203.0.113.2"), node("slow", "192.0.2.3"), node("gone", "192.0.2.4")];
        let config = config(peers.clone());
        let started = tokio::time::Instant::now();
        let mut outcomes: Vec<(String, Option<String>, Outcome)> =
            round(&Arc::new(Scripted), &Facts, &config, &peers)
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
        // The round lasted the slow pair's deadline, not its hour (the clock is paused and jumps).
        assert_eq!(started.elapsed(), config.pair_deadline());
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
    fn peers_parse_with_the_agents_port() {
        let peers = parse_peers("203.0.113.2, 192.0.2.3:7000", 9473).unwrap();
        assert_eq!(peers[0].agent, "203.0.113.2:9473".parse().unwrap());
        assert_eq!(peers[1].agent, "192.0.2.3:7000".parse().unwrap());
        assert!(parse_peers("not a host!", 9473).is_err());
    }
}
