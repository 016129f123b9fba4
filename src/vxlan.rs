//! `netprobe vxlan` and `netprobe agent`: flags to configs, and the mesh as a from x to matrix.

use netprobe_probes::vxlan::agent::{self, AgentConfig};
use netprobe_probes::vxlan::{self, Config, PairVerdict, VxlanReport};
use netprobe_probes::Error;

use crate::cli::{AgentArgs, VxlanArgs};
use crate::exit::Exit;
use crate::output::{self, Format};

/// The shared token: NETPROBE_TOKEN, or the file given.
fn token(file: Option<&std::path::Path>) -> Result<String, Error> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(format!("--token-file {}", path.display()), format!("cannot read: {e}"))
        })?,
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
    eprintln!("netprobe agent: serving on {}", args.listen);
    agent::serve(AgentConfig { listen: args.listen, token })?;
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
    let bad: Vec<_> = report.pairs.iter().filter(|p| p.verdict != PairVerdict::Ok).collect();
    let headline = if bad.is_empty() {
        format!("VXLAN on UDP {} passes in all {} direction(s)", report.port, report.pairs.len())
    } else {
        format!("{} of {} direction(s) fail on UDP {}", bad.len(), report.pairs.len(), report.port)
    };
    let mut text = format!(
        "{}  {headline} (VNI {}, {} probes each)\n\n",
        output::verdict(if bad.is_empty() { "ok" } else { "fault" }, report.verdict),
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
    if !bad.is_empty() {
        text.push('\n');
        for p in bad {
            text.push_str(&format!(
                "{} -> {}: {} (control UDP {})\n",
                p.from, p.to, p.diagnosis, p.control_udp
            ));
        }
    }
    text
}
