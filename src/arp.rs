//! `netprobe arp`: flags to a probe config, the probe, and its report as a table or JSON.

use std::time::Duration;

use netprobe_agent::client::OnNode;
use netprobe_k8s::{self as k8s, ApiConfig};
use netprobe_probes::arp::range::{AddressVerdict, Range, RangeConfig, RangeReport};
use netprobe_probes::arp::services::{self, ServiceVip, ServicesReport};
use netprobe_probes::arp::watch::{self, Claimant, WatchConfig, WatchEvent, WatchSummary};
use netprobe_probes::arp::{self, ArpReport, Config, Node, Responder};
use netprobe_probes::net::interface;
use netprobe_probes::Error;

use crate::cli::{ArpArgs, ArpMode};
use crate::exit::Exit;
use crate::output::{self, Format};

pub fn run(mut args: ArpArgs, api: &ApiConfig, format: Format) -> Result<Exit, Error> {
    let mode = args.mode()?;
    let vip = match mode {
        ArpMode::Services => return run_services(args, api, format),
        ArpMode::Range(range) => return run_range(range, &args, format),
        ArpMode::Watch(vip) | ArpMode::Once(vip) => vip,
    };
    let family = |ip: std::net::IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let other = args.nodes.iter().map(|n| n.ip).chain(args.source).find(|ip| ip.is_ipv4() != vip.is_ipv4());
    if let Some(ip) = other {
        return Err(Error::invalid(
            format!("{ip}"),
            format!(
                "{} while the VIP {vip} is {}: give --node and --source addresses of the VIP's family",
                family(ip),
                family(vip)
            ),
        ));
    }
    // Live and without --node: the cluster's nodes name the responders, when there is an API.
    let mut label_note = None;
    if args.nodes.is_empty() && args.pcap.is_none() && k8s::api_configured(api) {
        let on = args.interface.clone().or_else(|| interface::route_to(vip).ok().map(|r| r.interface));
        if let Some(on) = on {
            let (nodes, note) = cluster_nodes(api, IMPLICIT_API_LIMIT);
            (args.nodes, label_note) = (labels_on(&nodes, &on, vip), note);
        }
    }
    if let ArpMode::Watch(_) = mode {
        if let Some(note) = &label_note {
            eprintln!("netprobe: note: {note}");
        }
        return run_watch(vip, args, format);
    }
    let mut report = match &args.pcap {
        Some(path) => arp::from_capture(path, vip, args.nodes)?,
        None => arp::probe(&Config {
            target: vip,
            interface: args.interface,
            count: args.count,
            interval: args.interval.unwrap_or(Duration::from_millis(200)),
            wait: args.wait,
            source: args.source,
            nodes: args.nodes,
            unicast: !args.no_unicast,
        })?,
    };
    report.notes.extend(label_note);
    output::report(format, &report, render_table);
    Ok(Exit::from_health(report.health()))
}

/// `--range`: every address of a pool asked, and the ones already owned.
fn run_range(range: Range, args: &ArpArgs, format: Format) -> Result<Exit, Error> {
    let source = match args.source {
        Some(std::net::IpAddr::V6(ip)) => {
            return Err(Error::invalid(
                format!("--source {ip}"),
                "--range scans IPv4 pools: give an IPv4 source",
            ))
        }
        Some(std::net::IpAddr::V4(ip)) => Some(ip),
        None => None,
    };
    let report = arp::range::scan(&RangeConfig {
        range,
        interface: args.interface.clone(),
        count: args.count,
        interval: args.interval.unwrap_or(Duration::from_millis(20)),
        wait: args.wait,
        source,
    })?;
    output::report(format, &report, render_range);
    Ok(Exit::from_health(report.health()))
}

/// The verdict, then one row per owned address; free addresses are only counted.
fn render_range(report: &RangeReport) -> String {
    let duplicates = report.owned.iter().filter(|o| o.verdict == AddressVerdict::Duplicate).count();
    let (word, headline) = if report.owned.is_empty() {
        (
            "ok",
            format!(
                "all {} addresses of {} are free: nothing answers ARP for them",
                report.addresses, report.range
            ),
        )
    } else {
        (
            "fault",
            format!(
                "{} of {} addresses of {} already answer ARP: {} in use, {duplicates} duplicate",
                report.owned.len(),
                report.addresses,
                report.range,
                report.owned.len() - duplicates
            ),
        )
    };
    let mut text = format!("{}  {headline}\n", output::verdict(word, report.verdict));
    text.push_str(&format!(
        "{} request(s) per address on {} from {}\n",
        report.count,
        report.interface.as_deref().unwrap_or("-"),
        report.source_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into())
    ));
    if !report.owned.is_empty() {
        let mut table = output::table(&["address", "verdict", "answered by"]);
        for owned in &report.owned {
            let word = owned.verdict.as_str();
            table.add_row(vec![
                owned.address.to_string(),
                if owned.verdict == AddressVerdict::Duplicate {
                    word.to_uppercase()
                } else {
                    word.to_string()
                },
                owned.macs.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", "),
            ]);
        }
        text.push('\n');
        text.push_str(&table.to_string());
        text.push_str(
            "\n\nnext: an address that answers before MetalLB assigns it is held by another host (a static address, a DHCP lease, another load balancer): find it by its MAC (switch MAC table, `ip neigh` on the nodes), or take the address out of the pool\n",
        );
    }
    text
}

/// How long a probe that only wants node names waits for an API nobody asked it to use.
const IMPLICIT_API_LIMIT: Duration = Duration::from_secs(5);

/// The cluster's Nodes, or none and a note saying why: names are a help, never a reason to stop.
fn cluster_nodes(api: &ApiConfig, limit: Duration) -> (Vec<k8s::ClusterNode>, Option<String>) {
    match k8s::blocking_within(limit, k8s::nodes(api)) {
        Ok(nodes) => (nodes, None),
        Err(e) => (Vec::new(), Some(format!("responders are not named by node: {e}"))),
    }
}

/// The Nodes whose InternalIP is of `vip`'s family and on `interface`'s segment, as responder labels.
fn labels_on(nodes: &[k8s::ClusterNode], interface: &str, vip: std::net::IpAddr) -> Vec<Node> {
    services::node_labels(nodes, interface, vip, |ip| interface::route_to(ip).ok())
}

/// `--service` and `--all-services`: the Services' VIPs on this host's segments, each probed.
fn run_services(args: ArpArgs, api: &ApiConfig, format: Format) -> Result<Exit, Error> {
    if let Some(on) = services_elsewhere(&args, api)? {
        return crate::remote::run(api, on, services_argv(&args), format);
    }
    let report = services_report(args, api)?;
    output::report(format, &report, render_services);
    Ok(Exit::from_health(report.verdict))
}

/// Where the VIPs are probed when not from here: with --via-api, or when none of them is on one of
/// this host's segments (a laptop), by the agent of the node closest to them.
fn services_elsewhere(args: &ArpArgs, api: &ApiConfig) -> Result<Option<OnNode>, Error> {
    let only = args.service.as_ref().map(|(namespace, name)| (namespace.as_str(), name.as_str()));
    if !args.via_api && args.interface.is_some() {
        return Ok(None);
    }
    let services = k8s::blocking(k8s::load_balancers(api, only))?;
    let vips: Vec<std::net::IpAddr> = services.iter().flat_map(|s| s.ips.iter().copied()).collect();
    let (targets, _) = services::plan(&services, None, |ip| interface::route_to(ip).ok());
    let elsewhere = args.via_api || (targets.is_empty() && !vips.is_empty() && k8s::api_configured(api));
    Ok(elsewhere.then_some(OnNode::ClosestTo(vips)))
}

/// The arp command an agent runs for a caller elsewhere.
fn services_argv(args: &ArpArgs) -> Vec<String> {
    let mut argv = vec!["arp".to_string()];
    match &args.service {
        Some((namespace, name)) => argv.extend(["--service".into(), format!("{namespace}/{name}")]),
        None => argv.push("--all-services".into()),
    }
    argv.extend(["--count".into(), args.count.to_string()]);
    argv.extend(["--wait".into(), format!("{}ms", args.wait.as_millis())]);
    if let Some(interval) = args.interval {
        argv.extend(["--interval".into(), format!("{}ms", interval.as_millis())]);
    }
    for node in &args.nodes {
        argv.extend(["--node".into(), format!("{}={}", node.name, node.ip)]);
    }
    argv
}

/// The report `netprobe arp --service` and `--all-services` print (`netprobe doctor` runs the
/// latter).
pub fn services_report(args: ArpArgs, api: &ApiConfig) -> Result<ServicesReport, Error> {
    let only = args.service.as_ref().map(|(namespace, name)| (namespace.as_str(), name.as_str()));
    let services = k8s::blocking(k8s::load_balancers(api, only))?;
    let (targets, skipped) =
        services::plan(&services, args.interface.as_deref(), |ip| interface::route_to(ip).ok());
    if let (Some((namespace, name)), true) = (&args.service, targets.is_empty()) {
        let why: Vec<String> = skipped
            .iter()
            .map(|s| match s.vip {
                Some(vip) => format!("{vip}: {}", s.reason),
                None => s.reason.clone(),
            })
            .collect();
        return Err(Error::could_not_run(format!("probing service {namespace}/{name}"), why.join("; ")));
    }
    // The nodes are read once; each VIP is labelled by the nodes on its own segment.
    let (nodes, label_note) = if args.nodes.is_empty() && !targets.is_empty() {
        cluster_nodes(api, k8s::LOOKUP_LIMIT)
    } else {
        (Vec::new(), None)
    };
    let configs: Vec<Config> = targets
        .iter()
        .map(|t| Config {
            target: t.vip,
            interface: Some(t.interface.clone()),
            count: args.count,
            interval: args.interval.unwrap_or(Duration::from_millis(200)),
            wait: args.wait,
            // A source or --node of the other family than this VIP's cannot ask for it.
            source: args.source.filter(|s| s.is_ipv4() == t.vip.is_ipv4()),
            nodes: if args.nodes.is_empty() {
                labels_on(&nodes, &t.interface, t.vip)
            } else {
                args.nodes.iter().filter(|n| n.ip.is_ipv4() == t.vip.is_ipv4()).cloned().collect()
            },
            unicast: !args.no_unicast,
        })
        .collect();
    let reports = services::probe_each(&configs)?;
    let vips = targets
        .into_iter()
        .zip(reports)
        .map(|(target, mut report)| {
            report.notes.extend(label_note.clone());
            ServiceVip { service: target.service, report }
        })
        .collect();
    Ok(ServicesReport::new(vips, skipped))
}

/// The verdict in a line: how many VIPs are ok, duplicate, silent or skipped.
pub fn services_headline(report: &ServicesReport) -> String {
    let count = |v: arp::Verdict| report.vips.iter().filter(|x| x.report.verdict == v).count();
    let mut headline = format!(
        "{} VIP(s) probed: {} ok, {} duplicate, {} no-reply",
        report.vips.len(),
        count(arp::Verdict::Ok),
        count(arp::Verdict::Duplicate),
        count(arp::Verdict::NoReply)
    );
    for rarer in [arp::Verdict::OwnerChanged, arp::Verdict::BroadcastOnly] {
        let n = count(rarer);
        if n > 0 {
            headline.push_str(&format!(", {n} {}", rarer.as_str()));
        }
    }
    if !report.skipped.is_empty() {
        headline.push_str(&format!("; {} skipped", report.skipped.len()));
    }
    headline
}

/// Who answered for a VIP: node names where known, else MACs.
pub fn answered_by(report: &ArpReport) -> String {
    let by: Vec<String> =
        report.responders.iter().map(|r| r.node.clone().unwrap_or_else(|| r.mac.to_string())).collect();
    if by.is_empty() {
        "-".into()
    } else {
        by.join(", ")
    }
}

/// One VIP: its full table under the Service's name. Several: one row per VIP, then what is wrong.
fn render_services(report: &ServicesReport) -> String {
    if let ([one], []) = (report.vips.as_slice(), report.skipped.as_slice()) {
        let table = render_table(&one.report);
        let (verdict, rest) = table.split_once('\n').unwrap_or((&table, ""));
        return format!(
            "{verdict}\nservice {}, VIP {} from its status.loadBalancer.ingress\n{rest}",
            one.service, one.report.target
        );
    }
    let headline = services_headline(report);
    let word = match report.verdict {
        netprobe_probes::Health::Ok => "ok",
        netprobe_probes::Health::Fault => "fault",
        netprobe_probes::Health::CouldNotRun => "incomplete",
    };
    let mut text = format!("{}  {headline}\n", output::verdict(word, report.verdict));
    if !report.vips.is_empty() {
        let mut table = output::table(&["service", "vip", "verdict", "answered by"]);
        for vip in &report.vips {
            // A node's name says more than its MAC here; the MACs are in the JSON and in
            // `netprobe arp VIP`.
            table.add_row(vec![
                vip.service.clone(),
                vip.report.target.to_string(),
                vip.report.verdict.as_str().to_string(),
                answered_by(&vip.report),
            ]);
        }
        text.push('\n');
        text.push_str(&table.to_string());
        text.push('\n');
    }
    let wrong: Vec<&ServiceVip> =
        report.vips.iter().filter(|v| v.report.verdict != arp::Verdict::Ok).collect();
    if !wrong.is_empty() {
        text.push('\n');
        for vip in wrong {
            text.push_str(&format!("{} {}: {}\n", vip.service, vip.report.target, vip.report.summary));
            if let Some(next) = &vip.report.next_step {
                text.push_str(&format!("  next: {next}\n"));
            }
        }
    }
    if !report.skipped.is_empty() {
        text.push('\n');
        for skipped in &report.skipped {
            let vip = skipped.vip.map(|v| format!(" {v}")).unwrap_or_default();
            text.push_str(&format!("skipped {}{vip}: {}\n", skipped.service, skipped.reason));
        }
    }
    let mut notes: Vec<&String> = report.vips.iter().flat_map(|v| &v.report.notes).collect();
    notes.dedup();
    for note in notes {
        text.push_str(&format!("\nnote: {note}\n"));
    }
    text
}

/// Verdict first, then one row per MAC, then where to look next.
fn render_table(report: &ArpReport) -> String {
    let mut text =
        format!("{}  {}\n", output::verdict(report.verdict.as_str(), report.health()), report.summary);
    let origin = match (&report.interface, &report.capture_file) {
        (Some(interface), _) => {
            let source = report.source_ip.map(|ip| format!(" from {ip}")).unwrap_or_default();
            let unicast = report.responders.iter().filter_map(|r| r.unicast).map(|u| u.sent).max();
            let then = unicast.map(|n| format!(", then {n} to each responder's MAC,")).unwrap_or_default();
            format!("{} broadcast request(s){then} on {interface}{source}", report.sent)
        }
        (None, Some(file)) => {
            let unicast: u32 = report.responders.iter().filter_map(|r| r.unicast).map(|u| u.sent).sum();
            match unicast {
                0 => format!("{} request(s) in {file}", report.sent),
                n => format!("{} broadcast request(s) and {n} to one MAC in {file}", report.sent),
            }
        }
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
        let with_unicast = report.responders.iter().any(|r| r.unicast.is_some());
        header.push("replies");
        if with_unicast {
            header.push("unicast");
        }
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
            if with_unicast {
                // Replies to the requests sent to this MAC alone, of those sent.
                row.push(responder.unicast.map_or("-".into(), |u| format!("{}/{}", u.replies, u.sent)));
            }
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
fn run_watch(vip: std::net::IpAddr, args: ArpArgs, format: Format) -> Result<Exit, Error> {
    let print = |event: &WatchEvent| output::report(format, event, |e| format!("{}\n", event_line(e)));
    let summary = match &args.pcap {
        Some(path) => watch::watch_capture(path, vip, args.nodes, print)?,
        None => watch::watch_live(
            &WatchConfig {
                target: vip,
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
    output::report(format, &summary, summary_table);
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
    use netprobe_probes::wire::arp::{reply, request};
    use netprobe_probes::wire::link::LinkType;
    use netprobe_probes::wire::neighbour::NeighbourFrame;
    use netprobe_probes::wire::MacAddr;
    use std::net::Ipv4Addr;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    // Locally administered: no vendor lookup, so the table does not depend on ieee-data.
    const SP1: MacAddr = MacAddr([0x02, 0, 0x5e, 0, 0x53, 0x11]);
    const SP2: MacAddr = MacAddr([0x02, 0, 0x5e, 0, 0x53, 0x12]);

    fn frame(bytes: &[u8]) -> NeighbourFrame {
        NeighbourFrame::from_link(LinkType::Ethernet, bytes).unwrap()
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(1_795_435_200_000 + v)
    }

    #[test]
    fn the_range_table() {
        std::env::set_var("NO_COLOR", "1");
        use netprobe_probes::arp::range::OwnedAddress;
        let mac = |last| netprobe_probes::wire::MacAddr([0, 0, 0x5e, 0, 0x53, last]);
        let report = RangeReport {
            probe: "arp",
            range: "192.0.2.100-192.0.2.120".into(),
            interface: Some("eth0".into()),
            source_ip: Some("192.0.2.1".parse().unwrap()),
            addresses: 21,
            count: 3,
            verdict: netprobe_probes::Health::Fault,
            owned: vec![
                OwnedAddress {
                    address: "192.0.2.105".parse().unwrap(),
                    verdict: AddressVerdict::InUse,
                    macs: vec![mac(0x11)],
                },
                OwnedAddress {
                    address: "192.0.2.110".parse().unwrap(),
                    verdict: AddressVerdict::Duplicate,
                    macs: vec![mac(0x12), mac(0x11)],
                },
            ],
        };
        insta::assert_snapshot!(render_range(&report));
        // The same report as scripts read it.
        insta::assert_snapshot!("the_range_table_json", serde_json::to_string_pretty(&report).unwrap());
    }

    #[test]
    fn the_duplicate_table() {
        std::env::set_var("NO_COLOR", "1");
        let nodes =
            vec![Node { name: "sp1".into(), ip: std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 11)) }];
        let mut tally = Tally::live(
            std::net::IpAddr::from(VIP),
            nodes,
            std::net::IpAddr::from(US),
            Duration::from_secs(1),
        );
        tally.observe(ms(0), &frame(&reply(SP1, Ipv4Addr::new(192, 0, 2, 11), OUR_MAC, US)));
        for round in 0..3 {
            tally.request_sent(ms(round * 200));
            tally.observe(ms(round * 200 + 1), &frame(&reply(SP1, VIP, OUR_MAC, US)));
            tally.observe(ms(round * 200 + 2), &frame(&reply(SP2, VIP, OUR_MAC, US)));
        }
        tally.observe(ms(700), &frame(&request(SP2, VIP, VIP)));
        // The unicast round: SP1 answers requests to its MAC, SP2 does not.
        for round in 0..3 {
            tally.unicast_sent(SP1);
            tally.unicast_sent(SP2);
            tally.observe(ms(1400 + round * 200 + 1), &frame(&reply(SP1, VIP, OUR_MAC, US)));
        }
        let mut report = tally.finish();
        report.interface = Some("eth0".into());
        report.source_ip = Some(std::net::IpAddr::from(US));
        insta::assert_snapshot!(render_table(&report));
        // The same report as scripts read it.
        insta::assert_snapshot!("the_duplicate_table_json", serde_json::to_string_pretty(&report).unwrap());
    }

    #[test]
    fn the_broadcast_only_table() {
        std::env::set_var("NO_COLOR", "1");
        let mut tally = Tally::live(
            std::net::IpAddr::from(VIP),
            vec![],
            std::net::IpAddr::from(US),
            Duration::from_secs(1),
        );
        for round in 0..3 {
            tally.request_sent(ms(round * 200));
            tally.observe(ms(round * 200 + 1), &frame(&reply(SP1, VIP, OUR_MAC, US)));
        }
        for _ in 0..3 {
            tally.unicast_sent(SP1);
        }
        let mut report = tally.finish();
        report.interface = Some("eth0".into());
        report.source_ip = Some(std::net::IpAddr::from(US));
        insta::assert_snapshot!(render_table(&report));
    }

    #[test]
    fn the_watch_summary() {
        std::env::set_var("NO_COLOR", "1");
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], Some("192.0.2.100:80".into()));
        w.probe_sent(ms(0));
        w.observe(ms(1), &frame(&reply(SP1, VIP, OUR_MAC, US)));
        w.probe_sent(ms(1000));
        w.probe_sent(ms(2000));
        w.observe(ms(2500), &frame(&request(SP2, VIP, VIP)));
        w.tcp_result(ms(2000), Err("connection timed out".into()));
        let events: Vec<String> = w.take_events().iter().map(event_line).collect();
        let summary = w.finish(ms(4000));
        insta::assert_snapshot!(format!("{}\n{}", events.join("\n"), summary_table(&summary)));
        // The same report as scripts read it.
        insta::assert_snapshot!("the_watch_summary_json", serde_json::to_string_pretty(&summary).unwrap());
    }
}
