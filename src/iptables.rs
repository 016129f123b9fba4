//! `netprobe iptables`: flags to an input, the analysis, and its report (or cleanup script).

use netprobe_probes::iptables::{self, Input, IptablesReport, Thresholds};
use netprobe_probes::Error;

use crate::cli::IptablesArgs;
use crate::exit::Exit;
use crate::output::{self, Format};

/// How many rows of each list the table shows; JSON has them all.
const TOP: usize = 10;

pub fn run(args: IptablesArgs, format: Format) -> Result<Exit, Error> {
    let input = match &args.file {
        Some(path) => Input::File(path.clone()),
        None => Input::Live,
    };
    let loaded = iptables::load(&input)?;
    if args.cleanup_script {
        let mut out = std::io::stdout().lock();
        // A closed pipe is the reader's choice, not our failure.
        let _ = loaded.analysis.write_cleanup_script(&mut out);
        return Ok(Exit::Healthy);
    }
    let thresholds = Thresholds {
        max_copies: args.max_copies,
        max_duplicate_percent: args.max_duplicate_percent,
        max_rules: args.max_rules,
    };
    let mut report = loaded.report(&thresholds);
    if args.check_latency {
        report.check_latency = Some(loaded.check_latency(5)?);
    }
    if args.self_test {
        let test = iptables::self_test()?;
        if !test.check_works {
            report.reasons.push(test.detail.clone());
            report.verdict = iptables::Verdict::Bloated;
        }
        report.self_test = Some(test);
    }
    output::emit(&match format {
        Format::Json => output::json(&report),
        Format::Table => render_table(&report),
    });
    Ok(Exit::from_health(report.verdict.health()))
}

fn render_table(report: &IptablesReport) -> String {
    let share = if report.total_rules > 0 {
        report.duplicate_rules as f64 * 100.0 / report.total_rules as f64
    } else {
        0.0
    };
    let mut text = format!(
        "{}  {} rules, {} of them duplicates ({share:.1}%)\n",
        output::verdict(report.verdict.as_str(), report.verdict.health()),
        output::count(report.total_rules),
        output::count(report.duplicate_rules),
    );
    let version = match (&report.version, &report.backend) {
        (Some(v), Some(b)) => format!(", iptables {v} ({b})"),
        _ => String::new(),
    };
    text.push_str(&format!("source: {}{version}\n", report.source));
    for reason in &report.reasons {
        text.push_str(&format!("  - {reason}\n"));
    }

    // The chains with duplicates; when there are none, just the biggest few.
    let with_duplicates = report.chains.iter().take_while(|c| c.duplicates > 0).count();
    let shown = if with_duplicates > 0 { with_duplicates.min(TOP) } else { report.chains.len().min(5) };
    let mut chains = output::table(&["table", "chain", "owner", "rules", "duplicates"]);
    for chain in report.chains.iter().take(shown) {
        chains.add_row(vec![
            chain.table.clone(),
            chain.chain.clone(),
            chain.owner.unwrap_or("-").to_string(),
            output::count(chain.rules),
            output::count(chain.duplicates),
        ]);
    }
    if !report.chains.is_empty() {
        text.push_str(&format!("\n{chains}\n"));
        if report.chains.len() > shown {
            text.push_str(&format!(" ... {} more chains (-o json lists all)\n", report.chains.len() - shown));
        }
    }

    if !report.duplicate_groups.is_empty() {
        let mut groups = output::table(&["copies", "chain", "rule"]);
        for group in report.duplicate_groups.iter().take(TOP) {
            groups.add_row(vec![
                output::count(group.copies),
                format!("{}/{}", group.table, group.chain),
                shorten(&group.rule, 100),
            ]);
        }
        text.push_str(&format!("\n{groups}\n"));
    }
    if !report.kube_router_hashes.is_empty() {
        text.push_str("\nby kube-router comment hash:\n");
        for group in report.kube_router_hashes.iter().take(TOP) {
            text.push_str(&format!(
                "  {}  {} copies in {}  \"{}\"\n",
                group.hash,
                output::count(group.copies),
                group.chains.join(", "),
                group.comment
            ));
        }
    }
    for other in &report.other_rulesets {
        text.push_str(&format!(
            "\nalso: {} holds {} rules ({} duplicates)\n",
            other.command,
            output::count(other.total_rules),
            output::count(other.duplicate_rules)
        ));
    }
    if !report.orphan_chains.is_empty() {
        let names: Vec<String> =
            report.orphan_chains.iter().take(5).map(|o| format!("{}/{}", o.table, o.chain)).collect();
        let more = report.orphan_chains.len().saturating_sub(5);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        text.push_str(&format!("\norphan chains (no rule jumps to them): {}{more}\n", names.join(", ")));
    }
    if let Some(latency) = &report.check_latency {
        text.push_str(&format!(
            "\niptables -C takes {:.1} ms (median of {}, max {:.1} ms) for: {}\n",
            latency.median_ms,
            latency.runs,
            latency.max_ms,
            shorten(&latency.rule, 100)
        ));
    }
    if let Some(test) = &report.self_test {
        text.push_str(&format!("\nself-test: {}\n", test.detail));
    }
    if let Some(why) = &report.explanation {
        text.push_str(&format!("\nwhy: {why}\n"));
    }
    if report.duplicate_rules > 0 {
        text.push_str(
            "\nnext: back up (iptables-save > backup.rules), then netprobe iptables --cleanup-script > cleanup.rules, \
             review it, and apply it with iptables-restore --noflush < cleanup.rules\n",
        );
    }
    text
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max - 3).collect();
    format!("{cut}...")
}
