//! `netprobe agent`: the per-node HTTP service `netprobe vxlan` drives. It captures what arrives,
//! sends probes through the kernel's UDP stack (never forging the outer source), and reads this
//! node's iptables counters to name a rule that drops them.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::api::*;
use crate::iptables::save_format::rule_packet_counters;
use crate::net::capture::LiveCapture;
use crate::net::{interface, signal, Link};
use crate::wire::vxlan;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub token: String,
}

struct Expectation {
    stop: Arc<AtomicBool>,
    capture: JoinHandle<HashSet<u32>>,
    control: JoinHandle<HashSet<u32>>,
    counters_before: Option<HashMap<String, u64>>,
    expires: Instant,
}

#[derive(Clone)]
struct Agent {
    token: Arc<String>,
    open: Arc<Mutex<HashMap<u64, Expectation>>>,
}

/// Serves until SIGINT/SIGTERM.
pub fn serve(config: AgentConfig) -> Result<()> {
    if config.token.trim().is_empty() {
        return Err(Error::invalid("token", "empty: set NETPROBE_TOKEN or pass --token-file"));
    }
    let runtime = crate::net::runtime("starting the agent", Some(2))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::could_not_run(format!("listening on {}", config.listen), e.to_string()))?;
        let agent = Agent { token: Arc::new(config.token), open: Arc::new(Mutex::new(HashMap::new())) };
        let app = Router::new()
            .route("/v1/health", get(health))
            .route("/v1/expect", post(expect))
            .route("/v1/send", post(send))
            .route("/v1/collect", post(collect))
            .with_state(agent);
        signal::catch_interrupts();
        let stopped = async {
            while !signal::interrupted() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
            .map_err(|e| Error::could_not_run("serving the agent API", e.to_string()))
    })
}

fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(ApiError { error: error.into() })).into_response()
}

/// Constant-time comparison of the bearer token.
fn authorised(agent: &Agent, headers: &HeaderMap) -> bool {
    let Some(given) =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), agent.token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(agent): State<Agent>, headers: HeaderMap) -> Response {
    if !authorised(&agent, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    Json(AgentHealth { version: env!("CARGO_PKG_VERSION").to_string() }).into_response()
}

async fn expect(State(agent): State<Agent>, headers: HeaderMap, Json(req): Json<ExpectRequest>) -> Response {
    if !authorised(&agent, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    if req.window_ms > MAX_WINDOW_MS || req.vni > vxlan::MAX_VNI {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("window_ms at most {MAX_WINDOW_MS}, vni at most {}", vxlan::MAX_VNI),
        );
    }
    let open = agent.open.clone();
    let result = tokio::task::spawn_blocking(move || start_expectation(&open, &req)).await;
    match result {
        Ok(Ok(response)) => Json(response).into_response(),
        Ok(Err(e)) => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn start_expectation(open: &Mutex<HashMap<u64, Expectation>>, req: &ExpectRequest) -> Result<ExpectResponse> {
    {
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, e| e.expires > Instant::now());
        if open.len() >= MAX_OPEN {
            return Err(Error::could_not_run("expect", "too many open expectations on this agent"));
        }
    }
    let name = interface::for_route_to(req.from)?;
    let window = Duration::from_millis(req.window_ms);
    let deadline = Instant::now() + window;
    let stop = Arc::new(AtomicBool::new(false));
    // Capture first (filter set before anyone sends), then the control socket.
    let filter = format!("udp and src host {} and dst port {}", req.from, req.port);
    let mut capture = LiveCapture::open(&name, &filter)?;
    let control = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| Error::could_not_run("binding the control socket", e.to_string()))?;
    let control_port = control.local_addr().map(|a| a.port()).unwrap_or(0);
    let counters_before = iptables_counters();

    let (vni, probe_id, from) = (req.vni, req.probe_id, req.from);
    let stopping = stop.clone();
    let capture_thread = std::thread::spawn(move || {
        let mut seen = HashSet::new();
        while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
            let tick = (Instant::now() + Duration::from_millis(20)).min(deadline);
            while let Ok(Some(frame)) = capture.next_before(tick) {
                if let Some((_, _, _, payload)) = vxlan::outer_udp(frame.link, &frame.data) {
                    if let Some(seq) = vxlan::probe_seq(payload, vni, probe_id) {
                        seen.insert(seq);
                    }
                }
            }
        }
        seen
    });
    let stopping = stop.clone();
    let control_thread = std::thread::spawn(move || {
        let mut seen = HashSet::new();
        let _ = control.set_read_timeout(Some(Duration::from_millis(20)));
        let mut buf = [0u8; 256];
        while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok((n, SocketAddr::V4(peer))) = control.recv_from(&mut buf) {
                if *peer.ip() == from {
                    if let Some(seq) = vxlan::control_seq(&buf[..n], probe_id) {
                        seen.insert(seq);
                    }
                }
            }
        }
        seen
    });
    let expectation = Expectation {
        stop,
        capture: capture_thread,
        control: control_thread,
        counters_before,
        expires: deadline + Duration::from_secs(5),
    };
    open.lock().unwrap_or_else(|e| e.into_inner()).insert(req.probe_id, expectation);
    Ok(ExpectResponse { control_port, interface: name })
}

async fn collect(
    State(agent): State<Agent>,
    headers: HeaderMap,
    Json(req): Json<CollectRequest>,
) -> Response {
    if !authorised(&agent, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let Some(expectation) = agent.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&req.probe_id) else {
        return refuse(StatusCode::NOT_FOUND, format!("no expectation for probe {}", req.probe_id));
    };
    let result = tokio::task::spawn_blocking(move || {
        expectation.stop.store(true, Ordering::Relaxed);
        let arrived = expectation.capture.join().map(|s| s.len()).unwrap_or(0) as u32;
        let control_arrived = expectation.control.join().map(|s| s.len()).unwrap_or(0) as u32;
        let dropping_rules = dropping_rules(expectation.counters_before.as_ref());
        CollectResponse { arrived, control_arrived, dropping_rules }
    })
    .await;
    match result {
        Ok(response) => Json(response).into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn send(State(agent): State<Agent>, headers: HeaderMap, Json(req): Json<SendRequest>) -> Response {
    if !authorised(&agent, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    if req.count == 0 || req.count > MAX_COUNT || req.vni > vxlan::MAX_VNI {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("count must be 1 to {MAX_COUNT}, vni at most {}", vxlan::MAX_VNI),
        );
    }
    match tokio::task::spawn_blocking(move || send_probes(&req)).await {
        Ok(Ok(response)) => Json(response).into_response(),
        Ok(Err(e)) => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn send_probes(req: &SendRequest) -> Result<SendResponse> {
    let name = interface::for_route_to(req.to)?;
    let filter =
        format!("udp and dst host {} and (dst port {} or dst port {})", req.to, req.port, req.control_port);
    let mut capture = LiveCapture::open(&name, &filter)?;
    let counters_before = iptables_counters();
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| Error::could_not_run("binding the probe socket", e.to_string()))?;
    let mut send_error = None;
    for seq in 0..req.count {
        let probe = vxlan::probe_payload(req.vni, req.probe_id, seq);
        let control = vxlan::control_payload(req.probe_id, seq);
        for (payload, port) in [(&probe[..], req.port), (&control[..], req.control_port)] {
            if let Err(e) = socket.send_to(payload, (req.to, port)) {
                send_error.get_or_insert(e.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(SEND_GAP_MS));
    }
    // What left: read the egress capture a little past the last send.
    let (mut left, mut control_left) = (HashSet::new(), HashSet::new());
    let until = Instant::now() + Duration::from_millis(100);
    while let Some(frame) = capture.next_before(until)? {
        if let Some((_, _, port, payload)) = vxlan::outer_udp(frame.link, &frame.data) {
            if port == req.port {
                if let Some(seq) = vxlan::probe_seq(payload, req.vni, req.probe_id) {
                    left.insert(seq);
                }
            } else if let Some(seq) = vxlan::control_seq(payload, req.probe_id) {
                control_left.insert(seq);
            }
        }
    }
    Ok(SendResponse {
        sent: req.count,
        left_source: left.len() as u32,
        control_left: control_left.len() as u32,
        send_error,
        dropping_rules: dropping_rules(counters_before.as_ref()),
    })
}

/// This node's iptables rule counters, or `None` when iptables cannot be read.
fn iptables_counters() -> Option<HashMap<String, u64>> {
    let output = std::process::Command::new("iptables-save").arg("-c").output().ok()?;
    output.status.success().then(|| rule_packet_counters(&String::from_utf8_lossy(&output.stdout)))
}

/// Rules with a DROP or REJECT target whose packet counters grew since `before`, most first.
fn dropping_rules(before: Option<&HashMap<String, u64>>) -> Vec<String> {
    let (Some(before), Some(after)) = (before, iptables_counters()) else { return Vec::new() };
    let mut grown: Vec<(u64, String)> = after
        .into_iter()
        .filter(|(rule, _)| rule.ends_with("-j DROP") || rule.contains("-j REJECT"))
        .filter_map(|(rule, packets)| {
            let delta = packets.saturating_sub(before.get(&rule).copied().unwrap_or(0));
            (delta > 0).then_some((delta, rule))
        })
        .collect();
    grown.sort_by_key(|(delta, _)| std::cmp::Reverse(*delta));
    grown.into_iter().map(|(_, rule)| rule).collect()
}
