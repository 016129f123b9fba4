//! The agent's HTTP API: JSON bodies, a bearer token on every request. What one request may ask for
//! is capped ([`MAX_COUNT`], [`MAX_WINDOW_MS`], a fixed send pace), so an agent cannot be used to
//! flood anyone.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub const DEFAULT_AGENT_PORT: u16 = 9473;

/// The routes of the agent API, named once: the server's router and the client use these.
pub mod route {
    pub const HEALTH: &str = "/v1/health";
    pub const EXPECT: &str = "/v1/expect";
    pub const SEND: &str = "/v1/send";
    pub const COLLECT: &str = "/v1/collect";
    pub const EXPECT_MANY: &str = "/v1/expect-many";
    pub const SEND_MANY: &str = "/v1/send-many";
    pub const COLLECT_MANY: &str = "/v1/collect-many";
    /// `GET /v1/expectation/{probe_id}` (the pattern; [`expectation`] gives one probe's path).
    pub const EXPECTATION: &str = "/v1/expectation/{probe_id}";
    /// `POST /v1/run`: a netprobe command run on the agent's node (for a caller that reaches the
    /// node only through the API server).
    pub const RUN: &str = "/v1/run";
    /// `GET /v1/beacons/{to}`: the always-on mesh's control channel (the pattern; [`beacons`]
    /// gives one receiver's path).
    pub const BEACONS: &str = "/v1/beacons/{to}";
    /// `GET /v1/mesh`: what the always-on mesh last judged of every pair that ends at this agent.
    pub const MESH: &str = "/v1/mesh";
    /// Open to anyone: the kubelet's readiness probe, and Prometheus.
    pub const HEALTHZ: &str = "/healthz";
    pub const METRICS: &str = "/metrics";

    /// The path that asks about `probe_id`.
    pub fn expectation(probe_id: u64) -> String {
        format!("/v1/expectation/{probe_id}")
    }

    /// The path that asks what this agent's mesh sent to `to`.
    pub fn beacons(to: std::net::Ipv4Addr) -> String {
        format!("/v1/beacons/{to}")
    }
}
/// The header that carries the agents' token besides `Authorization: Bearer`: the API server's
/// proxy to a pod removes `Authorization` (it authenticates the caller with it; kubernetes issue
/// 38775), so a call through it carries the token here.
pub const TOKEN_HEADER: &str = "x-netprobe-token";

/// At most this many probe packets (and as many control datagrams) per request.
pub const MAX_COUNT: u32 = 100;
/// Probe packets leave at most this often: 100 packets a second.
pub const SEND_GAP_MS: u64 = 10;
/// A capture window lasts at most this long.
pub const MAX_WINDOW_MS: u64 = 15_000;
/// Expectations open at once on one agent: each a registration on the shared capture and control
/// socket, an entry in the kernel-drop trace, and counters kept until it is collected.
pub const MAX_OPEN: usize = 64;
/// Sends under way at once on one agent.
pub const MAX_SENDS: usize = 8;
/// Packets per second one agent sends at most, over all requests together (probes and controls).
pub const MAX_PACKETS_PER_SECOND: u32 = 400;
/// Sized probes (`--mtu`) are at most this long (outer IPv4 packet): a jumbo frame.
pub const MAX_PROBE_PACKET: u16 = 9216;
/// Entries in one `-many` request (a round of a 65-node mesh in one call per agent).
pub const MAX_BATCH: usize = MAX_OPEN;
/// A `-many` request's body may be this long (64 entries of about 100 bytes, with room).
pub const MAX_BATCH_BODY: usize = 16 * 1024;

/// `POST /v1/expect`: start listening for probes from `from` (capture on the interface towards it,
/// and a control UDP socket).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectRequest {
    pub probe_id: u64,
    pub from: Ipv4Addr,
    /// This node's address the probes are sent to (for matching firewall rules by -d).
    #[serde(default)]
    pub to: Option<Ipv4Addr>,
    pub port: u16,
    pub vni: u32,
    pub window_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectResponse {
    pub control_port: u16,
    pub interface: String,
    /// The MTU of that interface, when it could be read.
    #[serde(default)]
    pub interface_mtu: Option<u16>,
}

/// `POST /v1/send`: send `count` VXLAN probes to `to:port` and as many control datagrams to
/// `to:control_port`, through the kernel's UDP stack, and count what left this node's interface.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendRequest {
    pub probe_id: u64,
    pub to: Ipv4Addr,
    pub port: u16,
    pub control_port: u16,
    pub vni: u32,
    pub count: u32,
    /// Sized probes (`--mtu`): probe i's outer IPv4 packet is `sizes[i]` bytes and leaves with
    /// the Don't Fragment bit set; `count` is then `sizes.len()` and no control datagram goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<u16>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SendResponse {
    pub sent: u32,
    /// Probes seen leaving the interface towards `to`.
    pub left_source: u32,
    pub control_left: u32,
    /// The first error sendto(2) gave (EPERM when this node's own firewall drops the packet).
    pub send_error: Option<String>,
    /// Firewall rules on this node that can match the probes (UDP to the port, on the output
    /// path) with a DROP or REJECT verdict, and how much their packet counters grew while sending.
    pub dropping_rules: Vec<GrownRule>,
    /// Why this node's firewall counters could not be read, when they could not.
    #[serde(default)]
    pub counters_error: Option<String>,
    /// Sequence numbers of the probes seen leaving, in order.
    #[serde(default)]
    pub left_seqs: Vec<u32>,
    /// The MTU of the interface the probes left by, when it could be read.
    #[serde(default)]
    pub interface_mtu: Option<u16>,
    /// An ICMP fragmentation-needed about the probes that came back while sending, if one did.
    #[serde(default)]
    pub frag_needed: Option<FragNeededSeen>,
    /// Every other ICMP destination unreachable about the probes that came back while sending
    /// (a reject on the path or at the destination, a closed port), by sender and code.
    #[serde(default)]
    pub unreachable: Vec<UnreachableSeen>,
    /// This node's vxlan device with the largest MTU (the pod network's), when it has one.
    #[serde(default)]
    pub vxlan_device: Option<VxlanDeviceSeen>,
    /// Every vxlan device of this node; `None` from an agent that does not say.
    #[serde(default)]
    pub vxlan_devices: Option<Vec<VxlanDeviceSeen>>,
    /// Sized probes only: whether this node's cached path MTU for the target is as it was before
    /// they left (they go out on a raw socket so that no ICMP reply changes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_cache: Option<String>,
}

/// ICMP destination-unreachable messages with one code from one sender, about a pair's probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreachableSeen {
    pub from: Ipv4Addr,
    /// The ICMP code (3 port unreachable, 13 administratively prohibited, ...).
    pub code: u8,
    pub count: u32,
}

/// Who said a probe was too big for its next hop, and the MTU it gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragNeededSeen {
    pub from: Ipv4Addr,
    pub mtu: u16,
}

/// A vxlan device of a node: its MTU, and whether it offloads the transmit checksum
/// (tx-checksum-ip-generic; `null` when ethtool could not say).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanDeviceSeen {
    pub name: String,
    pub mtu: u16,
    #[serde(default)]
    pub tx_checksum_offload: Option<bool>,
    /// The UDP port it sends to and listens on; `null` when not known.
    #[serde(default)]
    pub port: Option<u16>,
    /// Whether it is up (its socket open); `null` when not known.
    #[serde(default)]
    pub up: Option<bool>,
}

impl VxlanDeviceSeen {
    /// Up and on `port`: the kernel holds a socket there.
    pub fn listens_on(&self, port: u16) -> bool {
        self.up != Some(false) && self.port == Some(port)
    }
}

/// A firewall rule and how many packets it counted during a probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrownRule {
    /// `-t filter -A INPUT ... -j DROP`, or `nft: inet filter input handle 7: ...`.
    pub rule: String,
    pub packets: u64,
}

/// `GET /v1/expectation/{probe_id}`: what this agent expects for a probe, asked by the agent that
/// is to send it before it sends anything (an agent sends only to agents that expect it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationInfo {
    pub from: Ipv4Addr,
    pub port: u16,
    pub control_port: u16,
    pub vni: u32,
}

/// `POST /v1/collect`: stop listening and say what arrived.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectRequest {
    pub probe_id: u64,
}

/// The `-many` requests: several probes in one call, so an agent reads its firewall counters once
/// for all of them (a read is a process, and seconds on a node with a big rule set) and a mesh
/// costs each agent a few calls a round instead of a few per pair.
///
/// `POST /v1/expect-many`: [`ExpectRequest`] for each of `probes`, with one port, VNI and window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectMany {
    pub port: u16,
    pub vni: u32,
    pub window_ms: u64,
    pub probes: Vec<ExpectedProbe>,
}

impl ExpectMany {
    /// One entry as the single request it stands for.
    pub fn single(&self, probe: &ExpectedProbe) -> ExpectRequest {
        ExpectRequest {
            probe_id: probe.probe_id,
            from: probe.from,
            to: probe.to,
            port: self.port,
            vni: self.vni,
            window_ms: self.window_ms,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedProbe {
    pub probe_id: u64,
    pub from: Ipv4Addr,
    #[serde(default)]
    pub to: Option<Ipv4Addr>,
}

/// `POST /v1/send-many`: [`SendRequest`] for each of `targets`, with one port, VNI, count and sizes.
/// Their probes leave interleaved, each target's still `SEND_GAP_MS` apart.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendMany {
    pub port: u16,
    pub vni: u32,
    pub count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<u16>,
    pub targets: Vec<SendTarget>,
}

impl SendMany {
    /// One target as the single request it stands for.
    pub fn single(&self, target: &SendTarget) -> SendRequest {
        SendRequest {
            probe_id: target.probe_id,
            to: target.to,
            port: self.port,
            control_port: target.control_port,
            vni: self.vni,
            count: self.count,
            sizes: self.sizes.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendTarget {
    pub probe_id: u64,
    pub to: Ipv4Addr,
    pub control_port: u16,
}

/// `POST /v1/collect-many`: [`CollectRequest`] for each probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectMany {
    pub probe_ids: Vec<u64>,
}

/// One entry's answer in a `-many` response (which lists them in the order asked): what the
/// single request would have answered, or what it would have refused, with the HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Each<T> {
    Ok(T),
    Refused { status: u16, error: String },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CollectResponse {
    /// Probes captured arriving on the interface.
    pub arrived: u32,
    /// Control datagrams received by the control socket.
    pub control_arrived: u32,
    /// Firewall rules that can match the probes on the input path, with a DROP or REJECT
    /// verdict, and how much their packet counters grew while listening.
    pub dropping_rules: Vec<GrownRule>,
    /// Why this node's firewall counters could not be read, when they could not.
    #[serde(default)]
    pub counters_error: Option<String>,
    /// How much this node's Udp InCsumErrors (UDP datagrams dropped for a bad checksum) grew while
    /// listening, when it could be read.
    #[serde(default)]
    pub udp_csum_errors: Option<u64>,
    /// Sequence numbers of the probes captured arriving, in order.
    #[serde(default)]
    pub arrived_seqs: Vec<u32>,
    /// What this node's kernel dropped of the probes (skb:kfree_skb), by reason and place;
    /// `None` when it could not be traced, with `trace_error` saying why.
    #[serde(default)]
    pub kernel_drops: Option<Vec<crate::net::drop_trace::KernelDrop>>,
    #[serde(default)]
    pub trace_error: Option<String>,
    /// The interfaces the probes were captured arriving on (every interface is captured).
    #[serde(default)]
    pub arrived_on: Vec<String>,
    /// The interface of this node's route back to the sender.
    #[serde(default)]
    pub route_interface: Option<String>,
    /// The reverse-path filter in force where the probes arrived (0 off, 1 strict, 2 loose),
    /// when they arrived on another interface than `route_interface`.
    #[serde(default)]
    pub rp_filter: Option<u8>,
    /// How much Udp NoPorts (datagrams to a port nothing listens on) grew while listening.
    #[serde(default)]
    pub udp_no_ports: Option<u64>,
    /// How much TcpExt IPReversePathFilter (packets the reverse-path filter dropped) grew.
    #[serde(default)]
    pub reverse_path_filter_drops: Option<u64>,
    /// Every vxlan device of this node; `None` from an agent that does not say.
    #[serde(default)]
    pub vxlan_devices: Option<Vec<VxlanDeviceSeen>>,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentHealth {
    pub version: String,
    /// The node the agent says it runs on (its NODE_NAME), when it knows.
    #[serde(default)]
    pub node: Option<String>,
}

/// `GET /v1/beacons/{to}`: what this agent's mesh has sent to `to` in this run of the agent. A
/// receiver that hears nothing from this agent asks it, to tell a path that loses everything (beacons
/// sent, none arrived) from an agent that is not sending (restarting, or not knowing the receiver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconStatus {
    /// This run of the agent (a restart begins a new series).
    pub epoch: u32,
    /// Beacons sent to `to` in this run: the next one's number.
    pub sent: u64,
    /// How often one goes, in milliseconds.
    pub period_ms: u64,
}

/// `GET /v1/mesh`: the always-on mesh's last evaluation at one agent, of the pairs that end at its
/// node (`to`): how many are ok, and each that is not. The answer grows with what is wrong, not
/// with the cluster (a healthy agent of a 1,000-node cluster answers a count, not 999 pairs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeshState {
    /// The mesh's period: a beacon to each peer this often, an evaluation twice as often.
    pub period_ms: u64,
    /// When the last evaluation ended (Unix time); `None` before the first.
    pub evaluated_at: Option<f64>,
    /// The pairs judged ok.
    pub ok: u64,
    /// Every pair that is not ok (failing or untested).
    pub pairs: Vec<MeshPair>,
}

/// One pair as the mesh judged it: the beacons' verdict (`ok`, `partial-loss`, `no-arrivals`,
/// `untested`) or the diagnosis' once it named the cause (`lost-in-network`, `rejected`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshPair {
    pub from: String,
    pub to: String,
    pub verdict: String,
    /// Beacons sent and arrived over the period the verdict rests on.
    pub sent: u64,
    pub arrived: u64,
    /// A bad pair's diagnosed cause, in the diagnosis' words.
    pub cause: Option<String>,
}

impl MeshPair {
    /// Neither ok nor untested: the path loses beacons.
    pub fn is_failing(&self) -> bool {
        !matches!(self.verdict.as_str(), "ok" | "untested")
    }
}

/// `POST /v1/run`: the arguments of a netprobe command (without the program's name) to run on the
/// agent's node, as the agent's own binary, with the agent's capabilities and API access.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub argv: Vec<String>,
}

/// What the command did: its exit code and output, and the node it ran on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAnswer {
    pub node: Option<String>,
    pub argv: Vec<String>,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The subcommands an agent runs for a caller: those that look at a node from the node.
pub const RUN_SUBCOMMANDS: [&str; 5] = ["doctor", "arp", "dns", "iptables", "conntrack"];
/// Flags an agent refuses in a command it runs: each would read a file of the node (a capture, a
/// rule dump, a kubeconfig) or a secret, which a caller through the API server has no business
/// reading.
pub const RUN_REFUSED_FLAGS: [&str; 5] = ["--pcap", "--file", "--kubeconfig", "--token-file", "--context"];
/// A command an agent runs is killed after this.
pub const RUN_WITHIN_S: u64 = 120;

impl RunRequest {
    /// Why the agent will not run this, if it will not.
    pub fn refusal(&self) -> Option<String> {
        let first = self.argv.first().map(String::as_str);
        if !first.is_some_and(|f| RUN_SUBCOMMANDS.contains(&f)) {
            return Some(format!("an agent runs only {}", RUN_SUBCOMMANDS.join(", ")));
        }
        if self.argv.len() > 32 || self.argv.iter().any(|a| a.len() > 256) {
            return Some("at most 32 arguments of 256 bytes".into());
        }
        let refused = self.argv.iter().find(|a| {
            RUN_REFUSED_FLAGS.iter().any(|flag| a.as_str() == *flag || a.starts_with(&format!("{flag}=")))
        });
        refused.map(|a| format!("{a} reads a file of the node: give the command without it"))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str]) -> Option<String> {
        RunRequest { argv: argv.iter().map(|a| a.to_string()).collect() }.refusal()
    }

    #[test]
    fn an_agent_runs_only_the_node_commands_and_none_that_reads_a_nodes_file() {
        assert_eq!(run(&["doctor", "--node", "node-a", "-o", "json"]), None);
        assert_eq!(run(&["arp", "--all-services", "--count", "3"]), None);
        for refused in [
            &["agent", "--listen", "0.0.0.0:1"][..],
            &["vxlan", "198.51.100.1", "198.51.100.2"],
            &[],
            &["iptables", "--file", "/etc/shadow"],
            &["iptables", "--file=/etc/shadow"],
            &["arp", "192.0.2.1", "--pcap", "/root/x.pcap"],
            &["doctor", "--kubeconfig", "/etc/kubernetes/admin.conf"],
        ] {
            assert!(run(refused).is_some(), "{refused:?}");
        }
        let long = "x".repeat(300);
        assert!(run(&["doctor", &long]).is_some(), "arguments are bounded");
    }
}
