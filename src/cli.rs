//! The command line: every subcommand, flag and help text. Parsing only; `main` dispatches.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use netprobe_probes::arp::Node;

use crate::output::{ColorChoice, Format};

#[derive(Debug, Parser)]
#[command(
    name = "netprobe",
    version,
    about = "Packet-level probes for Kubernetes clusters on your own network: one command, a verdict, and where to look next.",
    after_help = crate::exit::TABLE,
    propagate_version = true
)]
pub struct Cli {
    /// Output format: a table for people, json for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// Same as -o json.
    #[arg(long, global = true)]
    pub json: bool,

    /// When to colour verdicts: auto (a terminal, and NO_COLOR unset), always, never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// The kubeconfig for subcommands that read the Kubernetes API [default: KUBECONFIG, else
    /// ~/.kube/config, else the in-cluster service account].
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use [default: its current-context].
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    pub fn api(&self) -> netprobe_probes::cluster::ApiConfig {
        netprobe_probes::cluster::ApiConfig {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.output
        }
    }
}

const ARP_LONG: &str = "Find every MAC that answers ARP for an address, not just the first.\n\n\
Run it from a host on the VIP's layer-2 segment. It broadcasts --count who-has requests \
--interval apart and keeps listening until --wait after the last one, so a speaker that answers \
late still counts. More than one MAC for a MetalLB layer-2 VIP means more than one speaker claims it.\n\n\
Needs CAP_NET_RAW (sudo, or setcap cap_net_raw,cap_net_admin+ep on the binary); --pcap needs none.";

const VXLAN_LONG: &str =
    "Test VXLAN between nodes in every direction and name the place where packets die.\n\n\
NODE is the address of a `netprobe agent` on that node (IP, IP:PORT or HOST[:PORT], port 9473 by \
default), or NAME=IP[:PORT] to label it NAME; the token comes from NETPROBE_TOKEN. For each ordered pair A->B, B captures on its \
interface towards A, A sends --count real VXLAN packets (RFC 7348, VNI --vni, a probe id in the inner \
frame) to B:--port through its kernel's UDP stack, and captures its own egress; a datagram to another \
UDP port of B's agent is the control. Verdicts per pair: ok, partial-loss, blocked-at-source (never \
left A), lost-in-network (left A, never reached B), dropped-at-destination (reached B, dropped by a \
rule there, which is named), unverified (reached B, its counters unreadable), untested (an agent could \
not measure the pair: the reason is given, exit 3).\n\n\
The default VNI 16777200 is far from flannel's 1, Calico's 4096 and Cilium's cluster identities, so a \
node's own VTEP drops the probes without learning anything from them.";

const DOCTOR_LONG: &str = "Start from what the cluster already knows, walk to the cause, and say it in \
one sentence with the fix.\n\n\
Reads the cluster (Nodes, the DNS Service and its EndpointSlices, LoadBalancer Services: --kubeconfig, \
else KUBECONFIG, else ~/.kube/config, else the in-cluster service account) and runs, in order, what \
applies from this node: 1. mesh: what the agents' always-on mesh last judged of every pair of nodes, \
as `netprobe vxlan --all-nodes --from-mesh` reads it (skipped when the agents run no mesh); 2. dns: \
every endpoint of --dns-service and the Service, as `netprobe dns` does; 3. vxlan: probed now through \
the agents (token in NETPROBE_TOKEN): the pairs of this node, the nodes the mesh saw failing or could \
not see and the nodes whose DNS pods fail, both directions; every pair (`--all-nodes`) with --mtu or \
when there is no mesh to read; 4. arp: every LoadBalancer VIP on this host's segments, as `netprobe arp \
--all-services` does (needs CAP_NET_RAW); 5. iptables: this node's rules, live (needs root); 6. \
conntrack: this node's connection tracking table, as `netprobe conntrack` does. A step that does not \
apply is skipped with why; one that could not run says what stopped it. The first cause is the one \
nearest the network (a failing pair, with the DNS failure it explains), the rest follow as `also`.\n\n\
It changes nothing anywhere: fixes are printed, never applied. The verdict is fault when any step found \
one (even if another could not run), could-not-run when a needed step could not run, else ok.";

const DEMO_LONG: &str =
    "Rebuild the three incidents in network namespaces on this machine, run the real probe \
against each, and remove everything again. Needs root (namespaces, iptables); uses only \
documentation addresses inside its own namespaces.";

const IPTABLES_LONG: &str =
    "Count and explain iptables rule bloat, and print (or --apply) a safe cleanup.\n\n\
Reads iptables-save output: live by default, every family (iptables, ip6tables) and backend (legacy, \
nft) that holds rules, each as a rule set of its own; or a saved dump with --file (iptables-save or \
`iptables -S` output; an IPv4 dump followed by an IPv6 one is two rule sets, never merged). -4/-6 and \
--backend pick rule sets. Counts the rules per chain, the duplicates (the same rule text in the same \
chain, counters ignored), who owns each chain and rule, and orphan chains. Verdict `bloated` (exit 1) \
when one chain holds more than --max-copies copies of a rule, more than --max-duplicate-percent of all \
rules are duplicates (and at least --min-duplicates), or there are more than --max-rules rules; \
`check-broken` when --self-test finds `-C` blind to a rule it was just given.\n\n\
The cleanup keeps the first copy of each rule in order and rewrites only chains with duplicates \
(their counters restart at zero); chains holding copies of a rule whose copies behave differently \
(-m statistic, recent, limit, hashlimit, connlimit, quota, non-idempotent MARK/CONNMARK) are left \
alone unless --dedupe-stateful. Nothing here changes a rule except --self-test (a scratch chain, \
removed again) and --apply, which re-reads the chains right before, refuses if they changed, applies \
one restore per table and reads them back.";

const CONNTRACK_LONG: &str =
    "How full this node's connection tracking table is, whether it drops new flows, \
and who fills it.\n\n\
A full table drops the first packet of every new flow of every kind (DNS stalls, random resets, \
\"nf_conntrack: table full, dropping packet\" in the kernel log). Reads, for this network namespace: \
the entries against the limit (/proc/sys/net/netfilter/nf_conntrack_count and _max), the kernel's \
counters twice --window apart (/proc/net/stat/nf_conntrack: drop, early_drop, insert_failed), the \
kernel log's \"table full\" messages (/dev/kmsg; those naming another namespace, a pod's own table, \
are left out) and the entries by source, destination and protocol (/proc/net/nf_conntrack). Verdicts: \
`full` (at the limit, or flows dropped or evicted during the window), `near-full` (90% or more), \
`insert-failures` (inserts raced during the window), `was-full` (room now, but in the host's namespace a \
\"table full\" message within a day, in a pod's its own counters since it was made), `ok`, `not-loaded`; exit 1 on the first four. It changes nothing (listing the entries lets the kernel reap expired ones it walks). With --node, that Node's agent reads its table. Root reads the entries \
and the kernel log; without it those are notes.";

const DNS_LONG: &str = "Ask every DNS endpoint behind the cluster's DNS Service (each CoreDNS pod) and the \
Service's addresses the same question, all at once, and say which endpoint fails and why.\n\n\
Endpoints come from --endpoints, or from the Kubernetes API: the EndpointSlices labelled \
kubernetes.io/service-name=SERVICE in NAMESPACE (--kubeconfig, else KUBECONFIG, else ~/.kube/config, else \
the in-cluster service account), with each pod's node and conditions, each address once; the Service's \
addresses are every ClusterIP of the Service (both families when it is dual-stack). Each query uses a \
fresh source port; replies must carry our ID and question. A truncated UDP reply is asked again over TCP \
(at most --concurrency at once), as a resolver would. Each query keeps listening a grace period past \
--timeout, so an answer that comes late is told apart from one that never comes.\n\n\
An error reply is not an answer: SERVFAIL, REFUSED and NXDOMAIN are counted (the RCODE column) and never \
make an endpoint ok or vote on the answers. Verdicts per endpoint: ok; failing (no answer: silence, refused, \
no route, or only SERVFAIL/REFUSED); degraded (some lost, late, server errors, or p95 above --slow); \
inconsistent (answers unlike the majority's, or NXDOMAIN where others resolve the name); nxdomain (no \
endpoint knows the name); not-ready (the EndpointSlice says so: shown, not judged). Findings explain them: \
endpoint-unreachable, server-errors, inconsistent-answers, name-exists-nowhere, protocol-blocked, \
too-big-for-udp, late-answers, service-path (the Service fails while every endpoint answers), \
service-failures-explained (its failure rate fits the failing endpoints, by a 95% interval), cross-node \
(failing pods all on other nodes: check the overlay with netprobe vxlan).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find every MAC that answers ARP for an address (duplicate MetalLB speakers).
    #[command(long_about = ARP_LONG)]
    Arp(ArpArgs),
    /// Test VXLAN (UDP 8472) between nodes, every direction, and name where packets die.
    #[command(long_about = VXLAN_LONG)]
    Vxlan(VxlanArgs),
    /// Run the node agent that `netprobe vxlan` drives (on every node, host network).
    Agent(AgentArgs),
    /// Query each CoreDNS pod and the kube-dns Service directly, and compare.
    #[command(long_about = DNS_LONG)]
    Dns(DnsArgs),
    /// Count and explain iptables rule bloat (duplicate rules), and print a cleanup script.
    #[command(long_about = IPTABLES_LONG)]
    Iptables(IptablesArgs),
    /// How full this node's connection tracking table is, whether it drops new flows, and who fills it.
    #[command(long_about = CONNTRACK_LONG)]
    Conntrack(ConntrackArgs),
    /// Walk to the cause: the agents' mesh, DNS, VXLAN, the VIPs, the node's rules and conntrack table.
    #[command(long_about = DOCTOR_LONG)]
    Doctor(DoctorArgs),
    /// Rebuild the three incidents in network namespaces on this machine and diagnose them live.
    #[command(long_about = DEMO_LONG)]
    Demo(DemoArgs),
    /// Print a shell completion script: netprobe completions bash > /etc/bash_completion.d/netprobe
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
sudo netprobe arp 192.0.2.100\n  \
sudo netprobe arp 192.0.2.100 --watch --tcp 192.0.2.100:80 --duration 10m\n  \
sudo netprobe arp 192.0.2.100 -i eth0 --node node-a=192.0.2.11 --node node-b=192.0.2.12\n  \
sudo netprobe arp 2001:db8::100 --node node-a=2001:db8::11   # an IPv6 VIP, over neighbour discovery\n  \
sudo tcpdump -i eth0 -w vip.pcap arp   # elsewhere, while the problem happens\n  \
netprobe arp 192.0.2.100 --pcap vip.pcap -o json\n  \
kubectl netprobe arp --service metallb-test/web   # its VIP(s), responders named by node\n  \
kubectl netprobe arp --all-services               # every LoadBalancer VIP on this segment\n  \
sudo netprobe arp --range 192.0.2.100-192.0.2.120  # is a MetalLB pool free before it is used?")]
#[command(group(clap::ArgGroup::new("targets").required(true).args(["vip", "service", "all_services", "range"])))]
pub struct ArpArgs {
    /// The address to resolve, e.g. a LoadBalancer VIP: IPv4 (asked by ARP) or IPv6 (asked by
    /// neighbour discovery: a Neighbor Solicitation to its solicited-node group, every Neighbor
    /// Advertisement counted per MAC). With a kubeconfig (or in a pod), responders are named by
    /// the cluster's nodes unless --node is given.
    pub vip: Option<IpAddr>,

    /// Probe the VIP(s) of this LoadBalancer Service (status.loadBalancer.ingress), responders
    /// named by node (--kubeconfig, --context).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_service, conflicts_with_all = ["pcap", "watch"])]
    pub service: Option<(String, String)>,

    /// Probe every LoadBalancer VIP on this host's segments (of -i, when given): one row per VIP.
    /// From a host on none of their segments (a laptop), the agent of the node closest to the VIPs
    /// probes them, reached through the API server.
    #[arg(long, conflicts_with_all = ["pcap", "watch"])]
    pub all_services: bool,

    /// With --service or --all-services: probe from the agent of the node closest to the VIPs,
    /// through the API server, whatever this host's segments (needs the Role of
    /// deploy/kubernetes/user-role.yaml and NETPROBE_TOKEN).
    #[arg(long, conflicts_with_all = ["pcap", "watch", "interface", "source", "range"])]
    pub via_api: bool,

    /// Ask for every address of a pool, FIRST-LAST or ADDRESS/LEN (at most 4096), a request every
    /// --interval [default 20ms] --count times each, and list the addresses that already have an
    /// owner (in-use) or several (duplicate): run it before the pool is given to MetalLB.
    #[arg(long, value_name = "RANGE", value_parser = parse_range, conflicts_with_all = ["pcap", "watch", "nodes"])]
    pub range: Option<netprobe_probes::arp::range::Range>,

    /// Interface to probe on [default: the interface of the route to VIP].
    #[arg(short, long)]
    pub interface: Option<String>,

    /// Number of broadcast requests to send; as many again go to each MAC that answered, by
    /// unicast (unless --no-unicast).
    #[arg(short, long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,

    /// Time between requests (250ms, 1s, ...; at most 1h) [default: 200ms, with --watch 1s, with
    /// --range 20ms].
    #[arg(long, value_parser = |s: &str| parse_duration_max(s, HOUR))]
    pub interval: Option<Duration>,

    /// How long to keep listening after the last request (at most 1h).
    #[arg(long, default_value = "1s", value_parser = |s: &str| parse_duration_max(s, HOUR))]
    pub wait: Duration,

    /// Source IP of the requests [default: the interface's first address of the VIP's family; for
    /// IPv6 a global one before a link-local one].
    #[arg(short, long)]
    pub source: Option<IpAddr>,

    /// Label responders with node names: NAME=IP, repeatable. Each node IP is resolved in the same
    /// run; a responder whose MAC matches no node is called out.
    #[arg(long = "node", value_name = "NAME=IP", value_parser = parse_node)]
    pub nodes: Vec<Node>,

    /// Skip the unicast round: by default, after the broadcast requests, --count requests (IPv6:
    /// solicitations) go to each responder's own MAC, as a router or the kernel re-checks a cached
    /// neighbour, and a MAC that answers broadcast but never unicast is `broadcast-only`.
    #[arg(long, conflicts_with_all = ["pcap", "watch", "range"])]
    pub no_unicast: bool,

    /// Analyse a capture (pcap or pcapng, from tcpdump -w) instead of probing. Needs no privilege.
    /// The capture's own requests are the probes, so the flags that shape sending do not apply.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["interface", "source", "count", "interval", "wait", "duration"])]
    pub pcap: Option<PathBuf>,

    /// Watch ownership over time: a request every --interval, every ARP frame about the VIP in
    /// between, one event per change (NDJSON with -o json), and a summary at the end or on Ctrl-C.
    #[arg(long, conflicts_with_all = ["count", "wait"])]
    pub watch: bool,

    /// With --watch: stop after this long (at most 366d) [default: run until Ctrl-C].
    #[arg(long, requires = "watch", value_parser = |s: &str| parse_duration_max(s, 366 * DAY))]
    pub duration: Option<Duration>,

    /// With --watch: also connect to HOST:PORT (a service on the VIP) every interval and report
    /// connects much slower than usual, or failed, and whether they line up with owner changes.
    #[arg(long, value_name = "HOST:PORT", requires = "watch", conflicts_with = "pcap", value_parser = parse_tcp_target)]
    pub tcp: Option<SocketAddr>,

    /// With --tcp: give up on a connect after this long (counted as a failure; at most 1m).
    #[arg(long, default_value = "3s", requires = "tcp", value_parser = |s: &str| parse_duration_max(s, MINUTE))]
    pub tcp_timeout: Duration,
}

/// What `netprobe arp` was asked to do, resolved once from its flags (clap's conflicts keep the
/// modes' own flags apart; this picks the mode).
#[derive(Debug)]
pub enum ArpMode {
    /// `--service` or `--all-services`: the cluster's LoadBalancer VIPs.
    Services,
    /// `--range`: every address of a pool.
    Range(netprobe_probes::arp::range::Range),
    /// `--watch`: a VIP followed over time, live or from `--pcap`.
    Watch(IpAddr),
    /// One VIP, once: live, or from `--pcap`.
    Once(IpAddr),
}

impl ArpArgs {
    pub fn mode(&self) -> Result<ArpMode, netprobe_probes::Error> {
        if self.service.is_some() || self.all_services {
            return Ok(ArpMode::Services);
        }
        if let Some(range) = self.range {
            return Ok(ArpMode::Range(range));
        }
        match self.vip {
            Some(vip) if self.watch => Ok(ArpMode::Watch(vip)),
            Some(vip) => Ok(ArpMode::Once(vip)),
            None => Err(netprobe_probes::Error::invalid(
                "arp",
                "give the VIP, --service NAMESPACE/NAME, --all-services or --range FIRST-LAST",
            )),
        }
    }
}

fn parse_range(text: &str) -> Result<netprobe_probes::arp::range::Range, String> {
    netprobe_probes::arp::range::Range::parse(text).map_err(|e| e.to_string())
}

fn parse_tcp_target(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?}: {e} (write HOST:PORT, e.g. 192.0.2.100:80)"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
export NETPROBE_TOKEN=...            # the agents' token\n  \
netprobe vxlan 198.51.100.1 203.0.113.2\n  \
netprobe vxlan node1 node2 node3 -o json\n  \
kubectl netprobe vxlan --all-nodes    # every Node of the cluster, agents from deploy/kubernetes/\n  \
kubectl netprobe vxlan --all-nodes --from-mesh   # what the agents' always-on mesh knows, no probe sent")]
#[command(group(clap::ArgGroup::new("targets").required(true).args(["nodes", "all_nodes"])))]
pub struct VxlanArgs {
    /// Agent addresses of the nodes (NAME=IP to name one): two test both directions, more test
    /// every ordered pair.
    #[arg(num_args = 2.., value_name = "NODE")]
    pub nodes: Vec<String>,

    /// Probe every Node of the cluster (control-plane nodes too), each at its InternalIP, labelled
    /// by its name; nodes where no agent answers are named, not probed (--kubeconfig, --context).
    /// When no agent answers at its node's address from here, the agents are reached through the
    /// API server instead (as with --via-api).
    #[arg(long)]
    pub all_nodes: bool,

    /// Reach the agents through the API server's proxy to their pods (namespace netprobe), the
    /// door kubectl port-forward uses, instead of at each node's address: for a laptop that
    /// reaches the API server and not the nodes. Needs RBAC to list pods and get and create
    /// pods/proxy in namespace netprobe (deploy/kubernetes/user-role.yaml).
    #[arg(long)]
    pub via_api: bool,

    /// The agents' port, for nodes given without one and with --all-nodes.
    #[arg(long, default_value_t = netprobe_probes::vxlan::api::DEFAULT_AGENT_PORT)]
    pub agent_port: u16,

    /// The VXLAN port (8472 for flannel and Cilium on Linux; 4789 is the IANA port).
    #[arg(long, default_value_t = 8472)]
    pub port: u16,

    /// The VNI of the probes.
    #[arg(long, default_value_t = netprobe_probes::vxlan::DEFAULT_VNI)]
    pub vni: u32,

    /// Probe packets per pair (at most 100).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,

    /// How long to wait for the probes to arrive after sending (at most 10s: an agent listens for
    /// at most 15 s per probe).
    #[arg(long, default_value = "1s", value_parser = |s: &str| parse_duration_max(s, 10 * SECOND))]
    pub timeout: Duration,

    /// Also find each direction's path MTU: rounds of VXLAN probes of growing sizes (1200 bytes
    /// up to the interface's MTU) with Don't Fragment set, 16 sizes a round, until the largest
    /// that arrives is known to the byte. Says what that leaves the pods (50 bytes less), whether
    /// the source's vxlan device (the pod network's MTU) fits in it, and whether a router sent
    /// ICMP fragmentation-needed or the path is a black hole. About 4 rounds more per pair.
    #[arg(long)]
    pub mtu: bool,

    /// Send no probe: read what the agents' always-on mesh (--mesh-every) last judged of every
    /// pair that ends at each of them (one call per agent), and list the pairs that lose beacons
    /// with their diagnosed cause. An agent without a mesh, silent or stalled leaves its pairs
    /// unknown (exit 3 when nothing fails).
    #[arg(long, conflicts_with_all = ["mtu", "count", "timeout", "port", "vni"])]
    pub from_mesh: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
sudo netprobe demo\n  \
sudo netprobe demo vxlan --keep     # leave the lab up to look around\n  \
sudo netprobe demo --clean          # remove what --keep left")]
pub struct DemoArgs {
    /// Which incident to stage.
    #[arg(value_enum, default_value_t = DemoPart::All)]
    pub part: DemoPart,

    /// Leave the lab up afterwards, and print how to enter it and remove it.
    #[arg(long)]
    pub keep: bool,

    /// Remove every namespace and process an earlier `--keep` left, then exit.
    #[arg(long, conflicts_with = "keep")]
    pub clean: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoPart {
    All,
    Arp,
    Vxlan,
    Dns,
    Iptables,
    /// Incident 2 end to end: `netprobe doctor` on a node whose DNS half-fails.
    Doctor,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
sudo -E netprobe doctor                        # on a node, with ~/.kube/config and NETPROBE_TOKEN\n  \
sudo -E netprobe doctor --node node-a -o json\n  \
kubectl netprobe doctor --dns-service kube-system/coredns\n  \
kubectl netprobe doctor --node node-b               # from a laptop: node-b's agent runs it, through the API server")]
pub struct DoctorArgs {
    /// The node this runs on [default: $NODE_NAME, else the Node whose InternalIP is an address of
    /// this host].
    #[arg(long, env = "NODE_NAME")]
    pub node: Option<String>,

    /// The cluster's DNS Service.
    #[arg(long, value_name = "NAMESPACE/NAME", default_value = "kube-system/kube-dns", value_parser = parse_service)]
    pub dns_service: (String, String),

    /// The agents' port, for the vxlan step.
    #[arg(long, default_value_t = netprobe_probes::vxlan::api::DEFAULT_AGENT_PORT)]
    pub agent_port: u16,

    /// The VXLAN port the cluster's overlay uses.
    #[arg(long, default_value_t = 8472)]
    pub vxlan_port: u16,

    /// Let the vxlan step probe every pair of nodes and find each direction's path MTU, comparing
    /// the pod network's MTU with it (as `netprobe vxlan --all-nodes --mtu`).
    #[arg(long)]
    pub mtu: bool,

    /// Run on the node's agent, through the API server (as when this host is not a Node of the
    /// cluster: then the agent of --node, else of the first node with a ready agent, runs it).
    /// Needs the Role of deploy/kubernetes/user-role.yaml and NETPROBE_TOKEN.
    #[arg(long)]
    pub via_api: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
NETPROBE_TOKEN=$(cat /etc/netprobe/token) netprobe agent\n  \
netprobe agent --listen 198.51.100.1:9473 --token-file /etc/netprobe/token")]
pub struct AgentArgs {
    /// Where to serve the agent's HTTP API.
    #[arg(long, default_value = "0.0.0.0:9473")]
    pub listen: SocketAddr,

    /// Read the shared token from this file instead of NETPROBE_TOKEN. The agent refuses to start
    /// without a token, and refuses every request without it.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// The port the other nodes' agents listen on: before sending probes to a node, the agent asks
    /// the agent there whether it expects them [default: the port of --listen].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub peer_port: Option<u16>,

    /// The always-on mesh: every period, send each peer one VXLAN beacon, count what arrives from
    /// each (loss by the beacons' numbers, jitter by their times), ask a silent peer's agent
    /// whether it sent, diagnose a pair that turns bad as `netprobe vxlan` does, and show it all
    /// on GET /metrics (1s to 1h; the DaemonSet uses 10s) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = parse_mesh_period)]
    pub mesh_every: Option<Duration>,

    /// With --mesh-every: the peers' agents, ADDR[:PORT],... (the port of --peer-port by default).
    #[arg(
        long,
        value_name = "ADDR,...",
        value_delimiter = ',',
        requires = "mesh_every",
        conflicts_with = "peers_from_api"
    )]
    pub peers: Vec<String>,

    /// With --mesh-every: every Node's InternalIP from the API, listed again every minute (in a
    /// pod: the ServiceAccount's; else --kubeconfig, KUBECONFIG, ~/.kube/config).
    #[arg(long, requires = "mesh_every")]
    pub peers_from_api: bool,

    /// With --mesh-every: which pairs get series on /metrics. `all`: five per peer (about 5,000
    /// on a node of a 1,000-node cluster); `failing`: only the pairs that are not ok, beside
    /// netprobe_vxlan_peers{to,state}, which counts the rest.
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = MeshSeries::All, requires = "mesh_every")]
    pub mesh_series: MeshSeries,

    /// With --mesh-every: the VXLAN port to probe (8472 for flannel and Cilium; 4789 IANA's).
    #[arg(long, default_value_t = 8472, requires = "mesh_every")]
    pub vxlan_port: u16,

    /// Do not ask the kernel why it dropped probes that arrived. By default the agent traces
    /// skb:kfree_skb in a tracefs instance of its own while an expectation is open (mounting
    /// tracefs privately where it is not mounted, which needs CAP_SYS_ADMIN at start), and names
    /// the drop reason: VXLAN_VNI_NOT_FOUND or NO_SOCKET prove the probes passed every firewall,
    /// NETFILTER_DROP says one took them. Without it, only firewall and UDP counters are read.
    #[arg(long)]
    pub no_drop_trace: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MeshSeries {
    All,
    Failing,
}

fn parse_mesh_period(text: &str) -> Result<Duration, String> {
    let period = parse_duration_max(text, HOUR)?;
    if period < SECOND {
        return Err(format!(
            "{text:?}: at least 1s (a beacon a second to each peer is the most the mesh sends)"
        ));
    }
    Ok(period)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
sudo netprobe conntrack\n  \
sudo netprobe conntrack --window 10s --top 10 -o json\n  \
kubectl netprobe conntrack --node node-b     # node-b's table, read by its agent, through the API server")]
pub struct ConntrackArgs {
    /// Read this Node's table instead of this host's: its agent reads it and this prints what it
    /// found, reached through the API server (as `kubectl port-forward` is; needs the Role of
    /// deploy/kubernetes/user-role.yaml and NETPROBE_TOKEN).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,

    /// How long to watch the drop, early-drop and insert-failure counters (at most 1m).
    #[arg(long, default_value = "1s", value_parser = |s: &str| parse_duration_max(s, MINUTE))]
    pub window: Duration,

    /// How many sources, destinations and protocols to list.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub top: u16,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
sudo netprobe iptables\n  \
sudo iptables-save | netprobe iptables --file -\n  \
netprobe iptables --file node1.rules -o json\n  \
sudo netprobe iptables --self-test --check-latency\n  \
sudo netprobe iptables --cleanup-script > cleanup.rules   # review it, then apply it as its header says\n  \
sudo netprobe iptables -6 --backend legacy --apply        # or let netprobe apply it, checked")]
pub struct IptablesArgs {
    /// Analyse an iptables-save (or `iptables -S`) dump instead of the live tables; - reads
    /// standard input.
    #[arg(long, value_name = "FILE|-")]
    pub file: Option<PathBuf>,

    /// Only the IPv4 rule sets.
    #[arg(short = '4', long, conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Only the IPv6 rule sets (ip6tables).
    #[arg(short = '6', long)]
    pub ipv6: bool,

    /// Only the rule sets of this backend.
    #[arg(long, value_enum)]
    pub backend: Option<IptablesBackend>,

    /// Bloated when one chain holds more copies than this of one rule.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_copies: u64,

    /// Bloated when more than this percentage of all rules are duplicates...
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT", value_parser = parse_percent)]
    pub max_duplicate_percent: f64,

    /// ...and there are at least this many of them.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub min_duplicates: u64,

    /// Bloated when there are more rules than this in total.
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    pub max_rules: u64,

    /// Time `iptables -C` on the live table (what each existence check of a sync costs).
    #[arg(long, conflicts_with = "file")]
    pub check_latency: bool,

    /// Check whether this host's `iptables -C` (of the family and backend picked) finds a
    /// kube-router-shaped rule it was just given (adds it to a scratch chain and removes the chain).
    #[arg(long, conflicts_with = "file")]
    pub self_test: bool,

    /// Print the restore script that removes every duplicate, keeping the first copy of each rule
    /// in order, instead of the report. Its header names the restore command it is for.
    #[arg(long, conflicts_with_all = ["check_latency", "self_test"])]
    pub cleanup_script: bool,

    /// Also remove copies of rules whose copies behave differently (-m statistic, -m limit, ...).
    #[arg(long)]
    pub dedupe_stateful: bool,

    /// Apply the cleanup to the live tables: re-read the chains it rewrites right before, refuse if
    /// they changed, one restore per table, read back after. Never the default.
    #[arg(long, conflicts_with_all = ["file", "cleanup_script"])]
    pub apply: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IptablesBackend {
    Legacy,
    Nft,
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err("a percentage is between 0 and 100".into());
    }
    Ok(value)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
netprobe dns --each-endpoint                      # discover kube-system/kube-dns, this node from NODE_NAME\n  \
netprobe dns --endpoints 10.42.0.5,10.42.1.7 --service-ip 10.43.0.10 --node node-a\n  \
netprobe dns --endpoints 192.0.2.53:5353 --protocol udp --count 1000 --interval 0 --concurrency 64\n  \
netprobe dns --like-glibc --count 200                # A+AAAA pairs as glibc sends them: the 5 s stalls\n  \
netprobe dns --name kubernetes.default.svc.cluster.local --name example.com   # pod down, or its upstream?")]
pub struct DnsArgs {
    /// Query every endpoint separately (what this command always does; the flag documents intent).
    #[arg(long)]
    pub each_endpoint: bool,

    /// The endpoints to query, IP or IP:PORT, comma separated [default: discovered from the API].
    #[arg(long, value_name = "IP[:PORT],...", value_delimiter = ',', value_parser = parse_dns_server)]
    pub endpoints: Option<Vec<SocketAddr>>,

    /// The Service VIP to query as a row of its own [default: the Service's ClusterIP, if discovered].
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_dns_server)]
    pub service_ip: Option<SocketAddr>,

    /// Namespace of the DNS Service, for discovery.
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,

    /// Name of the DNS Service, for discovery.
    #[arg(long, default_value = "kube-dns")]
    pub service: String,

    /// The name to ask for; give it again to ask several names of the same servers (the
    /// cluster's and an external one tell a broken upstream from a pod that is down).
    #[arg(long, default_values_t = ["kubernetes.default.svc.cluster.local.".to_string()])]
    pub name: Vec<String>,

    /// The record type to ask for (A, AAAA, SRV, TXT, ...).
    #[arg(long = "type", default_value = "A")]
    pub record_type: String,

    /// Queries per endpoint and protocol.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,

    /// Time between queries to one endpoint; 0 sends as fast as --concurrency allows (at most 1h).
    #[arg(long, default_value = "50ms", value_parser = |s: &str| parse_duration_max(s, HOUR))]
    pub interval: Duration,

    /// Queries in flight per endpoint and protocol.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,

    /// How long to wait for each reply (at most 1m).
    #[arg(long, default_value = "1s", value_parser = |s: &str| parse_duration_max(s, MINUTE))]
    pub timeout: Duration,

    /// Transport to ask over.
    #[arg(long, value_enum, default_value_t = DnsProtocol::Both)]
    pub protocol: DnsProtocol,

    /// A p95 latency above this makes an endpoint degraded (at most 1m).
    #[arg(long, default_value = "250ms", value_parser = |s: &str| parse_duration_max(s, MINUTE))]
    pub slow: Duration,

    /// The node this runs on, for the cross-node finding [default: $NODE_NAME].
    #[arg(long, env = "NODE_NAME")]
    pub node: Option<String>,

    /// Address families to probe among discovered endpoints and Service addresses [default: the
    /// families this host has routes for].
    #[arg(long, value_enum)]
    pub family: Option<DnsFamily>,

    /// Offer this EDNS UDP payload size in every query, as dig's +bufsize [default: no EDNS, as
    /// glibc's stub resolver sends none].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(512..))]
    pub edns_bufsize: Option<u16>,

    /// Ask as glibc's getaddrinfo does: A and AAAA from one UDP socket, back to back, and report
    /// the pairs where one answer never came (a glibc client stalls 5 s on each). These are the
    /// "5-second DNS delays" of the conntrack insert race (kubernetes#56903). Run as root on a
    /// node (hostNetwork), it also reads how conntrack's insert_failed and drop counters grew.
    #[arg(long, conflicts_with_all = ["record_type", "protocol"])]
    pub like_glibc: bool,

    /// Send UDP queries from at most --concurrency sockets, each reused once its last query was
    /// answered, as dnsperf does, instead of a fresh socket (and source port) per query, as glibc
    /// does. For load: a third of the system calls, and as many conntrack entries as sockets
    /// instead of one per query; behind a Service each socket then keeps one backend.
    #[arg(long, conflicts_with = "like_glibc")]
    pub reuse_sockets: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DnsFamily {
    #[value(name = "4")]
    V4,
    #[value(name = "6")]
    V6,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DnsProtocol {
    Udp,
    Tcp,
    Both,
}

/// `IP` or `IP:PORT` (`[IPv6]:PORT`); port 53 when absent.
fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT"))
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// A duration like 250ms, 1s, 10m, no longer than `max`: every duration flag has a sane ceiling,
/// so no deadline arithmetic can overflow.
fn parse_duration_max(text: &str, max: Duration) -> Result<Duration, String> {
    let value =
        humantime::parse_duration(text).map_err(|e| format!("{e} (write durations like 250ms, 1s, 10m)"))?;
    if value > max {
        return Err(format!("at most {}", humantime::format_duration(max)));
    }
    Ok(value)
}

fn parse_service(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((namespace.to_string(), name.to_string()))
        }
        _ => Err(format!("{text:?}: write NAMESPACE/NAME, e.g. metallb-test/web")),
    }
}

fn parse_node(text: &str) -> Result<Node, String> {
    let (name, ip) = text.split_once('=').ok_or("expected NAME=IP, e.g. node-a=192.0.2.11")?;
    if name.is_empty() {
        return Err("the node name before '=' is empty".into());
    }
    let ip = ip.parse().map_err(|_| format!("{ip:?} is not an IP address"))?;
    Ok(Node { name: name.to_string(), ip })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn nodes_parse() {
        let node = parse_node("sp1=192.0.2.11").unwrap();
        assert_eq!((node.name.as_str(), node.ip.to_string()), ("sp1", "192.0.2.11".to_string()));
        assert_eq!(parse_node("sp2=2001:db8::12").unwrap().ip.to_string(), "2001:db8::12");
        assert!(parse_node("sp1").is_err());
        assert!(parse_node("=192.0.2.11").is_err());
        assert!(parse_node("sp1=not-an-ip").is_err());
    }
}
