//! `--mtu` through the agents: each pair whose probes arrived has its path MTU searched (the
//! search itself, pure, is [`super::mtu`]), pairs at once within the agents' caps, each round an
//! expect, a send of sized probes and a collect with that pair's agents.

use std::net::SocketAddr;
use std::sync::Arc;

use super::api::*;
use super::client::AgentApi;
use super::driver::{patiently, Config};
use super::nodes::Node;
use super::report::*;
use super::{batch, mtu};
use crate::Result;

/// What the driver may ask of one agent at once.
struct AgentSlots {
    sends: Arc<tokio::sync::Semaphore>,
    expects: Arc<tokio::sync::Semaphore>,
}

impl Default for AgentSlots {
    fn default() -> Self {
        AgentSlots {
            sends: Arc::new(tokio::sync::Semaphore::new(MAX_SENDS)),
            expects: Arc::new(tokio::sync::Semaphore::new(MAX_OPEN)),
        }
    }
}

/// `--mtu`: each pair whose probes arrived has its path MTU searched, pairs at once within the
/// agents' caps (the source's send slots, the destination's expectations).
pub(super) async fn search_mtus<A: AgentApi>(
    agents: &Arc<A>,
    config: &Config,
    jobs: &[batch::Job],
    judged: &mut [Option<Result<PairReport>>],
    in_flight: usize,
) {
    let slots: std::collections::HashMap<SocketAddr, AgentSlots> =
        config.nodes.iter().map(|n| (n.agent, AgentSlots::default())).collect();
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
    let listening = patiently(|| agents.expect(&to_agent, &expect)).await?;
    let send = SendRequest {
        probe_id,
        to: to.ip,
        port: config.port,
        control_port: listening.control_port,
        vni: config.vni,
        count,
        sizes,
    };
    let sent = match patiently(|| agents.send(&from_agent, &send)).await {
        Ok(sent) => sent,
        Err(e) => {
            // Free the destination's expectation now, not at its expiry: it counts against its cap.
            let release = CollectRequest { probe_id };
            let _ = agents.collect(&to_agent, &release).await;
            return Err(e);
        }
    };
    tokio::time::sleep(config.timeout).await;
    let arrived = agents.collect(&to_agent, &CollectRequest { probe_id }).await?;
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
    let mut search = mtu::Search::new(MAX_PROBE_PACKET);
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
