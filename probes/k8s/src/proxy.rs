//! Reaching the agents through the API server: their pods, found by the DaemonSet's labels, and
//! the API server's proxy to a pod (`/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH`), the door
//! `kubectl port-forward` and `kubectl proxy` use. The caller's kubeconfig authenticates it to
//! the API server; the API server then needs RBAC `get` and `create` on `pods/proxy` and `list` on
//! `pods` in the agents' namespace (deploy/kubernetes/user-role.yaml).

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;

use super::{api_error, connect_retrying, ApiConfig, Connected};
use netprobe_probes::{Error, Result};

/// Where the DaemonSet of deploy/kubernetes/ runs its agents, and how its pods are labelled.
pub const AGENT_NAMESPACE: &str = "netprobe";
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=netprobe,app.kubernetes.io/component=agent";

/// The RBAC a caller needs for the door, as a sentence with the fix.
pub const PROXY_PERMISSION: &str = "list pods, and get and create pods/proxy, in namespace netprobe (the Role netprobe-user of deploy/kubernetes/user-role.yaml: kubectl -n netprobe create rolebinding netprobe-user --role netprobe-user --user YOU)";

/// An agent's pod: its name, the node it runs on, whether it is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPod {
    pub name: String,
    pub node: Option<String>,
    pub ready: bool,
}

/// What came back through the proxy: the pod's answer, or the API server's own (a Status: the
/// caller may not use the proxy, or the pod cannot be reached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyAnswer {
    Pod { status: u16, body: Vec<u8> },
    Api { status: u16, message: String },
}

/// The API server as a door to the agents' pods.
pub struct PodProxy {
    connected: Connected,
    namespace: String,
}

impl PodProxy {
    pub async fn connect(api: &ApiConfig, namespace: &str) -> Result<PodProxy> {
        Ok(PodProxy { connected: connect_retrying(api, false).await?, namespace: namespace.to_string() })
    }

    /// The API server's address, for messages.
    pub fn server(&self) -> &str {
        &self.connected.server
    }

    /// The agents' pods, by the DaemonSet's labels.
    pub async fn agent_pods(&self) -> Result<Vec<AgentPod>> {
        let pods = Api::<Pod>::namespaced(self.connected.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(AGENT_SELECTOR))
            .await
            .map_err(|e| {
                api_error(
                    e,
                    "listing the agents' pods",
                    &format!("list pods in namespace {}", self.namespace),
                    self.server(),
                )
            })?;
        Ok(pods
            .items
            .into_iter()
            .map(|pod| {
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                AgentPod {
                    name: pod.metadata.name.unwrap_or_default(),
                    node: pod.spec.and_then(|s| s.node_name),
                    ready,
                }
            })
            .collect())
    }

    /// One HTTP exchange with `pod`'s `port` through the proxy: `method path` with `headers` and
    /// `body`. A failure to reach the API server is [`Error::Unreachable`].
    pub async fn exchange(
        &self,
        pod: &str,
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<ProxyAnswer> {
        let uri = format!("/api/v1/namespaces/{}/pods/{pod}:{port}/proxy{path}", self.namespace);
        let mut request = http::Request::builder().method(method).uri(&uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(kube::client::Body::from(body))
            .map_err(|e| Error::could_not_run(format!("calling {uri}"), e.to_string()))?;
        let response = self.connected.client.send(request).await.map_err(|e| Error::Unreachable {
            op: format!("the API server at {}", self.server()),
            detail: format!("unreachable ({e})"),
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| Error::Unreachable {
                op: format!("{uri} through {}", self.server()),
                detail: e.to_string(),
            })?
            .to_vec();
        // The API server's own answers are Status objects; an agent never sends one.
        #[derive(serde::Deserialize)]
        struct Status {
            kind: String,
            #[serde(default)]
            message: String,
        }
        match serde_json::from_slice::<Status>(&bytes) {
            Ok(s) if s.kind == "Status" && status >= 400 => {
                Ok(ProxyAnswer::Api { status, message: s.message })
            }
            _ => Ok(ProxyAnswer::Pod { status, body: bytes }),
        }
    }
}

/// The error for an answer of the API server's own to a proxied call.
pub fn refused_by_api(server: &str, what: &str, status: u16, message: &str) -> Error {
    match status {
        401 | 403 => Error::could_not_run(what, format!("the API at {server} refused it ({status} {message}): this identity needs to {PROXY_PERMISSION}")),
        404 => Error::could_not_run(what, format!("the API at {server} knows no such pod ({message}): is the DaemonSet running? kubectl -n netprobe get pods -o wide")),
        _ => Error::Unreachable { op: what.to_string(), detail: format!("the API at {server} could not reach the pod ({status} {message})") },
    }
}
