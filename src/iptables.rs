//! `netprobe iptables`: flags to an input, the analysis, and its report (or cleanup script).

use std::io::Write;

use netprobe_probes::iptables::{self, Input, IptablesReport, Options, RulesetReport, Selection, Thresholds};
use netprobe_probes::net::iptables::Backend;
use netprobe_probes::Error;

use crate::cli::{IptablesArgs, IptablesBackend};
use crate::exit::Exit;
use crate::output::{self, Format};

/// How many rows of each list the table shows; JSON has them all.
const TOP: usize = 10;

pub fn run(args: IptablesArgs, format: Format) -> Result<Exit, Error> {
    let (input, selection, options) = plan(&args);
    if args.cleanup_script {
        let loaded = iptables::load(&input, selection)?;
        let mut out = std::io::stdout().lock();
        loaded.write_cleanup_script(&mut out, &options)?;
        // A full disk or a closed pipe must not pass for a complete script.
        out.flush().map_err(|e| Error::could_not_run("writing the cleanup script", e.to_string()))?;
        return Ok(Exit::Healthy);
    }
    let report = report(&args)?;
    output::report(format, &report, render_table);
    Ok(Exit::from_health(report.health()))
}

/// The flags as what to read, which rule sets, and the thresholds.
fn plan(args: &IptablesArgs) -> (Input, Selection, Options) {
    let input = match &args.file {
        Some(path) => Input::File(path.clone()),
        None => Input::Live,
    };
    let selection = Selection {
        ipv6: if args.ipv6 {
            Some(true)
        } else if args.ipv4 {
            Some(false)
        } else {
            None
        },
        backend: args.backend.map(|b| match b {
            IptablesBackend::Legacy => Backend::Legacy,
            IptablesBackend::Nft => Backend::Nft,
        }),
    };
    let options = Options {
        thresholds: Thresholds {
            max_copies: args.max_copies,
            max_duplicate_percent: args.max_duplicate_percent,
            min_duplicates: args.min_duplicates,
            max_rules: args.max_rules,
        },
        dedupe_stateful: args.dedupe_stateful,
    };
    (input, selection, options)
}

/// The report `netprobe iptables` prints (`netprobe doctor` runs it live on its node).
pub fn report(args: &IptablesArgs) -> Result<IptablesReport, Error> {
    let (input, selection, options) = plan(args);
    let loaded = iptables::load(&input, selection)?;
    let mut report = loaded.report(&options);
    if args.check_latency {
        report.check_latency = Some(loaded.check_latency(5)?);
    }
    if args.self_test {
        report.self_test = Some(iptables::self_test(iptables::self_test_tool(selection))?);
    }
    if args.apply {
        let applied = loaded.apply(&options)?;
        // The verdict is about the rules as they are now.
        let mut after = iptables::load(&input, selection)?.report(&options);
        (after.self_test, after.check_latency) = (report.self_test.take(), report.check_latency.take());
        after.applied = Some(applied);
        report = after;
    }
    iptables::decide(&mut report);
    Ok(report)
}

/// The verdict in a line: rules, duplicates and their share, each rule set's own (a share of
/// two rule sets together would be neither's: IPv4 13.4% and IPv6 0% are not 7.3%).
pub fn headline(report: &IptablesReport) -> String {
    let total: u64 = report.rulesets.iter().map(|r| r.total_rules).sum();
    let duplicates: u64 = report.rulesets.iter().map(|r| r.duplicate_rules).sum();
    let share = |r: &RulesetReport| {
        if r.total_rules > 0 {
            r.duplicate_rules as f64 * 100.0 / r.total_rules as f64
        } else {
            0.0
        }
    };
    match &report.rulesets[..] {
        [one] => format!(
            "{} rules, {} of them duplicates ({:.1}%), in 1 rule set",
            output::count(total),
            output::count(duplicates),
            share(one)
        ),
        many => format!(
            "{} rules, {} of them duplicates, in {} rule sets ({})",
            output::count(total),
            output::count(duplicates),
            many.len(),
            many.iter()
                .map(|r| format!("{} {:.1}%", r.family.word(), share(r)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What to do about duplicates, as the table and `netprobe doctor` say it.
pub const CLEANUP_HINT: &str =
    "back up (iptables-save > backup.rules), then netprobe iptables --cleanup-script > cleanup.rules, \
review it and apply it as its header says, or let netprobe iptables --apply check and apply it";

fn render_table(report: &IptablesReport) -> String {
    let duplicates: u64 = report.rulesets.iter().map(|r| r.duplicate_rules).sum();
    let mut text =
        format!("{}  {}\n", output::verdict(report.verdict.as_str(), report.health()), headline(report));
    text.push_str(&format!("source: {}\n", report.source));
    for note in &report.notes {
        text.push_str(&format!("note: {note}\n"));
    }
    for ruleset in &report.rulesets {
        text.push_str(&render_ruleset(ruleset, report.rulesets.len() > 1));
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
    if let Some(applied) = &report.applied {
        text.push_str(&format!(
            "\napplied: {} duplicate(s) removed from {} with {}; read back: {}\n",
            output::count(applied.removed),
            if applied.chains.is_empty() { "no chain".to_string() } else { applied.chains.join(", ") },
            applied.restore_command,
            if applied.verified {
                "every rewritten chain holds exactly its distinct rules"
            } else {
                "NOT as expected, look at the chains"
            }
        ));
    } else if duplicates > 0 {
        text.push_str(&format!("\nnext: {CLEANUP_HINT}\n"));
    }
    text
}

fn render_ruleset(r: &RulesetReport, several: bool) -> String {
    let family = r.family.word();
    let mut text = String::new();
    let version = match (&r.version, &r.backend) {
        (Some(v), Some(b)) if b == "nftables" && !v.is_empty() => format!(", nft {v}"),
        (_, Some(b)) if b == "nftables" => String::new(),
        (Some(v), Some(b)) => format!(", iptables {v} ({b})"),
        (Some(v), None) => format!(", iptables {v}"),
        _ => String::new(),
    };
    let from = r.save_command.as_deref().map(|c| format!(" from {c}")).unwrap_or_default();
    let line = if several { format!(" at line {}", r.first_line) } else { String::new() };
    text.push_str(&format!(
        "\n== {family}{from}{version}{line}: {} rules, {} duplicates, {}\n",
        output::count(r.total_rules),
        output::count(r.duplicate_rules),
        r.verdict.as_str()
    ));
    for reason in &r.reasons {
        text.push_str(&format!("  - {reason}\n"));
    }

    // The chains with duplicates; when there are none, just the biggest few.
    let with_duplicates = r.chains.iter().take_while(|c| c.duplicates > 0).count();
    let shown = if with_duplicates > 0 { with_duplicates.min(TOP) } else { r.chains.len().min(5) };
    let mut chains = output::table(&["table", "chain", "owner", "rules", "duplicates"]);
    for chain in r.chains.iter().take(shown) {
        chains.add_row(vec![
            chain.table.clone(),
            chain.chain.clone(),
            chain.owner.unwrap_or("-").to_string(),
            output::count(chain.rules),
            output::count(chain.duplicates),
        ]);
    }
    if !r.chains.is_empty() {
        text.push_str(&format!("\n{chains}\n"));
        if r.chains.len() > shown {
            text.push_str(&format!(" ... {} more chains (-o json lists all)\n", r.chains.len() - shown));
        }
    }
    if !r.duplicate_groups.is_empty() {
        let mut groups = output::table(&["copies", "chain", "rule"]);
        for group in r.duplicate_groups.iter().take(TOP) {
            groups.add_row(vec![
                output::count(group.copies),
                format!("{}/{}", group.table, group.chain),
                shorten(&group.rule, 100),
            ]);
        }
        text.push_str(&format!("\n{groups}\n"));
    }
    if !r.kube_router_hashes.is_empty() {
        text.push_str("\nby kube-router comment hash:\n");
        for group in r.kube_router_hashes.iter().take(TOP) {
            text.push_str(&format!(
                "  {}  {} copies in {}  \"{}\"\n",
                group.hash,
                output::count(group.copies),
                group.chains.join(", "),
                group.comment
            ));
        }
    }
    if !r.kept_stateful.is_empty() {
        let copies: u64 = r.kept_stateful.iter().map(|g| g.copies - 1).sum();
        let why: Vec<String> = r
            .kept_stateful
            .iter()
            .take(3)
            .map(|g| format!("{}/{}: {}", g.table, g.chain, g.stateful.as_deref().unwrap_or_default()))
            .collect();
        text.push_str(&format!(
            "\nkept by the cleanup: {copies} copies of {} rule(s) whose copies behave differently ({}); --dedupe-stateful removes them too\n",
            r.kept_stateful.len(),
            why.join("; ")
        ));
    }
    if !r.orphan_chains.is_empty() {
        let names: Vec<String> =
            r.orphan_chains.iter().take(5).map(|o| format!("{}/{}", o.table, o.chain)).collect();
        let more = r.orphan_chains.len().saturating_sub(5);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        text.push_str(&format!("\norphan chains (no rule jumps to them): {}{more}\n", names.join(", ")));
    }
    if let Some(why) = &r.explanation {
        text.push_str(&format!("\nwhy: {why}\n"));
    }
    if r.duplicate_rules > 0 {
        text.push_str(&format!("cleanup for this rule set: apply with {}\n", r.restore_command));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_rule_sets_one_bloated() {
        std::env::set_var("NO_COLOR", "1");
        let mut text = String::from(
            "# Generated by iptables-save v1.8.10 (nf_tables) on Mon\n*filter\n:INPUT ACCEPT [0:0]\n:KUBE-ROUTER-INPUT - [0:0]\n\
             :KUBE-KUBELET-CANARY - [0:0]\n-A INPUT -m comment --comment \"kube-router netpol - 4IA2OSFRMVNDXBVV\" -j KUBE-ROUTER-INPUT\n",
        );
        for _ in 0..150 {
            text.push_str("-A KUBE-ROUTER-INPUT -p tcp -m comment --comment \"allow LOCAL TCP traffic to node ports - LR7XO7NXDBGQJD2M\" -m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN\n");
        }
        text.push_str("-A INPUT -p udp -m statistic --mode nth --every 2 --packet 0 -j DROP\n-A INPUT -p udp -m statistic --mode nth --every 2 --packet 0 -j DROP\nCOMMIT\n");
        text.push_str("# Generated by ip6tables-save v1.8.10 (nf_tables) on Mon\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 2001:db8::/32 -j ACCEPT\nCOMMIT\n");
        let path = std::env::temp_dir().join(format!("netprobe-snapshot-{}.rules", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let loaded = iptables::load(&Input::File(path.clone()), Selection::default()).unwrap();
        let mut report = loaded.report(&Options::default());
        report.source = "node1.rules".into();
        std::fs::remove_file(&path).unwrap();
        insta::assert_snapshot!(render_table(&report));
        // The same report as scripts read it.
        insta::assert_snapshot!(
            "two_rule_sets_one_bloated_json",
            serde_json::to_string_pretty(&report).unwrap()
        );
    }
}
