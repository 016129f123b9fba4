use super::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request as HttpRequest;
use netprobe_probes::net::firewall::RuleCounters;
use netprobe_probes::net::interface::VxlanDevice;
use netprobe_probes::net::probe_io::{Heard, Sent};
use netprobe_probes::net::probe_io::{ListenSpec, Listener, ProbeIo, SendSpec};
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
        Handles {
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
async fn through_the_api_servers_proxy_the_token_comes_in_a_header_of_its_own() {
    let app = agent(FakeIo { heard: Ok(5), left: 5 }, vec![filter(0, 0)]);
    let ask = |token: &str, bearer: Option<&str>| {
        let mut request = HttpRequest::get("/v1/health").header(TOKEN_HEADER, token);
        if let Some(bearer) = bearer {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    assert_eq!(ask(TOKEN, None).await.unwrap().status(), StatusCode::OK);
    assert_eq!(ask("s3cre", None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // The caller's own credentials for the API server, if they got through, are no token here.
    assert_eq!(ask(TOKEN, Some("an-api-token")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(ask("wrong", Some("an-api-token")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
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
    let app = agent(FakeIo { heard: Err("the capture thread failed".into()), left: 5 }, vec![filter(0, 0)]);
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
        (send_body(2, "203.0.113.2", 8472, 40000, 16777200), StatusCode::FORBIDDEN, "a probe nobody expects"),
        (
            send_body(1, "203.0.113.9", 8472, 40000, 16777200),
            StatusCode::FORBIDDEN,
            "not an agent (a victim)",
        ),
        (send_body(1, "203.0.113.2", 53, 40000, 16777200), StatusCode::FORBIDDEN, "another port than agreed"),
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
    let rule =
        serde_json::json!([{"rule": "-t filter -A INPUT -p udp -m udp --dport 8472 -j DROP", "packets": 10}]);
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

#[tokio::test]
async fn the_mesh_route_answers_the_last_evaluation_and_404_without_a_mesh() {
    let get = |app: Router| async move {
        let request = HttpRequest::get(route::MESH).header("authorization", format!("Bearer {TOKEN}"));
        let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or(serde_json::Value::Null))
    };
    let handles = || Handles {
        io: Arc::new(FakeIo { heard: Ok(5), left: 5 }),
        counters: Arc::new(FakeCounters(Mutex::new(vec![filter(0, 0)].into()))),
        node: Arc::new(FakeNode),
        peers: Arc::new(FakePeers),
        drops: Arc::new(NoTrace("not traced in unit tests".into())),
    };
    let (status, body) = get(router(Agent::new(TOKEN.into(), 9473, handles()))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("runs no mesh"), "{body}");

    let ledger = Arc::new(crate::mesh::BeaconLedger::new(Duration::from_secs(10)));
    let agent = Agent::new(TOKEN.into(), 9473, handles()).with_beacons(ledger);
    let metrics = agent.metrics();
    let lossy = crate::metrics::Outcome::Judged {
        verdict: "partial-loss",
        up: false,
        sent: 5,
        arrived: 3,
        period: (10, 7),
        jitter_s: None,
        cause: Some("the diagnosis' probes got through (5 of 5): the loss comes and goes".into()),
    };
    metrics.record_pair("node-b", "node-a", lossy);
    metrics.record_pair("node-c", "node-a", crate::metrics::Outcome::Untested);
    let fine = crate::metrics::Outcome::Judged {
        verdict: "ok",
        up: true,
        sent: 5,
        arrived: 5,
        period: (10, 10),
        jitter_s: None,
        cause: None,
    };
    metrics.record_pair("node-d", "node-a", fine);
    metrics.record_round(Duration::from_millis(3), std::time::SystemTime::now());
    let (status, body) = get(router(agent)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["period_ms"], &body["ok"]), (&serde_json::json!(10_000), &serde_json::json!(1)));
    assert!(body["evaluated_at"].as_f64().unwrap() > 1.7e9, "{body}");
    assert_eq!(
        body["pairs"][0],
        serde_json::json!({"from": "node-b", "to": "node-a", "verdict": "partial-loss", "sent": 10, "arrived": 7,
            "cause": "the diagnosis' probes got through (5 of 5): the loss comes and goes"})
    );
    assert_eq!(body["pairs"][1]["verdict"], "untested");
    assert_eq!(body["pairs"].as_array().unwrap().len(), 2, "ok pairs are counted, not listed: {body}");
}
