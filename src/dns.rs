//! `netprobe dns`: flags to targets (given or discovered), the probe, and its report.

use std::net::SocketAddr;

use netprobe_k8s::{self as k8s, ApiConfig};
use netprobe_probes::dns::{
    self, Config, DnsReport, EndpointReport, Families, Finding, FindingKind, Protocol, ServiceEndpoint,
};
use netprobe_probes::net::dns::SocketUse;
use netprobe_probes::net::interface;
use netprobe_probes::Error;

use crate::cli::{DnsArgs, DnsFamily, DnsProtocol};
use crate::exit::Exit;
use crate::output::{self, Format};

/// The ANSWERS column is at most this wide; JSON has every answer.
const ANSWERS_WIDTH: usize = 40;

pub fn run(args: DnsArgs, api: &ApiConfig, format: Format) -> Result<Exit, Error> {
    let report = report(args, api)?;
    output::report(format, &report, render_table);
    Ok(Exit::from_health(report.health()))
}

/// The report `netprobe dns` prints (`netprobe doctor` runs this as its first step).
pub fn report(args: DnsArgs, api: &ApiConfig) -> Result<DnsReport, Error> {
    let names = args.name.iter().map(|n| dns::parse_name(n)).collect::<Result<Vec<_>, _>>()?;
    let record_type = dns::parse_type(&args.record_type)?;
    let (endpoints, services) = match &args.endpoints {
        Some(list) => {
            (list.iter().map(|a| ServiceEndpoint::at(*a)).collect(), args.service_ip.into_iter().collect())
        }
        None => discover(&args, api)?,
    };
    let protocols = match args.protocol {
        // glibc asks over UDP (over TCP only with `options use-vc`).
        _ if args.like_glibc => vec![Protocol::Udp],
        DnsProtocol::Udp => vec![Protocol::Udp],
        DnsProtocol::Tcp => vec![Protocol::Tcp],
        DnsProtocol::Both => vec![Protocol::Udp, Protocol::Tcp],
    };
    let config = Config {
        endpoints,
        services,
        name: names[0].clone(),
        record_type,
        count: args.count,
        interval: args.interval,
        concurrency: args.concurrency,
        timeout: args.timeout,
        protocols,
        slow: args.slow,
        this_node: args.node.filter(|n| !n.is_empty()),
        edns_bufsize: args.edns_bufsize,
        like_glibc: args.like_glibc,
        sockets: if args.reuse_sockets { SocketUse::Reused } else { SocketUse::PerQuery },
    };
    // Each further name is asked of the same servers, one name after the other.
    let first = dns::run(config.clone())?;
    let others = names[1..]
        .iter()
        .map(|name| dns::run(Config { name: name.clone(), ..config.clone() }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(first.with_other_names(others))
}

/// Endpoints and Service addresses from the API, in the families asked for (or routed here).
fn discover(args: &DnsArgs, api: &ApiConfig) -> Result<(Vec<ServiceEndpoint>, Vec<SocketAddr>), Error> {
    let families = match args.family {
        Some(DnsFamily::V4) => Families { v4: true, v6: false },
        Some(DnsFamily::V6) => Families { v4: false, v6: true },
        Some(DnsFamily::Both) => Families::BOTH,
        None => {
            let (v4, v6) = interface::route_families();
            if v4 || v6 {
                Families { v4, v6 }
            } else {
                Families::BOTH
            }
        }
    };
    let found =
        k8s::discover_blocking(api, &args.namespace, &args.service, "dns", args.service_ip.is_none())?;
    let endpoints: Vec<ServiceEndpoint> =
        found.endpoints.into_iter().filter(|e| families.allows(e.address)).collect();
    if endpoints.is_empty() {
        return Err(Error::could_not_run(
            format!("discovering {}/{}", args.namespace, args.service),
            format!(
                "no endpoints{}: is the DNS deployment running? (kubectl -n {} get endpointslices -l kubernetes.io/service-name={})",
                if args.family.is_some() { " in the families asked for" } else { "" },
                args.namespace,
                args.service
            ),
        ));
    }
    let services = match args.service_ip {
        Some(given) => vec![given],
        None => found
            .cluster_ips
            .into_iter()
            .filter(|ip| families.allows(*ip))
            .map(|ip| SocketAddr::new(ip, 53))
            .collect(),
    };
    Ok((endpoints, services))
}

/// The verdict in a line: how many endpoints are not ok, and how often the Service failed.
pub fn headline(report: &DnsReport) -> String {
    let judged: Vec<&EndpointReport> = report.endpoints.iter().filter(|e| !e.not_ready()).collect();
    let bad = judged.iter().filter(|e| e.verdict.is_fault()).count();
    let mut headline = if bad == 0 {
        format!("all {} endpoint(s) answer alike", judged.len())
    } else {
        format!("{bad} of {} endpoint(s) not ok", judged.len())
    };
    let not_ready = report.endpoints.len() - judged.len();
    if not_ready > 0 {
        headline.push_str(&format!(" ({not_ready} not ready, not judged)"));
    }
    for service in &report.services {
        let failed = service.totals.unanswered();
        headline.push_str(&format!(
            "; the Service {} failed {failed} of {}",
            service.socket(),
            service.totals.sent
        ));
    }
    headline
}

fn render_table(report: &DnsReport) -> String {
    let mut headline = headline(report);
    for other in report.other_names.iter().filter(|o| o.health() != netprobe_probes::Health::Ok) {
        let judged = other.endpoints.iter().filter(|e| !e.not_ready());
        let (bad, all) =
            judged.fold((0, 0), |(bad, all), e| (bad + usize::from(e.verdict.is_fault()), all + 1));
        headline.push_str(&format!("; {}: {bad} of {all} endpoint(s) not ok", other.name));
    }
    let word = if report.health() == netprobe_probes::Health::Ok { "ok" } else { "fault" };
    let mut text = format!("{}  {headline}\n", output::verdict(word, report.health()));
    // What comparing the names found comes last, after every name's table.
    let (compared, own): (Vec<&Finding>, Vec<&Finding>) = report
        .findings
        .iter()
        .partition(|f| matches!(f.kind, FindingKind::UpstreamBroken | FindingKind::FailsEveryName));
    text.push_str(&name_section(report, &own));
    for other in &report.other_names {
        text.push('\n');
        text.push_str(&name_section(other, &other.findings.iter().collect::<Vec<_>>()));
    }
    text.push_str(&findings_lines(&compared));
    text
}

/// One name's part of the table: the name, a row per endpoint and Service address, conntrack's
/// counters and the findings.
fn name_section(report: &DnsReport, findings: &[&Finding]) -> String {
    let mut text = String::new();
    let node = report.this_node.as_deref().map(|n| format!(", from node {n}")).unwrap_or_default();
    text.push_str(&format!("{} {}{node}\n\n", report.name, report.record_type));

    let protocols: Vec<String> =
        report.endpoints.first().map(|e| e.protocols.keys().cloned().collect()).unwrap_or_default();
    let discovered = report.endpoints.iter().any(|e| e.endpoint.ready.is_some());
    let mut header = vec!["endpoint", "node", "pod"];
    if discovered {
        header.push("ready");
    }
    header.push("verdict");
    let answered_columns: Vec<String> = if protocols.is_empty() {
        vec!["answered".into()]
    } else {
        protocols.iter().map(|p| format!("{p} answered")).collect()
    };
    header.extend(answered_columns.iter().map(String::as_str));
    // With --like-glibc: pairs that lost part of their answers, each a 5 s stall for glibc.
    let paired = report.endpoints.iter().chain(&report.services).any(|e| e.totals.pairs.is_some());
    if paired {
        header.push("pairs half-answered");
    }
    header.extend(["rcode", "p50/p95 ms", "answers"]);
    let mut table = output::table(&header);
    let rows = report
        .endpoints
        .iter()
        .map(|e| (e.socket().to_string(), e))
        .chain(report.services.iter().map(|s| (format!("service {}", s.socket()), s)));
    for (label, e) in rows {
        let mut row = vec![
            label,
            e.endpoint.node.clone().unwrap_or_else(|| "-".into()),
            e.endpoint.pod.clone().unwrap_or_else(|| "-".into()),
        ];
        if discovered {
            row.push(match (e.endpoint.ready, e.endpoint.terminating) {
                (_, Some(true)) => "terminating".into(),
                (Some(true), _) => "yes".into(),
                (Some(false), _) => "no".into(),
                (None, _) => "-".into(),
            });
        }
        // Shout the bad ones: they are what a person scans the table for.
        row.push(if e.verdict.is_fault() {
            e.verdict.as_str().to_uppercase()
        } else {
            e.verdict.as_str().to_string()
        });
        if protocols.is_empty() {
            row.push(format!("{}/{}", e.totals.answered, e.totals.sent));
        } else {
            for p in &protocols {
                row.push(
                    e.protocols.get(p).map(|s| format!("{}/{}", s.answered, s.sent)).unwrap_or_default(),
                );
            }
        }
        if paired {
            row.push(
                e.totals.pairs.as_ref().map(|p| format!("{}/{}", p.part_lost, p.sent)).unwrap_or_default(),
            );
        }
        row.push(rcode_cell(e));
        row.push(match e.totals.latency_ms {
            Some(l) => format!("{:.1}/{:.1}", l.p50, l.p95),
            None => "-".into(),
        });
        row.push(answers_cell(&e.answers));
        table.add_row(row);
    }
    text.push_str(&table.to_string());
    text.push('\n');
    if let Some(c) = &report.conntrack {
        text.push('\n');
        text.push_str(&match (c.insert_failed, c.drop, &c.error) {
            (Some(failed), Some(dropped), _) => format!(
                "conntrack in this network namespace during the run: insert_failed +{failed}, drop +{dropped}{}\n",
                c.clash_resolved.map(|n| format!(", clashes resolved +{n}")).unwrap_or_default()
            ),
            (_, _, why) => format!("conntrack not read: {}\n", why.as_deref().unwrap_or("unknown")),
        });
    }
    text.push_str(&findings_lines(findings));
    text
}

/// Findings, a line each (`kind: message`), after a blank line; nothing when there are none.
fn findings_lines(findings: &[&Finding]) -> String {
    let mut text = String::new();
    if !findings.is_empty() {
        text.push('\n');
        for finding in findings {
            let kind = serde_json::to_value(finding.kind).ok().and_then(|v| v.as_str().map(str::to_string));
            text.push_str(&format!("{}: {}\n", kind.unwrap_or_default(), finding.message));
        }
    }
    text
}

/// The error RCODEs, most frequent first, each with its count of all queries: `SERVFAIL 20/20`.
fn rcode_cell(e: &EndpointReport) -> String {
    let mut errors: Vec<(&String, &u32)> =
        e.totals.rcodes.iter().filter(|(r, _)| r.as_str() != "NOERROR").collect();
    if errors.is_empty() {
        return if e.totals.answered > 0 { "NOERROR".into() } else { "-".into() };
    }
    errors.sort_by(|a, b| b.1.cmp(a.1));
    errors.iter().map(|(r, n)| format!("{r} {n}/{}", e.totals.sent)).collect::<Vec<_>>().join(", ")
}

/// The answers in address order, cut to [`ANSWERS_WIDTH`] with how many more there are.
fn answers_cell(answers: &[String]) -> String {
    if answers.is_empty() {
        return "-".into();
    }
    let mut cell = String::new();
    for (i, answer) in answers.iter().enumerate() {
        let more = answers.len() - i;
        let next = if cell.is_empty() { answer.clone() } else { format!("{cell} {answer}") };
        if next.chars().count() > ANSWERS_WIDTH && i > 0 {
            return format!("{cell} (+{more} more)");
        }
        cell = next;
    }
    if cell.chars().count() > ANSWERS_WIDTH {
        cell = format!("{}...", cell.chars().take(ANSWERS_WIDTH - 3).collect::<String>());
    }
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_bounded() {
        assert_eq!(answers_cell(&[]), "-");
        let many: Vec<String> = (1..=12).map(|i| format!("10.96.0.{i}")).collect();
        assert_eq!(answers_cell(&many), "10.96.0.1 10.96.0.2 10.96.0.3 10.96.0.4 (+8 more)");
        let long = vec!["a".repeat(60)];
        assert_eq!(answers_cell(&long).chars().count(), ANSWERS_WIDTH);
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use netprobe_probes::dns::{EndpointVerdict, Finding, FindingKind, Latency, ProtocolReport};
    use netprobe_probes::Health;
    use std::collections::BTreeMap;

    fn row(
        address: &str,
        port: u16,
        node: Option<&str>,
        verdict: EndpointVerdict,
        answered: u32,
        rcodes: &[(&str, u32)],
    ) -> EndpointReport {
        let totals = ProtocolReport {
            sent: 20,
            answered,
            error_replies: rcodes.iter().filter(|(r, _)| *r != "NOERROR").map(|(_, n)| n).sum(),
            timeouts: 20 - rcodes.iter().map(|(_, n)| n).sum::<u32>(),
            rcodes: rcodes.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            latency_ms: (!rcodes.is_empty()).then_some(Latency { p50: 0.4, p95: 1.2, p99: 1.3, max: 1.3 }),
            ..ProtocolReport::default()
        };
        EndpointReport {
            endpoint: ServiceEndpoint {
                address: address.parse().unwrap(),
                port,
                node: node.map(str::to_string),
                pod: node.map(|n| format!("coredns-{n}")),
                ready: node.map(|_| verdict != EndpointVerdict::NotReady),
                serving: None,
                terminating: node.map(|_| verdict == EndpointVerdict::NotReady),
            },
            totals,
            answers: if answered > 0 { vec!["10.96.0.1".into()] } else { vec![] },
            protocols: BTreeMap::new(),
            verdict,
        }
    }

    #[test]
    fn endpoints_with_rcodes_readiness_and_ipv6() {
        std::env::set_var("NO_COLOR", "1");
        let report = DnsReport {
            probe: "dns",
            name: "kubernetes.default.svc.cluster.local.".into(),
            record_type: "A".into(),
            this_node: Some("node-a".into()),
            endpoints: vec![
                row("192.0.2.53", 53, Some("node-a"), EndpointVerdict::Ok, 20, &[("NOERROR", 20)]),
                row("192.0.2.54", 5353, Some("node-b"), EndpointVerdict::Failing, 0, &[("SERVFAIL", 20)]),
                row("2001:db8::53", 53, Some("node-c"), EndpointVerdict::NotReady, 0, &[]),
            ],
            services: vec![row("192.0.2.10", 53, None, EndpointVerdict::Degraded, 10, &[("NOERROR", 10)])],
            findings: vec![Finding {
                kind: FindingKind::ServerErrors,
                message: "192.0.2.54:5353 (coredns-node-b on node-b) answered SERVFAIL to 20 of 20 queries"
                    .into(),
                about: vec![],
            }],
            conntrack: None,
            udp_sockets: Default::default(),
            verdict: Health::Fault,
            other_names: vec![],
        };
        insta::assert_snapshot!(render_table(&report));
        // The same report as scripts read it.
        insta::assert_snapshot!(
            "endpoints_with_rcodes_readiness_and_ipv6_json",
            serde_json::to_string_pretty(&report).unwrap()
        );
    }
}
