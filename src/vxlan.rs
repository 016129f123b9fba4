//! `netprobe vxlan` and `netprobe agent`: flags to configs, and the mesh as a from x to matrix.

use netprobe_probes::vxlan::agent::{self, AgentConfig};
use netprobe_probes::vxlan::{self, Config, PairVerdict, VxlanReport};
use netprobe_probes::{Error, Health};

use crate::cli::{AgentArgs, VxlanArgs};
use crate::exit::Exit;
use crate::output::{self, Format};

/// The shared token: NETPROBE_TOKEN, or the file given.
fn token(file: Option<&std::path::Path>) -> Result<String, Error> {
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

pub fn agent(args: AgentArgs) -> Result<Exit, Error> {
    let token = token(args.token_file.as_deref())?;
    let peer_port = args.peer_port.unwrap_or(args.listen.port());
    agent::serve(AgentConfig { listen: args.listen, token, peer_port }, |bound, kept| {
        let kept = if kept.is_empty() { "none".to_string() } else { kept.join(", ") };
        eprintln!("netprobe agent: serving on {bound}; capabilities kept: {kept} (every other one dropped)");
    })?;
    Ok(Exit::Healthy)
}

pub fn run(args: VxlanArgs, format: Format) -> Result<Exit, Error> {
    let nodes = args.nodes.iter().map(|n| vxlan::parse_node(n)).collect::<Result<Vec<_>, _>>()?;
    let report = vxlan::run(Config {
        nodes,
        token: token(None)?,
        port: args.port,
        vni: args.vni,
        count: args.count,
        timeout: args.timeout,
    })?;
    output::emit(&match format {
        Format::Json => output::json(&report),
        Format::Table => render_table(&report),
    });
    Ok(Exit::from_health(report.verdict))
}

fn render_table(report: &VxlanReport) -> String {
    let bad: Vec<_> = report.pairs.iter().filter(|p| p.verdict.health() != Health::Ok).collect();
    let unverified = report.pairs.iter().filter(|p| p.verdict == PairVerdict::Unverified).count();
    let mut headline = if bad.is_empty() {
        format!("VXLAN on UDP {} passes in all {} direction(s)", report.port, report.pairs.len())
    } else {
        format!("{} of {} direction(s) fail on UDP {}", bad.len(), report.pairs.len(), report.port)
    };
    if unverified > 0 {
        headline.push_str(&format!("; delivery past the firewall unverified in {unverified}"));
    }
    let word = if report.verdict == Health::Ok { "ok" } else { "fault" };
    let mut text = format!(
        "{}  {headline} (VNI {}, {} probes each)\n\n",
        output::verdict(word, report.verdict),
        report.vni,
        report.count
    );
    // The matrix: one row per source, one column per destination.
    let mut nodes: Vec<std::net::Ipv4Addr> = Vec::new();
    for p in &report.pairs {
        for ip in [p.from, p.to] {
            if !nodes.contains(&ip) {
                nodes.push(ip);
            }
        }
    }
    let header: Vec<String> =
        std::iter::once("from \\ to".to_string()).chain(nodes.iter().map(ToString::to_string)).collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = output::table(&header);
    for from in &nodes {
        let mut row = vec![from.to_string()];
        for to in &nodes {
            row.push(match report.pairs.iter().find(|p| p.from == *from && p.to == *to) {
                None => "-".into(),
                Some(p) if p.verdict == PairVerdict::Ok => format!("ok {}/{}", p.arrived, p.sent),
                Some(p) => format!("{} {}/{}", p.verdict.as_str().to_uppercase(), p.arrived, p.sent),
            });
        }
        table.add_row(row);
    }
    text.push_str(&table.to_string());
    text.push('\n');
    let explained: Vec<_> = report.pairs.iter().filter(|p| p.verdict != PairVerdict::Ok).collect();
    if !explained.is_empty() {
        text.push('\n');
        for p in explained {
            let control = match p.control_udp {
                vxlan::ControlUdp::Ok => "ok",
                vxlan::ControlUdp::Lost => "lost",
            };
            text.push_str(&format!("{} -> {}: {} (control UDP {control})\n", p.from, p.to, p.diagnosis));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe_probes::vxlan::api::{CollectResponse, GrownRule, SendResponse};
    use netprobe_probes::vxlan::{judge, Config, DEFAULT_VNI};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[test]
    fn the_matrix_and_its_diagnoses() {
        std::env::set_var("NO_COLOR", "1");
        let config = Config {
            nodes: vec![],
            token: String::new(),
            port: 8472,
            vni: DEFAULT_VNI,
            count: 5,
            timeout: Duration::ZERO,
        };
        let (a, b, c) =
            (Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(203, 0, 113, 2), Ipv4Addr::new(192, 0, 2, 3));
        let sent = |left| SendResponse {
            sent: 5,
            left_source: left,
            control_left: 5,
            send_error: None,
            dropping_rules: vec![],
            counters_error: None,
        };
        let arrived = |n, rules: Vec<GrownRule>, error: Option<&str>| CollectResponse {
            arrived: n,
            control_arrived: 5,
            dropping_rules: rules,
            counters_error: error.map(str::to_string),
        };
        let drop =
            GrownRule { rule: "-t filter -A INPUT -p udp -m udp --dport 8472 -j DROP".into(), packets: 5 };
        let pairs = vec![
            judge(&config, a, b, &sent(5), &arrived(0, vec![], None)),
            judge(&config, a, c, &sent(5), &arrived(5, vec![], None)),
            judge(&config, b, a, &sent(5), &arrived(5, vec![], Some("nft: not installed"))),
            judge(&config, b, c, &sent(5), &arrived(5, vec![drop], None)),
            judge(&config, c, a, &sent(5), &arrived(5, vec![], None)),
            judge(&config, c, b, &sent(5), &arrived(5, vec![], None)),
        ];
        let verdict = Health::worst(pairs.iter().map(|p| p.verdict.health()));
        let report = VxlanReport { probe: "vxlan", port: 8472, vni: DEFAULT_VNI, count: 5, verdict, pairs };
        insta::assert_snapshot!(render_table(&report));
    }
}
