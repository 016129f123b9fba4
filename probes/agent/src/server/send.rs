//! Sending probes, only to an agent that expects exactly them, within the packet budget.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::Response;

use netprobe_probes::net::probe_io::{SendSpec, Target};
use netprobe_probes::vxlan::api::*;
use netprobe_probes::vxlan::rules::{Flow, Path};
use netprobe_probes::wire::vxlan;
use netprobe_probes::{Error, Result};

use super::state::*;
use super::*;

/// Whether sized probes left this node's cached path MTU for `to` as it was, in words.
fn route_cache_words(to: Ipv4Addr, before: &Result<Option<u16>>, after: &Result<Option<u16>>) -> String {
    match (before, after) {
        (Ok(before), Ok(after)) if before == after => "unchanged".to_string(),
        (Ok(_), Ok(after)) => format!(
            "changed: the kernel now caches a path MTU of {} for {to} for ten minutes (something else answered; `ip route flush cache` clears every cached route, one cannot be removed alone)",
            after.map_or_else(|| "none".to_string(), |m| m.to_string())
        ),
        (Err(e), _) | (_, Err(e)) => format!("not checked: {e}"),
    }
}

/// The ICMP destination-unreachable messages about a target's probes, by sender and code, but
/// fragmentation-needed (which `frag_needed` carries).
fn unreachable_seen(said: &[netprobe_probes::wire::vxlan::Unreachable]) -> Vec<UnreachableSeen> {
    let mut seen: Vec<UnreachableSeen> = Vec::new();
    for u in said.iter().filter(|u| u.mtu.is_none()) {
        match seen.iter_mut().find(|s| s.from == u.from && s.code == u.code) {
            Some(s) => s.count += 1,
            None => seen.push(UnreachableSeen { from: u.from, code: u.code, count: 1 }),
        }
    }
    seen
}

pub(super) async fn send(State(agent): State<Agent>, Json(req): Json<SendRequest>) -> Response {
    let many = SendMany {
        port: req.port,
        vni: req.vni,
        count: req.count,
        sizes: req.sizes,
        targets: vec![SendTarget { probe_id: req.probe_id, to: req.to, control_port: req.control_port }],
    };
    single(send_probes(agent, many).await)
}

pub(super) async fn send_many(State(agent): State<Agent>, Json(req): Json<SendMany>) -> Response {
    if let Some(refused) = batch_size(req.targets.len()) {
        return refused;
    }
    let mut seen = std::collections::HashSet::new();
    if !req.targets.iter().all(|t| seen.insert(t.to)) {
        return refuse(StatusCode::BAD_REQUEST, "one entry per node: a node is listed twice");
    }
    match send_probes(agent, req).await {
        Ok(answers) => each(answers),
        Err(refused) => refused,
    }
}

/// Sends only to an agent that expects exactly this probe from this node: never to an address
/// that is not a node running an agent, never to another port or VNI than the one it expects.
/// The targets' probes leave together (one socket, one capture per interface), and one read of
/// the counters before and one after serve them all.
async fn send_probes(
    agent: Agent,
    req: SendMany,
) -> std::result::Result<Vec<std::result::Result<SendResponse, Refusal>>, Response> {
    if req.count == 0 || req.count > MAX_COUNT || req.vni > vxlan::MAX_VNI || req.port == 0 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("count must be 1 to {MAX_COUNT}, vni at most {}, port not 0", vxlan::MAX_VNI),
        ));
    }
    let sizes_fit = req
        .sizes
        .iter()
        .all(|&s| (vxlan::MIN_PROBE_PACKET..=usize::from(MAX_PROBE_PACKET)).contains(&usize::from(s)));
    if !req.sizes.is_empty() && (req.sizes.len() != req.count as usize || !sizes_fit) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "sizes: one per probe (count), each {} to {MAX_PROBE_PACKET} bytes",
                vxlan::MIN_PROBE_PACKET
            ),
        ));
    }
    if let Some(refused) = vni_in_use(&agent, req.vni) {
        return Err(refused);
    }
    let own = agent.handles.node.addresses();
    let not_agreed = |t: &SendTarget, peer: SocketAddr| {
        format!(
            "the agent at {peer} does not expect probe {} from this node on UDP {} (VNI {}, control port {}): probes go only to agents that expect them",
            t.probe_id, req.port, req.vni, t.control_port
        )
    };
    let mut answers: Vec<std::result::Result<SendResponse, Refusal>> = Vec::with_capacity(req.targets.len());
    let unfit: Vec<Option<&str>> = req.targets.iter().map(|t| unfit_peer(t.to, &own)).collect();
    // Asked of every fit target's agent at once, before anything is sent.
    let asked = futures_util::future::join_all(req.targets.iter().zip(&unfit).map(|(t, unfit)| {
        let peer = SocketAddr::from((t.to, agent.peer_port));
        let peers = agent.handles.peers.clone();
        async move {
            match unfit {
                Some(_) => None,
                None => peers.expectation(peer, t.probe_id).await,
            }
        }
    }))
    .await;
    let mut targets = Vec::new();
    for ((t, unfit), expected) in req.targets.iter().zip(&unfit).zip(asked) {
        let peer = SocketAddr::from((t.to, agent.peer_port));
        let agreed = expected.as_ref().is_some_and(|e| {
            own.contains(&e.from)
                && e.port == req.port
                && e.control_port == t.control_port
                && e.vni == req.vni
        });
        answers.push(match (unfit, agreed) {
            (Some(why), _) => {
                refused(StatusCode::FORBIDDEN, format!("{} is {why}: probes go to other nodes only", t.to))
            }
            (None, false) => refused(StatusCode::FORBIDDEN, not_agreed(t, peer)),
            (None, true) => {
                targets.push(answers.len());
                refused(StatusCode::INTERNAL_SERVER_ERROR, "not sent")
            }
        });
    }
    if targets.is_empty() {
        return Ok(answers);
    }
    let Ok(slot) = agent.sends.clone().try_acquire_owned() else {
        return Err(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_SENDS} sends are under way on this agent: try again"),
        ));
    };
    let runtime = tokio::runtime::Handle::current();
    let asked_at = Instant::now();
    blocking(move || {
        let before = agent.handles.counters.earlier();
        // Asked again just before the probes leave when reading the counters took a while (a
        // busy node): the question keeps the peer's capture open for them, or says it is too
        // late, and then nothing is sent to it. An answer younger than that still stands.
        let still = match asked_at.elapsed() < ASK_AGAIN_AFTER {
            true => vec![Some(()); targets.len()],
            false => runtime.block_on(futures_util::future::join_all(targets.iter().map(|&i| {
                let t = &req.targets[i];
                let asked =
                    agent.handles.peers.expectation(SocketAddr::from((t.to, agent.peer_port)), t.probe_id);
                async move { asked.await.map(|_| ()) }
            }))),
        };
        let mut going = Vec::new();
        for (&i, expected) in targets.iter().zip(still) {
            let t = &req.targets[i];
            match expected {
                Some(_) => going.push(i),
                None => answers[i] = refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Error::could_not_run(
                        format!(
                            "sending probe {} to {}",
                            t.probe_id,
                            SocketAddr::from((t.to, agent.peer_port))
                        ),
                        "the agent there no longer expects it (its capture ended): too late, ask it again",
                    )
                    .to_string(),
                ),
            }
        }
        let spec = SendSpec {
            targets: going
                .iter()
                .map(|&i| Target {
                    to: req.targets[i].to,
                    control_port: req.targets[i].control_port,
                    probe_id: req.targets[i].probe_id,
                })
                .collect(),
            port: req.port,
            vni: req.vni,
            count: req.count,
            gap: Duration::from_millis(SEND_GAP_MS),
            sizes: req.sizes.clone(),
        };
        // The path MTU the kernel caches for each target, before and after sized probes: they
        // must leave it as it was.
        let sized = !spec.sizes.is_empty();
        let cached = |i: &usize| netprobe_probes::net::interface::cached_path_mtu(req.targets[*i].to);
        let cache_before: Vec<_> = if sized { going.iter().map(cached).collect() } else { Vec::new() };
        let sent = match going.is_empty() {
            true => Vec::new(),
            false => agent.handles.io.send(spec)?,
        };
        let cache_after: Vec<_> = if sized { going.iter().map(cached).collect() } else { Vec::new() };
        // The probes are out: the next send may start while this one's counters are read.
        drop(slot);
        let after = agent.handles.counters.snapshot();
        let devices = devices_seen(agent.handles.node.as_ref());
        // The pod network's device: the largest MTU, with its checksum offload.
        let widest = devices.iter().flatten().max_by_key(|d| d.mtu).cloned();
        for (k, (&i, sent)) in going.iter().zip(sent).enumerate() {
            let to = req.targets[i].to;
            let route_cache = match (cache_before.get(k), cache_after.get(k)) {
                (Some(before), Some(after)) => Some(route_cache_words(to, before, after)),
                _ => None,
            };
            let local = agent.handles.node.address_towards(to).unwrap_or(Ipv4Addr::UNSPECIFIED);
            let flow = Flow { source: local, destination: Some(to), port: req.port, path: Path::Outbound };
            let (before, before_error) = read_counters(&before, &flow);
            let (after, after_error) = read_counters(&after, &flow);
            let mut left_seqs: Vec<u32> = sent.left.iter().copied().collect();
            left_seqs.sort_unstable();
            answers[i] = Ok(SendResponse {
                sent: req.count,
                left_source: sent.left.len() as u32,
                control_left: sent.control_left.len() as u32,
                send_error: sent.send_error,
                dropping_rules: rules::grown(&before, &after),
                counters_error: before_error.or(after_error),
                left_seqs,
                interface_mtu: sent.interface_mtu,
                frag_needed: sent
                    .unreachable
                    .iter()
                    .find_map(|u| Some(FragNeededSeen { from: u.from, mtu: u.mtu? })),
                unreachable: unreachable_seen(&sent.unreachable),
                vxlan_device: widest.clone(),
                vxlan_devices: devices.clone(),
                route_cache,
            });
        }
        Ok(answers)
    })
    .await
}
