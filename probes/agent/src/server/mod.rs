//! `netprobe agent`: the per-node HTTP API `netprobe vxlan` drives. It listens for probes, sends
//! them through the kernel's UDP stack (never forging the outer source), and reads this node's
//! firewall counters to name a rule that drops them. The packet I/O, the counters, the node's facts
//! and the peers are behind traits of `netprobe_probes::net` ([`Handles`]), so the handlers run in
//! tests on fakes.
//!
//! A room per job: [`state`] (what the agent holds), `expect` (open and answer expectations),
//! `send` (send probes, only to an agent that expects them) and `collect` (what arrived); this
//! file serves them: configuration, routes, the token, and the answer helpers they share.
//!
//! What an agent refuses, so it cannot be turned against anyone: any request without the token
//! (checked before a body is read); sending to an address that is not an agent expecting exactly
//! this probe from this node (it asks that agent first), to loopback, multicast, broadcast or its
//! own addresses, or with a VNI one of its own vxlan devices uses; more than MAX_SENDS sends or
//! MAX_OPEN expectations at once, and more than MAX_PACKETS_PER_SECOND packets a second in all.

mod collect;
mod expect;
mod run;
mod send;
pub mod state;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Json, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use netprobe_probes::net::drop_trace::{DropTrace, NoTrace, Tracefs};
use netprobe_probes::net::firewall::{NodeFirewall, Snapshot};
use netprobe_probes::net::interface::{NodeFacts, ThisNode};
use netprobe_probes::net::probe_io::ProbeSockets;
use netprobe_probes::vxlan::api::*;
use netprobe_probes::vxlan::rules::{self, Candidates, Flow};
use netprobe_probes::{Error, Result};

use crate::client::HttpAgents;
use crate::metrics::CONTENT_TYPE;
use collect::{collect, collect_many};
use expect::{expect, expect_many, expectation};
use send::{send, send_many};
pub use state::{Agent, Handles, PeerCheck};

/// Request bodies are a few hundred bytes; anything bigger is refused before it is read.
pub const MAX_BODY: usize = 4096;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub token: String,
    /// The port the other agents listen on (the same on every node): asked before sending.
    pub peer_port: u16,
    /// The node's name (NODE_NAME from the downward API), told to the driver so that it can check
    /// it reached the node it meant.
    pub node_name: Option<String>,
    /// `--mesh-every`: probe the peers every period and show it on /metrics. Its `me_agent` is
    /// filled in once the listener is bound.
    pub mesh: Option<crate::mesh::MeshConfig>,
    /// Ask the kernel why it dropped probes that arrived (skb:kfree_skb through tracefs).
    pub drop_trace: bool,
}

/// Serves on the node's real sockets and firewall until SIGINT/SIGTERM. Once the listener is
/// bound, every capability but CAP_NET_RAW and CAP_NET_ADMIN is dropped, and `ready` is called with
/// the address and the capabilities kept.
pub fn serve(config: AgentConfig, ready: impl FnOnce(SocketAddr, Vec<String>)) -> Result<()> {
    if config.token.trim().is_empty() {
        return Err(Error::invalid("token", "empty: set NETPROBE_TOKEN or pass --token-file"));
    }
    // Before any thread starts: an agent runs for months, its heap must not grow with its bursts.
    netprobe_probes::net::memory::few_arenas();
    // Before the capabilities go: mounting tracefs, where it must, needs CAP_SYS_ADMIN.
    let drops: Arc<dyn DropTrace> = match config.drop_trace {
        false => Arc::new(NoTrace("tracing turned off (--no-drop-trace)".into())),
        true => match Tracefs::open() {
            Ok(tracefs) => Arc::new(tracefs),
            Err(why) => Arc::new(NoTrace(why)),
        },
    };
    let handles = Handles {
        io: Arc::new(ProbeSockets::new(MAX_PACKETS_PER_SECOND)),
        counters: Arc::new(NodeFirewall::default()),
        node: Arc::new(ThisNode),
        peers: Arc::new(HttpAgents::new(config.token.clone(), Duration::from_secs(5))?),
        drops,
    };
    let mesh_agents = Arc::new(HttpAgents::new(config.token.clone(), Duration::from_secs(10))?);
    let mut agent = Agent::new(config.token, config.peer_port, handles).on_node(config.node_name);
    // The mesh's ledger, shared with the control channel that tells receivers what it sent.
    let ledger = config.mesh.as_ref().map(|mesh| Arc::new(crate::mesh::BeaconLedger::new(mesh.every)));
    if let Some(ledger) = &ledger {
        agent = agent.with_beacons(ledger.clone());
    }
    let metrics = agent.metrics();
    crate::http::serve(config.listen, router(agent), Default::default(), |bound| {
        // The listener is open: from here on the agent needs only captures and counters.
        let kept =
            netprobe_probes::net::privilege::keep_only(&netprobe_probes::net::privilege::AGENT_CAPABILITIES);
        ready(bound, kept);
        let mut mesh = config.mesh?;
        // The agent asks itself for sends: on its own address, or loopback when it listens on all.
        mesh.me_agent = if bound.ip().is_unspecified() {
            SocketAddr::from((Ipv4Addr::LOCALHOST, bound.port()))
        } else {
            bound
        };
        let ledger = ledger?;
        Some(Box::pin(crate::mesh::run(mesh_agents, Arc::new(ThisNode), mesh, metrics, ledger)))
    })
}

/// The agent's routes: `/healthz` open to anyone (the kubelet's readiness probe sends no token; it
/// answers "ok" and nothing else), everything under /v1 behind the token.
pub fn router(agent: Agent) -> Router {
    let protected = Router::new()
        .route(route::HEALTH, get(health))
        .route(route::EXPECT, post(expect))
        .route(route::SEND, post(send))
        .route(route::COLLECT, post(collect))
        .route(route::EXPECT_MANY, post(expect_many).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .route(route::SEND_MANY, post(send_many).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .route(route::COLLECT_MANY, post(collect_many).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .route(route::EXPECTATION, get(expectation))
        .route(route::BEACONS, get(beacons))
        .route(route::MESH, get(mesh))
        .route(route::RUN, post(run::run))
        .route_layer(middleware::from_fn_with_state(agent.clone(), authorise));
    Router::new()
        .route(route::HEALTHZ, get(|| async { "ok" }))
        // Open like /healthz: it reads counters and changes nothing.
        .route(route::METRICS, get(metrics))
        .merge(protected)
        .layer(middleware::from_fn_with_state(agent.clone(), count_request))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(agent)
}

async fn metrics(State(agent): State<Agent>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], agent.metrics.encode()).into_response()
}

/// Counts every answer by route (the route's pattern, so a stranger's paths add no series) and code.
async fn count_request(State(agent): State<Agent>, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    agent.metrics.record_request(&endpoint, response.status().as_u16());
    response
}

pub(crate) fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(ApiError { error: error.into() })).into_response()
}

/// The token (`Authorization: Bearer`, or [`TOKEN_HEADER`] through the API server's proxy),
/// compared in constant time, before any body is read.
async fn authorise(State(agent): State<Agent>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let bearer =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Through the API server's proxy the token comes in a header of its own (it removes
    // Authorization); either one that matches lets the request in.
    let own = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let matches = |given: &str| bool::from(given.as_bytes().ct_eq(agent.token.as_bytes()));
    let ok = bearer.is_some_and(matches) || own.is_some_and(matches);
    if !ok {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    next.run(request).await
}

/// The mesh's control channel: what this agent's mesh sent to `to` in this run.
async fn beacons(
    State(agent): State<Agent>,
    axum::extract::Path(to): axum::extract::Path<Ipv4Addr>,
) -> Response {
    match &agent.beacons {
        Some(ledger) => Json(ledger.status(to)).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "this agent runs no mesh (--mesh-every)"),
    }
}

/// The mesh's last evaluation of every pair that ends here.
async fn mesh(State(agent): State<Agent>) -> Response {
    match &agent.beacons {
        Some(ledger) => Json(agent.metrics.mesh_state(ledger.period())).into_response(),
        None => refuse(StatusCode::NOT_FOUND, "this agent runs no mesh (--mesh-every)"),
    }
}

async fn health(State(agent): State<Agent>) -> Response {
    let node = agent.node_name.as_deref().map(str::to_string);
    Json(AgentHealth { version: env!("CARGO_PKG_VERSION").to_string(), node }).into_response()
}

/// Runs blocking work (captures, commands) off the runtime; a panic there is an error answer.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(_) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "the agent's worker failed")),
    }
}

/// The candidate rules' counters in a snapshot, or why they cannot be read.
pub(crate) fn read_counters(snapshot: &Snapshot, flow: &Flow) -> (Candidates, Option<String>) {
    let found = rules::candidates(snapshot, flow);
    let error = snapshot.unreadable().or_else(|| {
        (!found.uncounted.is_empty()).then(|| {
            format!(
                "{} drops matching traffic without a counter: add `counter` to it so drops can be seen",
                found.uncounted.join(", ")
            )
        })
    });
    (found, error)
}

/// Why an address is never one to probe: this node itself, loopback, multicast, broadcast.
pub(crate) fn unfit_peer(ip: Ipv4Addr, own: &[Ipv4Addr]) -> Option<&'static str> {
    if ip.is_loopback() || ip.is_unspecified() {
        Some("a loopback or unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() || ip.octets()[3] == 255 {
        Some("a broadcast address")
    } else if own.contains(&ip) {
        Some("one of this node's own addresses")
    } else {
        None
    }
}

/// Refuses a VNI that one of this node's vxlan devices uses: a probe must never reach a real VTEP.
pub(crate) fn vni_in_use(agent: &Agent, vni: u32) -> Option<Response> {
    agent.handles.node.vxlan_devices().unwrap_or_default().iter().any(|d| d.vni == vni).then(|| {
        refuse(
            StatusCode::FORBIDDEN,
            format!("VNI {vni} is used by a vxlan device of this node: pick another with --vni"),
        )
    })
}

/// This node's vxlan devices as the API shows them (those whose MTU can be read); `None` when
/// they could not be read.
pub(crate) fn devices_seen(node: &dyn NodeFacts) -> Option<Vec<VxlanDeviceSeen>> {
    let devices = node.vxlan_devices()?;
    let seen = devices
        .into_iter()
        .filter_map(|d| {
            Some(VxlanDeviceSeen {
                mtu: d.mtu?,
                name: d.name,
                tx_checksum_offload: d.tx_checksum,
                port: d.port,
                up: Some(d.up),
            })
        })
        .collect();
    Some(seen)
}

/// An entry refused, with the status the single request would have answered.
pub(crate) type Refusal = (StatusCode, String);

pub(crate) fn refused<T>(status: StatusCode, error: impl Into<String>) -> std::result::Result<T, Refusal> {
    Err((status, error.into()))
}

/// A whole `-many` answer: each entry's answer in the order asked.
pub(crate) fn each<T: serde::Serialize>(answers: Vec<std::result::Result<T, Refusal>>) -> Response {
    let answers: Vec<Each<T>> = answers
        .into_iter()
        .map(|answer| match answer {
            Ok(value) => Each::Ok(value),
            Err((status, error)) => Each::Refused { status: status.as_u16(), error },
        })
        .collect();
    Json(answers).into_response()
}

/// A single request is a `-many` request of one entry: its answer, or its refusal, alone.
pub(crate) fn single<T: serde::Serialize>(
    answers: std::result::Result<Vec<std::result::Result<T, Refusal>>, Response>,
) -> Response {
    match answers.map(|mut all| all.pop()) {
        Ok(Some(Ok(value))) => Json(value).into_response(),
        Ok(Some(Err((status, error)))) => refuse(status, error),
        Ok(None) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "no answer"),
        Err(refused) => refused,
    }
}

/// Refuses a `-many` request with no entry or more than MAX_BATCH.
pub(crate) fn batch_size(entries: usize) -> Option<Response> {
    (entries == 0 || entries > MAX_BATCH)
        .then(|| refuse(StatusCode::BAD_REQUEST, format!("1 to {MAX_BATCH} entries in one request")))
}
