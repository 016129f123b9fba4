//! `netprobe conntrack`: flags to a config, the reading, and its report as a table or JSON.

use netprobe_agent::client::OnNode;
use netprobe_k8s::ApiConfig;
use netprobe_probes::conntrack::{self, Config, ConntrackReport, Count};
use netprobe_probes::Error;

use crate::cli::ConntrackArgs;
use crate::exit::Exit;
use crate::output::{self, Format};

pub fn run(args: ConntrackArgs, api: &ApiConfig, format: Format) -> Result<Exit, Error> {
    if let Some(node) = &args.node {
        // The same command, less --node, run by that node's agent on its own table.
        let argv = vec![
            "conntrack".to_string(),
            "--window".into(),
            format!("{}ms", args.window.as_millis()),
            "--top".into(),
            args.top.to_string(),
        ];
        return crate::remote::run(api, OnNode::Named(node.clone()), argv, format);
    }
    let report = report(&args)?;
    output::report(format, &report, render_table);
    Ok(Exit::from_health(report.health()))
}

/// The report without printing it (doctor's step).
pub fn report(args: &ConntrackArgs) -> Result<ConntrackReport, Error> {
    conntrack::run(&Config { window: args.window, top: usize::from(args.top) })
}

/// Verdict first, then the counters, who fills the table, and where to look next.
pub fn render_table(report: &ConntrackReport) -> String {
    let mut text =
        format!("{}  {}\n", output::verdict(report.verdict.as_str(), report.health()), report.summary);
    if report.entries.is_some() {
        let (w, s) = (&report.during_window, &report.since_start);
        let mut table = output::table(&["counter", &format!("in {} s", report.window_s), "since start"]);
        table.add_row(vec!["new flows dropped".into(), w.drop.to_string(), s.drop.to_string()]);
        table.add_row(vec![
            "evicted (early drop)".into(),
            w.early_drop.to_string(),
            s.early_drop.to_string(),
        ]);
        table.add_row(vec![
            "inserts failed".into(),
            w.insert_failed.to_string(),
            s.insert_failed.to_string(),
        ]);
        text.push('\n');
        text.push_str(&table.to_string());
        text.push('\n');
    }
    if let (Some(listed), Some(unreplied)) = (report.entries_listed, report.unreplied) {
        let column = |counts: &[Count], i: usize| {
            counts.get(i).map_or(String::new(), |c| format!("{} ({})", c.name, c.entries))
        };
        let rows = report.top_sources.len().max(report.top_destinations.len()).max(report.protocols.len());
        if rows > 0 {
            let mut table = output::table(&["source", "destination", "protocol"]);
            for i in 0..rows {
                table.add_row(vec![
                    column(&report.top_sources, i),
                    column(&report.top_destinations, i),
                    column(&report.protocols, i),
                ]);
            }
            text.push_str(&format!("\n{listed} entries listed, {unreplied} never answered\n"));
            text.push_str(&table.to_string());
            text.push('\n');
        }
    }
    if let Some(last) = &report.kernel_log.last {
        let ago =
            report.kernel_log.last_ago_s.map(|s| format!(", the last {s:.0} s ago")).unwrap_or_default();
        text.push_str(&format!(
            "\nkernel log: {} \"table full\" message(s){ago}: {last}\n",
            report.kernel_log.table_full
        ));
    }
    for note in &report.notes {
        text.push_str(&format!("\nnote: {note}\n"));
    }
    if let Some(next) = &report.next_step {
        text.push_str(&format!("\nnext: {next}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe_probes::conntrack::{judge, Evidence};
    use netprobe_probes::net::conntrack::{ConntrackStats, EntryTally, TableFullMessage, TableSize};
    use std::time::Duration;

    #[test]
    fn the_full_table() {
        std::env::set_var("NO_COLOR", "1");
        let mut tally = EntryTally { read: 262_144, unreplied: 0, ..EntryTally::default() };
        tally.sources.insert("127.0.0.1".into(), 262_144);
        tally.destinations.insert("127.1.0.1".into(), 2000);
        tally.destinations.insert("127.1.0.2".into(), 2000);
        tally.protocols.insert("tcp".into(), 262_144);
        let stats = ConntrackStats { drop: 3, early_drop: 0, insert_failed: 0, clash_resolved: Some(0) };
        let report = judge(Evidence {
            size: Some(TableSize { entries: 262_144, max: 262_144 }),
            now: stats,
            during: stats,
            window: Duration::from_secs(1),
            kernel_log: Ok((
                vec![TableFullMessage {
                    at_us: 9_000_000,
                    text: "nf_conntrack: nf_conntrack: table full in netns 4026532174, dropping packet"
                        .into(),
                    netns: Some(4_026_532_174),
                }],
                10_000_000,
            )),
            netns: Some(4_026_532_174),
            host_netns: true,
            entries: Ok(tally),
            top: 5,
        });
        insta::assert_snapshot!(render_table(&report));
        insta::assert_snapshot!("the_full_table_json", serde_json::to_string_pretty(&report).unwrap());
    }
}
