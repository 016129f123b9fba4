//! `netprobe dns`: flags to targets (given or discovered), the probe, and its report.

use std::net::SocketAddr;

use netprobe_probes::dns::{self, Config, DnsReport, Protocol, Target};
use netprobe_probes::{k8s, Error, Health};

use crate::cli::{DnsArgs, DnsProtocol};
use crate::exit::Exit;
use crate::output::{self, Format};

pub fn run(args: DnsArgs, format: Format) -> Result<Exit, Error> {
    let name = dns::parse_name(&args.name)?;
    let record_type = dns::parse_type(&args.record_type)?;
    let (endpoints, service) = match &args.endpoints {
        Some(list) => (list.iter().map(|a| Target::new(*a)).collect(), args.service_ip),
        None => {
            let found = k8s::discover_blocking(&args.namespace, &args.service, "dns")?;
            if found.endpoints.is_empty() {
                return Err(Error::could_not_run(
                    format!("discovering {}/{}", args.namespace, args.service),
                    format!(
                        "no endpoints: is the DNS deployment running? (kubectl -n {} get endpointslices -l kubernetes.io/service-name={})",
                        args.namespace, args.service
                    ),
                ));
            }
            let service = args.service_ip.or(found.cluster_ip.map(|ip| SocketAddr::new(ip, 53)));
            (found.endpoints, service)
        }
    };
    let protocols = match args.protocol {
        DnsProtocol::Udp => vec![Protocol::Udp],
        DnsProtocol::Tcp => vec![Protocol::Tcp],
        DnsProtocol::Both => vec![Protocol::Udp, Protocol::Tcp],
    };
    let report = dns::run(Config {
        endpoints,
        service,
        name,
        record_type,
        count: args.count,
        interval: args.interval,
        concurrency: args.concurrency,
        timeout: args.timeout,
        protocols,
        slow: args.slow,
        this_node: args.node.filter(|n| !n.is_empty()),
    })?;
    output::emit(&match format {
        Format::Json => output::json(&report),
        Format::Table => render_table(&report),
    });
    Ok(Exit::from_health(report.verdict))
}

fn render_table(report: &DnsReport) -> String {
    let bad = report.endpoints.iter().filter(|e| e.verdict != dns::EndpointVerdict::Ok).count();
    let mut headline = if bad == 0 {
        format!("all {} endpoint(s) answer alike", report.endpoints.len())
    } else {
        format!("{bad} of {} endpoint(s) not ok", report.endpoints.len())
    };
    if let Some(service) = &report.service {
        let failed = service.totals.sent - service.totals.answered;
        headline.push_str(&format!("; the Service failed {failed} of {} queries", service.totals.sent));
    }
    let mut text = format!(
        "{}  {headline}\n",
        output::verdict(if report.verdict == Health::Ok { "ok" } else { "fault" }, report.verdict)
    );
    let node = report.this_node.as_deref().map(|n| format!(", from node {n}")).unwrap_or_default();
    text.push_str(&format!("{} {}{node}\n\n", report.name, report.record_type));

    let protocols: Vec<String> =
        report.endpoints.first().map(|e| e.protocols.keys().cloned().collect()).unwrap_or_default();
    let mut header = vec!["endpoint", "node", "pod", "verdict"];
    let answered_columns: Vec<String> = if protocols.is_empty() {
        vec!["answered".into()]
    } else {
        protocols.iter().map(|p| format!("{p} answered")).collect()
    };
    header.extend(answered_columns.iter().map(String::as_str));
    header.extend(["p50/p95 ms", "answers"]);
    let mut table = output::table(&header);
    for (label, e) in report
        .endpoints
        .iter()
        .map(|e| (format!("{}:{}", e.address, e.port), e))
        .chain(report.service.iter().map(|s| (format!("service {}:{}", s.address, s.port), s)))
    {
        let mut row = vec![
            label,
            e.node.clone().unwrap_or_else(|| "-".into()),
            e.pod.clone().unwrap_or_else(|| "-".into()),
            // Shout the bad ones: they are what a person scans the table for.
            match e.verdict {
                dns::EndpointVerdict::Ok => "ok".to_string(),
                bad => bad.as_str().to_uppercase(),
            },
        ];
        if protocols.is_empty() {
            row.push(format!("{}/{}", e.totals.answered, e.totals.sent));
        } else {
            for p in &protocols {
                row.push(
                    e.protocols.get(p).map(|s| format!("{}/{}", s.answered, s.sent)).unwrap_or_default(),
                );
            }
        }
        row.push(match e.totals.latency_ms {
            Some(l) => format!("{:.1}/{:.1}", l.p50, l.p95),
            None => "-".into(),
        });
        row.push(if e.answers.is_empty() { "-".into() } else { e.answers.join(" ") });
        table.add_row(row);
    }
    text.push_str(&table.to_string());
    text.push('\n');
    if !report.findings.is_empty() {
        text.push('\n');
        for finding in &report.findings {
            text.push_str(&format!("{}: {}\n", finding.kind, finding.message));
        }
    }
    text
}
