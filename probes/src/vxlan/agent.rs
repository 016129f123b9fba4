//! `netprobe agent`: the per-node HTTP API `netprobe vxlan` drives. It listens for probes, sends
//! them through the kernel's UDP stack (never forging the outer source), and reads this node's
//! firewall counters to name a rule that drops them. The routes live here; the packet I/O, the
//! counters and the serving are in `net/`, behind traits, so the handlers run in tests on fakes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Json, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use super::api::*;
use super::rules::{self, Candidates, Flow, Path};
use crate::net::firewall::{NodeFirewall, RuleCounters};
use crate::net::probe_io::{ListenSpec, Listener, ProbeIo, SendSpec, Sockets};
use crate::wire::vxlan;
use crate::{Error, Result};

/// Request bodies are a few hundred bytes; anything bigger is refused before it is read.
pub const MAX_BODY: usize = 4096;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub token: String,
}

struct Expectation {
    listener: Box<dyn Listener>,
    from: Ipv4Addr,
    to: Option<Ipv4Addr>,
    port: u16,
    counters_before: Candidates,
    counters_error: Option<String>,
    expires: Instant,
}

/// The agent's state: its token, the expectations open, and its ways to the OS.
#[derive(Clone)]
pub struct Agent {
    token: Arc<String>,
    open: Arc<Mutex<HashMap<u64, Expectation>>>,
    io: Arc<dyn ProbeIo>,
    counters: Arc<dyn RuleCounters>,
}

impl Agent {
    pub fn new(token: String, io: Arc<dyn ProbeIo>, counters: Arc<dyn RuleCounters>) -> Agent {
        Agent { token: Arc::new(token), open: Arc::default(), io, counters }
    }
}

/// Serves on the node's real sockets and firewall until SIGINT/SIGTERM; `ready` is called once the
/// listener is bound.
pub fn serve(config: AgentConfig, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    if config.token.trim().is_empty() {
        return Err(Error::invalid("token", "empty: set NETPROBE_TOKEN or pass --token-file"));
    }
    let agent = Agent::new(config.token, Arc::new(Sockets), Arc::new(NodeFirewall::default()));
    crate::net::http_server::serve(config.listen, router(agent), ready)
}

/// The agent's routes: `/healthz` open to anyone (the kubelet's readiness probe sends no token; it
/// answers "ok" and nothing else), everything under /v1 behind the token.
pub fn router(agent: Agent) -> Router {
    let protected = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/expect", post(expect))
        .route("/v1/send", post(send))
        .route("/v1/collect", post(collect))
        .route_layer(middleware::from_fn_with_state(agent.clone(), authorise));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(protected)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(agent)
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

async fn health() -> Response {
    Json(AgentHealth { version: env!("CARGO_PKG_VERSION").to_string() }).into_response()
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

/// The candidate rules' counters now, or why they cannot be read.
fn read_counters(counters: &dyn RuleCounters, flow: &Flow) -> (Candidates, Option<String>) {
    let snapshot = counters.snapshot();
    let found = rules::candidates(&snapshot, flow);
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

async fn expect(State(agent): State<Agent>, Json(req): Json<ExpectRequest>) -> Response {
    if req.window_ms > MAX_WINDOW_MS || req.vni > vxlan::MAX_VNI {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("window_ms at most {MAX_WINDOW_MS}, vni at most {}", vxlan::MAX_VNI),
        );
    }
    {
        let mut open = agent.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, e| e.expires > Instant::now());
        if open.len() >= MAX_OPEN {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many open expectations on this agent");
        }
    }
    let state = agent.clone();
    let result = blocking(move || {
        let window = Duration::from_millis(req.window_ms);
        let flow = Flow { source: req.from, destination: req.to, port: req.port, path: Path::Inbound };
        // Counters first: the window they cover must include every probe.
        let (counters_before, counters_error) = read_counters(state.counters.as_ref(), &flow);
        let listener = state.io.listen(ListenSpec {
            from: req.from,
            port: req.port,
            vni: req.vni,
            probe_id: req.probe_id,
            window,
        })?;
        let response = ExpectResponse {
            control_port: listener.control_port(),
            interface: listener.interface().to_string(),
        };
        let expectation = Expectation {
            listener,
            from: req.from,
            to: req.to,
            port: req.port,
            counters_before,
            counters_error,
            expires: Instant::now() + window + Duration::from_secs(5),
        };
        state.open.lock().unwrap_or_else(|e| e.into_inner()).insert(req.probe_id, expectation);
        Ok(response)
    })
    .await;
    match result {
        Ok(response) => Json(response).into_response(),
        Err(refused) => refused,
    }
}

async fn collect(State(agent): State<Agent>, Json(req): Json<CollectRequest>) -> Response {
    let Some(expectation) = agent.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&req.probe_id) else {
        return refuse(StatusCode::NOT_FOUND, format!("no expectation for probe {}", req.probe_id));
    };
    let counters = agent.counters.clone();
    let result = blocking(move || {
        let heard = expectation.listener.finish()?;
        let flow = Flow {
            source: expectation.from,
            destination: expectation.to,
            port: expectation.port,
            path: Path::Inbound,
        };
        let (after, error) = read_counters(counters.as_ref(), &flow);
        Ok(CollectResponse {
            arrived: heard.probes.len() as u32,
            control_arrived: heard.control.len() as u32,
            dropping_rules: rules::grown(&expectation.counters_before, &after),
            counters_error: expectation.counters_error.or(error),
        })
    })
    .await;
    match result {
        Ok(response) => Json(response).into_response(),
        Err(refused) => refused,
    }
}

async fn send(State(agent): State<Agent>, Json(req): Json<SendRequest>) -> Response {
    if req.count == 0 || req.count > MAX_COUNT || req.vni > vxlan::MAX_VNI || req.port == 0 {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("count must be 1 to {MAX_COUNT}, vni at most {}, port not 0", vxlan::MAX_VNI),
        );
    }
    let result = blocking(move || {
        let local = local_address_towards(req.to);
        let flow = Flow { source: local, destination: Some(req.to), port: req.port, path: Path::Outbound };
        let (before, before_error) = read_counters(agent.counters.as_ref(), &flow);
        let sent = agent.io.send(SendSpec {
            to: req.to,
            port: req.port,
            control_port: req.control_port,
            vni: req.vni,
            probe_id: req.probe_id,
            count: req.count,
            gap: Duration::from_millis(SEND_GAP_MS),
        })?;
        let (after, after_error) = read_counters(agent.counters.as_ref(), &flow);
        Ok(SendResponse {
            sent: req.count,
            left_source: sent.left.len() as u32,
            control_left: sent.control_left.len() as u32,
            send_error: sent.send_error,
            dropping_rules: rules::grown(&before, &after),
            counters_error: before_error.or(after_error),
        })
    })
    .await;
    match result {
        Ok(response) => Json(response).into_response(),
        Err(refused) => refused,
    }
}

/// This node's address on the route to `to` (for matching rules by -s), or unspecified.
fn local_address_towards(to: Ipv4Addr) -> Ipv4Addr {
    crate::net::interface::for_route_to(to)
        .ok()
        .and_then(|name| crate::net::interface::lookup(&name).ok())
        .and_then(|i| i.ipv4.first().copied())
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::firewall::Snapshot;
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
        fn finish(self: Box<Self>) -> Result<Heard> {
            match self.0 {
                Ok(n) => Ok(Heard { probes: (0..n).collect(), control: (0..n).collect() }),
                Err(e) => Err(Error::could_not_run("capturing on eth0", e)),
            }
        }
    }

    impl ProbeIo for FakeIo {
        fn listen(&self, _: ListenSpec) -> Result<Box<dyn Listener>> {
            Ok(Box::new(FakeListener(self.heard.clone())))
        }
        fn send(&self, spec: SendSpec) -> Result<Sent> {
            Ok(Sent {
                left: (0..self.left.min(spec.count)).collect(),
                control_left: HashSet::new(),
                send_error: None,
            })
        }
    }

    /// Counters that read as the scripted snapshots, one per read (the last one repeats).
    struct FakeCounters(Mutex<VecDeque<Snapshot>>);

    impl RuleCounters for FakeCounters {
        fn snapshot(&self) -> Snapshot {
            let mut queue = self.0.lock().unwrap();
            if queue.len() > 1 {
                queue.pop_front().unwrap()
            } else {
                queue.front().cloned().unwrap_or_default()
            }
        }
    }

    fn filter(drop_packets: u64, invalid_packets: u64) -> Snapshot {
        let text = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n[{invalid_packets}:0] -A INPUT -m conntrack --ctstate INVALID -j DROP\n\
             [{drop_packets}:0] -A INPUT -p udp -m udp --dport 8472 -j DROP\nCOMMIT\n"
        );
        Snapshot { iptables: vec![("iptables-nft-save".into(), text)], nft_json: None, errors: vec![] }
    }

    fn agent(io: FakeIo, snapshots: Vec<Snapshot>) -> Router {
        router(Agent::new(TOKEN.into(), Arc::new(io), Arc::new(FakeCounters(Mutex::new(snapshots.into())))))
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
            r#"{{"probe_id":{probe_id},"from":"198.51.100.1","to":"203.0.113.2","port":8472,"vni":16777200,"window_ms":2000}}"#
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

    #[tokio::test]
    async fn send_refuses_port_zero_and_reports_what_left() {
        let app = agent(FakeIo { heard: Ok(0), left: 3 }, vec![filter(0, 0)]);
        let body =
            r#"{"probe_id":1,"to":"203.0.113.2","port":0,"control_port":40000,"vni":16777200,"count":5}"#;
        let (status, _) = call(&app, "/v1/send", Some(TOKEN), body.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body = body.replace("\"port\":0", "\"port\":8472");
        let (status, answer) = call(&app, "/v1/send", Some(TOKEN), body).await;
        assert_eq!((status, answer["left_source"].as_u64()), (StatusCode::OK, Some(3)));
    }
}
