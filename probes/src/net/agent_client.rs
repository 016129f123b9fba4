//! Calling agents over HTTP: the driver of `netprobe vxlan` reaches them through [`AgentApi`];
//! [`HttpAgents`] is the real client (reqwest, plain HTTP, a bearer token).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// An agent to call: a label for messages and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAddr {
    pub label: String,
    pub address: SocketAddr,
}

impl AgentAddr {
    fn who(&self) -> String {
        format!("agent {} ({})", self.label, self.address)
    }
}

pub trait AgentApi: Send + Sync + 'static {
    /// `GET path` (no body) or `POST path` with a JSON body; the JSON answer. Errors name the agent.
    fn call<B: Serialize + Sync, R: DeserializeOwned>(
        &self,
        agent: &AgentAddr,
        path: &str,
        body: Option<&B>,
    ) -> impl Future<Output = Result<R>> + Send;
}

pub struct HttpAgents {
    http: reqwest::Client,
    token: String,
}

impl HttpAgents {
    pub fn new(token: String, timeout: Duration) -> Result<HttpAgents> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::could_not_run("building the HTTP client", e.to_string()))?;
        Ok(HttpAgents { http, token })
    }
}

/// An agent's error body.
#[derive(serde::Deserialize)]
struct ApiError {
    error: String,
}

impl AgentApi for HttpAgents {
    async fn call<B: Serialize + Sync, R: DeserializeOwned>(
        &self,
        agent: &AgentAddr,
        path: &str,
        body: Option<&B>,
    ) -> Result<R> {
        let url = format!("http://{}{path}", agent.address);
        let request = match body {
            Some(body) => self.http.post(&url).json(body),
            None => self.http.get(&url),
        };
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            Error::could_not_run(
                agent.who(),
                format!("unreachable ({e}): is `netprobe agent` running there, on the host network?"),
            )
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(Error::could_not_run(
                agent.who(),
                "refused the token: set NETPROBE_TOKEN to the token the agents were started with",
            ));
        }
        if !status.is_success() {
            let why =
                response.json::<ApiError>().await.map(|e| e.error).unwrap_or_else(|_| status.to_string());
            return Err(Error::could_not_run(format!("{} {path}", agent.who()), why));
        }
        response
            .json::<R>()
            .await
            .map_err(|e| Error::could_not_run(format!("{} {path}", agent.who()), e.to_string()))
    }
}
