//! `netprobe vxlan`: does VXLAN (UDP 8472) get from node to node, and where is it lost? Agents on
//! the nodes ([`agent`]) capture and send on request; this side drives every ordered pair at once
//! and judges each from three counts: sent, seen leaving the source's interface, seen arriving on
//! the destination's interface, plus a control datagram to another UDP port and the iptables rules
//! whose drop counters grew.

pub mod agent;
pub mod api;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

use crate::{Error, Health, Result};
use api::*;

/// Default VNI of the probes: far above flannel's 1, Calico's 4096 and Cilium's per-cluster
/// identities (below 65,536); only a Cilium cluster mesh member with cluster id 255 could use it.
pub const DEFAULT_VNI: u32 = 0x00ff_fff0;

/// A node as given on the command line: its agent's address, and the node IP probes go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub label: String,
    pub agent: SocketAddr,
    pub ip: Ipv4Addr,
}

/// `IP`, `IP:PORT`, `HOST` or `HOST:PORT` (agent port 9473 by default). The node's address is the
/// agent's: run the agent on the host network.
pub fn parse_node(text: &str) -> Result<Node> {
    // Refuse what cannot be a host name before anything is looked up.
    let host = text.rsplit_once(':').map_or(text, |(h, _)| h);
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return Err(Error::invalid(format!("node {text:?}"), "write IP, IP:PORT or HOST[:PORT]"));
    }
    let with_port =
        if text.contains(':') { text.to_string() } else { format!("{text}:{DEFAULT_AGENT_PORT}") };
    let agent = with_port
        .to_socket_addrs()
        .map_err(|e| {
            Error::invalid(format!("node {text:?}"), format!("{e}: write IP, IP:PORT or HOST[:PORT]"))
        })?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| Error::invalid(format!("node {text:?}"), "has no IPv4 address"))?;
    let IpAddr::V4(ip) = agent.ip() else { unreachable!("filtered to IPv4") };
    Ok(Node { label: text.to_string(), agent, ip })
}

#[derive(Clone, Debug)]
pub struct Config {
    pub nodes: Vec<Node>,
    pub token: String,
    pub port: u16,
    pub vni: u32,
    pub count: u32,
    /// How long to wait for probes to arrive after sending.
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairVerdict {
    Ok,
    PartialLoss,
    BlockedAtSource,
    LostInNetwork,
    DroppedAtDestination,
}

impl PairVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            PairVerdict::Ok => "ok",
            PairVerdict::PartialLoss => "partial-loss",
            PairVerdict::BlockedAtSource => "blocked-at-source",
            PairVerdict::LostInNetwork => "lost-in-network",
            PairVerdict::DroppedAtDestination => "dropped-at-destination",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairReport {
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    pub sent: u32,
    pub left_source: u32,
    pub arrived: u32,
    pub verdict: PairVerdict,
    /// `ok` when a datagram to another UDP port of the destination arrived, else `lost`.
    pub control_udp: &'static str,
    /// Not measured: probes are one-way (the destination's VTEP swallows them).
    pub rtt_ms: Option<f64>,
    /// The iptables rule that dropped the probes, when one was found.
    pub rule: Option<String>,
    pub diagnosis: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VxlanReport {
    pub probe: &'static str,
    pub port: u16,
    pub vni: u32,
    pub count: u32,
    pub verdict: Health,
    pub pairs: Vec<PairReport>,
}

/// Probes every ordered pair of `config.nodes`, all at once.
pub fn run(config: Config) -> Result<VxlanReport> {
    if config.nodes.len() < 2 {
        return Err(Error::invalid("nodes", "give at least two nodes (their agents' addresses)"));
    }
    if config.count == 0 || config.count > MAX_COUNT {
        return Err(Error::invalid("--count", format!("between 1 and {MAX_COUNT}")));
    }
    if config.vni > crate::wire::vxlan::MAX_VNI {
        return Err(Error::invalid("--vni", format!("at most {}", crate::wire::vxlan::MAX_VNI)));
    }
    let runtime = crate::net::runtime("starting the vxlan runtime", Some(2))?;
    runtime.block_on(run_async(config))
}

struct Client {
    http: reqwest::Client,
    token: String,
}

impl Client {
    async fn call<B: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        node: &Node,
        path: &str,
        body: Option<&B>,
    ) -> Result<R> {
        let url = format!("http://{}{path}", node.agent);
        let request = match body {
            Some(body) => self.http.post(&url).json(body),
            None => self.http.get(&url),
        };
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            Error::could_not_run(
                format!("agent {} ({})", node.label, node.agent),
                format!("unreachable ({e}): is `netprobe agent` running there, on the host network?"),
            )
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(Error::could_not_run(
                format!("agent {} ({})", node.label, node.agent),
                "refused the token: set NETPROBE_TOKEN to the token the agents were started with",
            ));
        }
        if !status.is_success() {
            let why =
                response.json::<ApiError>().await.map(|e| e.error).unwrap_or_else(|_| status.to_string());
            return Err(Error::could_not_run(format!("agent {} ({}) {path}", node.label, node.agent), why));
        }
        response.json::<R>().await.map_err(|e| {
            Error::could_not_run(format!("agent {} ({}) {path}", node.label, node.agent), e.to_string())
        })
    }
}

async fn run_async(config: Config) -> Result<VxlanReport> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| Error::could_not_run("building the HTTP client", e.to_string()))?;
    let client = std::sync::Arc::new(Client { http, token: config.token.clone() });
    // Every agent answers and takes the token before any probe is sent.
    let mut checks = tokio::task::JoinSet::new();
    for node in config.nodes.clone() {
        let client = client.clone();
        checks.spawn(async move { client.call::<(), AgentHealth>(&node, "/v1/health", None).await });
    }
    while let Some(done) = checks.join_next().await {
        done.map_err(|e| Error::could_not_run("checking agents", e.to_string()))??;
    }

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let config = std::sync::Arc::new(config);
    let mut pairs = tokio::task::JoinSet::new();
    let mut index = 0u64;
    for (a, from) in config.nodes.iter().enumerate() {
        for (b, to) in config.nodes.iter().enumerate() {
            if a == b {
                continue;
            }
            index += 1;
            let probe_id = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let (client, config, from, to) = (client.clone(), config.clone(), from.clone(), to.clone());
            pairs.spawn(async move { ((a, b), probe_pair(&client, &config, &from, &to, probe_id).await) });
        }
    }
    let mut results = Vec::new();
    while let Some(done) = pairs.join_next().await {
        let (order, result) = done.map_err(|e| Error::could_not_run("probing pairs", e.to_string()))?;
        results.push((order, result?));
    }
    results.sort_by_key(|(order, _)| *order);
    let pairs: Vec<PairReport> = results.into_iter().map(|(_, pair)| pair).collect();
    let healthy = pairs.iter().all(|p| p.verdict == PairVerdict::Ok);
    Ok(VxlanReport {
        probe: "vxlan",
        port: config.port,
        vni: config.vni,
        count: config.count,
        verdict: if healthy { Health::Ok } else { Health::Fault },
        pairs,
    })
}

async fn probe_pair(
    client: &Client,
    config: &Config,
    from: &Node,
    to: &Node,
    probe_id: u64,
) -> Result<PairReport> {
    let window = config.timeout + Duration::from_millis(SEND_GAP_MS * u64::from(config.count) + 3000);
    let expect = ExpectRequest {
        probe_id,
        from: from.ip,
        port: config.port,
        vni: config.vni,
        window_ms: (window.as_millis() as u64).min(MAX_WINDOW_MS),
    };
    let listening: ExpectResponse = client.call(to, "/v1/expect", Some(&expect)).await?;
    let send = SendRequest {
        probe_id,
        to: to.ip,
        port: config.port,
        control_port: listening.control_port,
        vni: config.vni,
        count: config.count,
    };
    let sent: SendResponse = client.call(from, "/v1/send", Some(&send)).await?;
    tokio::time::sleep(config.timeout).await;
    let arrived: CollectResponse = client.call(to, "/v1/collect", Some(&CollectRequest { probe_id })).await?;
    Ok(judge(config, from.ip, to.ip, &sent, &arrived))
}

/// The pair's verdict and the sentence that says where packets die.
pub fn judge(
    config: &Config,
    from: Ipv4Addr,
    to: Ipv4Addr,
    sent: &SendResponse,
    arrived: &CollectResponse,
) -> PairReport {
    let port = config.port;
    let control_ok = arrived.control_arrived > 0;
    let (verdict, rule, diagnosis) = if sent.left_source == 0 {
        let rule = sent.dropping_rules.first().cloned();
        let cause = match (&rule, &sent.send_error) {
            (Some(rule), _) => format!("{from}'s own firewall drops it: {rule}"),
            (None, Some(e)) => {
                format!("{from}'s kernel refused to send it ({e}): check its OUTPUT rules and routes")
            }
            (None, None) => format!("check {from}'s OUTPUT firewall (iptables/nft) and routes"),
        };
        (
            PairVerdict::BlockedAtSource,
            rule,
            format!("UDP {port} from {from} to {to} never left {from}: {cause}"),
        )
    } else if arrived.arrived == 0 {
        let diagnosis = if control_ok {
            format!(
                "UDP {port} from {from} to {to} is dropped in the network while other UDP passes: allow UDP {port} between nodes in the security group, NACL or firewall"
            )
        } else {
            format!(
                "all UDP from {from} to {to} is dropped in the network (UDP {port} and the control port): allow UDP (at least {port}) between nodes in the security group, NACL or firewall"
            )
        };
        (PairVerdict::LostInNetwork, None, diagnosis)
    } else if let Some(rule) = arrived.dropping_rules.first() {
        (
            PairVerdict::DroppedAtDestination,
            Some(rule.clone()),
            format!("UDP {port} from {from} reached {to}'s interface but {to} dropped it: {rule}"),
        )
    } else if arrived.arrived < sent.sent {
        (
            PairVerdict::PartialLoss,
            None,
            format!("{} of {} UDP {port} probes from {from} reached {to}: look for congestion, rate limits or MTU trouble on the path", arrived.arrived, sent.sent),
        )
    } else {
        (PairVerdict::Ok, None, format!("VXLAN on UDP {port} from {from} reaches {to}"))
    };
    PairReport {
        from,
        to,
        sent: sent.sent,
        left_source: sent.left_source,
        arrived: arrived.arrived,
        verdict,
        control_udp: if control_ok { "ok" } else { "lost" },
        rtt_ms: None,
        rule,
        diagnosis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            nodes: vec![],
            token: "t".into(),
            port: 8472,
            vni: DEFAULT_VNI,
            count: 5,
            timeout: Duration::from_secs(1),
        }
    }

    fn sent(left: u32, rules: &[&str]) -> SendResponse {
        SendResponse {
            sent: 5,
            left_source: left,
            control_left: 5,
            send_error: None,
            dropping_rules: rules.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn arrived(n: u32, control: u32, rules: &[&str]) -> CollectResponse {
        CollectResponse {
            arrived: n,
            control_arrived: control,
            dropping_rules: rules.iter().map(|r| r.to_string()).collect(),
        }
    }

    const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

    #[test]
    fn verdicts_follow_the_counts() {
        let c = config();
        let drop_in = "-t filter -A INPUT -p udp -m udp --dport 8472 -j DROP";
        let drop_out = "-t filter -A OUTPUT -p udp -m udp --dport 8472 -j DROP";
        let cases = [
            (sent(5, &[]), arrived(5, 5, &[]), PairVerdict::Ok, "ok"),
            (sent(5, &[]), arrived(3, 5, &[]), PairVerdict::PartialLoss, "ok"),
            (sent(0, &[drop_out]), arrived(0, 5, &[]), PairVerdict::BlockedAtSource, "ok"),
            (sent(5, &[]), arrived(0, 5, &[]), PairVerdict::LostInNetwork, "ok"),
            (sent(5, &[]), arrived(0, 0, &[]), PairVerdict::LostInNetwork, "lost"),
            (sent(5, &[]), arrived(5, 5, &[drop_in]), PairVerdict::DroppedAtDestination, "ok"),
        ];
        for (s, a, verdict, control) in cases {
            let pair = judge(&c, A, B, &s, &a);
            assert_eq!((pair.verdict, pair.control_udp), (verdict, control), "{}", pair.diagnosis);
        }
        let lost = judge(&c, A, B, &sent(5, &[]), &arrived(0, 5, &[]));
        assert_eq!(
            lost.diagnosis,
            "UDP 8472 from 198.51.100.1 to 203.0.113.2 is dropped in the network while other UDP passes: allow UDP 8472 between nodes in the security group, NACL or firewall"
        );
        let blocked = judge(&c, A, B, &sent(0, &[drop_out]), &arrived(0, 5, &[]));
        assert_eq!(blocked.rule.as_deref(), Some(drop_out));
        let dropped = judge(&c, A, B, &sent(5, &[]), &arrived(5, 5, &[drop_in]));
        assert!(dropped.diagnosis.contains(drop_in));
    }

    #[test]
    fn nodes_parse_with_default_port() {
        let n = parse_node("198.51.100.1").unwrap();
        assert_eq!((n.agent.port(), n.ip), (DEFAULT_AGENT_PORT, Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(parse_node("198.51.100.1:7000").unwrap().agent.port(), 7000);
        assert!(parse_node("not a host!").unwrap_err().is_bad_input());
    }
}
