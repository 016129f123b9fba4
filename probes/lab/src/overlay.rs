//! Incident 2 as it was built: nodes on their own subnets behind a router (whose FORWARD chain
//! plays the security group), pod networks routed between the nodes over flannel-style kernel
//! vxlan devices (VNI 1, UDP 8472, static FDB and neighbour entries as flannel writes them), a DNS
//! server in each node's pod network standing in for CoreDNS; a third node whose pods run no DNS
//! (so a broken pair of nodes can hide from a DNS-first look), the kube-dns Service's VIP by DNAT on
//! each node (as kube-proxy's iptables mode does), a LoadBalancer VIP on node-a's segment, netprobe
//! agents on both nodes, and the stand-in API describing it all (tests/fixtures/k8s/*-overlay.json).
//!
//! Used by tests/doctor_lab.rs and `netprobe demo doctor`.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::fake_api::FakeApi;
use crate::{dns_servers, Lab, LabError, Netns, NsThread, Result};

/// (name, node IP, pod network prefix) of each node; the API fixtures say the same. The first two
/// run a CoreDNS stand-in in their pod network; node-c runs no pod.
pub const NODES: [(&str, &str, &str); 3] = [
    ("node-a", "198.51.100.1", "10.244.0"),
    ("node-b", "203.0.113.2", "10.244.1"),
    ("node-c", "192.0.2.3", "10.244.2"),
];
/// The nodes with a DNS pod (the first this many of [`NODES`]).
const DNS_NODES: usize = 2;
/// The kube-dns Service's ClusterIP.
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
/// The LoadBalancer VIP on node-a's segment (the router answers ARP for it).
pub const LB_VIP: &str = "198.51.100.100";
/// The name every DNS stand-in resolves, and its answer.
pub const NAME: &str = "kubernetes.default.svc.cluster.local";
pub const ANSWER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// The API's answers: Nodes, the kube-dns EndpointSlices and Service, every Service.
pub fn api_routes() -> Vec<(&'static str, u16, String)> {
    vec![
        ("/api/v1/nodes", 200, include_str!("../../../tests/fixtures/k8s/nodes-overlay.json").into()),
        (
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
            200,
            include_str!("../../../tests/fixtures/k8s/endpointslices-overlay.json").into(),
        ),
        (
            "/api/v1/namespaces/kube-system/services/kube-dns",
            200,
            include_str!("../../../tests/fixtures/k8s/service-kube-dns-overlay.json").into(),
        ),
        ("/api/v1/services", 200, include_str!("../../../tests/fixtures/k8s/services-overlay.json").into()),
    ]
}

/// A node of the lab.
pub struct OverlayNode {
    pub name: &'static str,
    pub ip: &'static str,
    pub ns: Netns,
    /// The CoreDNS stand-in's address in this node's pod network (`None`: node-c, no pod).
    pub dns_ip: Option<String>,
}

/// The built lab. Declared fields drop in order: the API and responders before the namespaces.
pub struct Overlay {
    pub api: FakeApi,
    _responders: Vec<NsThread>,
    pub router: Netns,
    pub nodes: Vec<OverlayNode>,
    /// The agents' token (NETPROBE_TOKEN).
    pub token: String,
}

/// How the lab is started.
pub struct Options<'a> {
    /// The netprobe binary, for the agents; `None` starts no agents.
    pub agents: Option<&'a str>,
    pub token: &'a str,
    /// More of the agents' environment (`NAME=VALUE`): a KUBECONFIG, for the commands they run.
    pub agent_env: &'a [&'a str],
    /// More of the agents' arguments (`--mesh-every 1s`, peers).
    pub agent_args: &'a [&'a str],
}

impl Overlay {
    /// Builds the lab in `lab` (its namespaces and processes go with it).
    pub fn build(lab: &mut Lab, options: Options) -> Result<Overlay> {
        let router = lab.router("router")?;
        let mut nodes = Vec::new();
        let mut responders = Vec::new();
        for (i, (name, ip, pods)) in NODES.iter().enumerate() {
            let ns = lab.host(&format!("node{}", i + 1))?;
            let net = ip.rsplit_once('.').map_or(*ip, |(n, _)| n);
            let (_, router_side) = lab.link(&ns, &format!("{ip}/24"), &router, &format!("{net}.254/24"))?;
            if i == 0 {
                // The LoadBalancer VIP answered on node-a's segment.
                router.sh(&format!("ip addr add {LB_VIP}/32 dev {router_side}"))?;
            }
            // A node routes for its pods; flannel's device: VNI 1 on 8472, no learning (flannel
            // writes the FDB and neighbour entries itself), a fixed MAC the peers are told.
            ns.sh(&format!(
                "sysctl -qw net.ipv4.ip_forward=1 && \
                 ip route add default via {net}.254 && \
                 ip link add flannel.1 address {mac} type vxlan id 1 local {ip} dstport 8472 dev eth0 nolearning && \
                 ip addr add {pods}.0/32 dev flannel.1 && ip link set flannel.1 up",
                mac = vtep_mac(i)
            ))?;
            if i >= DNS_NODES {
                nodes.push(OverlayNode { name, ip, ns, dns_ip: None });
                continue;
            }
            // The pod: its own namespace on a veth, as a CNI bridge plugin would give it.
            let pod = lab.host(&format!("pod{}", i + 1))?;
            let dns_ip = format!("{pods}.10");
            lab.link(&ns, &format!("{pods}.1/24"), &pod, &format!("{dns_ip}/24"))?;
            pod.sh(&format!("ip route add default via {pods}.1"))?;
            let address: Ipv4Addr =
                dns_ip.parse().map_err(|_| LabError(format!("{dns_ip}: not an address")))?;
            responders.extend(dns_servers::stand_in(lab, &pod, address, NAME, ANSWER)?);
            nodes.push(OverlayNode { name, ip, ns, dns_ip: Some(dns_ip) });
        }
        // Each DNS node reaches the other's pods over the tunnel, and kube-proxy's DNAT spreads the
        // Service over both pods.
        let dns_ips: Vec<String> = nodes.iter().filter_map(|n| n.dns_ip.clone()).collect();
        for (i, node) in nodes.iter().enumerate().take(DNS_NODES) {
            let (j, peer) = (1 - i, &nodes[1 - i]);
            let peer_pods = NODES[j].2;
            node.ns.sh(&format!(
                "ip route add {peer_pods}.0/24 via {peer_pods}.0 dev flannel.1 onlink && \
                 ip neigh add {peer_pods}.0 lladdr {mac} dev flannel.1 nud permanent && \
                 bridge fdb append {mac} dev flannel.1 dst {peer_ip} && \
                 iptables -t nat -A POSTROUTING -o flannel.1 -j MASQUERADE",
                mac = vtep_mac(j),
                peer_ip = peer.ip
            ))?;
            for proto in ["udp", "tcp"] {
                node.ns.sh(&format!(
                    "iptables -t nat -A OUTPUT -d {DNS_SERVICE_IP} -p {proto} --dport 53 -m statistic --mode random --probability 0.5 -j DNAT --to-destination {a} && \
                     iptables -t nat -A OUTPUT -d {DNS_SERVICE_IP} -p {proto} --dport 53 -j DNAT --to-destination {b}",
                    a = dns_ips[0],
                    b = dns_ips[1]
                ))?;
            }
        }
        if let Some(exe) = options.agents {
            for node in &nodes {
                let token = format!("NETPROBE_TOKEN={}", options.token);
                let node_name = format!("NODE_NAME={}", node.name);
                let listen = format!("{}:9473", node.ip);
                let argv: Vec<&str> = ["env", token.as_str(), node_name.as_str()]
                    .into_iter()
                    .chain(options.agent_env.iter().copied())
                    .chain([exe, "agent", "--listen", listen.as_str()])
                    .chain(options.agent_args.iter().copied())
                    .collect();
                lab.spawn(&node.ns, &argv)?;
            }
            for node in &nodes {
                node.ns.wait_listening("tcp", 9473, Duration::from_secs(10))?;
            }
        }
        // The API answers inside node-a, where doctor runs.
        let api = FakeApi::start(&nodes[0].ns, api_routes());
        Ok(Overlay { api, _responders: responders, router, nodes, token: options.token.to_string() })
    }

    /// The security group drops VXLAN (UDP 8472) between the nodes.
    pub fn drop_vxlan(&self) -> Result<()> {
        self.router.sh("iptables -A FORWARD -p udp --dport 8472 -j DROP").map(|_| ())
    }

    /// The security group drops VXLAN between two nodes only (both directions).
    pub fn drop_vxlan_between(&self, a: &str, b: &str) -> Result<()> {
        let ip = |name: &str| {
            NODES.iter().find(|n| n.0 == name).map(|n| n.1).ok_or_else(|| LabError(format!("no node {name}")))
        };
        let (a, b) = (ip(a)?, ip(b)?);
        self.router
            .sh(&format!(
                "iptables -A FORWARD -s {a} -d {b} -p udp --dport 8472 -j DROP && \
                 iptables -A FORWARD -s {b} -d {a} -p udp --dport 8472 -j DROP"
            ))
            .map(|_| ())
    }

    /// The security group allows everything again.
    pub fn allow_vxlan(&self) -> Result<()> {
        self.router.sh("iptables -F FORWARD").map(|_| ())
    }
}

/// The MAC of node `i`'s flannel.1 (the API's flannel annotation says the same).
fn vtep_mac(i: usize) -> String {
    format!("02:00:00:f4:00:{i:02x}")
}
