//! Opening expectations (a capture per probe, the counters read before) and saying what one expects.

use std::time::{Duration, Instant};

use axum::extract::{Json, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use netprobe_probes::net::drop_trace::Watched;
use netprobe_probes::net::probe_io::ListenSpec;
use netprobe_probes::vxlan::api::*;
use netprobe_probes::vxlan::rules::{Flow, Path};
use netprobe_probes::wire::vxlan;

use super::state::*;
use super::*;

pub(super) async fn expect(State(agent): State<Agent>, Json(req): Json<ExpectRequest>) -> Response {
    let many = ExpectMany {
        port: req.port,
        vni: req.vni,
        window_ms: req.window_ms,
        probes: vec![ExpectedProbe { probe_id: req.probe_id, from: req.from, to: req.to }],
    };
    single(open_expectations(agent, many).await)
}

pub(super) async fn expect_many(State(agent): State<Agent>, Json(req): Json<ExpectMany>) -> Response {
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
    let own = agent.handles.node.addresses();
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
        let before = state.handles.counters.earlier();
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
            let listener = match state.handles.io.listen(listen) {
                Ok(listener) => listener,
                Err(e) => {
                    answers[index] = refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
                    continue;
                }
            };
            let watched = Watched { len: vxlan::probe_packet_len(probe.probe_id) };
            let drops = state.handles.drops.watch(watched);
            answers[index] = Ok(ExpectResponse {
                control_port: listener.control_port(),
                interface: listener.interface().to_string(),
                interface_mtu: netprobe_probes::net::interface::mtu(listener.interface()).ok(),
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
pub(super) async fn expectation(State(agent): State<Agent>, UrlPath(probe_id): UrlPath<u64>) -> Response {
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
