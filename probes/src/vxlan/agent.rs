//! `netprobe agent`: the per-node HTTP API `netprobe vxlan` drives. It listens for probes, sends
//! them through the kernel's UDP stack (never forging the outer source), and reads this node's
//! firewall counters to name a rule that drops them. The routes live here; the packet I/O, the
//! counters, the node's facts, the peers and the serving are in `net/`, behind traits, so the
//! handlers run in tests on fakes.
//!
//! What an agent refuses, so it cannot be turned against anyone: any request without the token
//! (checked before a body is read); sending to an address that is not an agent expecting exactly
//! this probe from this node (it asks that agent first), to loopback, multicast, broadcast or its
//! own addresses, or with a VNI one of its own vxlan devices uses; more than MAX_SENDS sends or
//! MAX_OPEN expectations at once, and more than MAX_PACKETS_PER_SECOND packets a second in all.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Json, MatchedPath, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use super::api::*;
use super::metrics::{Metrics, CONTENT_TYPE};
use super::rules::{self, Candidates, Flow, Path};
use crate::net::agent_client::{AgentAddr, AgentApi, HttpAgents};
use crate::net::drop_trace::{DropTrace, DropWatch, NoTrace, Tracefs, Watched};
use crate::net::firewall::{NodeFirewall, RuleCounters, Snapshot};
use crate::net::interface::{NodeFacts, ThisNode};
use crate::net::probe_io::{ListenSpec, Listener, ProbeIo, SendSpec, Sockets, Target};
use crate::wire::vxlan;
use crate::{Error, Result};

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
    pub mesh: Option<super::mesh::MeshConfig>,
    /// Ask the kernel why it dropped probes that arrived (skb:kfree_skb through tracefs).
    pub drop_trace: bool,
}

/// Asks the agent at `peer` what it expects for `probe_id` (`None`: nothing, or no agent there).
pub trait PeerCheck: Send + Sync + 'static {
    fn expectation(
        &self,
        peer: SocketAddr,
        probe_id: u64,
    ) -> Pin<Box<dyn Future<Output = Option<ExpectationInfo>> + Send + '_>>;
}

impl PeerCheck for HttpAgents {
    fn expectation(
        &self,
        peer: SocketAddr,
        probe_id: u64,
    ) -> Pin<Box<dyn Future<Output = Option<ExpectationInfo>> + Send + '_>> {
        Box::pin(async move {
            let agent = AgentAddr { label: peer.ip().to_string(), address: peer };
            let path = format!("/v1/expectation/{probe_id}");
            // A GET changes nothing: asked again once if the first try did not get through.
            match self.call::<(), ExpectationInfo>(&agent, &path, None).await {
                Ok(info) => Some(info),
                Err(_) => self.call::<(), ExpectationInfo>(&agent, &path, None).await.ok(),
            }
        })
    }
}

struct Expectation {
    listener: Box<dyn Listener>,
    /// The kernel's drops of the probes since the expectation opened, or why they are not known.
    drops: std::result::Result<Box<dyn DropWatch>, String>,
    from: Ipv4Addr,
    to: Option<Ipv4Addr>,
    port: u16,
    vni: u32,
    counters_before: Candidates,
    counters_error: Option<String>,
    /// How long it listens: from its opening, and again from when its sender asks about it.
    window: Duration,
    expires: Instant,
}

/// A send asks its targets' agents again before the probes leave when this long has passed since
/// it first asked (each answer keeps the capture open a whole window from then).
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// An expectation is dropped this long after its capture ends if nobody collects it.
const UNCOLLECTED_GRACE: Duration = Duration::from_secs(5);

/// Expectations open, and slots reserved for ones being opened: the cap counts both, checked and
/// taken under one lock.
#[derive(Default)]
struct Open {
    expectations: HashMap<u64, Expectation>,
    reserved: usize,
}

/// The agent's ways to the OS and to its peers.
pub struct Ways {
    pub io: Arc<dyn ProbeIo>,
    pub counters: Arc<dyn RuleCounters>,
    pub node: Arc<dyn NodeFacts>,
    pub peers: Arc<dyn PeerCheck>,
    pub drops: Arc<dyn DropTrace>,
}

/// The agent's state: its token, the expectations open, the sends under way, and its ways.
#[derive(Clone)]
pub struct Agent {
    token: Arc<String>,
    peer_port: u16,
    open: Arc<Mutex<Open>>,
    sends: Arc<tokio::sync::Semaphore>,
    ways: Arc<Ways>,
    node_name: Option<Arc<str>>,
    metrics: Arc<Metrics>,
}

impl Agent {
    pub fn new(token: String, peer_port: u16, ways: Ways) -> Agent {
        Agent {
            token: Arc::new(token),
            peer_port,
            open: Arc::default(),
            sends: Arc::new(tokio::sync::Semaphore::new(MAX_SENDS)),
            ways: Arc::new(ways),
            node_name: None,
            metrics: Arc::default(),
        }
    }

    /// What `/metrics` shows: the mesh records its rounds here.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The node this agent runs on, as its health answer names it.
    pub fn on_node(mut self, name: Option<String>) -> Agent {
        self.node_name = name.map(Arc::from);
        self
    }
}

/// Serves on the node's real sockets and firewall until SIGINT/SIGTERM. Once the listener is
/// bound, every capability but CAP_NET_RAW and CAP_NET_ADMIN is dropped, and `ready` is called with
/// the address and the capabilities kept.
pub fn serve(config: AgentConfig, ready: impl FnOnce(SocketAddr, Vec<String>)) -> Result<()> {
    if config.token.trim().is_empty() {
        return Err(Error::invalid("token", "empty: set NETPROBE_TOKEN or pass --token-file"));
    }
    // Before any thread starts: an agent runs for months, its heap must not grow with its bursts.
    crate::net::memory::few_arenas();
    // Before the capabilities go: mounting tracefs, where it must, needs CAP_SYS_ADMIN.
    let drops: Arc<dyn DropTrace> = match config.drop_trace {
        false => Arc::new(NoTrace("tracing turned off (--no-drop-trace)".into())),
        true => match Tracefs::open() {
            Ok(tracefs) => Arc::new(tracefs),
            Err(why) => Arc::new(NoTrace(why)),
        },
    };
    let ways = Ways {
        io: Arc::new(Sockets::new(MAX_PACKETS_PER_SECOND)),
        counters: Arc::new(NodeFirewall::default()),
        node: Arc::new(ThisNode),
        peers: Arc::new(HttpAgents::new(config.token.clone(), Duration::from_secs(5))?),
        drops,
    };
    let mesh_agents = Arc::new(HttpAgents::new(config.token.clone(), Duration::from_secs(10))?);
    let agent = Agent::new(config.token, config.peer_port, ways).on_node(config.node_name);
    let metrics = agent.metrics();
    crate::net::http_server::serve(config.listen, router(agent), Default::default(), |bound| {
        // The listener is open: from here on the agent needs only captures and counters.
        let kept = crate::net::privilege::keep_only(&crate::net::privilege::AGENT_CAPABILITIES);
        ready(bound, kept);
        let mut mesh = config.mesh?;
        // The agent asks itself for sends: on its own address, or loopback when it listens on all.
        mesh.me_agent = if bound.ip().is_unspecified() {
            SocketAddr::from((Ipv4Addr::LOCALHOST, bound.port()))
        } else {
            bound
        };
        Some(Box::pin(super::mesh::run(mesh_agents, Arc::new(ThisNode), mesh, metrics)))
    })
}

/// The agent's routes: `/healthz` open to anyone (the kubelet's readiness probe sends no token; it
/// answers "ok" and nothing else), everything under /v1 behind the token.
pub fn router(agent: Agent) -> Router {
    let protected = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/expect", post(expect))
        .route("/v1/send", post(send))
        .route("/v1/collect", post(collect))
        .route("/v1/expect-many", post(expect_many).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .route("/v1/send-many", post(send_many).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .route("/v1/collect-many", post(collect_many).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .route("/v1/expectation/{probe_id}", get(expectation))
        .route_layer(middleware::from_fn_with_state(agent.clone(), authorise));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // Open like /healthz: it reads counters and changes nothing.
        .route("/metrics", get(metrics))
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

fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(ApiError { error: error.into() })).into_response()
}

/// The bearer token, compared in constant time, before any body is read.
async fn authorise(State(agent): State<Agent>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let given =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(agent.token.as_bytes())));
    if !ok {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    next.run(request).await
}

async fn health(State(agent): State<Agent>) -> Response {
    let node = agent.node_name.as_deref().map(str::to_string);
    Json(AgentHealth { version: env!("CARGO_PKG_VERSION").to_string(), node }).into_response()
}

/// Runs blocking work (captures, commands) off the runtime; a panic there is an error answer.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(_) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "the agent's worker failed")),
    }
}

/// The candidate rules' counters in a snapshot, or why they cannot be read.
fn read_counters(snapshot: &Snapshot, flow: &Flow) -> (Candidates, Option<String>) {
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
fn unfit_peer(ip: Ipv4Addr, own: &[Ipv4Addr]) -> Option<&'static str> {
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
fn vni_in_use(agent: &Agent, vni: u32) -> Option<Response> {
    agent.ways.node.vxlan_devices().unwrap_or_default().iter().any(|d| d.vni == vni).then(|| {
        refuse(
            StatusCode::FORBIDDEN,
            format!("VNI {vni} is used by a vxlan device of this node: pick another with --vni"),
        )
    })
}

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

/// This node's vxlan devices as the API shows them (those whose MTU can be read); `None` when
/// they could not be read.
fn devices_seen(node: &dyn NodeFacts) -> Option<Vec<VxlanDeviceSeen>> {
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

/// The ICMP destination-unreachable messages about a target's probes, by sender and code, but
/// fragmentation-needed (which `frag_needed` carries).
fn unreachable_seen(said: &[crate::wire::vxlan::Unreachable]) -> Vec<UnreachableSeen> {
    let mut seen: Vec<UnreachableSeen> = Vec::new();
    for u in said.iter().filter(|u| u.mtu.is_none()) {
        match seen.iter_mut().find(|s| s.from == u.from && s.code == u.code) {
            Some(s) => s.count += 1,
            None => seen.push(UnreachableSeen { from: u.from, code: u.code, count: 1 }),
        }
    }
    seen
}

/// An entry refused, with the status the single request would have answered.
type Refusal = (StatusCode, String);

fn refused<T>(status: StatusCode, error: impl Into<String>) -> std::result::Result<T, Refusal> {
    Err((status, error.into()))
}

/// A whole `-many` answer: each entry's answer in the order asked.
fn each<T: serde::Serialize>(answers: Vec<std::result::Result<T, Refusal>>) -> Response {
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
fn single<T: serde::Serialize>(
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
fn batch_size(entries: usize) -> Option<Response> {
    (entries == 0 || entries > MAX_BATCH)
        .then(|| refuse(StatusCode::BAD_REQUEST, format!("1 to {MAX_BATCH} entries in one request")))
}

async fn expect(State(agent): State<Agent>, Json(req): Json<ExpectRequest>) -> Response {
    let many = ExpectMany {
        port: req.port,
        vni: req.vni,
        window_ms: req.window_ms,
        probes: vec![ExpectedProbe { probe_id: req.probe_id, from: req.from, to: req.to }],
    };
    single(open_expectations(agent, many).await)
}

async fn expect_many(State(agent): State<Agent>, Json(req): Json<ExpectMany>) -> Response {
    if let Some(refused) = batch_size(req.probes.len()) {
        return refused;
    }
    match open_expectations(agent, req).await {
        Ok(answers) => each(answers),
        Err(refused) => refused,
    }
}

/// Opens an expectation for each probe; one read of the counters serves them all.
async fn open_expectations(
    agent: Agent,
    req: ExpectMany,
) -> std::result::Result<Vec<std::result::Result<ExpectResponse, Refusal>>, Response> {
    if req.window_ms > MAX_WINDOW_MS || req.vni > vxlan::MAX_VNI || req.port == 0 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("window_ms at most {MAX_WINDOW_MS}, vni at most {}, port not 0", vxlan::MAX_VNI),
        ));
    }
    if let Some(refused) = vni_in_use(&agent, req.vni) {
        return Err(refused);
    }
    let own = agent.ways.node.addresses();
    let mut answers: Vec<std::result::Result<ExpectResponse, Refusal>> = Vec::with_capacity(req.probes.len());
    let mut fit = Vec::new();
    for (index, probe) in req.probes.iter().enumerate() {
        match unfit_peer(probe.from, &own) {
            Some(why) => answers.push(refused(
                StatusCode::FORBIDDEN,
                format!("{} is {why}: not a node to expect probes from", probe.from),
            )),
            None => {
                answers.push(refused(StatusCode::INTERNAL_SERVER_ERROR, "not opened"));
                fit.push(index);
            }
        }
    }
    // Check and reserve in one step, so concurrent requests cannot all pass the check: as many
    // as there is room for, the rest refused as busy.
    let room = {
        let mut open = agent.open.lock().unwrap_or_else(|e| e.into_inner());
        open.expectations.retain(|_, e| e.expires > Instant::now());
        let room = MAX_OPEN.saturating_sub(open.expectations.len() + open.reserved).min(fit.len());
        open.reserved += room;
        room
    };
    for &index in &fit[room..] {
        answers[index] =
            refused(StatusCode::TOO_MANY_REQUESTS, "too many open expectations on this agent: try again");
    }
    fit.truncate(room);
    // Released however this handler ends, also when its caller goes away mid-request.
    let _reservation = Reservation(agent.clone(), room);
    let state = agent.clone();
    blocking(move || {
        let window = Duration::from_millis(req.window_ms);
        // Counters first: the window they cover must include every probe.
        let before = state.ways.counters.earlier();
        for index in fit {
            let probe = &req.probes[index];
            let flow =
                Flow { source: probe.from, destination: probe.to, port: req.port, path: Path::Inbound };
            let (counters_before, counters_error) = read_counters(&before, &flow);
            let listen = ListenSpec {
                from: probe.from,
                port: req.port,
                vni: req.vni,
                probe_id: probe.probe_id,
                window,
            };
            let listener = match state.ways.io.listen(listen) {
                Ok(listener) => listener,
                Err(e) => {
                    answers[index] = refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
                    continue;
                }
            };
            let watched = Watched { len: vxlan::probe_packet_len(probe.probe_id) };
            let drops = state.ways.drops.watch(watched);
            answers[index] = Ok(ExpectResponse {
                control_port: listener.control_port(),
                interface: listener.interface().to_string(),
                interface_mtu: crate::net::interface::mtu(listener.interface()).ok(),
            });
            let expectation = Expectation {
                listener,
                drops,
                from: probe.from,
                to: probe.to,
                port: req.port,
                vni: req.vni,
                counters_before,
                counters_error,
                window,
                expires: Instant::now() + window + UNCOLLECTED_GRACE,
            };
            state
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .expectations
                .insert(probe.probe_id, expectation);
        }
        Ok(answers)
    })
    .await
}

/// Expectations being set up, counted against MAX_OPEN until they are open (or have failed).
struct Reservation(Agent, usize);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.open.lock().unwrap_or_else(|e| e.into_inner()).reserved -= self.1;
    }
}

/// What this agent expects for a probe: asked by the agent about to send it. The capture then
/// listens a whole window from now, so probes that leave late (a loaded node) are still heard.
async fn expectation(State(agent): State<Agent>, UrlPath(probe_id): UrlPath<u64>) -> Response {
    let mut open = agent.open.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    match open.expectations.get_mut(&probe_id).filter(|e| e.expires > now) {
        // Its capture has ended: sending now would only make probes nobody hears.
        Some(e) if !e.listener.extend(now + e.window) => refuse(
            StatusCode::GONE,
            format!("the capture for probe {probe_id} has ended: too late to send, ask for a new one"),
        ),
        Some(e) => {
            e.expires = e.expires.max(now + e.window + UNCOLLECTED_GRACE);
            Json(ExpectationInfo {
                from: e.from,
                port: e.port,
                control_port: e.listener.control_port(),
                vni: e.vni,
            })
            .into_response()
        }
        None => refuse(StatusCode::NOT_FOUND, format!("no expectation for probe {probe_id}")),
    }
}

async fn collect(State(agent): State<Agent>, Json(req): Json<CollectRequest>) -> Response {
    single(collect_expectations(agent, vec![req.probe_id]).await)
}

async fn collect_many(State(agent): State<Agent>, Json(req): Json<CollectMany>) -> Response {
    if let Some(refused) = batch_size(req.probe_ids.len()) {
        return refused;
    }
    match collect_expectations(agent, req.probe_ids).await {
        Ok(answers) => each(answers),
        Err(refused) => refused,
    }
}

/// Ends each expectation and says what arrived; one read of the counters, after every capture
/// has ended, serves them all.
async fn collect_expectations(
    agent: Agent,
    probe_ids: Vec<u64>,
) -> std::result::Result<Vec<std::result::Result<CollectResponse, Refusal>>, Response> {
    let taken: Vec<(u64, Option<Expectation>)> = {
        let mut open = agent.open.lock().unwrap_or_else(|e| e.into_inner());
        probe_ids.iter().map(|id| (*id, open.expectations.remove(id))).collect()
    };
    let counters = agent.ways.counters.clone();
    let node = agent.ways.node.clone();
    blocking(move || {
        // Every capture ends first; then one read of the counters, made for the first answer
        // that needs it, serves them all.
        let ended: Vec<_> = taken
            .into_iter()
            .map(|(probe_id, expectation)| {
                let Some(e) = expectation else {
                    return refused(StatusCode::NOT_FOUND, format!("no expectation for probe {probe_id}"));
                };
                let route_interface = e.listener.interface().to_string();
                let heard =
                    e.listener.finish().map_err(|err| (StatusCode::SERVICE_UNAVAILABLE, err.to_string()))?;
                let traced = e.drops.map(|watch| watch.finish());
                let flow = Flow { source: e.from, destination: e.to, port: e.port, path: Path::Inbound };
                Ok((heard, traced, flow, e.counters_before, e.counters_error, route_interface))
            })
            .collect();
        let after = std::cell::OnceCell::new();
        let devices = std::cell::OnceCell::new();
        let answers = ended
            .into_iter()
            .map(|ended| {
                let (heard, traced, flow, before, before_error, route_interface) = ended?;
                let (kernel_drops, trace_error) = match traced {
                    Ok(Ok(drops)) => (Some(drops), None),
                    Ok(Err(why)) | Err(why) => (None, Some(why)),
                };
                let (after, error) = read_counters(after.get_or_init(|| counters.snapshot()), &flow);
                let mut arrived_seqs: Vec<u32> = heard.probes.iter().copied().collect();
                arrived_seqs.sort_unstable();
                let kernel = after.kernel.since(&before.kernel);
                // Where the probes came in by another interface than the way back, the filter
                // that may refuse them for it.
                let rp_filter = heard
                    .interfaces
                    .iter()
                    .find(|name| **name != route_interface)
                    .and_then(|name| crate::net::snmp::rp_filter(name));
                Ok(CollectResponse {
                    arrived_seqs,
                    kernel_drops,
                    trace_error,
                    arrived: heard.probes.len() as u32,
                    control_arrived: heard.control.len() as u32,
                    dropping_rules: rules::grown(&before, &after),
                    udp_csum_errors: kernel.udp_in_csum_errors,
                    udp_no_ports: kernel.udp_no_ports,
                    reverse_path_filter_drops: kernel.reverse_path_filter,
                    counters_error: before_error.or(error),
                    arrived_on: heard.interfaces,
                    route_interface: Some(route_interface),
                    rp_filter,
                    vxlan_devices: devices.get_or_init(|| devices_seen(node.as_ref())).clone(),
                })
            })
            .collect();
        Ok(answers)
    })
    .await
}

async fn send(State(agent): State<Agent>, Json(req): Json<SendRequest>) -> Response {
    let many = SendMany {
        port: req.port,
        vni: req.vni,
        count: req.count,
        sizes: req.sizes,
        targets: vec![SendTarget { probe_id: req.probe_id, to: req.to, control_port: req.control_port }],
    };
    single(send_probes(agent, many).await)
}

async fn send_many(State(agent): State<Agent>, Json(req): Json<SendMany>) -> Response {
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
    let own = agent.ways.node.addresses();
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
        let peers = agent.ways.peers.clone();
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
        let before = agent.ways.counters.earlier();
        // Asked again just before the probes leave when reading the counters took a while (a
        // busy node): the question keeps the peer's capture open for them, or says it is too
        // late, and then nothing is sent to it. An answer younger than that still stands.
        let still = match asked_at.elapsed() < ASK_AGAIN_AFTER {
            true => vec![Some(()); targets.len()],
            false => runtime.block_on(futures_util::future::join_all(targets.iter().map(|&i| {
                let t = &req.targets[i];
                let asked =
                    agent.ways.peers.expectation(SocketAddr::from((t.to, agent.peer_port)), t.probe_id);
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
        let cached = |i: &usize| crate::net::interface::cached_path_mtu(req.targets[*i].to);
        let cache_before: Vec<_> = if sized { going.iter().map(cached).collect() } else { Vec::new() };
        let sent = match going.is_empty() {
            true => Vec::new(),
            false => agent.ways.io.send(spec)?,
        };
        let cache_after: Vec<_> = if sized { going.iter().map(cached).collect() } else { Vec::new() };
        // The probes are out: the next send may start while this one's counters are read.
        drop(slot);
        let after = agent.ways.counters.snapshot();
        let devices = devices_seen(agent.ways.node.as_ref());
        // The pod network's device: the largest MTU, with its checksum offload.
        let widest = devices.iter().flatten().max_by_key(|d| d.mtu).cloned();
        for (k, (&i, sent)) in going.iter().zip(sent).enumerate() {
            let to = req.targets[i].to;
            let route_cache = match (cache_before.get(k), cache_after.get(k)) {
                (Some(before), Some(after)) => Some(route_cache_words(to, before, after)),
                _ => None,
            };
            let local = agent.ways.node.address_towards(to).unwrap_or(Ipv4Addr::UNSPECIFIED);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::interface::VxlanDevice;
    use crate::net::probe_io::{Heard, Sent};
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use std::collections::{HashSet, VecDeque};
    use tower::ServiceExt;

    const TOKEN: &str = "s3cret";

    /// Probe I/O that hears `heard` (or fails) and sends as told.
    struct FakeIo {
        heard: std::result::Result<u32, String>,
        left: u32,
    }

    struct FakeListener(std::result::Result<u32, String>);

    impl Listener for FakeListener {
        fn interface(&self) -> &str {
            "eth0"
        }
        fn control_port(&self) -> u16 {
            40000
        }
        fn extend(&self, _: Instant) -> bool {
            true
        }
        fn finish(self: Box<Self>) -> Result<Heard> {
            match self.0 {
                Ok(n) => Ok(Heard {
                    probes: (0..n).collect(),
                    control: (0..n).collect(),
                    interfaces: vec!["eth0".into()],
                }),
                Err(e) => Err(Error::could_not_run("capturing on eth0", e)),
            }
        }
    }

    impl ProbeIo for FakeIo {
        fn listen(&self, _: ListenSpec) -> Result<Box<dyn Listener>> {
            Ok(Box::new(FakeListener(self.heard.clone())))
        }
        fn send(&self, spec: SendSpec) -> Result<Vec<Sent>> {
            let sent = Sent {
                left: (0..self.left.min(spec.count)).collect(),
                control_left: HashSet::new(),
                ..Sent::default()
            };
            Ok(vec![sent; spec.targets.len()])
        }
    }

    /// Counters that read as the scripted snapshots, one per read (the last one repeats).
    struct FakeCounters(Mutex<VecDeque<Snapshot>>);

    impl RuleCounters for FakeCounters {
        fn snapshot(&self) -> Arc<Snapshot> {
            let mut queue = self.0.lock().unwrap();
            Arc::new(if queue.len() > 1 {
                queue.pop_front().unwrap()
            } else {
                queue.front().cloned().unwrap_or_default()
            })
        }
    }

    fn filter(drop_packets: u64, invalid_packets: u64) -> Snapshot {
        let text = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n[{invalid_packets}:0] -A INPUT -m conntrack --ctstate INVALID -j DROP\n\
             [{drop_packets}:0] -A INPUT -p udp -m udp --dport 8472 -j DROP\nCOMMIT\n"
        );
        Snapshot {
            iptables: vec![("iptables-nft-save".into(), text)],
            nft_json: None,
            errors: vec![],
            kernel: Default::default(),
        }
    }

    /// This node: 198.51.100.1, with flannel's VNI 1 in use.
    struct FakeNode;

    impl NodeFacts for FakeNode {
        fn addresses(&self) -> Vec<Ipv4Addr> {
            vec![Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::LOCALHOST]
        }
        fn vxlan_devices(&self) -> Option<Vec<VxlanDevice>> {
            Some(vec![VxlanDevice {
                name: "flannel.1".into(),
                vni: 1,
                mtu: Some(1450),
                tx_checksum: Some(true),
                port: Some(8472),
                up: true,
            }])
        }
        fn address_towards(&self, _: Ipv4Addr) -> Option<Ipv4Addr> {
            Some(Ipv4Addr::new(198, 51, 100, 1))
        }
    }

    /// Peers: only 203.0.113.2's agent expects probe 1 from us, on 8472, control port 40000.
    struct FakePeers;

    impl PeerCheck for FakePeers {
        fn expectation(
            &self,
            peer: SocketAddr,
            probe_id: u64,
        ) -> Pin<Box<dyn Future<Output = Option<ExpectationInfo>> + Send + '_>> {
            let known = peer == "203.0.113.2:9473".parse().unwrap() && probe_id == 1;
            Box::pin(async move {
                known.then(|| ExpectationInfo {
                    from: Ipv4Addr::new(198, 51, 100, 1),
                    port: 8472,
                    control_port: 40000,
                    vni: 16777200,
                })
            })
        }
    }

    fn agent(io: FakeIo, snapshots: Vec<Snapshot>) -> Router {
        router(Agent::new(
            TOKEN.into(),
            9473,
            Ways {
                io: Arc::new(io),
                counters: Arc::new(FakeCounters(Mutex::new(snapshots.into()))),
                node: Arc::new(FakeNode),
                peers: Arc::new(FakePeers),
                drops: Arc::new(NoTrace("not traced in unit tests".into())),
            },
        ))
    }

    async fn call(
        app: &Router,
        path: &str,
        token: Option<&str>,
        body: String,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = HttpRequest::post(path).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = app.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    fn expect_body(probe_id: u64) -> String {
        format!(
            r#"{{"probe_id":{probe_id},"from":"203.0.113.2","to":"198.51.100.1","port":8472,"vni":16777200,"window_ms":2000}}"#
        )
    }

    #[tokio::test]
    async fn the_token_is_checked_before_the_body_is_read() {
        let app = agent(FakeIo { heard: Ok(5), left: 5 }, vec![filter(0, 0)]);
        // A body far over the limit, without the token: refused for the token, not read.
        let (status, body) = call(&app, "/v1/expect", None, "x".repeat(64 * 1024)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "missing or wrong token", "no schema details for strangers");
        let (status, _) = call(&app, "/v1/expect", Some("s3cre"), expect_body(1)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a prefix of the token is not the token");
        let (status, _) = call(&app, "/v1/expect", Some(TOKEN), "x".repeat(MAX_BODY + 1)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let health =
            app.clone().oneshot(HttpRequest::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(health.status(), StatusCode::OK, "the readiness probe needs no token");
    }

    #[tokio::test]
    async fn busy_counters_that_cannot_match_are_not_reported() {
        // Between expect and collect: kube-proxy's INVALID drop grew by 90, the 8472 rule by 5.
        let app = agent(FakeIo { heard: Ok(5), left: 5 }, vec![filter(0, 10), filter(5, 100)]);
        let (status, _) = call(&app, "/v1/expect", Some(TOKEN), expect_body(7)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(&app, "/v1/collect", Some(TOKEN), r#"{"probe_id":7}"#.into()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["arrived"], 5);
        assert_eq!(
            body["dropping_rules"],
            serde_json::json!([{"rule": "-t filter -A INPUT -p udp -m udp --dport 8472 -j DROP", "packets": 5}])
        );
        assert_eq!(body["counters_error"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn a_failed_capture_is_an_error_and_unreadable_counters_are_said() {
        let app =
            agent(FakeIo { heard: Err("the capture thread failed".into()), left: 5 }, vec![filter(0, 0)]);
        call(&app, "/v1/expect", Some(TOKEN), expect_body(8)).await;
        let (status, body) = call(&app, "/v1/collect", Some(TOKEN), r#"{"probe_id":8}"#.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["error"].as_str().unwrap().contains("capture thread failed"), "{body}");

        let unreadable =
            Snapshot { errors: vec!["iptables-nft-save: not installed".into()], ..Snapshot::default() };
        let app = agent(FakeIo { heard: Ok(5), left: 5 }, vec![unreadable]);
        call(&app, "/v1/expect", Some(TOKEN), expect_body(9)).await;
        let (_, body) = call(&app, "/v1/collect", Some(TOKEN), r#"{"probe_id":9}"#.into()).await;
        assert_eq!(body["counters_error"], "iptables-nft-save: not installed");
    }

    fn send_body(probe_id: u64, to: &str, port: u16, control_port: u16, vni: u32) -> String {
        format!(
            r#"{{"probe_id":{probe_id},"to":"{to}","port":{port},"control_port":{control_port},"vni":{vni},"count":5}}"#
        )
    }

    #[tokio::test]
    async fn send_goes_only_to_an_agent_that_expects_exactly_this_probe() {
        let app = agent(FakeIo { heard: Ok(0), left: 3 }, vec![filter(0, 0)]);
        let (status, answer) =
            call(&app, "/v1/send", Some(TOKEN), send_body(1, "203.0.113.2", 8472, 40000, 16777200)).await;
        assert_eq!((status, answer["left_source"].as_u64()), (StatusCode::OK, Some(3)), "{answer}");
        for (body, want, why) in [
            (send_body(1, "203.0.113.2", 0, 40000, 16777200), StatusCode::BAD_REQUEST, "port 0"),
            (
                send_body(2, "203.0.113.2", 8472, 40000, 16777200),
                StatusCode::FORBIDDEN,
                "a probe nobody expects",
            ),
            (
                send_body(1, "203.0.113.9", 8472, 40000, 16777200),
                StatusCode::FORBIDDEN,
                "not an agent (a victim)",
            ),
            (
                send_body(1, "203.0.113.2", 53, 40000, 16777200),
                StatusCode::FORBIDDEN,
                "another port than agreed",
            ),
            (send_body(1, "203.0.113.2", 8472, 22, 16777200), StatusCode::FORBIDDEN, "another control port"),
            (send_body(1, "127.0.0.1", 8472, 40000, 16777200), StatusCode::FORBIDDEN, "loopback"),
            (send_body(1, "224.0.0.251", 8472, 40000, 16777200), StatusCode::FORBIDDEN, "multicast"),
            (send_body(1, "192.0.2.255", 8472, 40000, 16777200), StatusCode::FORBIDDEN, "broadcast"),
            (send_body(1, "198.51.100.1", 8472, 40000, 16777200), StatusCode::FORBIDDEN, "this node"),
            (send_body(1, "203.0.113.2", 8472, 40000, 1), StatusCode::FORBIDDEN, "flannel's VNI"),
        ] {
            let (status, answer) = call(&app, "/v1/send", Some(TOKEN), body).await;
            assert_eq!(status, want, "{why}: {answer}");
        }
    }

    #[tokio::test]
    async fn expectations_are_capped_by_what_they_hold() {
        let app = agent(FakeIo { heard: Ok(5), left: 5 }, vec![filter(0, 0)]);
        for id in 0..MAX_OPEN as u64 {
            let (status, _) = call(&app, "/v1/expect", Some(TOKEN), expect_body(1000 + id)).await;
            assert_eq!(status, StatusCode::OK, "expectation {id}");
        }
        let (status, body) = call(&app, "/v1/expect", Some(TOKEN), expect_body(9999)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        // Collecting one frees its slot.
        call(&app, "/v1/collect", Some(TOKEN), r#"{"probe_id":1000}"#.into()).await;
        let (status, _) = call(&app, "/v1/expect", Some(TOKEN), expect_body(9999)).await;
        assert_eq!(status, StatusCode::OK);
        // Expecting probes from loopback or with flannel's VNI is refused.
        let loopback = expect_body(5).replace("\"from\":\"203.0.113.2\"", "\"from\":\"127.0.0.1\"");
        assert_eq!(call(&app, "/v1/expect", Some(TOKEN), loopback).await.0, StatusCode::FORBIDDEN);
        let vni = expect_body(6).replace("16777200", "1");
        assert_eq!(call(&app, "/v1/expect", Some(TOKEN), vni).await.0, StatusCode::FORBIDDEN);
    }

    fn expect_many_body(froms: &[(u64, &str)]) -> String {
        let probes: Vec<String> = froms
            .iter()
            .map(|(id, from)| format!(r#"{{"probe_id":{id},"from":"{from}","to":"198.51.100.1"}}"#))
            .collect();
        format!(r#"{{"port":8472,"vni":16777200,"window_ms":2000,"probes":[{}]}}"#, probes.join(","))
    }

    #[tokio::test]
    async fn many_probes_share_one_read_of_the_counters_and_each_gets_its_own_answer() {
        // One read when the expectations open (the 8472 rule at 0), one when they are collected
        // (at 10): both probes see it grow by 10. A read per probe would give the second 0.
        let app = agent(FakeIo { heard: Ok(3), left: 5 }, vec![filter(0, 0), filter(10, 0), filter(10, 0)]);
        let body = expect_many_body(&[(21, "203.0.113.2"), (22, "127.0.0.1"), (23, "192.0.2.7")]);
        let (status, answers) = call(&app, "/v1/expect-many", Some(TOKEN), body).await;
        assert_eq!(status, StatusCode::OK, "{answers}");
        assert_eq!(answers[0]["ok"]["control_port"], 40000);
        assert_eq!(answers[1]["refused"]["status"], 403, "loopback: {answers}");
        assert_eq!(answers[2]["ok"]["interface"], "eth0");
        let (status, answers) =
            call(&app, "/v1/collect-many", Some(TOKEN), r#"{"probe_ids":[23,22,21]}"#.into()).await;
        assert_eq!(status, StatusCode::OK, "{answers}");
        let rule = serde_json::json!([{"rule": "-t filter -A INPUT -p udp -m udp --dport 8472 -j DROP", "packets": 10}]);
        assert_eq!(answers[0]["ok"]["arrived"], 3);
        assert_eq!(answers[0]["ok"]["dropping_rules"], rule);
        assert_eq!(answers[1]["refused"]["status"], 404, "never opened: {answers}");
        assert_eq!(answers[2]["ok"]["dropping_rules"], rule);
    }

    #[tokio::test]
    async fn a_many_request_is_capped_and_fills_only_the_room_left() {
        let app = agent(FakeIo { heard: Ok(5), left: 5 }, vec![filter(0, 0)]);
        let too_many: Vec<(u64, &str)> = (0..=MAX_BATCH as u64).map(|id| (id, "203.0.113.2")).collect();
        let (status, _) = call(&app, "/v1/expect-many", Some(TOKEN), expect_many_body(&too_many)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "more than {MAX_BATCH} entries");
        assert_eq!(
            call(&app, "/v1/expect-many", Some(TOKEN), expect_many_body(&[])).await.0,
            StatusCode::BAD_REQUEST
        );
        for id in 0..MAX_OPEN as u64 - 2 {
            assert_eq!(call(&app, "/v1/expect", Some(TOKEN), expect_body(1000 + id)).await.0, StatusCode::OK);
        }
        let four: Vec<(u64, &str)> = (1..=4).map(|id| (id, "203.0.113.2")).collect();
        let body = expect_many_body(&four);
        let (status, answers) = call(&app, "/v1/expect-many", Some(TOKEN), body).await;
        assert_eq!(status, StatusCode::OK);
        let statuses: Vec<_> = (0..4).map(|i| answers[i]["refused"]["status"].as_u64()).collect();
        assert_eq!(statuses, [None, None, Some(429), Some(429)], "room for two: {answers}");
        // A -many body may be longer than a single request's, up to its own limit.
        let long = format!(r#"{{"probe_ids":[{}]}}"#, vec!["1"; MAX_BODY / 2].join(","));
        assert!(long.len() > MAX_BODY && long.len() < MAX_BATCH_BODY);
        assert_eq!(
            call(&app, "/v1/collect-many", Some(TOKEN), long).await.0,
            StatusCode::BAD_REQUEST,
            "too many entries, but read"
        );
        let long = "x".repeat(MAX_BATCH_BODY + 1);
        assert_eq!(call(&app, "/v1/collect-many", Some(TOKEN), long).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn send_many_sends_only_to_the_agents_that_expect_it() {
        let app = agent(FakeIo { heard: Ok(0), left: 4 }, vec![filter(0, 0)]);
        let body = r#"{"port":8472,"vni":16777200,"count":5,"targets":[
            {"probe_id":1,"to":"203.0.113.2","control_port":40000},
            {"probe_id":1,"to":"203.0.113.9","control_port":40000},
            {"probe_id":1,"to":"198.51.100.1","control_port":40000}]}"#;
        let (status, answers) = call(&app, "/v1/send-many", Some(TOKEN), body.into()).await;
        assert_eq!(status, StatusCode::OK, "{answers}");
        assert_eq!(answers[0]["ok"]["left_source"], 4);
        assert_eq!(answers[0]["ok"]["vxlan_device"]["name"], "flannel.1");
        assert_eq!(answers[1]["refused"]["status"], 403, "not an agent that expects it: {answers}");
        assert_eq!(answers[2]["refused"]["status"], 403, "this node: {answers}");
        let twice = r#"{"port":8472,"vni":16777200,"count":5,"targets":[
            {"probe_id":1,"to":"203.0.113.2","control_port":40000},
            {"probe_id":1,"to":"203.0.113.2","control_port":40000}]}"#;
        assert_eq!(call(&app, "/v1/send-many", Some(TOKEN), twice.into()).await.0, StatusCode::BAD_REQUEST);
    }
}
