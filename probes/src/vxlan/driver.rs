//! The driver of `netprobe vxlan`: every agent answers first, then every ordered pair is probed at
//! once in rounds the agents' caps allow (busy or broken calls go again, twice at most), each pair
//! judged with what every agent said, and `--mtu` searches the path MTU of those that got through.

use std::sync::Arc;
use std::time::Duration;

use super::api::*;
use super::client::AgentApi;
use super::nodes::{Node, DEPLOY_HINT};
use super::report::*;
use super::{batch, mtu_rounds};
use crate::{Error, Result};

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

/// Probes every ordered pair of `config.nodes`, all at once, on a runtime of its own, through the
/// agents `reach` gives (the HTTP client of `netprobe_agent`, straight or through the API server;
/// a fake in tests), once the config is known to be sound.
pub fn run<A, R, Fut>(config: Config, reach: R) -> Result<VxlanReport>
where
    A: AgentApi,
    R: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<A>>,
{
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
    runtime.block_on(async move {
        let agents = reach(config.clone()).await?;
        probe_within(Arc::new(agents), config, in_flight).await
    })
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
        checks.spawn(async move { (index, agents.health(&node.agent_addr()).await) });
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
        mtu_rounds::search_mtus(&agents, &config, &jobs, &mut judged, in_flight).await;
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
pub(super) const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A pair that could not be measured: why, and no counts.
fn untested_pair(from: &Node, to: &Node, why: &Error) -> PairReport {
    PairReport::unmeasured(from.ip, to.ip, &from.label, &to.label, format!("not measured: {why}"))
}

/// Calls again while the agent says it is at its limits (429), pausing longer each time, up to
/// about 1.5 s in all: a busy agent delays a pair, it does not fail it.
pub(super) async fn patiently<T, F, Fut>(mut call: F) -> Result<T>
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
    use crate::vxlan::client::{
        self,
        fake::{healthy_send, FakeAgents},
    };
    use crate::vxlan::DEFAULT_VNI;
    use crate::Health;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;
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

    fn two_nodes() -> Config {
        let node = |ip: &str| Node {
            label: ip.into(),
            agent: format!("{ip}:9473").parse().unwrap(),
            ip: ip.parse().unwrap(),
        };
        Config { nodes: vec![node("198.51.100.1"), node("203.0.113.2")], ..config() }
    }

    /// Agents on a path that carries 1,400-byte packets from interfaces of 1,500: plain probes
    /// all arrive, sized ones as their size allows. Each node has flannel.1 at 1450.
    fn path_agents() -> FakeAgents {
        let sizes: Arc<Mutex<HashMap<u64, Vec<u16>>>> = Arc::default();
        let fitting = |sizes: &[u16], fits: u16| -> Vec<u32> {
            (0..sizes.len() as u32).filter(|&i| sizes[i as usize] <= fits).collect()
        };
        let (sent, collected) = (sizes.clone(), sizes);
        FakeAgents {
            expect: Box::new(|_, _| {
                Ok(ExpectResponse {
                    control_port: 40000,
                    interface: "eth0".into(),
                    interface_mtu: Some(1500),
                })
            }),
            send: Box::new(move |_, request| {
                let left = if request.sizes.is_empty() {
                    (0..request.count).collect()
                } else {
                    fitting(&request.sizes, 1500)
                };
                sent.lock().unwrap().insert(request.probe_id, request.sizes.clone());
                Ok(SendResponse {
                    left_source: left.len() as u32,
                    left_seqs: left,
                    interface_mtu: Some(1500),
                    vxlan_device: Some(VxlanDeviceSeen {
                        name: "flannel.1".into(),
                        mtu: 1450,
                        tx_checksum_offload: None,
                        port: None,
                        up: None,
                    }),
                    ..healthy_send(request)
                })
            }),
            collect: Box::new(move |_, request| {
                let sizes = collected.lock().unwrap().remove(&request.probe_id).unwrap_or_default();
                let arrived = if sizes.is_empty() { (0..5).collect() } else { fitting(&sizes, 1400) };
                Ok(CollectResponse {
                    arrived: arrived.len() as u32,
                    control_arrived: 5,
                    arrived_seqs: arrived,
                    ..CollectResponse::default()
                })
            }),
            ..FakeAgents::default()
        }
    }

    #[tokio::test]
    async fn the_mtu_search_finds_the_path_and_says_the_pod_network_does_not_fit() {
        let report = probe(Arc::new(path_agents()), Config { mtu: true, ..two_nodes() }).await.unwrap();
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
        let plain = Arc::new(path_agents());
        let report = probe(plain.clone(), two_nodes()).await.unwrap();
        assert!(report.pairs.iter().all(|p| p.mtu.is_none() && p.verdict == PairVerdict::Ok));
        assert_eq!(plain.sends_made(), 2);
    }

    #[tokio::test]
    async fn the_driver_judges_every_pair() {
        let report = probe(Arc::new(FakeAgents::default()), two_nodes()).await.unwrap();
        assert_eq!(report.pairs.len(), 2);
        assert_eq!(report.verdict, Health::Ok);
    }

    #[tokio::test]
    async fn a_capture_that_failed_on_an_agent_leaves_the_pair_untested_naming_it_never_lost() {
        let agents = FakeAgents {
            collect: Box::new(|agent, request| match agent.label.as_str() {
                "203.0.113.2" => Err(Error::could_not_run("capturing on eth0", "the capture thread failed")),
                _ => Ok(client::fake::healthy_collect(request)),
            }),
            ..FakeAgents::default()
        };
        let report = probe(Arc::new(agents), two_nodes()).await.unwrap();
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
        let agents = FakeAgents::default();
        // Both destinations at their cap in the first round: the second takes them.
        agents.busy_expects.store(2, std::sync::atomic::Ordering::SeqCst);
        let report = probe(Arc::new(agents), two_nodes()).await.unwrap();
        assert!(report.pairs.iter().all(|p| p.verdict == PairVerdict::Ok), "{:?}", report.pairs);
        // Busy every time: untested after three rounds, saying why, never a network verdict.
        let agents = FakeAgents::default();
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
        let agents = FakeAgents::default();
        agents.broken_collects.store(2, std::sync::atomic::Ordering::SeqCst);
        let report = probe(Arc::new(agents), two_nodes()).await.unwrap();
        assert!(report.pairs.iter().all(|p| p.verdict == PairVerdict::Ok), "{:?}", report.pairs);
        // Broken every time: untested after three rounds, naming the broken call.
        let agents = FakeAgents::default();
        agents.broken_collects.store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
        let report = probe(Arc::new(agents), two_nodes()).await.unwrap();
        for pair in &report.pairs {
            assert_eq!(pair.verdict, PairVerdict::Untested);
            assert!(pair.diagnosis.contains("connection reset by peer"), "{}", pair.diagnosis);
        }
    }

    #[tokio::test]
    async fn an_agent_that_does_not_answer_is_named() {
        let agents = FakeAgents { gone: ["203.0.113.2".to_string()].into(), ..FakeAgents::default() };
        let err = probe(Arc::new(agents), two_nodes()).await.unwrap_err();
        assert!(err.to_string().contains("agent 203.0.113.2 (203.0.113.2:9473): unreachable"), "{err}");
    }

    #[tokio::test]
    async fn with_all_nodes_a_node_without_an_agent_is_named_untested_and_the_rest_probed() {
        let agents = FakeAgents { gone: ["node-c".to_string()].into(), ..FakeAgents::default() };
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
        let agents = FakeAgents { gone: ["node-c".to_string()].into(), ..FakeAgents::default() };
        let err = probe(Arc::new(agents), config).await.unwrap_err();
        assert!(
            err.to_string().contains("not probed: node-c (agent node-c (192.0.2.3:9473): unreachable"),
            "{err}"
        );
        assert_eq!(err.to_string().matches(DEPLOY_HINT).count(), 1, "the hint once: {err}");
    }

    #[tokio::test]
    async fn an_agent_that_names_another_node_is_not_taken_for_this_one() {
        let agents = FakeAgents {
            health: Box::new(|agent, _| {
                let node = (agent.label == "node-b").then(|| "somewhere-else".to_string());
                Ok(AgentHealth { version: "t".into(), node })
            }),
            ..FakeAgents::default()
        };
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
}
