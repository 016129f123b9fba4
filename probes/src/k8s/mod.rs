//! Kubernetes discovery: which pods serve a Service, on which nodes. Uses kube's client, so the
//! kubeconfig (KUBECONFIG or ~/.kube/config, exec auth plugins included) or the in-cluster service
//! account work as they do for kubectl.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::dns::Target;
use crate::{Error, Result};

/// [`discover`] on a runtime of its own, for callers that are not async.
pub fn discover_blocking(namespace: &str, service: &str, port_name: &str) -> Result<Discovered> {
    let runtime = crate::net::runtime("starting the Kubernetes client", None)?;
    runtime.block_on(discover(namespace, service, port_name))
}

/// The endpoints behind a Service and its ClusterIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub endpoints: Vec<Target>,
    pub cluster_ip: Option<IpAddr>,
}

/// The EndpointSlices labelled `kubernetes.io/service-name=SERVICE` in `namespace`, each endpoint
/// on the port named `port_name` (or the first UDP port), and the Service's ClusterIP.
pub async fn discover(namespace: &str, service: &str, port_name: &str) -> Result<Discovered> {
    let config = kube::Config::infer().await.map_err(|e| {
        Error::invalid("kubeconfig", format!("{e}: set KUBECONFIG, fix ~/.kube/config, or pass --endpoints"))
    })?;
    let client = Client::try_from(config)
        .map_err(|e| Error::could_not_run("connecting to the Kubernetes API", e.to_string()))?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let list = slices.list(&ListParams::default().labels(&selector)).await.map_err(|e| {
        api_error(
            e,
            &format!("listing endpointslices in {namespace}"),
            "list endpointslices in discovery.k8s.io",
        )
    })?;
    let mut endpoints = Vec::new();
    for slice in list.items {
        let ports = slice.ports.unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(port_name))
            .or_else(|| ports.iter().find(|p| p.protocol.as_deref().unwrap_or("TCP") == "UDP"))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(53);
        for endpoint in slice.endpoints.into_iter().flatten() {
            let Some(address) = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let conditions = endpoint.conditions.unwrap_or_default();
            endpoints.push(Target {
                address: SocketAddr::new(address, port),
                node: endpoint.node_name,
                pod: endpoint.target_ref.and_then(|r| r.name),
                ready: conditions.ready,
                serving: conditions.serving,
            });
        }
    }
    let services: Api<Service> = Api::namespaced(client, namespace);
    let cluster_ip = match services.get_opt(service).await {
        Ok(found) => {
            found.and_then(|s| s.spec).and_then(|spec| spec.cluster_ip).and_then(|ip| ip.parse().ok())
        }
        Err(e) => {
            return Err(api_error(
                e,
                &format!("reading service {namespace}/{service}"),
                "get services in the core API group",
            ))
        }
    };
    Ok(Discovered { endpoints, cluster_ip })
}

fn api_error(err: kube::Error, op: &str, permission: &str) -> Error {
    match err {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => Error::could_not_run(
            op,
            format!("forbidden ({}): this identity needs RBAC permission to {permission}", status.code),
        ),
        kube::Error::Api(status) => {
            Error::could_not_run(op, format!("the API said {} {}", status.code, status.message))
        }
        other => Error::could_not_run(op, format!("the API is unreachable: {other}")),
    }
}
