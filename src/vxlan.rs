//! `netprobe vxlan` and `netprobe agent`: flags to configs, and the mesh as a from x to matrix.

use netprobe_agent::client::Reach;
use netprobe_agent::mesh::{self, MeshConfig, Peers};
use netprobe_agent::server::{self as agent, AgentConfig};
use netprobe_k8s::{self as k8s, ApiConfig};
use netprobe_probes::vxlan::{self, Config, MeshReport, PairVerdict, UntestedNode, VxlanReport};
use netprobe_probes::{Error, Health};

use crate::cli::{AgentArgs, VxlanArgs};
use crate::exit::Exit;
use crate::output::{self, Format};

/// The shared token: NETPROBE_TOKEN, or the file given.
pub fn token(file: Option<&std::path::Path>) -> Result<String, Error> {
    let token = match file {
        // A token is a line of text: a FIFO, a device or a huge file is refused, not read forever.
        Some(path) => netprobe_probes::net::input::read_small_file(path, 4096)
            .map_err(|e| Error::invalid(format!("--token-file {}", path.display()), e.to_string()))?,
        None => std::env::var("NETPROBE_TOKEN").unwrap_or_default(),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(Error::invalid(
            "token",
            "none given: set NETPROBE_TOKEN (or --token-file for the agent) to a shared secret, e.g. $(openssl rand -hex 16)",
        ));
    }
    Ok(token)
}

/// `--mesh-every` and its peers as the agent's mesh config.
fn mesh_config(
    args: &AgentArgs,
    every: std::time::Duration,
    peer_port: u16,
    node_name: Option<&str>,
    api: &ApiConfig,
) -> Result<MeshConfig, Error> {
    let peers = if args.peers_from_api {
        Peers::FromApi { api: api.clone(), agent_port: peer_port }
    } else if !args.peers.is_empty() {
        Peers::Fixed(mesh::parse_peers(&args.peers.join(","), peer_port)?)
    } else {
        return Err(Error::invalid("--mesh-every", "give the peers: --peers ADDR,... or --peers-from-api"));
    };
    // The metrics name this node by its name, else by the address it listens on.
    let me = match (node_name, args.listen.ip()) {
        (Some(name), _) => name.to_string(),
        (None, ip) if !ip.is_unspecified() => ip.to_string(),
        (None, _) => {
            return Err(Error::invalid(
                "--mesh-every",
                "name this node: set NODE_NAME, or listen on the node's address (--listen NODE_IP:9473)",
            ))
        }
    };
    if args.vxlan_port == 0 {
        return Err(Error::invalid("--vxlan-port 0", "give the VXLAN port, e.g. 8472"));
    }
    Ok(MeshConfig {
        every,
        peers,
        me,
        me_agent: args.listen,
        port: args.vxlan_port,
        vni: vxlan::DEFAULT_VNI,
        failing_only: args.mesh_series == crate::cli::MeshSeries::Failing,
    })
}

pub fn agent(args: AgentArgs, api: &ApiConfig) -> Result<Exit, Error> {
    let token = token(args.token_file.as_deref())?;
    let peer_port = args.peer_port.unwrap_or(args.listen.port());
    // NODE_NAME: the DaemonSet sets it from the downward API.
    let node_name = std::env::var("NODE_NAME").ok().filter(|n| !n.trim().is_empty());
    let mesh = match args.mesh_every {
        None => None,
        Some(every) => Some(mesh_config(&args, every, peer_port, node_name.as_deref(), api)?),
    };
    let drop_trace = !args.no_drop_trace;
    let config = AgentConfig { listen: args.listen, token, peer_port, node_name, mesh, drop_trace };
    agent::serve(config, |bound, kept| {
        let kept = if kept.is_empty() { "none".to_string() } else { kept.join(", ") };
        eprintln!("netprobe agent: serving on {bound}; capabilities kept: {kept} (every other one dropped)");
    })?;
    Ok(Exit::Healthy)
}

pub fn run(args: VxlanArgs, api: &ApiConfig, format: Format) -> Result<Exit, Error> {
    let cluster = if args.all_nodes { Some(k8s::blocking(k8s::nodes(api))?) } else { None };
    if args.from_mesh {
        let report = mesh_report_for(&args, cluster.as_deref(), api)?;
        output::report(format, &report, render_mesh);
        return Ok(Exit::from_health(report.verdict));
    }
    let report = report_for(&args, cluster.as_deref(), api)?;
    output::report(format, &report, render_table);
    Ok(Exit::from_health(report.verdict))
}

/// The report `netprobe vxlan` prints: over `cluster`'s nodes by name (`--all-nodes`, and
/// `netprobe doctor` with the nodes it chose), else over the NODE arguments.
pub fn report_for(
    args: &VxlanArgs,
    cluster: Option<&[k8s::ClusterNode]>,
    api: &ApiConfig,
) -> Result<VxlanReport, Error> {
    let (config, untested, reach) = plan(args, cluster, api)?;
    let mut report = netprobe_agent::drive(config, reach)?;
    // Nodes the API gave without an address come first: they were never asked.
    report.untested.splice(0..0, untested);
    report.verdict = VxlanReport::health_of(&report.pairs, &report.untested);
    Ok(report)
}

/// `--from-mesh`: what the agents' mesh last judged, over the same nodes and doors.
pub fn mesh_report_for(
    args: &VxlanArgs,
    cluster: Option<&[k8s::ClusterNode]>,
    api: &ApiConfig,
) -> Result<MeshReport, Error> {
    let (config, untested, reach) = plan(args, cluster, api)?;
    netprobe_agent::client::read_mesh(config, untested, reach)
}

/// The nodes (and those the API gave without an address), the token and the door to the agents.
fn plan(
    args: &VxlanArgs,
    cluster: Option<&[k8s::ClusterNode]>,
    api: &ApiConfig,
) -> Result<(Config, Vec<UntestedNode>, Reach), Error> {
    if args.agent_port == 0 {
        return Err(Error::invalid("--agent-port 0", "give the agents' port, e.g. 9473"));
    }
    let token = token(None)?;
    let (nodes, untested) = match cluster {
        Some(cluster) => vxlan::nodes_from_cluster(cluster, args.agent_port),
        None => {
            let nodes = args.nodes.iter().map(|n| vxlan::parse_node(n, args.agent_port));
            (nodes.collect::<Result<Vec<_>, _>>()?, Vec::new())
        }
    };
    let reach = if args.via_api {
        Reach::ViaApi(api.clone())
    } else if cluster.is_some() {
        Reach::Auto(api.clone())
    } else {
        Reach::Direct
    };
    let config = Config {
        nodes,
        token,
        port: args.port,
        vni: args.vni,
        count: args.count,
        timeout: args.timeout,
        skip_unanswering: cluster.is_some(),
        mtu: args.mtu,
    };
    Ok((config, untested, reach))
}

/// `--from-mesh`: the verdict, the failing pairs with their cause, the nodes whose pairs are unknown.
pub fn render_mesh(report: &MeshReport) -> String {
    let word = match report.verdict {
        Health::Ok => "ok",
        Health::Fault => "fault",
        Health::CouldNotRun => "incomplete",
    };
    let mut text = format!("{}  {}\n", output::verdict(word, report.verdict), report.summary);
    text.push_str(&format!(
        "{} pair(s): {} ok, {} failing, {} untested\n",
        report.pairs, report.ok, report.failing, report.untested
    ));
    if !report.failing_pairs.is_empty() {
        let mut table = output::table(&["from", "to", "verdict", "beacons", "cause"]);
        for p in &report.failing_pairs {
            table.add_row(vec![
                p.from.clone(),
                p.to.clone(),
                p.verdict.clone(),
                format!("{}/{}", p.arrived, p.sent),
                p.cause.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        text.push('\n');
        text.push_str(&table.to_string());
        text.push('\n');
    }
    for u in &report.unknown {
        text.push_str(&format!("\nunknown {}: {}\n", u.node, u.reason));
    }
    text
}

/// Up to this many nodes the table is a from-by-to matrix; above, a list of the directions that
/// are not ok.
const MATRIX_MAX_NODES: usize = 8;

/// The verdict in a line: how many directions fail, untested and unverified ones.
pub fn headline(report: &VxlanReport) -> String {
    let bad: Vec<_> = report.pairs.iter().filter(|p| p.verdict.health() != Health::Ok).collect();
    let unverified = report.pairs.iter().filter(|p| p.verdict == PairVerdict::Unverified).count();
    let mut headline = if bad.is_empty() && !report.untested.is_empty() {
        format!(
            "VXLAN on UDP {} passes in all {} direction(s) probed; {} node(s) untested",
            report.port,
            report.pairs.len(),
            report.untested.len()
        )
    } else if bad.is_empty() {
        format!("VXLAN on UDP {} passes in all {} direction(s)", report.port, report.pairs.len())
    } else {
        format!("{} of {} direction(s) fail on UDP {}", bad.len(), report.pairs.len(), report.port)
    };
    if unverified > 0 {
        headline.push_str(&format!("; delivery past the firewall unverified in {unverified}"));
    }
    headline
}

fn render_table(report: &VxlanReport) -> String {
    let headline = headline(report);
    let word = match report.verdict {
        Health::Ok => "ok",
        Health::Fault => "fault",
        Health::CouldNotRun => "incomplete",
    };
    let mut text = format!(
        "{}  {headline} (VNI {}, {} probes each)\n\n",
        output::verdict(word, report.verdict),
        report.vni,
        report.count
    );
    // The matrix: one row per source, one column per destination, each node by its label.
    let mut nodes: Vec<&str> = Vec::new();
    for p in &report.pairs {
        for label in [&p.from_node, &p.to_node] {
            if !nodes.contains(&label.as_str()) {
                nodes.push(label);
            }
        }
    }
    let cell = |p: &vxlan::PairReport| match p.verdict {
        PairVerdict::Ok => format!("ok {}/{}", p.arrived, p.sent),
        verdict => format!("{} {}/{}", verdict.as_str().to_uppercase(), p.arrived, p.sent),
    };
    if nodes.len() <= MATRIX_MAX_NODES {
        let mut table = output::matrix("from \\ to", &nodes);
        for from in &nodes {
            let mut row = vec![from.to_string()];
            for to in &nodes {
                row.push(match report.pairs.iter().find(|p| p.from_node == *from && p.to_node == *to) {
                    None => "-".into(),
                    Some(p) => cell(p),
                });
            }
            table.add_row(row);
        }
        text.push_str(&table.to_string());
        text.push('\n');
    } else {
        // Too many nodes for a matrix to be read: the directions that are not ok, one a line.
        let mut table = output::table(&["from", "to", "result"]);
        for p in report.pairs.iter().filter(|p| p.verdict != PairVerdict::Ok) {
            table.add_row(vec![p.from_node.clone(), p.to_node.clone(), cell(p)]);
        }
        if table.row_count() > 0 {
            text.push_str(&table.to_string());
            text.push('\n');
        }
    }
    let explained: Vec<_> = report.pairs.iter().filter(|p| p.verdict != PairVerdict::Ok).collect();
    if !explained.is_empty() {
        text.push('\n');
        for p in explained {
            let control = match p.control_udp {
                vxlan::ControlUdp::Ok => "ok",
                vxlan::ControlUdp::Lost => "lost",
                vxlan::ControlUdp::NotMeasured => "not measured",
            };
            text.push_str(&format!(
                "{} -> {}: {} (control UDP {control})\n",
                p.from_node, p.to_node, p.diagnosis
            ));
        }
    }
    let measured: Vec<_> = report.pairs.iter().filter_map(|p| Some((p, p.mtu.as_ref()?))).collect();
    if !measured.is_empty() {
        text.push('\n');
        let mut table =
            output::table(&["from", "to", "path mtu", "pods up to", "vxlan device", "icmp frag-needed"]);
        for (p, m) in measured {
            let bytes = |n: Option<u16>| n.map_or("-".to_string(), |n| n.to_string());
            let device = match (&m.vxlan_device, m.vxlan_mtu) {
                (Some(name), Some(mtu)) if m.too_small => format!("{name} {mtu} TOO BIG"),
                (Some(name), Some(mtu)) => format!("{name} {mtu}"),
                _ => "-".into(),
            };
            let icmp = match &m.frag_needed {
                Some(f) => format!("from {} (mtu {})", f.from, f.mtu),
                None if m.black_hole => "NONE (black hole)".into(),
                None => "-".into(),
            };
            table.add_row(vec![
                p.from_node.clone(),
                p.to_node.clone(),
                bytes(m.path_mtu),
                bytes(m.inner_mtu),
                device,
                icmp,
            ]);
        }
        text.push_str(&table.to_string());
        text.push('\n');
    }
    if !report.untested.is_empty() {
        text.push('\n');
        for node in &report.untested {
            let ip = node.ip.map(|ip| format!(" ({ip})")).unwrap_or_default();
            text.push_str(&format!("untested {}{ip}: {}\n", node.node, node.reason));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe_probes::vxlan::api::{CollectResponse, GrownRule, SendResponse};
    use netprobe_probes::vxlan::judge::{report, Evidence, Overlay};
    use netprobe_probes::vxlan::{PairReport, DEFAULT_VNI};
    use std::net::Ipv4Addr;

    #[test]
    fn the_mesh_table() {
        use netprobe_probes::vxlan::api::{MeshPair, MeshState};
        std::env::set_var("NO_COLOR", "1");
        let pair = |from: &str, to: &str, verdict: &str, arrived: u64, cause: Option<&str>| MeshPair {
            from: from.into(),
            to: to.into(),
            verdict: verdict.into(),
            sent: 2,
            arrived,
            cause: cause.map(String::from),
        };
        let state = |pairs| Ok(MeshState { period_ms: 1000, evaluated_at: Some(1000.0), ok: 0, pairs });
        let report = netprobe_probes::vxlan::mesh_state::judge(
            vec![
                ("node-b".into(), state(vec![pair("node-a", "node-b", "ok", 2, None), pair("node-c", "node-b", "lost-in-network", 0, Some("UDP 8472 from 192.0.2.3 to 203.0.113.2 is dropped in the network while other UDP passes: allow UDP 8472 between nodes in the security group, NACL or firewall"))])),
                ("node-c".into(), Err("agent node-c at 192.0.2.3:9473: this agent runs no mesh (--mesh-every)".into())),
            ],
            vec![],
            1000.5,
        );
        insta::assert_snapshot!(render_mesh(&report));
    }

    /// A pair on UDP 8472 judged from its agents' answers.
    fn judged(from: Ipv4Addr, to: Ipv4Addr, sent: &SendResponse, arrived: &CollectResponse) -> PairReport {
        report(&Evidence { from, to, port: 8472, sent, arrived, overlay: &Overlay::default() })
    }

    #[test]
    fn the_matrix_and_its_diagnoses() {
        std::env::set_var("NO_COLOR", "1");
        let (a, b, c) =
            (Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(203, 0, 113, 2), Ipv4Addr::new(192, 0, 2, 3));
        let sent = |left| SendResponse {
            sent: 5,
            left_source: left,
            control_left: 5,
            send_error: None,
            dropping_rules: vec![],
            counters_error: None,
            ..Default::default()
        };
        let arrived = |n, rules: Vec<GrownRule>, error: Option<&str>| CollectResponse {
            arrived: n,
            control_arrived: 5,
            dropping_rules: rules,
            counters_error: error.map(str::to_string),
            udp_csum_errors: Some(0),
            ..Default::default()
        };
        let drop =
            GrownRule { rule: "-t filter -A INPUT -p udp -m udp --dport 8472 -j DROP".into(), packets: 5 };
        let pairs = vec![
            judged(a, b, &sent(5), &arrived(0, vec![], None)),
            judged(a, c, &sent(5), &arrived(5, vec![], None)),
            judged(b, a, &sent(5), &arrived(5, vec![], Some("nft: not installed"))),
            judged(b, c, &sent(5), &arrived(5, vec![drop], None)),
            judged(c, a, &sent(5), &arrived(5, vec![], None)),
            judged(c, b, &sent(5), &arrived(5, vec![], None)),
        ];
        let verdict = Health::worst(pairs.iter().map(|p| p.verdict.health()));
        let report = VxlanReport {
            probe: "vxlan",
            port: 8472,
            vni: DEFAULT_VNI,
            count: 5,
            verdict,
            pairs,
            untested: vec![],
        };
        insta::assert_snapshot!(render_table(&report));
        // The same report as scripts read it.
        insta::assert_snapshot!(
            "the_matrix_and_its_diagnoses_json",
            serde_json::to_string_pretty(&report).unwrap()
        );
    }

    #[test]
    fn nodes_from_the_api_by_name_and_the_untested_ones_with_the_fix() {
        std::env::set_var("NO_COLOR", "1");
        let (a, b) = (Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(198, 51, 100, 2));
        let sent = SendResponse {
            sent: 5,
            left_source: 5,
            control_left: 5,
            send_error: None,
            dropping_rules: vec![],
            counters_error: None,
            ..Default::default()
        };
        let arrived = CollectResponse {
            arrived: 5,
            control_arrived: 5,
            dropping_rules: vec![],
            counters_error: None,
            udp_csum_errors: Some(0),
            ..Default::default()
        };
        let mut pairs = vec![judged(a, b, &sent, &arrived), judged(b, a, &sent, &arrived)];
        (pairs[0].from_node, pairs[0].to_node) = ("cp-1".into(), "worker-1".into());
        (pairs[1].from_node, pairs[1].to_node) = ("worker-1".into(), "cp-1".into());
        let untested = vec![netprobe_probes::vxlan::UntestedNode {
            node: "worker-2".into(),
            ip: Some(Ipv4Addr::new(198, 51, 100, 3)),
            reason: format!(
                "agent worker-2 (198.51.100.3:9473): unreachable (Connection refused (os error 111)): is `netprobe agent` running there, on the host network?; {}",
                netprobe_probes::vxlan::DEPLOY_HINT
            ),
        }];
        let verdict = VxlanReport::health_of(&pairs, &untested);
        assert_eq!(verdict, Health::CouldNotRun);
        let report =
            VxlanReport { probe: "vxlan", port: 8472, vni: DEFAULT_VNI, count: 5, verdict, pairs, untested };
        insta::assert_snapshot!(render_table(&report));
        // The same report as scripts read it.
        insta::assert_snapshot!(
            "nodes_from_the_api_by_name_and_the_untested_ones_with_the_fix_json",
            serde_json::to_string_pretty(&report).unwrap()
        );
    }
}
