//! Calling agents over HTTP: [`HttpAgents`] is the real [`AgentApi`] (hyper-util's client, the
//! stack kube's client already brings; plain HTTP with a bearer token), each operation on its
//! route of `netprobe_probes::vxlan::api::route`. [`drive`] is `netprobe vxlan` on it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::collections::HashMap;

use netprobe_k8s::proxy::{refused_by_api, PodProxy, ProxyAnswer, AGENT_NAMESPACE};
use netprobe_probes::cluster::ApiConfig;
use netprobe_probes::vxlan::api::*;
use netprobe_probes::vxlan::{self, AgentAddr, AgentApi, VxlanReport};
use netprobe_probes::{Error, Result};

use crate::server::PeerCheck;

/// How `netprobe vxlan` reaches the agents.
#[derive(Clone, Debug)]
pub enum Reach {
    /// At each node's address (the agents listen on the host network).
    Direct,
    /// Through the API server's proxy to each agent's pod (`--via-api`): wherever kubectl works.
    ViaApi(ApiConfig),
    /// Directly if any agent answers there, else through the API server (`--all-nodes`).
    Auto(ApiConfig),
}

/// `netprobe vxlan`: every ordered pair of `config.nodes` probed through their agents over HTTP.
pub fn drive(config: vxlan::Config, reach: Reach) -> Result<VxlanReport> {
    vxlan::run(config, |config| HttpAgents::reaching(config, reach))
}

/// `netprobe vxlan --from-mesh`: what each of `config.nodes`' agents' mesh last judged, over HTTP.
pub fn read_mesh(
    config: vxlan::Config,
    untested: Vec<vxlan::UntestedNode>,
    reach: Reach,
) -> Result<vxlan::MeshReport> {
    vxlan::mesh_state::read(config, untested, |config| HttpAgents::reaching(config, reach))
}

/// Which node's agent runs a command for a caller outside the cluster.
#[derive(Clone, Debug)]
pub enum OnNode {
    /// This Node (`--node`).
    Named(String),
    /// The Node whose InternalIP shares the longest prefix with these addresses (a VIP's segment).
    ClosestTo(Vec<std::net::IpAddr>),
    /// Any Node with a ready agent (the first by name).
    Any,
}

/// Runs `netprobe ARGV` in the agent of the node `on` picks, through the API server's proxy: the
/// node's name and what the command did.
pub fn run_on_node(api: &ApiConfig, token: &str, on: OnNode, argv: Vec<String>) -> Result<RunAnswer> {
    let runtime = netprobe_probes::net::runtime("starting the API client", None)?;
    runtime.block_on(async {
        let proxy = PodProxy::connect(api, AGENT_NAMESPACE).await?;
        let pods: Vec<_> =
            proxy.agent_pods().await?.into_iter().filter(|p| p.ready && p.node.is_some()).collect();
        let nodes = netprobe_k8s::nodes(api).await?;
        let address_of = |node: &str| {
            nodes
                .iter()
                .find(|n| n.name == node)
                .and_then(|n| n.internal_ip)
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        };
        let mut ready: Vec<_> =
            pods.iter().map(|p| (p.node.clone().unwrap_or_default(), p.name.clone())).collect();
        ready.sort();
        let chosen = match &on {
            OnNode::Named(node) => ready.iter().find(|(n, _)| n == node).cloned().ok_or_else(|| {
                Error::could_not_run(
                    format!("running on node {node} through the API server at {}", proxy.server()),
                    "no ready netprobe agent runs on that node (kubectl -n netprobe get pods -o wide)",
                )
            })?,
            OnNode::ClosestTo(targets) => ready
                .iter()
                .max_by_key(|(node, _)| {
                    let ip = address_of(node);
                    (
                        targets.iter().map(|t| common_prefix(ip, *t)).sum::<u32>(),
                        std::cmp::Reverse(node.clone()),
                    )
                })
                .cloned()
                .ok_or_else(|| no_agent(proxy.server()))?,
            OnNode::Any => ready.first().cloned().ok_or_else(|| no_agent(proxy.server()))?,
        };
        let (node, pod) = chosen;
        let agent = AgentAddr {
            label: node.clone(),
            address: SocketAddr::new(address_of(&node), DEFAULT_AGENT_PORT),
        };
        let door = Door::ViaApi { proxy, pods: [(agent.address, pod)].into() };
        let agents =
            HttpAgents { door, token: token.to_string(), timeout: Duration::from_secs(RUN_WITHIN_S + 10) };
        agents.call(&agent, route::RUN, Some(&RunRequest { argv })).await
    })
}

fn no_agent(server: &str) -> Error {
    Error::could_not_run(
        format!("running on a node through the API server at {server}"),
        format!("no ready netprobe agent: {}", vxlan::DEPLOY_HINT),
    )
}

/// The bits two addresses share from the left (0 across families).
fn common_prefix(a: std::net::IpAddr, b: std::net::IpAddr) -> u32 {
    match (a, b) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => 0,
    }
}

/// How long the agents get to answer directly before `Reach::Auto` goes through the API server.
const DIRECT_WITHIN: Duration = Duration::from_secs(3);

/// Agent answers are small; a bigger one is refused, not buffered.
const MAX_ANSWER: usize = 1 << 20;

pub struct HttpAgents {
    door: Door,
    token: String,
    timeout: Duration,
}

/// The way in to the agents.
enum Door {
    /// Straight to each agent's address.
    Direct(Client<HttpConnector, Full<Bytes>>),
    /// Through the API server's proxy: each agent's pod, by the address the driver knows it by.
    ViaApi { proxy: PodProxy, pods: HashMap<SocketAddr, String> },
}

impl HttpAgents {
    /// The agents as `reach` says: through the API server, it lists the agents' pods and the Nodes
    /// to know which pod serves which node's address.
    pub async fn reaching(config: vxlan::Config, reach: Reach) -> Result<HttpAgents> {
        let timeout = Duration::from_secs(30);
        let direct = HttpAgents::new(config.token.clone(), timeout)?;
        let api = match reach {
            Reach::Direct => return Ok(direct),
            Reach::ViaApi(api) => api,
            Reach::Auto(api) => {
                let addrs: Vec<AgentAddr> = config.nodes.iter().map(|n| n.agent_addr()).collect();
                let asked = futures_util::future::join_all(
                    addrs.iter().map(|a| tokio::time::timeout(DIRECT_WITHIN, direct.health(a))),
                )
                .await;
                if asked.iter().any(|answer| matches!(answer, Ok(Ok(_)))) {
                    return Ok(direct);
                }
                eprintln!("netprobe: no agent answers at its node's address from here: going through the API server (--via-api)");
                api
            }
        };
        HttpAgents::via_api(&api, &config, timeout).await
    }

    /// Through the API server's proxy to the agents' pods, found by the DaemonSet's labels.
    async fn via_api(api: &ApiConfig, config: &vxlan::Config, timeout: Duration) -> Result<HttpAgents> {
        let proxy = PodProxy::connect(api, AGENT_NAMESPACE).await?;
        let pods = proxy.agent_pods().await?;
        let nodes = netprobe_k8s::nodes(api).await?;
        let mut by_address = HashMap::new();
        for node in &config.nodes {
            // The node by its name (--all-nodes), else by its InternalIP.
            let name = nodes
                .iter()
                .find(|n| n.name == node.label || n.internal_ip == Some(std::net::IpAddr::V4(node.ip)))
                .map(|n| n.name.as_str());
            let pod =
                pods.iter().filter(|p| name.is_some() && p.node.as_deref() == name).max_by_key(|p| p.ready);
            if let Some(pod) = pod {
                by_address.insert(node.agent, pod.name.clone());
            }
        }
        Ok(HttpAgents {
            door: Door::ViaApi { proxy, pods: by_address },
            token: config.token.clone(),
            timeout,
        })
    }

    pub fn new(token: String, timeout: Duration) -> Result<HttpAgents> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        connector.set_nodelay(true);
        // Pooled connections are dropped after 2 s idle: the agents close theirs after 5 s without
        // a request, and a request sent on a connection the server is closing fails.
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Ok(HttpAgents { door: Door::Direct(http), token, timeout })
    }
}

/// The innermost error of a chain: hyper-util says "client error (Connect)", its source says
/// "Connection refused" or "tcp connect error: ... timed out".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// An agent's error body.
#[derive(serde::Deserialize)]
struct ApiError {
    error: String,
}

impl AgentApi for HttpAgents {
    async fn health(&self, agent: &AgentAddr) -> Result<AgentHealth> {
        self.call::<(), _>(agent, route::HEALTH, None).await
    }
    async fn expect_many(
        &self,
        agent: &AgentAddr,
        request: &ExpectMany,
    ) -> Result<Vec<Each<ExpectResponse>>> {
        self.call(agent, route::EXPECT_MANY, Some(request)).await
    }
    async fn send_many(&self, agent: &AgentAddr, request: &SendMany) -> Result<Vec<Each<SendResponse>>> {
        self.call(agent, route::SEND_MANY, Some(request)).await
    }
    async fn collect_many(
        &self,
        agent: &AgentAddr,
        request: &CollectMany,
    ) -> Result<Vec<Each<CollectResponse>>> {
        self.call(agent, route::COLLECT_MANY, Some(request)).await
    }
    async fn expect(&self, agent: &AgentAddr, request: &ExpectRequest) -> Result<ExpectResponse> {
        self.call(agent, route::EXPECT, Some(request)).await
    }
    async fn send(&self, agent: &AgentAddr, request: &SendRequest) -> Result<SendResponse> {
        self.call(agent, route::SEND, Some(request)).await
    }
    async fn collect(&self, agent: &AgentAddr, request: &CollectRequest) -> Result<CollectResponse> {
        self.call(agent, route::COLLECT, Some(request)).await
    }
    async fn expectation(&self, agent: &AgentAddr, probe_id: u64) -> Result<ExpectationInfo> {
        self.call::<(), _>(agent, &route::expectation(probe_id), None).await
    }
    async fn beacons(&self, agent: &AgentAddr, to: std::net::Ipv4Addr) -> Result<BeaconStatus> {
        self.call::<(), _>(agent, &route::beacons(to), None).await
    }

    async fn mesh(&self, agent: &AgentAddr) -> Result<MeshState> {
        self.call::<(), _>(agent, route::MESH, None).await
    }
}

impl HttpAgents {
    /// `GET path` (no body) or `POST path` with a JSON body; the JSON answer. Errors name the
    /// agent and the path.
    async fn call<B: Serialize + Sync, R: DeserializeOwned>(
        &self,
        agent: &AgentAddr,
        path: &str,
        body: Option<&B>,
    ) -> Result<R> {
        let fail = |what: String| Error::could_not_run(format!("{} {path}", agent.who()), what);
        let (method, payload) = match body {
            Some(body) => (Method::POST, serde_json::to_vec(body).map_err(|e| fail(e.to_string()))?),
            None => (Method::GET, Vec::new()),
        };
        let exchange = async {
            match &self.door {
                Door::Direct(http) => {
                    let request = Request::builder()
                        .method(method)
                        .uri(format!("http://{}{path}", agent.address))
                        .header("authorization", format!("Bearer {}", self.token))
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(payload)))
                        .map_err(|e| fail(e.to_string()))?;
                    // The connection failed or broke: transient (a lost packet), or the agent is gone.
                    let response = http.request(request).await.map_err(|e| Error::Unreachable {
                        op: agent.who(),
                        detail: format!(
                            "unreachable ({}): is `netprobe agent` running there, on the host network?",
                            root_cause(&e)
                        ),
                    })?;
                    let status = response.status();
                    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                        .collect()
                        .await
                        .map_err(|e| fail(format!("reading the answer: {e}")))?
                        .to_bytes();
                    Ok::<_, Error>((status, bytes))
                }
                Door::ViaApi { proxy, pods } => {
                    let Some(pod) = pods.get(&agent.address) else {
                        return Err(Error::could_not_run(
                            agent.who(),
                            "no netprobe agent pod runs on this node (kubectl -n netprobe get pods -o wide)",
                        ));
                    };
                    let headers = [(TOKEN_HEADER, self.token.as_str()), ("content-type", "application/json")];
                    let answer = proxy
                        .exchange(pod, agent.address.port(), method.as_str(), path, &headers, payload)
                        .await?;
                    match answer {
                        ProxyAnswer::Pod { status, body } if body.len() <= MAX_ANSWER => Ok((
                            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                            Bytes::from(body),
                        )),
                        ProxyAnswer::Pod { .. } => Err(fail("an answer over 1 MiB".into())),
                        ProxyAnswer::Api { status, message } => Err(refused_by_api(
                            proxy.server(),
                            &format!("{} (pod {pod}) {path}", agent.who()),
                            status,
                            &message,
                        )),
                    }
                }
            }
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {} s", self.timeout.as_secs())))??;
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::could_not_run(
                agent.who(),
                "refused the token: set NETPROBE_TOKEN to the token the agents were started with",
            ));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let why = serde_json::from_slice::<ApiError>(&bytes).map(|e| e.error).unwrap_or_default();
            return Err(Error::Busy { op: format!("{} {path}", agent.who()), detail: why });
        }
        if !status.is_success() {
            let why = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| status.to_string());
            return Err(fail(why));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("an answer that is not what the agent API says: {e}")))
    }
}

/// A sending agent asks its targets' agents through the same client.
impl PeerCheck for HttpAgents {
    fn expectation(
        &self,
        peer: SocketAddr,
        probe_id: u64,
    ) -> Pin<Box<dyn Future<Output = Option<ExpectationInfo>> + Send + '_>> {
        Box::pin(async move {
            let agent = AgentAddr { label: peer.ip().to_string(), address: peer };
            // A GET changes nothing: asked again once if the first try did not get through.
            match AgentApi::expectation(self, &agent, probe_id).await {
                Ok(info) => Some(info),
                Err(_) => AgentApi::expectation(self, &agent, probe_id).await.ok(),
            }
        })
    }
}
