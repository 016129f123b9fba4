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

use netprobe_probes::vxlan::api::*;
use netprobe_probes::vxlan::{self, AgentAddr, AgentApi, VxlanReport};
use netprobe_probes::{Error, Result};

use crate::server::PeerCheck;

/// `netprobe vxlan`: every ordered pair of `config.nodes` probed through their agents over HTTP.
pub fn drive(config: vxlan::Config) -> Result<VxlanReport> {
    let agents = HttpAgents::new(config.token.clone(), Duration::from_secs(30))?;
    vxlan::run(config, agents)
}

/// Agent answers are small; a bigger one is refused, not buffered.
const MAX_ANSWER: usize = 1 << 20;

pub struct HttpAgents {
    http: Client<HttpConnector, Full<Bytes>>,
    token: String,
    timeout: Duration,
}

impl HttpAgents {
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
        Ok(HttpAgents { http, token, timeout })
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
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", agent.address))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| fail(e.to_string()))?;
        let exchange = async {
            // The connection failed or broke: transient (a lost packet), or the agent is gone.
            let response = self.http.request(request).await.map_err(|e| Error::Unreachable {
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
