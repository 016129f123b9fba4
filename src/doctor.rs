//! `netprobe doctor`: each step is one of the other subcommands, run with the arguments a person
//! would type (parsed by the same parser, so the defaults are theirs) and reported by the same
//! function; `probes::doctor` turns their reports into the cause and the fix.

use clap::Parser;
use netprobe_agent::client::OnNode;
use netprobe_k8s::{self as k8s, ApiConfig, ClusterNode};
use netprobe_probes::doctor::{self, Cause, Evidence, Outcome, StepStatus};
use netprobe_probes::net::{interface, privilege};
use netprobe_probes::{arp, Error, Health};
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Cli, Command, DoctorArgs};
use crate::exit::Exit;
use crate::output::{self, Format};

/// One step as doctor shows it: the probe's own report (in JSON), its result in the probe's
/// verdict words, a line of summary and the lines that say what is wrong.
pub struct Step {
    pub probe: &'static str,
    pub status: StepStatus,
    /// The probe's verdict word for the step (`failing`, `lost-in-network`, `duplicate`, ...).
    pub result: String,
    pub summary: String,
    pub details: Vec<String>,
    /// The command that runs this step alone, for the full picture.
    pub command: String,
    pub report: Option<Value>,
}

/// Serialised as the probe's own report with doctor's fields added to it.
impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = match &self.report {
            Some(Value::Object(map)) => map.clone(),
            _ => serde_json::Map::new(),
        };
        object.insert("probe".into(), Value::from(self.probe));
        object.insert("status".into(), serde_json::to_value(self.status).unwrap_or(Value::Null));
        object.insert("result".into(), Value::from(self.result.clone()));
        object.insert("summary".into(), Value::from(self.summary.clone()));
        object.insert("details".into(), Value::from(self.details.clone()));
        object.insert("command".into(), Value::from(self.command.clone()));
        object.serialize(serializer)
    }
}

#[derive(Serialize)]
pub struct DoctorReport {
    pub probe: &'static str,
    pub verdict: Health,
    pub node: String,
    pub steps: Vec<Step>,
    /// The cause nearest the symptom, and its fix; null when nothing was found.
    pub cause: Option<String>,
    pub fix: Option<String>,
    /// Further causes found, each with its fix.
    pub other_causes: Vec<Cause>,
}

pub fn run(args: DoctorArgs, api: &ApiConfig, format: Format) -> Result<Exit, Error> {
    if let Some(on) = elsewhere(&args, api)? {
        return crate::remote::run(api, on, agent_argv(&args), format);
    }
    let report = report(args, api)?;
    output::report(format, &report, render_table);
    Ok(Exit::from_health(report.verdict))
}

fn report(args: DoctorArgs, api: &ApiConfig) -> Result<DoctorReport, Error> {
    // The API first: without it there is no chain to walk (exit 3, naming the server).
    let nodes = k8s::blocking(k8s::nodes(api))?;
    let me = this_node(args.node.as_deref(), &nodes)?;
    let (namespace, service) = &args.dns_service;
    let agent_port = args.agent_port.to_string();
    let agent_port_args: Vec<&str> = if args.agent_port != netprobe_probes::vxlan::api::DEFAULT_AGENT_PORT {
        vec!["--agent-port", &agent_port]
    } else {
        vec![]
    };

    // 1. What the agents' always-on mesh already knows of every pair, no probe sent.
    let mut mesh_command = vec!["vxlan", "--all-nodes", "--from-mesh"];
    mesh_command.extend(&agent_port_args);
    let mesh: Outcome<_> = parsed(&mesh_command, |c| match c {
        Command::Vxlan(a) => Some(a),
        _ => None,
    })
    .and_then(|a| crate::vxlan::mesh_report_for(&a, Some(&nodes), api))
    .into();
    let mesh = match mesh {
        Outcome::Ran(report) if report.no_mesh_anywhere() => Outcome::Skipped(
            "the agents run no mesh (--mesh-every): the vxlan step probes every pair instead".into(),
        ),
        other => other,
    };

    // 2. DNS, as `netprobe dns` from this node.
    let mut dns_command = vec!["dns", "--node", &me.name];
    if (namespace.as_str(), service.as_str()) != ("kube-system", "kube-dns") {
        dns_command.extend(["--namespace", namespace, "--service", service]);
    }
    let dns: Outcome<_> = parsed(&dns_command, |c| match c {
        Command::Dns(a) => Some(a),
        _ => None,
    })
    .and_then(|a| crate::dns::report(a, api))
    .into();

    // 3. VXLAN, probed now through the agents: every pair with --mtu or without a mesh to read;
    // else the pairs of the nodes the mesh saw failing (or could not see), this node and the nodes
    // whose DNS pods fail, both directions.
    let mut of_interest: Vec<String> = match dns.ran() {
        Some(report) => doctor::remote_failures(report, &me.name).into_iter().map(|f| f.node).collect(),
        None => Vec::new(),
    };
    if let Some(report) = mesh.ran() {
        of_interest.extend(report.failing_pairs.iter().flat_map(|p| [p.from.clone(), p.to.clone()]));
        of_interest.extend(report.unknown.iter().map(|u| u.node.clone()));
    }
    let every_pair = args.mtu || mesh.ran().is_none();
    let mut chosen: Vec<ClusterNode> = vec![me.clone()];
    chosen.extend(nodes.iter().filter(|n| n.name != me.name && of_interest.contains(&n.name)).cloned());
    // Named NAME=IP, so the step's pairs carry the nodes' names, and shown as run.
    let mut vxlan_command = vec!["vxlan".to_string()];
    if every_pair {
        vxlan_command.push("--all-nodes".into());
    } else {
        vxlan_command
            .extend(chosen.iter().filter_map(|n| n.internal_ip.map(|ip| format!("{}={ip}", n.name))));
    }
    vxlan_command.extend(agent_port_args.iter().map(|a| a.to_string()));
    if args.vxlan_port != 8472 {
        vxlan_command.extend(["--port".to_string(), args.vxlan_port.to_string()]);
    }
    if args.mtu {
        vxlan_command.push("--mtu".to_string());
    }
    let vxlan_command: Vec<&str> = vxlan_command.iter().map(String::as_str).collect();
    let vxlan = if nodes.len() < 2 {
        Outcome::Skipped("the cluster has one node: no pair of nodes to probe".into())
    } else if !every_pair && chosen.len() < 2 {
        Outcome::Skipped("the mesh sees every pair ok and no DNS endpoint on another node fails".into())
    } else {
        parsed(&vxlan_command, |c| match c {
            Command::Vxlan(a) => Some(a),
            _ => None,
        })
        .and_then(|a| crate::vxlan::report_for(&a, every_pair.then_some(nodes.as_slice()), api))
        .into()
    };

    // 4. The LoadBalancer VIPs on this host's segments.
    let arp = if let Err(e) = privilege::require_net_raw("probing the VIPs") {
        Outcome::Skipped(e.to_string())
    } else {
        parsed(&ARP_COMMAND, |c| match c {
            Command::Arp(a) => Some(a),
            _ => None,
        })
        .and_then(|a| crate::arp::services_report(a, api))
        .into()
    };

    // 5. This node's firewall: its iptables, live, and its connection tracking table.
    let iptables = if !privilege::may_read_firewall() {
        Outcome::Skipped("reading the live rules needs root (CAP_NET_ADMIN)".into())
    } else {
        parsed(&IPTABLES_COMMAND, |c| match c {
            Command::Iptables(a) => Some(a),
            _ => None,
        })
        .and_then(|a| crate::iptables::report(&a))
        .into()
    };
    let conntrack: Outcome<_> = parsed(&CONNTRACK_COMMAND, |c| match c {
        Command::Conntrack(a) => Some(a),
        _ => None,
    })
    .and_then(|a| crate::conntrack::report(&a))
    .into();

    let mut causes = doctor::diagnose(&Evidence {
        this_node: &me.name,
        dns_namespace: namespace,
        mesh: &mesh,
        dns: &dns,
        vxlan: &vxlan,
        arp: &arp,
        iptables: &iptables,
        conntrack: &conntrack,
    })
    .into_iter();
    let first = causes.next();
    let steps = vec![
        step("mesh", &mesh, shown(&mesh_command), mesh_step),
        step("dns", &dns, shown(&dns_command), dns_step),
        step("vxlan", &vxlan, shown(&vxlan_command), vxlan_step),
        step("arp", &arp, shown(&ARP_COMMAND), arp_step),
        step("iptables", &iptables, shown(&IPTABLES_COMMAND), iptables_step),
        step("conntrack", &conntrack, shown(&CONNTRACK_COMMAND), conntrack_step),
    ];
    Ok(DoctorReport {
        probe: "doctor",
        verdict: doctor::verdict(steps.iter().map(|s| s.status)),
        node: me.name.clone(),
        steps,
        cause: first.as_ref().map(|c| c.cause.clone()),
        fix: first.map(|c| c.fix),
        other_causes: causes.collect(),
    })
}

const ARP_COMMAND: [&str; 2] = ["arp", "--all-services"];
const IPTABLES_COMMAND: [&str; 1] = ["iptables"];
const CONNTRACK_COMMAND: [&str; 1] = ["conntrack"];

/// A step's command as the report shows it: exactly the arguments it was parsed from and ran.
fn shown(args: &[&str]) -> String {
    format!("netprobe {}", args.join(" "))
}

/// A step's arguments through the CLI's own parser, so a step runs with the defaults the
/// subcommand documents, and its command shows what ran.
fn parsed<T>(args: &[&str], pick: impl FnOnce(Command) -> Option<T>) -> Result<T, Error> {
    let cli = Cli::try_parse_from(std::iter::once("netprobe").chain(args.iter().copied()))
        .map_err(|e| Error::invalid(format!("netprobe {}", args.join(" ")), e.to_string()))?;
    pick(cli.command)
        .ok_or_else(|| Error::invalid(format!("netprobe {}", args.join(" ")), "not that subcommand"))
}

/// Where doctor runs when not here: with --via-api, or on a host that is no Node of the cluster
/// (a laptop), in the agent of --node, else of the first node with a ready agent.
fn elsewhere(args: &DoctorArgs, api: &ApiConfig) -> Result<Option<OnNode>, Error> {
    let on = || args.node.clone().map_or(OnNode::Any, OnNode::Named);
    if args.via_api {
        return Ok(Some(on()));
    }
    let nodes = k8s::blocking(k8s::nodes(api))?;
    let local: Vec<std::net::IpAddr> =
        interface::all()?.into_iter().flat_map(|i| i.ipv4).map(std::net::IpAddr::V4).collect();
    let here = nodes.iter().any(|n| n.internal_ip.is_some_and(|ip| local.contains(&ip)));
    Ok((!here).then(on))
}

/// The doctor command an agent runs for a caller elsewhere: the same flags, on its own node.
fn agent_argv(args: &DoctorArgs) -> Vec<String> {
    let mut argv = vec!["doctor".to_string()];
    if let Some(node) = &args.node {
        argv.extend(["--node".into(), node.clone()]);
    }
    let (namespace, service) = &args.dns_service;
    argv.extend(["--dns-service".into(), format!("{namespace}/{service}")]);
    argv.extend([
        "--agent-port".into(),
        args.agent_port.to_string(),
        "--vxlan-port".into(),
        args.vxlan_port.to_string(),
    ]);
    if args.mtu {
        argv.push("--mtu".into());
    }
    argv
}

/// --node (or NODE_NAME), else the Node whose InternalIP is an address of this host.
fn this_node(named: Option<&str>, nodes: &[ClusterNode]) -> Result<ClusterNode, Error> {
    if let Some(name) = named.filter(|n| !n.trim().is_empty()) {
        return nodes.iter().find(|n| n.name == name).cloned().ok_or_else(|| {
            Error::invalid(format!("--node {name}"), "the API lists no such Node (kubectl get nodes)")
        });
    }
    let local: Vec<std::net::IpAddr> =
        interface::all()?.into_iter().flat_map(|i| i.ipv4).map(std::net::IpAddr::V4).collect();
    nodes.iter().find(|n| n.internal_ip.is_some_and(|ip| local.contains(&ip))).cloned().ok_or_else(|| {
        Error::could_not_run(
            "finding this node",
            "no Node's InternalIP is an address of this host: pass --node NAME or set NODE_NAME",
        )
    })
}

/// A step from its outcome: `ran` makes it from the report; a step that did not run says why.
fn step<T>(
    probe: &'static str,
    outcome: &Outcome<T>,
    command: String,
    ran: impl FnOnce(&T, String) -> Step,
) -> Step {
    let (status, why) = match outcome {
        Outcome::Ran(report) => return ran(report, command),
        Outcome::CouldNotRun(why) => (StepStatus::CouldNotRun, why),
        Outcome::Skipped(why) => (StepStatus::Skipped, why),
    };
    step_without_report(probe, status, why.clone(), command)
}

fn step_without_report(probe: &'static str, status: StepStatus, why: String, command: String) -> Step {
    let result = match status {
        StepStatus::Skipped => "skipped",
        _ => "could-not-run",
    };
    Step { probe, status, result: result.into(), summary: why, details: vec![], command, report: None }
}

fn dns_step(report: &netprobe_probes::dns::DnsReport, command: String) -> Step {
    let worst = report.endpoints.iter().chain(&report.services).find(|e| e.verdict.is_fault());
    Step {
        probe: "dns",
        status: doctor::status_of(report.health()),
        result: worst.map_or("ok", |e| e.verdict.as_str()).into(),
        summary: crate::dns::headline(report),
        details: report.findings.iter().map(|f| f.message.clone()).collect(),
        command,
        report: serde_json::to_value(report).ok(),
    }
}

fn vxlan_step(report: &netprobe_probes::vxlan::VxlanReport, command: String) -> Step {
    let not_ok: Vec<_> =
        report.pairs.iter().filter(|p| p.verdict != netprobe_probes::vxlan::PairVerdict::Ok).collect();
    let worst = not_ok.iter().find(|p| p.verdict.health() == Health::Fault).or(not_ok.first());
    let details = not_ok
        .iter()
        .map(|p| format!("{} -> {}: {}", p.from_node, p.to_node, p.diagnosis))
        .chain(report.untested.iter().map(|u| format!("untested {}: {}", u.node, u.reason)))
        .collect();
    Step {
        probe: "vxlan",
        status: doctor::status_of(report.verdict),
        result: match (worst, report.untested.is_empty()) {
            (Some(p), _) => p.verdict.as_str().into(),
            (None, false) => "untested".into(),
            (None, true) => "ok".into(),
        },
        summary: crate::vxlan::headline(report),
        details,
        command,
        report: serde_json::to_value(report).ok(),
    }
}

fn arp_step(report: &arp::services::ServicesReport, command: String) -> Step {
    if report.vips.is_empty() {
        // Nothing ARP could check from here is not a failure of this node.
        let summary = match report.skipped.len() {
            0 => "the cluster has no LoadBalancer VIP".to_string(),
            n => format!("no LoadBalancer VIP on this host's segments ({n} elsewhere or without an address)"),
        };
        return Step {
            report: serde_json::to_value(report).ok(),
            ..step_without_report("arp", StepStatus::Skipped, summary, command)
        };
    }
    let wrong: Vec<_> = report.vips.iter().filter(|v| v.report.verdict != arp::Verdict::Ok).collect();
    Step {
        probe: "arp",
        status: doctor::status_of(report.verdict),
        result: wrong.first().map_or("ok", |v| v.report.verdict.as_str()).into(),
        summary: crate::arp::services_headline(report),
        details: wrong
            .iter()
            .map(|v| {
                format!(
                    "{} {}: {} (answered by {})",
                    v.service,
                    v.report.target,
                    v.report.summary,
                    crate::arp::answered_by(&v.report)
                )
            })
            .collect(),
        command,
        report: serde_json::to_value(report).ok(),
    }
}

fn mesh_step(report: &netprobe_probes::vxlan::MeshReport, command: String) -> Step {
    Step {
        probe: "mesh",
        status: doctor::status_of(report.verdict),
        // The step's word never says ok while its numbers say some pairs are not known to be.
        result: match (report.failing_pairs.first(), report.unknown.is_empty(), report.untested) {
            (Some(p), _, _) => p.verdict.clone(),
            (None, false, _) => "unknown".into(),
            (None, true, 0) => "ok".into(),
            (None, true, _) => "untested".into(),
        },
        summary: report.summary.clone(),
        details: report
            .failing_pairs
            .iter()
            .map(|p| {
                let cause = p.cause.as_deref().map(|c| format!(": {c}")).unwrap_or_default();
                format!("{} -> {}: {} ({} of {} beacons){cause}", p.from, p.to, p.verdict, p.arrived, p.sent)
            })
            .chain(report.unknown.iter().map(|u| format!("unknown {}: {}", u.node, u.reason)))
            .collect(),
        command,
        report: serde_json::to_value(report).ok(),
    }
}

fn conntrack_step(report: &netprobe_probes::conntrack::ConntrackReport, command: String) -> Step {
    Step {
        probe: "conntrack",
        status: doctor::status_of(report.health()),
        result: report.verdict.as_str().into(),
        summary: report.summary.clone(),
        details: report.kernel_log.last.iter().map(|l| format!("kernel: {l}")).collect(),
        command,
        report: serde_json::to_value(report).ok(),
    }
}

fn iptables_step(report: &netprobe_probes::iptables::IptablesReport, command: String) -> Step {
    Step {
        probe: "iptables",
        status: doctor::status_of(report.health()),
        result: report.verdict.as_str().into(),
        summary: crate::iptables::headline(report),
        details: vec![],
        command,
        report: serde_json::to_value(report).ok(),
    }
}

/// The verdict and the cause first, one line per step (its lines of detail when it is not ok),
/// then the fix and where to look further.
fn render_table(report: &DoctorReport) -> String {
    let word = match report.verdict {
        Health::Ok => "ok",
        Health::Fault => "fault",
        Health::CouldNotRun => "incomplete",
    };
    // The chain at a glance: each step that found something, in the probes' own words.
    let chain: Vec<String> = report
        .steps
        .iter()
        .filter(|s| matches!(s.status, StepStatus::Fault | StepStatus::CouldNotRun))
        .map(|s| format!("{} {}", s.probe, s.result))
        .collect();
    let headline = if chain.is_empty() {
        "nothing wrong found from the mesh and DNS to the node's rules and connection table".to_string()
    } else {
        chain.join(" -> ")
    };
    let mut text =
        format!("{}  {headline} (from node {})\n\n", output::verdict(word, report.verdict), report.node);
    let result_width = report.steps.iter().map(|s| s.result.len()).max().unwrap_or(2);
    for (i, step) in report.steps.iter().enumerate() {
        let result = if matches!(step.status, StepStatus::Fault | StepStatus::CouldNotRun) {
            step.result.to_uppercase()
        } else {
            step.result.clone()
        };
        text.push_str(&format!("{}. {:<9} {result:<result_width$}  {}\n", i + 1, step.probe, step.summary));
        if step.status != StepStatus::Ok {
            for line in &step.details {
                text.push_str(&format!("   {:<9} {:<result_width$}  {line}\n", "", ""));
            }
        }
    }
    if let (Some(cause), Some(fix)) = (&report.cause, &report.fix) {
        text.push_str(&format!("\ncause: {cause}\nfix:   {fix}\n"));
    }
    for other in &report.other_causes {
        text.push_str(&format!("\nalso:  {}\nfix:   {}\n", other.cause, other.fix));
    }
    let more: Vec<&str> = report
        .steps
        .iter()
        .filter(|s| matches!(s.status, StepStatus::Fault | StepStatus::CouldNotRun))
        .map(|s| s.command.as_str())
        .collect();
    if !more.is_empty() {
        text.push_str(&format!("\nmore:  {}\n", more.join("; ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(probe: &'static str, status: StepStatus, result: &str, summary: &str, details: &[&str]) -> Step {
        Step {
            probe,
            status,
            result: result.into(),
            summary: summary.into(),
            details: details.iter().map(|d| d.to_string()).collect(),
            command: format!("netprobe {probe}"),
            report: Some(serde_json::json!({"probe": probe, "verdict": "fault"})),
        }
    }

    fn incident_two() -> DoctorReport {
        DoctorReport {
            probe: "doctor",
            verdict: Health::Fault,
            node: "node-a".into(),
            steps: vec![
                step("dns", StepStatus::Fault, "failing", "1 of 2 endpoint(s) not ok; the Service 10.96.0.10:53 failed 19 of 40", &["10.244.1.10:53 (coredns-b on node-b) never answered"]),
                step("vxlan", StepStatus::Fault, "lost-in-network", "2 of 2 direction(s) fail on UDP 8472", &["node-a -> node-b: UDP 8472 from 198.51.100.1 to 203.0.113.2 is dropped in the network while other UDP passes"]),
                step("arp", StepStatus::Ok, "ok", "1 VIP(s) probed: 1 ok, 0 duplicate, 0 no-reply", &[]),
                step("iptables", StepStatus::Skipped, "skipped", "reading the live rules needs root (CAP_NET_ADMIN)", &[]),
            ],
            cause: Some("DNS fails for pods on node-b because VXLAN (UDP 8472) between node-a and node-b (both directions) is lost in the network while other UDP passes".into()),
            fix: Some("allow UDP 8472 between nodes in the security group, NACL or firewall".into()),
            other_causes: vec![],
        }
    }

    #[test]
    fn the_chain_then_the_cause_and_the_fix() {
        std::env::set_var("NO_COLOR", "1");
        insta::assert_snapshot!(render_table(&incident_two()));
        // The same report as scripts read it.
        insta::assert_snapshot!(
            "the_chain_then_the_cause_and_the_fix_json",
            serde_json::to_string_pretty(&incident_two()).unwrap()
        );
    }

    #[test]
    fn each_step_is_the_probes_own_report_with_doctors_fields() {
        let json: Value = serde_json::from_str(&output::json(&incident_two())).unwrap();
        assert_eq!(json["probe"], "doctor");
        assert_eq!(json["verdict"], "fault");
        assert_eq!(json["steps"][0]["probe"], "dns");
        assert_eq!(json["steps"][0]["verdict"], "fault", "the probe's own verdict is kept");
        assert_eq!(json["steps"][1]["result"], "lost-in-network");
        assert_eq!(json["steps"][3]["status"], "skipped");
        assert_eq!(json["fix"], "allow UDP 8472 between nodes in the security group, NACL or firewall");
    }

    #[test]
    fn the_node_is_named_or_found_by_address() {
        let nodes = vec![ClusterNode { name: "node-a".into(), internal_ip: None, control_plane: false }];
        assert!(this_node(Some("node-a"), &nodes).is_ok());
        let err = this_node(Some("node-z"), &nodes).unwrap_err();
        assert!(err.is_bad_input() && err.to_string().contains("no such Node"), "{err}");
        // No Node has an address of this host (it has none from 203.0.113.0/24's .77).
        let far = vec![ClusterNode {
            name: "far".into(),
            internal_ip: Some("203.0.113.77".parse().unwrap()),
            control_plane: false,
        }];
        let err = this_node(None, &far).unwrap_err();
        assert!(err.to_string().contains("pass --node NAME"), "{err}");
    }

    #[test]
    fn steps_parse_with_the_subcommands_defaults() {
        let dns = parsed(&["dns", "--node", "node-a"], |c| match c {
            Command::Dns(a) => Some(a),
            _ => None,
        })
        .unwrap();
        assert_eq!((dns.count, dns.namespace.as_str()), (20, "kube-system"));
        assert!(parsed(&["arp", "--all-services"], |c| match c {
            Command::Vxlan(a) => Some(a),
            _ => None,
        })
        .is_err());
    }
}
