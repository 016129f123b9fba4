//! The nodes a run probes: as given on the command line (`IP`, `HOST[:PORT]`, `NAME=IP`) or from
//! the cluster's Nodes, each an agent's address and the node IP the probes go to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use super::client::AgentAddr;
use super::report::UntestedNode;
use crate::{Error, Result};

/// A node as given on the command line: its agent's address, and the node IP probes go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub label: String,
    pub agent: SocketAddr,
    pub ip: Ipv4Addr,
}

impl Node {
    pub fn agent_addr(&self) -> AgentAddr {
        AgentAddr { label: self.label.clone(), address: self.agent }
    }
}

/// `IP`, `IP:PORT`, `HOST` or `HOST:PORT` (the agent on `default_port` when none is given), each
/// optionally named: `NAME=IP[:PORT]` labels the node NAME (as `--all-nodes` labels nodes by their
/// Node names). The node's address is the agent's: run the agent on the host network.
pub fn parse_node(text: &str, default_port: u16) -> Result<Node> {
    let (label, address) = match text.split_once('=') {
        Some((name, _)) if name.is_empty() || name.contains(char::is_whitespace) => {
            return Err(Error::invalid(format!("node {text:?}"), "write NAME=IP with a name before the ="))
        }
        Some((name, address)) => (name, address),
        None => (text, text),
    };
    // Refuse what cannot be a host name before anything is looked up.
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return Err(Error::invalid(format!("node {text:?}"), "write IP, IP:PORT or HOST[:PORT], or NAME=IP"));
    }
    let with_port =
        if address.contains(':') { address.to_string() } else { format!("{address}:{default_port}") };
    let agent = with_port
        .to_socket_addrs()
        .map_err(|e| {
            Error::invalid(
                format!("node {text:?}"),
                format!("{e}: write IP, IP:PORT or HOST[:PORT], or NAME=IP"),
            )
        })?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| Error::invalid(format!("node {text:?}"), "has no IPv4 address"))?;
    let IpAddr::V4(ip) = agent.ip() else { unreachable!("filtered to IPv4") };
    Ok(Node { label: label.to_string(), agent, ip })
}

/// What to do where no agent runs: the DaemonSet of deploy/kubernetes/ puts one on every node.
pub const DEPLOY_HINT: &str =
    "to run one on every node: kubectl apply -k deploy/kubernetes/ (deploy/README.md), then kubectl -n netprobe get pods -o wide";

/// The nodes of the cluster as probe targets: each Node's InternalIP, its agent on `agent_port`,
/// labelled by the node's name. A node without an IPv4 InternalIP cannot carry these probes.
pub fn nodes_from_cluster(
    nodes: &[crate::cluster::ClusterNode],
    agent_port: u16,
) -> (Vec<Node>, Vec<UntestedNode>) {
    let mut probed = Vec::new();
    let mut untested = Vec::new();
    for node in nodes {
        match node.internal_ip {
            Some(IpAddr::V4(ip)) => {
                probed.push(Node { label: node.name.clone(), agent: SocketAddr::from((ip, agent_port)), ip })
            }
            other => untested.push(UntestedNode {
                node: node.name.clone(),
                ip: None,
                reason: match other {
                    Some(ip) => format!("its InternalIP {ip} is IPv6: the probes are VXLAN over IPv4"),
                    None => "its status lists no InternalIP".into(),
                },
            }),
        }
    }
    (probed, untested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vxlan::api::DEFAULT_AGENT_PORT;

    #[test]
    fn nodes_parse_with_default_port() {
        let n = parse_node("198.51.100.1", DEFAULT_AGENT_PORT).unwrap();
        assert_eq!((n.agent.port(), n.ip), (DEFAULT_AGENT_PORT, Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(parse_node("198.51.100.1:7000", 1).unwrap().agent.port(), 7000);
        assert!(parse_node("not a host!", 1).unwrap_err().is_bad_input());
        let named = parse_node("node-b=203.0.113.2:7000", 1).unwrap();
        assert_eq!((named.label.as_str(), named.agent), ("node-b", "203.0.113.2:7000".parse().unwrap()));
        assert!(parse_node("=203.0.113.2", 1).unwrap_err().is_bad_input());
    }

    #[test]
    fn cluster_nodes_become_targets_by_internal_ip() {
        use crate::cluster::ClusterNode;
        let nodes = [
            ClusterNode {
                name: "cp-1".into(),
                internal_ip: Some("192.0.2.1".parse().unwrap()),
                control_plane: true,
            },
            ClusterNode {
                name: "v6-only".into(),
                internal_ip: Some("2001:db8::2".parse().unwrap()),
                control_plane: false,
            },
            ClusterNode { name: "new".into(), internal_ip: None, control_plane: false },
        ];
        let (probed, untested) = nodes_from_cluster(&nodes, 9999);
        assert_eq!(
            probed,
            vec![Node {
                label: "cp-1".into(),
                agent: "192.0.2.1:9999".parse().unwrap(),
                ip: "192.0.2.1".parse().unwrap()
            }]
        );
        let names: Vec<&str> = untested.iter().map(|u| u.node.as_str()).collect();
        assert_eq!(names, ["v6-only", "new"]);
    }
}
