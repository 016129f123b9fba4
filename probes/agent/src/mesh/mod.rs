//! `netprobe agent --mesh-every`: always on, at O(peers) packets a period and no call per pair.
//! Every period each agent sends each peer one beacon, a real VXLAN frame numbered in the
//! sender's series to that peer ([`send`]); each agent counts what arrives from each peer on one
//! capture ([`receive`], [`tally`]), and every period judges each peer's path to it from the
//! numbers alone ([`judge`]): how many were sent, how many arrived, the jitter. A peer heard from
//! for a while is asked, on its agent's control channel, whether it sent: a path that loses
//! everything is told from an agent restarting. A pair that turns bad is diagnosed as `netprobe
//! vxlan` diagnoses it, on demand and rate-limited ([`diagnose`]), and the cause goes to
//! `/metrics` with the verdict.
//!
//! Each agent reports the pairs that end at it (`from` the peer, `to` itself): every series has
//! one agent that knows it first-hand.

mod diagnose;
mod judge;
mod ledger;
mod receive;
mod send;
mod tally;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use netprobe_probes::cluster::ApiConfig;
use netprobe_probes::net::interface::NodeFacts;
use netprobe_probes::vxlan::{nodes_from_cluster, AgentApi, Config, Node, PairVerdict};
use tokio::sync::watch;

use crate::metrics::{Metrics, Outcome};
pub use ledger::BeaconLedger;

/// Where the peers come from.
#[derive(Clone, Debug)]
pub enum Peers {
    /// `--peers ADDR,...`: fixed.
    Fixed(Vec<Node>),
    /// `--peers-from-api`: every Node's InternalIP, followed by a watch (this node left out).
    FromApi { api: ApiConfig, agent_port: u16 },
}

#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub every: Duration,
    pub peers: Peers,
    /// This node's label in the metrics (its name, else its address).
    pub me: String,
    /// This agent's own address: its IP is this node's in the peers' lists.
    pub me_agent: SocketAddr,
    pub port: u16,
    pub vni: u32,
    /// `--mesh-series failing`: series only for the pairs that are not ok.
    pub failing_only: bool,
}

/// A peer's agent that has not answered within this is untested for this evaluation.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// A list or watch of the API's Nodes that failed is tried again after this.
const PEERS_RETRY: Duration = Duration::from_secs(10);
/// The node name a peer's agent gave (peers given by address) is asked again after this.
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

    /// The one-shot exchange's settings, for a diagnosis.
    fn probe_config(&self) -> Config {
        Config {
            nodes: Vec::new(),
            token: String::new(),
            port: self.port,
            vni: self.vni,
            count: 5,
            timeout: Duration::from_secs(1),
            skip_unanswering: true,
            mtu: false,
        }
    }
}

/// Runs the mesh for ever (the agent's runtime ends it): the peers, the sender, the capture, and
/// an evaluation every period.
pub async fn run<A: AgentApi, F: NodeFacts>(
    agents: Arc<A>,
    facts: Arc<F>,
    config: MeshConfig,
    metrics: Arc<Metrics>,
    ledger: Arc<BeaconLedger>,
) {
    if config.failing_only {
        metrics.failing_only();
    }
    let me_ip = match config.me_agent.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => ip,
        _ => facts.addresses().into_iter().find(|ip| !ip.is_loopback()).unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    let me = Node { label: config.me.clone(), agent: config.me_agent, ip: me_ip };
    let tally = Arc::new(Mutex::new(tally::BeaconTally::default()));
    if let Err(e) = receive::start(config.port, config.vni, tally.clone()) {
        eprintln!("netprobe agent: mesh: {e}: every pair is untested");
        tally.lock().unwrap_or_else(|e| e.into_inner()).fail(e.to_string());
    }
    let (peers_tx, peers_rx) = watch::channel(Vec::new());
    tokio::spawn(keep_peers(config.clone(), facts.clone(), peers_tx));
    let sending = send::Sending { me: me_ip, port: config.port, vni: config.vni, period: config.every };
    tokio::spawn(send::send_forever(ledger, peers_rx.clone(), sending));
    let diagnoser = Arc::new(diagnose::Diagnoser::new(agents.clone(), config.probe_config(), me));

    tokio::time::sleep(config.stagger()).await;
    // Twice a period: a silence or a heal is seen half a period sooner than once would.
    let mut ticks = tokio::time::interval(config.every / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watches: HashMap<Ipv4Addr, judge::PeerWatch> = HashMap::new();
    let mut labels: HashMap<Ipv4Addr, String> = HashMap::new();
    let mut names: HashMap<SocketAddr, Named> = HashMap::new();
    let mut causes: HashMap<Ipv4Addr, Diagnosis> = HashMap::new();
    loop {
        ticks.tick().await;
        let started = Instant::now();
        let peers: Vec<Node> = peers_rx.borrow().clone();
        // Peers gone from the list: their series go.
        watches.retain(|ip, _| peers.iter().any(|p| p.ip == *ip));
        labels.retain(|ip, label| {
            let kept = peers.iter().any(|p| p.ip == *ip);
            if !kept {
                metrics.forget_pair(label, &config.me);
                tally.lock().unwrap_or_else(|e| e.into_inner()).forget(*ip);
            }
            kept
        });
        names.retain(|agent, _| peers.iter().any(|p| p.agent == *agent));
        ask_names(agents.as_ref(), &peers, &mut names).await;

        let now = wall_now();
        let (counts, failure): (Vec<Option<tally::Counts>>, Option<String>) = {
            let tally = tally.lock().unwrap_or_else(|e| e.into_inner());
            (peers.iter().map(|p| tally.counts(p.ip)).collect(), tally.failure().map(String::from))
        };
        for peer in &peers {
            watches.entry(peer.ip).or_insert_with(|| judge::PeerWatch::new(now, config.every));
        }
        // The silent peers' agents, asked at once: did you send?
        let silent: Vec<usize> =
            (0..peers.len()).filter(|&i| watches[&peers[i].ip].silent(counts[i].as_ref(), now)).collect();
        let answers = futures_util::future::join_all(silent.iter().map(|&i| {
            let agent = peers[i].agent_addr();
            let agents = agents.clone();
            async move {
                match tokio::time::timeout(ANSWER_WITHIN, agents.beacons(&agent, me_ip)).await {
                    Ok(answer) => answer.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", ANSWER_WITHIN.as_secs())),
                }
            }
        }))
        .await;
        let mut control: HashMap<usize, Result<_, String>> = silent.into_iter().zip(answers).collect();

        for (i, peer) in peers.iter().enumerate() {
            let watch = watches.get_mut(&peer.ip).expect("every peer has its watch");
            let evaluation = watch.evaluate(now, counts[i], control.remove(&i));
            let label = names.get(&peer.agent).and_then(|n| n.name.as_ref()).unwrap_or(&peer.label).clone();
            if let Some(old) = labels.insert(peer.ip, label.clone()).filter(|old| *old != label) {
                metrics.forget_pair(&old, &config.me);
            }
            if let Some(diagnosed) = diagnoser.take(peer.ip) {
                causes.insert(peer.ip, Diagnosis::from(diagnosed));
            }
            let outcome = match (&failure, evaluation.verdict) {
                (Some(_), _) | (None, judge::Verdict::Untested) => Outcome::Untested,
                (None, verdict) if verdict.is_loss() => {
                    diagnoser.request(peer);
                    let cause = causes.get(&peer.ip);
                    Outcome::Judged {
                        // The diagnosis names where, when it found the loss too; the beacons'
                        // loss stands when it did not (a loss is never cancelled).
                        verdict: cause.and_then(|c| c.verdict).unwrap_or(verdict.as_str()),
                        up: false,
                        sent: evaluation.sent,
                        arrived: evaluation.arrived,
                        period: evaluation.period,
                        jitter_s: evaluation.jitter_s,
                        cause: cause.map(|c| c.words.clone()),
                    }
                }
                (None, verdict) => {
                    if causes.remove(&peer.ip).is_some() {
                        diagnoser.forget(peer.ip);
                    }
                    Outcome::Judged {
                        verdict: verdict.as_str(),
                        up: true,
                        sent: evaluation.sent,
                        arrived: evaluation.arrived,
                        period: evaluation.period,
                        jitter_s: evaluation.jitter_s,
                        cause: None,
                    }
                }
            };
            metrics.record_pair(&label, &config.me, outcome);
        }
        metrics.count_peers(&config.me);
        metrics.record_round(started.elapsed(), SystemTime::now());
    }
}

/// What a diagnosis found: the one-shot verdict when it is a fault (it names where), and its words.
struct Diagnosis {
    verdict: Option<&'static str>,
    words: String,
}

impl From<netprobe_probes::Result<netprobe_probes::vxlan::PairReport>> for Diagnosis {
    fn from(diagnosed: netprobe_probes::Result<netprobe_probes::vxlan::PairReport>) -> Diagnosis {
        match diagnosed {
            Ok(pair) if pair.verdict.health() == netprobe_probes::Health::Fault => {
                Diagnosis { verdict: Some(pair.verdict.as_str()), words: pair.diagnosis }
            }
            Ok(pair) if pair.verdict == PairVerdict::Untested => {
                Diagnosis { verdict: None, words: format!("the diagnosis could not run: {}", pair.diagnosis) }
            }
            Ok(pair) => Diagnosis {
                verdict: None,
                words: format!(
                    "the diagnosis' probes got through ({} of {}): the loss comes and goes",
                    pair.arrived, pair.sent
                ),
            },
            Err(e) => Diagnosis { verdict: None, words: format!("the diagnosis could not run: {e}") },
        }
    }
}

/// The capture clock: wall time since the Unix epoch.
fn wall_now() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

/// Keeps the peer list current: a fixed list once; from the API, a list and then a watch of the
/// Nodes (changes only, not a list a minute: one list per agent is a thousand lists of a thousand
/// Nodes in a 1,000-node cluster); a first list that fails is tried again after [`PEERS_RETRY`].
async fn keep_peers<F: NodeFacts>(config: MeshConfig, facts: Arc<F>, peers: watch::Sender<Vec<Node>>) {
    let publish = |now: Vec<Node>| {
        let own = facts.addresses();
        let now: Vec<Node> = now.into_iter().filter(|p| !own.contains(&p.ip)).collect();
        peers.send_if_modified(|last| {
            let changed = *last != now;
            *last = now;
            changed
        });
    };
    match &config.peers {
        // The same list may be given to every node: this node is left out of its own.
        Peers::Fixed(nodes) => publish(nodes.clone()),
        Peers::FromApi { api, agent_port } => loop {
            let followed = netprobe_k8s::watch_nodes(api, PEERS_RETRY, |nodes| {
                publish(nodes_from_cluster(&nodes, *agent_port).0);
            })
            .await;
            if let Err(e) = followed {
                eprintln!(
                    "netprobe agent: mesh: listing the peers: {e}; again in {} s",
                    PEERS_RETRY.as_secs()
                );
            }
            tokio::time::sleep(PEERS_RETRY).await;
        },
    }
}

/// What a peer's agent said its node is called, and when to ask again.
struct Named {
    name: Option<String>,
    ask_again: Instant,
}

/// An agent that did not answer for its name is asked again after this.
const NAME_RETRY: Duration = Duration::from_secs(30);

/// The names of peers given by address, from their agents' health answers (so that `from` and
/// `to` agree across agents): asked once, again after [`NAME_FRESHNESS`] (or [`NAME_RETRY`] when
/// the agent did not answer), never each evaluation; peers from the API are named by their Node.
async fn ask_names<A: AgentApi>(agents: &A, peers: &[Node], names: &mut HashMap<SocketAddr, Named>) {
    let now = Instant::now();
    let stale: Vec<&Node> = peers
        .iter()
        .filter(|p| p.label.parse::<Ipv4Addr>().is_ok() || p.label.contains(':'))
        .filter(|p| names.get(&p.agent).is_none_or(|n| n.ask_again <= now))
        .collect();
    let asked = futures_util::future::join_all(stale.iter().map(|peer| async move {
        let answer = tokio::time::timeout(ANSWER_WITHIN, agents.health(&peer.agent_addr())).await;
        (peer.agent, answer.ok().and_then(Result::ok))
    }))
    .await;
    for (agent, health) in asked {
        let named = match health {
            Some(health) => Named { name: health.node, ask_again: Instant::now() + NAME_FRESHNESS },
            // Not now: the name it had stays until it answers.
            None => Named {
                name: names.get(&agent).and_then(|n| n.name.clone()),
                ask_again: Instant::now() + NAME_RETRY,
            },
        };
        names.insert(agent, named);
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

    fn config() -> MeshConfig {
        MeshConfig {
            every: Duration::from_secs(10),
            peers: Peers::Fixed(vec![]),
            me: "node-a".into(),
            me_agent: "198.51.100.1:9473".parse().unwrap(),
            port: 8472,
            vni: netprobe_probes::vxlan::DEFAULT_VNI,
            failing_only: false,
        }
    }

    #[test]
    fn agents_start_spread_over_the_period() {
        let mut offsets: Vec<Duration> =
            (0..50).map(|i| MeshConfig { me: format!("node-{i}"), ..config() }.stagger()).collect();
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

    #[test]
    fn a_diagnosis_names_the_fault_or_lets_the_loss_stand() {
        let pair = |verdict: PairVerdict, arrived: u32, diagnosis: &str| netprobe_probes::vxlan::PairReport {
            sent: 5,
            left_source: 5,
            arrived,
            verdict,
            control_udp: netprobe_probes::vxlan::ControlUdp::Ok,
            ..netprobe_probes::vxlan::PairReport::unmeasured(
                "198.51.100.2".parse().unwrap(),
                "198.51.100.1".parse().unwrap(),
                "b",
                "a",
                diagnosis.into(),
            )
        };
        let found =
            Diagnosis::from(Ok(pair(PairVerdict::DroppedAtDestination, 0, "dropped by -A INPUT ...")));
        assert_eq!(
            (found.verdict, found.words.as_str()),
            (Some("dropped-at-destination"), "dropped by -A INPUT ...")
        );
        let through = Diagnosis::from(Ok(pair(PairVerdict::Ok, 5, "ok")));
        assert_eq!(through.verdict, None, "the beacons' loss stands");
        assert!(through.words.contains("got through (5 of 5)"), "{}", through.words);
    }
}
