//! What the probes know of a cluster: plain data, filled in by the Kubernetes client of the
//! `netprobe-k8s` crate (or by hand), so the engines never depend on a Kubernetes client.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

/// Where the API is, as kubectl finds it: `--kubeconfig`, else KUBECONFIG, else ~/.kube/config,
/// else the in-cluster service account; `--context` picks a context of the kubeconfig.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiConfig {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// One endpoint of a Service, as its EndpointSlice describes it (or an address given by hand, with
/// nothing else known). The DNS probe asks it and reports it with these fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceEndpoint {
    pub address: IpAddr,
    pub port: u16,
    pub node: Option<String>,
    pub pod: Option<String>,
    /// The EndpointSlice's ready, serving and terminating conditions, when discovered.
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl ServiceEndpoint {
    /// An address given by hand: no node, pod or conditions known.
    pub fn at(socket: SocketAddr) -> ServiceEndpoint {
        ServiceEndpoint {
            address: socket.ip(),
            port: socket.port(),
            node: None,
            pod: None,
            ready: None,
            serving: None,
            terminating: None,
        }
    }

    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// Not ready or terminating, by the EndpointSlice's conditions.
    pub fn not_ready(&self) -> bool {
        self.ready == Some(false) || self.terminating == Some(true)
    }
}

/// The endpoints behind a Service and its cluster addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Each address once, even when two slices list it (as during a rollout).
    pub endpoints: Vec<ServiceEndpoint>,
    /// Every address in the Service's `clusterIPs` (both families on a dual-stack Service).
    pub cluster_ips: Vec<IpAddr>,
}

/// A node of the cluster, as the probes need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    /// The node's InternalIP (the first IPv4 one when there are both families).
    pub internal_ip: Option<IpAddr>,
    /// Labelled node-role.kubernetes.io/control-plane (or master).
    pub control_plane: bool,
}

/// A Service of type LoadBalancer and the addresses its status gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancer {
    pub namespace: String,
    pub name: String,
    /// status.loadBalancer.ingress[].ip
    pub ips: Vec<IpAddr>,
}
