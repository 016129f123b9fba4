//! `netprobe doctor`'s reasoning: from what each probe found, the causes in one sentence each with
//! its fix, starting from what the cluster already knows: the pairs of nodes whose VXLAN fails (the
//! agents' mesh, and the pairs probed now), each with the DNS failure it explains (incident 2: DNS
//! through the Service -> the failing CoreDNS pods' nodes -> VXLAN to those nodes); then DNS's own
//! causes, the VIPs, and the node's firewall (its rules, its connection tracking table). Pure: the
//! binary runs each probe as its own subcommand would and hands the reports here.

use serde::Serialize;

use crate::arp::services::ServicesReport;
use crate::conntrack::ConntrackReport;
use crate::dns::{DnsReport, EndpointReport, FindingKind};
use crate::iptables::{IptablesReport, Verdict as IptablesVerdict};
use crate::net::drop_trace::reason;
use crate::vxlan::{ControlUdp, MeshReport, PairReport, PairVerdict, VxlanReport, DEPLOY_HINT};
use crate::{arp, Health};

/// What became of one step.
#[derive(Clone, Debug)]
pub enum Outcome<T> {
    /// The probe ran; its report.
    Ran(T),
    /// It was needed and could not run: why, in the probe's own error words.
    CouldNotRun(String),
    /// It did not apply here: why.
    Skipped(String),
}

/// A step's result: its report, or the error that stopped it.
impl<T> From<crate::Result<T>> for Outcome<T> {
    fn from(result: crate::Result<T>) -> Outcome<T> {
        match result {
            Ok(report) => Outcome::Ran(report),
            Err(e) => Outcome::CouldNotRun(e.to_string()),
        }
    }
}

impl<T> Outcome<T> {
    pub fn ran(&self) -> Option<&T> {
        match self {
            Outcome::Ran(report) => Some(report),
            _ => None,
        }
    }
}

/// Everything the steps found, for [`diagnose`].
pub struct Evidence<'a> {
    /// The node doctor runs on, by name.
    pub this_node: &'a str,
    /// The DNS Service's namespace (for the `kubectl logs` of a fix).
    pub dns_namespace: &'a str,
    /// What the agents' always-on mesh last judged of every pair.
    pub mesh: &'a Outcome<MeshReport>,
    pub dns: &'a Outcome<DnsReport>,
    pub vxlan: &'a Outcome<VxlanReport>,
    pub arp: &'a Outcome<ServicesReport>,
    pub iptables: &'a Outcome<IptablesReport>,
    pub conntrack: &'a Outcome<ConntrackReport>,
}

/// One cause and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub cause: String,
    pub fix: String,
}

/// A node whose DNS endpoints fail, seen from another node.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteFailure<'a> {
    pub node: String,
    pub endpoints: Vec<&'a EndpointReport>,
}

/// The endpoints at fault on nodes other than `this_node`, grouped by node in the report's order.
/// These are the ones an overlay between the nodes could explain.
pub fn remote_failures<'a>(dns: &'a DnsReport, this_node: &str) -> Vec<RemoteFailure<'a>> {
    let mut out: Vec<RemoteFailure<'a>> = Vec::new();
    for endpoint in dns.endpoints.iter().filter(|e| e.verdict.is_fault()) {
        let Some(node) = endpoint.endpoint.node.as_deref().filter(|n| *n != this_node) else { continue };
        match out.iter_mut().find(|f| f.node == node) {
            Some(failure) => failure.endpoints.push(endpoint),
            None => out.push(RemoteFailure { node: node.to_string(), endpoints: vec![endpoint] }),
        }
    }
    out
}

/// A step's status from a report's health.
pub fn status_of(health: Health) -> StepStatus {
    match health {
        Health::Ok => StepStatus::Ok,
        Health::Fault => StepStatus::Fault,
        Health::CouldNotRun => StepStatus::CouldNotRun,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Ok,
    Fault,
    CouldNotRun,
    Skipped,
}

/// The run's verdict: the steps' healths combined by the one rule ([`Health::worst`]: a fault
/// found anywhere wins). Skipped steps do not count.
pub fn verdict(statuses: impl IntoIterator<Item = StepStatus>) -> Health {
    Health::worst(statuses.into_iter().filter_map(|status| match status {
        StepStatus::Ok => Some(Health::Ok),
        StepStatus::Fault => Some(Health::Fault),
        StepStatus::CouldNotRun => Some(Health::CouldNotRun),
        StepStatus::Skipped => None,
    }))
}

/// Every cause the steps support, in the order the cluster knows them: the failing pairs of nodes
/// (each with the DNS failure it explains), DNS's own causes, then the VIPs, then the node's rules
/// and its connection tracking table.
pub fn diagnose(e: &Evidence) -> Vec<Cause> {
    let dns = e.dns.ran().filter(|dns| dns.health() == Health::Fault);
    let failures = dns.map(|dns| remote_failures(dns, e.this_node)).unwrap_or_default();
    let mut causes = pair_causes(e, &failures);
    if let Some(dns) = dns {
        causes.extend(dns_causes(e, dns, &failures));
    }
    if let Outcome::Ran(arp) = e.arp {
        for vip in arp.vips.iter().filter(|v| v.report.verdict != arp::Verdict::Ok) {
            causes.push(Cause {
                cause: format!("the VIP {} of {}: {}", vip.report.target, vip.service, vip.report.summary),
                fix: vip.report.next_step.clone().unwrap_or_else(|| {
                    format!("netprobe arp {} for who answers, and the speakers' logs", vip.report.target)
                }),
            });
        }
    }
    if let Outcome::Ran(rules) = e.iptables {
        let total: u64 = rules.rulesets.iter().map(|r| r.total_rules).sum();
        let duplicates: u64 = rules.rulesets.iter().map(|r| r.duplicate_rules).sum();
        match rules.verdict {
            IptablesVerdict::Ok => {}
            IptablesVerdict::Bloated => causes.push(Cause {
                cause: format!(
                    "{}'s iptables holds {total} rules, {duplicates} of them duplicates: every rule change and every packet's walk slows down",
                    e.this_node
                ),
                fix: "netprobe iptables --cleanup-script > cleanup.rules on the node, review it, then iptables-restore --noflush < cleanup.rules; and find the controller that adds the copies (netprobe iptables names the owners)".into(),
            }),
            IptablesVerdict::CheckBroken => causes.push(Cause {
                cause: format!("iptables -C on {} does not find rules it was given: controllers will add copies on every sync", e.this_node),
                fix: "use the same iptables backend (legacy or nft) as the controllers, or a version whose -C works".into(),
            }),
        }
    }
    if let Outcome::Ran(table) = e.conntrack {
        if table.health() == Health::Fault {
            causes.push(Cause {
                cause: format!("{}'s connection tracking table: {}", e.this_node, table.summary),
                fix: table.next_step.clone().unwrap_or_else(|| "netprobe conntrack on the node".into()),
            });
        }
    }
    causes
}

/// The failing pairs, one cause per two nodes (both directions together), this node's first: the
/// ones probed now with where they die, then those only the agents' mesh saw failing. A pair that
/// explains a DNS failure says so.
fn pair_causes(e: &Evidence, failures: &[RemoteFailure]) -> Vec<Cause> {
    let mut causes = Vec::new();
    let faulty: Vec<&PairReport> = match e.vxlan {
        Outcome::Ran(vxlan) => vxlan.pairs.iter().filter(|p| p.verdict.health() == Health::Fault).collect(),
        _ => Vec::new(),
    };
    let mut done: Vec<(&str, &str)> = Vec::new();
    let mut ordered = faulty.clone();
    // This node's pairs first, from it first: a lost query explains the silence before a lost reply.
    ordered.sort_by_key(|p| {
        (p.from_node != e.this_node && p.to_node != e.this_node, p.from_node != e.this_node)
    });
    let port = e.vxlan.ran().map_or(8472, |v| v.port);
    // (directions, how, fix) of the pairs that explain no DNS failure: those that fail alike are
    // one cause, so a security group that drops every pair is said once.
    let mut alike: Vec<(Vec<String>, String, String)> = Vec::new();
    for pair in ordered {
        let (a, b) = (pair.from_node.as_str(), pair.to_node.as_str());
        if done.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a)) {
            continue;
        }
        done.push((a, b));
        let both = faulty.iter().any(|p| p.from_node == b && p.to_node == a);
        let direction =
            if both { format!("between {a} and {b} (both directions)") } else { format!("from {a} to {b}") };
        let (how, fix) = pair_words(pair, port);
        let other = if a == e.this_node { b } else { a };
        let explains = failures.iter().find(|f| f.node == other && (a == e.this_node || b == e.this_node));
        match explains {
            Some(f) => causes.push(Cause {
                cause: format!(
                    "DNS fails for pods on {} ({}) because VXLAN (UDP {port}) {direction} {how}",
                    f.node,
                    endpoints_text(&f.endpoints)
                ),
                fix,
            }),
            None => match alike.iter_mut().find(|(_, h, f)| *h == how && *f == fix) {
                Some((directions, _, _)) => directions.push(direction),
                None => alike.push((vec![direction], how, fix)),
            },
        }
    }
    for (directions, how, fix) in alike {
        causes.push(Cause { cause: format!("VXLAN (UDP {port}) {} {how}", listed(&directions)), fix });
    }
    if let Outcome::Ran(mesh) = e.mesh {
        for seen in &mesh.failing_pairs {
            if faulty.iter().any(|p| p.from_node == seen.from && p.to_node == seen.to) {
                continue;
            }
            let probed_ok = e.vxlan.ran().is_some_and(|v| {
                v.pairs
                    .iter()
                    .any(|p| p.from_node == seen.from && p.to_node == seen.to && p.verdict == PairVerdict::Ok)
            });
            let cause = seen.cause.as_deref().map(|c| format!(": {c}")).unwrap_or_default();
            let now = if probed_ok { "; probed now, it passed: the loss comes and goes" } else { "" };
            causes.push(Cause {
                cause: format!(
                    "the agents' mesh: VXLAN beacons from {} to {} are {} ({} of {} arrived over its last period){cause}{now}",
                    seen.from, seen.to, seen.verdict, seen.arrived, seen.sent
                ),
                fix: format!(
                    "netprobe vxlan {} {} (by their agents' addresses) shows where the probes die; a loss that comes and goes is congestion, a rate limit or a stateful device on the path",
                    seen.from, seen.to
                ),
            });
        }
    }
    causes
}

/// Up to three items joined as a sentence says them, the rest counted.
fn listed(items: &[String]) -> String {
    const SHOWN: usize = 3;
    let shown = &items[..items.len().min(SHOWN)];
    let mut text = match shown {
        [one] => one.clone(),
        [first, second] if items.len() == 2 => format!("{first} and {second}"),
        _ => shown.join(", "),
    };
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more pair(s) of nodes", items.len() - SHOWN));
    } else if items.len() == SHOWN {
        let (head, last) = shown.split_at(SHOWN - 1);
        text = format!("{}, and {}", head.join(", "), last[0]);
    }
    text
}

/// Why DNS fails: the overlay to the failing endpoints' nodes (unless a failing pair already said
/// so), the pods themselves, or the path to the Service.
fn dns_causes(e: &Evidence, dns: &DnsReport, remote: &[RemoteFailure]) -> Vec<Cause> {
    let mut causes = Vec::new();
    for failure in remote {
        let pods = endpoints_text(&failure.endpoints);
        let symptom = format!("DNS fails for pods on {} ({pods})", failure.node);
        causes.extend(match e.vxlan {
            Outcome::Ran(vxlan) => tunnel_cause(e.this_node, &failure.node, &symptom, vxlan, e.dns_namespace, failure),
            Outcome::CouldNotRun(why) => Some(Cause {
                cause: format!(
                    "{symptom}; whether VXLAN between {} and {} carries could not be checked: {why}",
                    e.this_node, failure.node
                ),
                fix: if why.contains("NETPROBE_TOKEN") {
                    "set NETPROBE_TOKEN to the agents' token (kubectl -n netprobe get secret netprobe-token -o jsonpath='{.data.token}' | base64 -d), then run netprobe doctor again".into()
                } else {
                    format!("run the agents on both nodes ({DEPLOY_HINT}), then run netprobe doctor again")
                },
            }),
            Outcome::Skipped(why) => Some(Cause {
                cause: format!("{symptom}; VXLAN was not checked: {why}"),
                fix: "netprobe vxlan --all-nodes, with an agent on every node".into(),
            }),
        });
    }
    let local: Vec<&EndpointReport> = dns
        .endpoints
        .iter()
        .filter(|x| x.verdict.is_fault() && !remote.iter().any(|f| f.endpoints.contains(x)))
        .collect();
    if !local.is_empty() {
        let on_this = local.iter().all(|x| x.endpoint.node.as_deref() == Some(e.this_node));
        let message = first_finding(dns, &[FindingKind::EndpointUnreachable, FindingKind::ServerErrors])
            .unwrap_or_else(|| format!("{} not ok", endpoints_text(&local)));
        causes.push(Cause {
            cause: if on_this {
                format!("DNS fails for pods on this node ({}): {message}", e.this_node)
            } else {
                format!("DNS fails: {message}")
            },
            fix: pod_fix(&local, e.dns_namespace),
        });
    }
    if remote.is_empty() && local.is_empty() {
        // No endpoint at fault, yet DNS is: the Service path, or answers that disagree.
        let message = first_finding(
            dns,
            &[FindingKind::ServicePath, FindingKind::InconsistentAnswers, FindingKind::NameExistsNowhere],
        )
        .unwrap_or_else(|| "DNS through the Service fails while its endpoints answer".into());
        let service_path = dns.findings.iter().any(|f| f.kind == FindingKind::ServicePath);
        causes.push(Cause {
            cause: message,
            fix: if service_path {
                format!("look at kube-proxy on {}: its rules for the Service (iptables-save -t nat | grep the Service address) and its logs", e.this_node)
            } else {
                format!("compare the CoreDNS configuration (kubectl -n {} get configmap coredns -o yaml) and its logs", e.dns_namespace)
            },
        });
    }
    causes
}

/// The cause for DNS failing on `node` given what VXLAN between this node and it did; `None` when
/// a direction failed (that pair's cause already names this failure).
fn tunnel_cause(
    this: &str,
    node: &str,
    symptom: &str,
    vxlan: &VxlanReport,
    namespace: &str,
    failure: &RemoteFailure,
) -> Option<Cause> {
    let between = |p: &&PairReport| {
        (p.from_node == this && p.to_node == node) || (p.from_node == node && p.to_node == this)
    };
    let pairs: Vec<&PairReport> = vxlan.pairs.iter().filter(between).collect();
    if pairs.iter().any(|p| p.verdict.health() == Health::Fault) {
        return None;
    }
    let untested: Vec<String> = pairs
        .iter()
        .filter(|p| p.verdict == PairVerdict::Untested)
        .map(|p| format!("{} -> {}: {}", p.from_node, p.to_node, p.diagnosis))
        .chain(
            vxlan
                .untested
                .iter()
                .filter(|u| u.node == this || u.node == node)
                .map(|u| format!("{}: {}", u.node, u.reason)),
        )
        .collect();
    if pairs.is_empty() || !untested.is_empty() {
        return Some(Cause {
            cause: format!(
                "{symptom}; whether VXLAN between {this} and {node} carries could not be checked: {}",
                untested.join("; ")
            ),
            fix: DEPLOY_HINT.to_string(),
        });
    }
    // The tunnel carries: the pods or their node are the place to look.
    Some(Cause {
        cause: format!("{symptom} while VXLAN between {this} and {node} passes both ways: the pods or {node} itself, not the tunnel"),
        fix: pod_fix(&failure.endpoints, namespace),
    })
}

/// How a failing pair loses its probes, and the fix, in words.
fn pair_words(pair: &PairReport, port: u16) -> (String, String) {
    match pair.verdict {
        PairVerdict::LostInNetwork if pair.control_udp == ControlUdp::Ok => (
            "is lost in the network while other UDP passes".to_string(),
            format!("allow UDP {port} between nodes in the security group, NACL or firewall"),
        ),
        PairVerdict::LostInNetwork => (
            "is lost in the network, and so is other UDP".to_string(),
            format!("allow UDP (at least {port}) between nodes in the security group, NACL or firewall, and check the route between them"),
        ),
        PairVerdict::BlockedAtSource => (
            format!("never leaves {}", pair.from_node),
            match &pair.rule {
                Some(rule) => format!("remove or narrow this rule on {}: {rule}", pair.from_node),
                None => format!("check {}'s OUTPUT firewall (iptables/nft) and routes", pair.from_node),
            },
        ),
        PairVerdict::DroppedAtDestination if pair.drop_reason.as_deref() == Some(reason::UDP_CSUM) => (
            format!("reaches {} with a bad UDP checksum and its kernel drops it", pair.to_node),
            "turn off checksum offload on the nodes' vxlan devices (ethtool -K flannel.1 tx-checksum-ip-generic off, or the CNI's option) and look for a device on the path that rewrites UDP".to_string(),
        ),
        PairVerdict::DroppedAtDestination if pair.drop_reason.as_deref() == Some(reason::IP_RPFILTER) => (
            format!("reaches {} by another interface than its route back, and its reverse-path filter drops it", pair.to_node),
            format!("make the routes between the nodes symmetric, or set rp_filter to 2 (loose) on {}: {}", pair.to_node, pair.diagnosis),
        ),
        PairVerdict::Rejected => (
            "is rejected (an ICMP error came back)".to_string(),
            match &pair.rule {
                Some(rule) => format!("remove or narrow this rule on {}: {rule}", pair.to_node),
                None => format!("allow UDP {port} between nodes in the firewall that rejects it: {}", pair.diagnosis),
            },
        ),
        PairVerdict::VtepPortMismatch => (
            "goes to a port where no VXLAN device listens".to_string(),
            format!("give every node's VXLAN device the same port: {}", pair.diagnosis),
        ),
        PairVerdict::PathMtuTooSmall => (
            match &pair.mtu {
                Some(m) => format!(
                    "carries small packets, but not the pod network's: {}",
                    m.finding
                ),
                None => "carries small packets, but not the pod network's".to_string(),
            },
            match pair.mtu.as_ref().and_then(|m| m.inner_mtu) {
                Some(inner) => format!("set the CNI's MTU to {inner} or less (flannel: the net-conf's MTU; Calico: veth_mtu/vxlanMTU), or raise the MTU of the path"),
                None => "lower the CNI's MTU below what the path carries, or raise the MTU of the path".to_string(),
            },
        ),
        PairVerdict::DroppedAtDestination => (
            format!("reaches {} and its firewall drops it", pair.to_node),
            match &pair.rule {
                Some(rule) => format!("remove or narrow this rule on {}: {rule}", pair.to_node),
                None => format!("check {}'s INPUT firewall for UDP {port}", pair.to_node),
            },
        ),
        _ => (
            format!("loses {} of {} probes", pair.sent - pair.arrived.min(pair.sent), pair.sent),
            "look for congestion, rate limits or MTU trouble on the path between the nodes".to_string(),
        ),
    }
}

/// `10.244.1.10:53 (coredns-b)`, each endpoint once.
fn endpoints_text(endpoints: &[&EndpointReport]) -> String {
    let parts: Vec<String> = endpoints
        .iter()
        .map(|x| match &x.endpoint.pod {
            Some(pod) => format!("{pod} at {}", x.socket()),
            None => x.socket().to_string(),
        })
        .collect();
    parts.join(", ")
}

/// Look at the pods themselves.
fn pod_fix(endpoints: &[&EndpointReport], namespace: &str) -> String {
    let pods: Vec<&str> = endpoints.iter().filter_map(|x| x.endpoint.pod.as_deref()).collect();
    match pods.first() {
        Some(pod) => format!(
            "look at the pod{}: kubectl -n {namespace} logs {pod}; kubectl -n {namespace} describe pod {pod}",
            if pods.len() > 1 { "s" } else { "" }
        ),
        None => "look at the DNS server at that address and its logs".into(),
    }
}

fn first_finding(dns: &DnsReport, kinds: &[FindingKind]) -> Option<String> {
    kinds.iter().find_map(|kind| dns.findings.iter().find(|f| f.kind == *kind).map(|f| f.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{EndpointVerdict, Finding, ProtocolReport};
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn endpoint(ip: &str, node: &str, verdict: EndpointVerdict) -> EndpointReport {
        EndpointReport {
            endpoint: crate::cluster::ServiceEndpoint {
                address: ip.parse().unwrap(),
                port: 53,
                node: Some(node.into()),
                pod: Some(format!("coredns-{node}")),
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            },
            totals: ProtocolReport::default(),
            answers: vec![],
            protocols: BTreeMap::new(),
            verdict,
        }
    }

    fn dns(endpoints: Vec<EndpointReport>, findings: Vec<(FindingKind, &str)>) -> DnsReport {
        let verdict = if endpoints.iter().any(|x| x.verdict.is_fault()) || !findings.is_empty() {
            Health::Fault
        } else {
            Health::Ok
        };
        DnsReport {
            probe: "dns",
            name: "kubernetes.default.svc.cluster.local.".into(),
            record_type: "A".into(),
            this_node: Some("node-a".into()),
            endpoints,
            services: vec![],
            findings: findings
                .into_iter()
                .map(|(kind, m)| Finding { kind, message: m.into(), about: vec![] })
                .collect(),
            conntrack: None,
            udp_sockets: Default::default(),
            verdict,
            other_names: vec![],
        }
    }

    fn pair(
        from: &str,
        to: &str,
        verdict: PairVerdict,
        control: ControlUdp,
        rule: Option<&str>,
    ) -> PairReport {
        PairReport {
            sent: 5,
            left_source: if verdict == PairVerdict::BlockedAtSource { 0 } else { 5 },
            arrived: if verdict == PairVerdict::Ok { 5 } else { 0 },
            verdict,
            control_udp: control,
            rule: rule.map(str::to_string),
            ..PairReport::unmeasured(
                Ipv4Addr::new(198, 51, 100, 1),
                Ipv4Addr::new(203, 0, 113, 2),
                from,
                to,
                "why".into(),
            )
        }
    }

    fn vxlan(pairs: Vec<PairReport>) -> VxlanReport {
        let verdict = VxlanReport::health_of(&pairs, &[]);
        VxlanReport { probe: "vxlan", port: 8472, vni: 1, count: 5, verdict, pairs, untested: vec![] }
    }

    fn causes(dns: &Outcome<DnsReport>, vxlan: &Outcome<VxlanReport>) -> Vec<Cause> {
        causes_with(&Outcome::Skipped("no mesh".into()), dns, vxlan, &Outcome::Skipped("not root".into()))
    }

    fn causes_with(
        mesh: &Outcome<MeshReport>,
        dns: &Outcome<DnsReport>,
        vxlan: &Outcome<VxlanReport>,
        conntrack: &Outcome<ConntrackReport>,
    ) -> Vec<Cause> {
        diagnose(&Evidence {
            this_node: "node-a",
            dns_namespace: "kube-system",
            mesh,
            dns,
            vxlan,
            arp: &Outcome::Skipped("no VIP".into()),
            iptables: &Outcome::Skipped("not root".into()),
            conntrack,
        })
    }

    fn mesh(failing: Vec<crate::vxlan::api::MeshPair>) -> Outcome<MeshReport> {
        let answers = vec![(
            "node-a".to_string(),
            Ok(crate::vxlan::api::MeshState {
                period_ms: 10_000,
                evaluated_at: Some(1000.0),
                ok: 0,
                pairs: failing,
            }),
        )];
        Outcome::Ran(crate::vxlan::mesh_state::judge(answers, vec![], 1000.0))
    }

    #[test]
    fn failing_pairs_come_first_without_a_dns_symptom_and_the_mesh_adds_what_it_alone_saw() {
        let healthy_dns =
            Outcome::Ran(dns(vec![endpoint("10.244.0.10", "node-a", EndpointVerdict::Ok)], vec![]));
        let probed = Outcome::Ran(vxlan(vec![
            pair("node-b", "node-c", PairVerdict::Rejected, ControlUdp::Ok, None),
            pair("node-c", "node-b", PairVerdict::Ok, ControlUdp::Ok, None),
            pair("node-a", "node-b", PairVerdict::Ok, ControlUdp::Ok, None),
        ]));
        let seen = |from: &str, to: &str, verdict: &str, cause: Option<&str>| crate::vxlan::api::MeshPair {
            from: from.into(),
            to: to.into(),
            verdict: verdict.into(),
            sent: 10,
            arrived: 7,
            cause: cause.map(String::from),
        };
        let mesh = mesh(vec![
            seen("node-b", "node-c", "rejected", None),
            seen(
                "node-d",
                "node-a",
                "partial-loss",
                Some("the diagnosis' probes got through (5 of 5): the loss comes and goes"),
            ),
            seen("node-a", "node-b", "partial-loss", None),
        ]);
        let conntrack = Outcome::Skipped("not root".into());
        let found = causes_with(&mesh, &healthy_dns, &probed, &conntrack);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            found[0].cause,
            "VXLAN (UDP 8472) from node-b to node-c is rejected (an ICMP error came back)"
        );
        // The mesh's, in its order; the pair probed too is not said twice.
        assert!(
            found[1]
                .cause
                .starts_with("the agents' mesh: VXLAN beacons from node-a to node-b are partial-loss"),
            "{}",
            found[1].cause
        );
        assert!(
            found[1].cause.ends_with("; probed now, it passed: the loss comes and goes"),
            "{}",
            found[1].cause
        );
        assert_eq!(
            found[2].cause,
            "the agents' mesh: VXLAN beacons from node-d to node-a are partial-loss (7 of 10 arrived over its last period): the diagnosis' probes got through (5 of 5): the loss comes and goes"
        );
    }

    #[test]
    fn pairs_that_fail_alike_are_one_cause_and_the_one_behind_dns_its_own() {
        let lost = |from: &str, to: &str| pair(from, to, PairVerdict::LostInNetwork, ControlUdp::Ok, None);
        let vxlan = Outcome::Ran(vxlan(vec![
            lost("node-a", "node-b"),
            lost("node-a", "node-c"),
            lost("node-b", "node-a"),
            lost("node-b", "node-c"),
            lost("node-c", "node-a"),
            lost("node-c", "node-b"),
        ]));
        let found = causes(&incident_two_dns(), &vxlan);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].cause.starts_with("DNS fails for pods on node-b"), "{}", found[0].cause);
        assert_eq!(
            found[1].cause,
            "VXLAN (UDP 8472) between node-a and node-c (both directions) and between node-b and node-c (both directions) is lost in the network while other UDP passes"
        );
        let items: Vec<String> = (1..=5).map(|i| format!("p{i}")).collect();
        assert_eq!(listed(&items[..3]), "p1, p2, and p3");
        assert_eq!(listed(&items), "p1, p2, p3 and 2 more pair(s) of nodes");
    }

    #[test]
    fn a_full_conntrack_table_is_a_cause_with_its_fix() {
        use crate::conntrack::{judge, Evidence as TableEvidence};
        use crate::net::conntrack::{ConntrackStats, EntryTally, TableSize};
        let stats = ConntrackStats { drop: 4, early_drop: 0, insert_failed: 0, clash_resolved: Some(0) };
        let table = judge(TableEvidence {
            size: Some(TableSize { entries: 262_144, max: 262_144 }),
            now: stats,
            during: stats,
            window: std::time::Duration::from_secs(1),
            kernel_log: Ok((vec![], 0)),
            netns: None,
            host_netns: true,
            entries: Ok(EntryTally::default()),
            top: 5,
        });
        let ok_dns = Outcome::Ran(dns(vec![endpoint("10.244.0.10", "node-a", EndpointVerdict::Ok)], vec![]));
        let found = causes_with(
            &Outcome::Skipped("no mesh".into()),
            &ok_dns,
            &Outcome::Skipped("-".into()),
            &Outcome::Ran(table),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].cause.starts_with(
                "node-a's connection tracking table: the connection tracking table is full: 262144 of 262144"
            ),
            "{}",
            found[0].cause
        );
        assert!(found[0].fix.contains("nf_conntrack_max"), "{}", found[0].fix);
    }

    fn incident_two_dns() -> Outcome<DnsReport> {
        Outcome::Ran(dns(
            vec![
                endpoint("10.244.0.10", "node-a", EndpointVerdict::Ok),
                endpoint("10.244.1.10", "node-b", EndpointVerdict::Failing),
            ],
            vec![(FindingKind::CrossNode, "every failing endpoint is on another node")],
        ))
    }

    #[test]
    fn failing_pods_on_another_node_are_grouped_by_node() {
        let Outcome::Ran(report) = incident_two_dns() else { unreachable!() };
        let remote = remote_failures(&report, "node-a");
        assert_eq!(remote.len(), 1);
        assert_eq!(remote[0].node, "node-b");
        assert_eq!(remote[0].endpoints[0].endpoint.address.to_string(), "10.244.1.10");
        // Seen from node-b, its own pod is local: nothing for the overlay to explain.
        assert!(remote_failures(&report, "node-b").is_empty());
    }

    #[test]
    fn incident_two_names_the_tunnel_and_the_security_group() {
        let vxlan = Outcome::Ran(vxlan(vec![
            pair("node-a", "node-b", PairVerdict::LostInNetwork, ControlUdp::Ok, None),
            pair("node-b", "node-a", PairVerdict::LostInNetwork, ControlUdp::Ok, None),
        ]));
        let found = causes(&incident_two_dns(), &vxlan);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].cause,
            "DNS fails for pods on node-b (coredns-node-b at 10.244.1.10:53) because VXLAN (UDP 8472) between node-a and node-b (both directions) is lost in the network while other UDP passes"
        );
        assert_eq!(found[0].fix, "allow UDP 8472 between nodes in the security group, NACL or firewall");
    }

    #[test]
    fn one_direction_and_a_named_rule() {
        let vxlan = Outcome::Ran(vxlan(vec![
            pair("node-a", "node-b", PairVerdict::Ok, ControlUdp::Ok, None),
            pair(
                "node-b",
                "node-a",
                PairVerdict::DroppedAtDestination,
                ControlUdp::Ok,
                Some("-A INPUT -p udp --dport 8472 -j DROP"),
            ),
        ]));
        let found = causes(&incident_two_dns(), &vxlan);
        assert!(
            found[0]
                .cause
                .ends_with("VXLAN (UDP 8472) from node-b to node-a reaches node-a and its firewall drops it"),
            "{}",
            found[0].cause
        );
        assert_eq!(
            found[0].fix,
            "remove or narrow this rule on node-a: -A INPUT -p udp --dport 8472 -j DROP"
        );
    }

    #[test]
    fn a_bad_checksum_is_named_with_the_offload_fix() {
        let mut dropped = pair("node-a", "node-b", PairVerdict::DroppedAtDestination, ControlUdp::Ok, None);
        dropped.drop_reason = Some("UDP_CSUM".into());
        let vxlan = Outcome::Ran(vxlan(vec![
            dropped,
            pair("node-b", "node-a", PairVerdict::Ok, ControlUdp::Ok, None),
        ]));
        let found = causes(&incident_two_dns(), &vxlan);
        assert!(
            found[0].cause.ends_with("reaches node-b with a bad UDP checksum and its kernel drops it"),
            "{}",
            found[0].cause
        );
        assert!(found[0].fix.contains("tx-checksum-ip-generic off"), "{}", found[0].fix);
    }

    #[test]
    fn a_pod_network_wider_than_the_path_is_named_with_the_mtu_to_set() {
        let mut small = pair("node-a", "node-b", PairVerdict::PathMtuTooSmall, ControlUdp::Ok, None);
        let found = crate::vxlan::mtu::Found {
            path_mtu: Some(1400),
            interface_mtu: Some(1500),
            vxlan_device: Some(("flannel.1".into(), 1450)),
            ..Default::default()
        };
        small.mtu = Some(crate::vxlan::mtu::judge(small.from, small.to, found));
        let vxlan =
            Outcome::Ran(vxlan(vec![small, pair("node-b", "node-a", PairVerdict::Ok, ControlUdp::Ok, None)]));
        let found = causes(&incident_two_dns(), &vxlan);
        assert!(
            found[0].cause.contains("from node-a to node-b carries small packets, but not the pod network's: flannel.1 MTU 1450 but the path"),
            "{}",
            found[0].cause
        );
        assert!(found[0].fix.starts_with("set the CNI's MTU to 1350 or less"), "{}", found[0].fix);
    }

    #[test]
    fn a_tunnel_that_carries_points_at_the_pods() {
        let vxlan = Outcome::Ran(vxlan(vec![
            pair("node-a", "node-b", PairVerdict::Ok, ControlUdp::Ok, None),
            pair("node-b", "node-a", PairVerdict::Ok, ControlUdp::Ok, None),
        ]));
        let found = causes(&incident_two_dns(), &vxlan);
        assert!(found[0].cause.contains("passes both ways: the pods or node-b itself, not the tunnel"));
        assert!(found[0].fix.contains("kubectl -n kube-system logs coredns-node-b"));
    }

    #[test]
    fn no_agents_says_what_could_not_be_checked_and_how_to_deploy() {
        let silent = Outcome::CouldNotRun("no agent answered".into());
        let found = causes(&incident_two_dns(), &silent);
        assert!(found[0].cause.contains("could not be checked: no agent answered"), "{}", found[0].cause);
        assert!(found[0].fix.contains("kubectl apply -k deploy/kubernetes/"));
        let untested = Outcome::Ran(VxlanReport {
            untested: vec![crate::vxlan::UntestedNode {
                node: "node-b".into(),
                ip: None,
                reason: "unreachable".into(),
            }],
            ..vxlan(vec![])
        });
        let found = causes(&incident_two_dns(), &untested);
        assert!(found[0].cause.ends_with("could not be checked: node-b: unreachable"), "{}", found[0].cause);
    }

    #[test]
    fn no_token_says_where_the_token_is() {
        let vxlan = Outcome::CouldNotRun(
            "token: none given: set NETPROBE_TOKEN (or --token-file for the agent)".into(),
        );
        let found = causes(&incident_two_dns(), &vxlan);
        assert!(
            found[0].fix.starts_with(
                "set NETPROBE_TOKEN to the agents' token (kubectl -n netprobe get secret netprobe-token"
            ),
            "{}",
            found[0].fix
        );
    }

    #[test]
    fn local_failures_and_the_service_path() {
        let local = Outcome::Ran(dns(
            vec![endpoint("10.244.0.10", "node-a", EndpointVerdict::Failing)],
            vec![(FindingKind::EndpointUnreachable, "10.244.0.10:53 never answered")],
        ));
        let found = causes(&local, &Outcome::Skipped("not needed".into()));
        assert_eq!(found[0].cause, "DNS fails for pods on this node (node-a): 10.244.0.10:53 never answered");
        let path = Outcome::Ran(dns(
            vec![endpoint("10.244.0.10", "node-a", EndpointVerdict::Ok)],
            vec![(FindingKind::ServicePath, "the Service fails while every endpoint answers")],
        ));
        let found = causes(&path, &Outcome::Skipped("not needed".into()));
        assert_eq!(found[0].cause, "the Service fails while every endpoint answers");
        assert!(found[0].fix.contains("kube-proxy on node-a"));
    }

    #[test]
    fn healthy_steps_give_no_cause_and_faults_win_the_verdict() {
        let ok = Outcome::Ran(dns(vec![endpoint("10.244.0.10", "node-a", EndpointVerdict::Ok)], vec![]));
        assert!(causes(&ok, &Outcome::Skipped("not needed".into())).is_empty());
        assert_eq!(verdict([StepStatus::Ok, StepStatus::Skipped]), Health::Ok);
        assert_eq!(verdict([StepStatus::Fault, StepStatus::CouldNotRun]), Health::Fault);
        assert_eq!(verdict([StepStatus::Ok, StepStatus::CouldNotRun]), Health::CouldNotRun);
    }
}
