//! `netprobe arp`: flags to a probe config, the probe, and its report as a table or JSON.

use netprobe_probes::arp::{self, ArpReport, Config, Responder};
use netprobe_probes::Error;

use crate::cli::ArpArgs;
use crate::exit::Exit;
use crate::output::{self, Format};

pub fn run(args: ArpArgs, format: Format) -> Result<Exit, Error> {
    let report = match &args.pcap {
        Some(path) => arp::from_capture(path, args.vip, args.nodes)?,
        None => arp::probe(&Config {
            target: args.vip,
            interface: args.interface,
            count: args.count,
            interval: args.interval,
            wait: args.wait,
            source: args.source,
            nodes: args.nodes,
        })?,
    };
    output::emit(&match format {
        Format::Json => output::json(&report),
        Format::Table => render_table(&report),
    });
    Ok(Exit::from_verdict(report.verdict.is_healthy()))
}

/// Verdict first, then one row per MAC, then where to look next.
fn render_table(report: &ArpReport) -> String {
    let mut text = format!(
        "{}  {}\n",
        output::verdict(report.verdict.as_str(), report.verdict.is_healthy()),
        report.summary
    );
    let origin = match (&report.interface, &report.capture_file) {
        (Some(interface), _) => {
            let source = report.source_ip.map(|ip| format!(" from {ip}")).unwrap_or_default();
            format!("{} request(s) on {interface}{source}", report.sent)
        }
        (None, Some(file)) => format!("{} request(s) in {file}", report.sent),
        (None, None) => format!("{} request(s)", report.sent),
    };
    text.push_str(&origin);
    text.push('\n');

    if !report.responders.is_empty() {
        // Optional columns appear only when they say something.
        let with_nodes = !report.nodes.is_empty();
        let with_notes = report.responders.iter().any(|r| !r.ethernet_sources.is_empty());
        let mut header = vec!["mac"];
        if with_nodes {
            header.push("node");
        }
        header.extend(["replies", "rtt min/avg/max", "vendor"]);
        if with_notes {
            header.push("note");
        }
        let mut table = output::table(&header);
        for responder in &report.responders {
            let mut row = vec![responder.mac.to_string()];
            if with_nodes {
                row.push(responder.node.clone().unwrap_or_else(|| "UNKNOWN HOST".into()));
            }
            row.push(responder.replies.to_string());
            row.push(match responder.rtt_ms {
                Some(rtt) => format!("{:.2}/{:.2}/{:.2} ms", rtt.min, rtt.avg, rtt.max),
                None => "-".into(),
            });
            row.push(vendor(responder));
            if with_notes {
                row.push(note(responder));
            }
            table.add_row(row);
        }
        text.push('\n');
        text.push_str(&table.to_string());
        text.push('\n');
    }
    let unresolved: Vec<String> =
        report.nodes.iter().filter(|n| n.macs.is_empty()).map(|n| format!("{} ({})", n.name, n.ip)).collect();
    if !unresolved.is_empty() {
        text.push_str(&format!("\nno ARP reply from node(s): {}\n", unresolved.join(", ")));
    }
    if let Some(next) = &report.next_step {
        text.push_str(&format!("\nnext: {next}\n"));
    }
    text
}

fn vendor(responder: &Responder) -> String {
    match (&responder.vendor, responder.locally_administered) {
        (Some(vendor), _) => vendor.clone(),
        (None, true) => "(locally administered)".into(),
        (None, false) => "-".into(),
    }
}

fn note(responder: &Responder) -> String {
    if responder.ethernet_sources.is_empty() {
        return String::new();
    }
    let sources: Vec<String> = responder.ethernet_sources.iter().map(ToString::to_string).collect();
    format!("Ethernet source {} differs from the ARP sender", sources.join(", "))
}
