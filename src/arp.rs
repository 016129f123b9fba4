//! `netprobe arp`: flags to a probe config, the probe, and its report as a table or JSON.

use std::time::Duration;

use netprobe_probes::arp::watch::{self, Claimant, WatchConfig, WatchEvent, WatchSummary};
use netprobe_probes::arp::{self, ArpReport, Config, Responder};
use netprobe_probes::Error;

use crate::cli::ArpArgs;
use crate::exit::Exit;
use crate::output::{self, Format};

pub fn run(args: ArpArgs, format: Format) -> Result<Exit, Error> {
    if args.watch {
        return run_watch(args, format);
    }
    let report = match &args.pcap {
        Some(path) => arp::from_capture(path, args.vip, args.nodes)?,
        None => arp::probe(&Config {
            target: args.vip,
            interface: args.interface,
            count: args.count,
            interval: args.interval.unwrap_or(Duration::from_millis(200)),
            wait: args.wait,
            source: args.source,
            nodes: args.nodes,
        })?,
    };
    output::emit(&match format {
        Format::Json => output::json(&report),
        Format::Table => render_table(&report),
    });
    Ok(Exit::from_health(report.health()))
}

/// Verdict first, then one row per MAC, then where to look next.
fn render_table(report: &ArpReport) -> String {
    let mut text =
        format!("{}  {}\n", output::verdict(report.verdict.as_str(), report.health()), report.summary);
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
        let with_announcements = report.responders.iter().any(|r| r.announcements > 0);
        let mut header = vec!["mac"];
        if with_nodes {
            header.push("node");
        }
        header.push("replies");
        if with_announcements {
            header.push("announced");
        }
        header.extend(["rtt min/avg/max", "vendor"]);
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
            if with_announcements {
                row.push(responder.announcements.to_string());
            }
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
    for note in &report.notes {
        text.push_str(&format!("\nnote: {note}\n"));
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

/// `--watch`: events as they happen (a line each), then the summary.
fn run_watch(args: ArpArgs, format: Format) -> Result<Exit, Error> {
    let print = |event: &WatchEvent| {
        output::emit(&match format {
            Format::Json => output::json(event),
            Format::Table => format!("{}\n", event_line(event)),
        })
    };
    let summary = match &args.pcap {
        Some(path) => watch::watch_capture(path, args.vip, args.nodes, print)?,
        None => watch::watch_live(
            &WatchConfig {
                target: args.vip,
                interface: args.interface,
                interval: args.interval.unwrap_or(Duration::from_secs(1)),
                duration: args.duration,
                source: args.source,
                nodes: args.nodes,
                tcp: args.tcp,
                tcp_timeout: args.tcp_timeout,
            },
            print,
        )?,
    };
    output::emit(&match format {
        Format::Json => output::json(&summary),
        Format::Table => summary_table(&summary),
    });
    Ok(Exit::from_health(summary.health()))
}

fn labelled(mac: &netprobe_probes::wire::MacAddr, node: &Option<String>) -> String {
    match node {
        Some(node) => format!("{mac} ({node})"),
        None => mac.to_string(),
    }
}

fn event_line(event: &WatchEvent) -> String {
    match event {
        WatchEvent::OwnerChange { at, from, to, from_node, to_node, seen_in } => format!(
            "{at}  OWNER-CHANGE  {} -> {} ({})",
            labelled(from, from_node),
            labelled(to, to_node),
            if *seen_in == "gratuitous" { "announced by gratuitous ARP" } else { "seen in replies" }
        ),
        WatchEvent::Gratuitous { at, mac, node } => format!("{at}  gratuitous    {}", labelled(mac, node)),
        WatchEvent::DuplicateStart { at, owners } => {
            let owners: Vec<String> =
                owners.iter().map(|Claimant { mac, node }| labelled(mac, node)).collect();
            format!("{at}  DUPLICATE     {} answer at once", owners.join(", "))
        }
        WatchEvent::DuplicateEnd { at } => format!("{at}  duplicate-end one MAC answers again"),
        WatchEvent::NoReplyStart { at } => format!("{at}  NO-REPLY      nobody answers"),
        WatchEvent::NoReplyEnd { at } => format!("{at}  no-reply-end  answers again"),
        WatchEvent::TcpSpike { at, target, connect_ms, error } => match (connect_ms, error) {
            (Some(ms), _) => format!("{at}  TCP-SPIKE     connect to {target} took {ms:.0} ms"),
            (None, Some(e)) => format!("{at}  TCP-SPIKE     connect to {target} failed: {e}"),
            (None, None) => format!("{at}  TCP-SPIKE     connect to {target}"),
        },
    }
}

fn summary_table(summary: &WatchSummary) -> String {
    let mut text =
        format!("\n{}  {}\n", output::verdict(summary.verdict.as_str(), summary.health()), summary.summary);
    if !summary.owners.is_empty() {
        let mut table = output::table(&["owner", "node", "held"]);
        for owner in &summary.owners {
            table.add_row(vec![
                owner.mac.to_string(),
                owner.node.clone().unwrap_or_else(|| "-".into()),
                format!("{:.1} s", owner.held_s),
            ]);
        }
        text.push_str(&format!("\n{table}\n"));
    }
    if let Some(tcp) = &summary.tcp {
        text.push_str(&format!(
            "\ntcp {}: {} connects, {} spikes ({} failed), {} within 2 s of an owner change\n",
            tcp.target, tcp.probes, tcp.spikes, tcp.failures, tcp.correlated_with_owner_change
        ));
    }
    for note in &summary.notes {
        text.push_str(&format!("\nnote: {note}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe_probes::arp::watch::Watcher;
    use netprobe_probes::arp::{Node, Tally};
    use netprobe_probes::wire::arp::{reply, request, ArpFrame};
    use netprobe_probes::wire::link::LinkType;
    use netprobe_probes::wire::MacAddr;
    use std::net::Ipv4Addr;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    // Locally administered: no vendor lookup, so the table does not depend on ieee-data.
    const SP1: MacAddr = MacAddr([0x02, 0, 0x5e, 0, 0x53, 0x11]);
    const SP2: MacAddr = MacAddr([0x02, 0, 0x5e, 0, 0x53, 0x12]);

    fn frame(bytes: &[u8]) -> ArpFrame {
        ArpFrame::from_link(LinkType::Ethernet, bytes).unwrap()
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(1_795_435_200_000 + v)
    }

    #[test]
    fn the_duplicate_table() {
        std::env::set_var("NO_COLOR", "1");
        let nodes = vec![Node { name: "sp1".into(), ip: Ipv4Addr::new(192, 0, 2, 11) }];
        let mut tally = Tally::live(VIP, nodes, US, Duration::from_secs(1));
        tally.observe(ms(0), &frame(&reply(SP1, Ipv4Addr::new(192, 0, 2, 11), OUR_MAC, US)));
        for round in 0..3 {
            tally.request_sent(ms(round * 200));
            tally.observe(ms(round * 200 + 1), &frame(&reply(SP1, VIP, OUR_MAC, US)));
            tally.observe(ms(round * 200 + 2), &frame(&reply(SP2, VIP, OUR_MAC, US)));
        }
        tally.observe(ms(700), &frame(&request(SP2, VIP, VIP)));
        let mut report = tally.finish();
        report.interface = Some("eth0".into());
        report.source_ip = Some(US);
        insta::assert_snapshot!(render_table(&report));
    }

    #[test]
    fn the_watch_summary() {
        std::env::set_var("NO_COLOR", "1");
        let mut w = Watcher::new(VIP, vec![], Some("192.0.2.100:80".into()));
        w.probe_sent(ms(0));
        w.observe(ms(1), &frame(&reply(SP1, VIP, OUR_MAC, US)));
        w.probe_sent(ms(1000));
        w.probe_sent(ms(2000));
        w.observe(ms(2500), &frame(&request(SP2, VIP, VIP)));
        w.tcp_result(ms(2000), Err("connection timed out".into()));
        let events: Vec<String> = w.take_events().iter().map(event_line).collect();
        let summary = w.finish(ms(4000));
        insta::assert_snapshot!(format!("{}\n{}", events.join("\n"), summary_table(&summary)));
    }
}
