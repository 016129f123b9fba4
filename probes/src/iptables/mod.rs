//! `netprobe iptables`: rule bloat (duplicate rules, huge tables) in iptables-save output, live or
//! from a file, what is likely causing it, and a linear cleanup script.

mod analysis;
mod owner;
mod report;
pub mod save_format;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

pub use analysis::{analyse, check_bug_version, Analysis, Thresholds};
pub use owner::owner;
pub use report::{
    ChainRef, ChainSummary, CheckLatency, DuplicateGroup, HashGroup, IptablesReport, OtherRuleset, SelfTest,
    Verdict,
};

use crate::net::iptables as cmd;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// `iptables-save` of this host (or namespace).
    Live,
    /// A saved dump; `-` reads standard input.
    File(PathBuf),
}

/// A rule set read and counted, plus (live) the rule sets beside it.
pub struct Loaded {
    pub analysis: Analysis,
    pub source: String,
    /// (command, analysis) for ip6tables and the other backend, when they hold rules.
    pub others: Vec<(String, Analysis)>,
    live: bool,
}

pub fn load(input: &Input) -> Result<Loaded> {
    match input {
        Input::File(path) if path.as_os_str() == "-" => {
            let stdin = std::io::stdin();
            let analysis = from_reader(stdin.lock(), "standard input")?;
            Ok(Loaded { analysis, source: "standard input".into(), others: Vec::new(), live: false })
        }
        Input::File(path) => {
            let name = path.display().to_string();
            let file = std::fs::File::open(path)
                .map_err(|e| Error::invalid(name.clone(), format!("cannot open: {e}")))?;
            let analysis = from_reader(BufReader::with_capacity(1 << 20, file), &name)?;
            Ok(Loaded { analysis, source: name, others: Vec::new(), live: false })
        }
        Input::Live => load_live(),
    }
}

fn from_reader<R: BufRead>(reader: R, name: &str) -> Result<Analysis> {
    analyse(reader).map_err(|e| Error::invalid(name, e))
}

fn load_live() -> Result<Loaded> {
    let (version, backend) = cmd::version()?;
    let mut analysis = cmd::with_save_output("iptables-save", analyse)?;
    analysis.set_version_if_missing(&version, &backend);
    let other_backend = if backend == "legacy" { "iptables-nft-save" } else { "iptables-legacy-save" };
    let mut others = Vec::new();
    for command in ["ip6tables-save", other_backend] {
        if !cmd::exists(command) {
            continue;
        }
        // A missing kernel module or an unsupported family is not our failure: skip that set.
        if let Ok(other) = cmd::with_save_output(command, analyse) {
            if other.total_rules() > 0 {
                others.push((command.to_string(), other));
            }
        }
    }
    Ok(Loaded { analysis, source: format!("iptables-save ({backend})"), others, live: true })
}

impl Loaded {
    pub fn report(&self, thresholds: &Thresholds) -> IptablesReport {
        let mut report = self.analysis.report(self.source.clone(), thresholds);
        for (command, other) in &self.others {
            let other_report = other.report(command.clone(), thresholds);
            for reason in &other_report.reasons {
                report.reasons.push(format!("{command}: {reason}"));
            }
            // Mixed backends are a known cause, not bloat by themselves: say it, don't fail on it.
            if command.contains("legacy") || command.contains("nft") {
                let note = format!(
                    "{command} also holds {} rules: both iptables backends are in use, and a tool that \
                     checks one backend but writes the other adds a copy on every sync.",
                    other.total_rules()
                );
                report.explanation = Some(match report.explanation.take() {
                    Some(why) => format!("{why} {note}"),
                    None => note,
                });
            }
            report.other_rulesets.push(OtherRuleset {
                command: command.clone(),
                total_rules: other.total_rules(),
                duplicate_rules: other.duplicate_rules(),
            });
        }
        report.verdict = if report.reasons.is_empty() { Verdict::Ok } else { Verdict::Bloated };
        report
    }

    /// Times `iptables -C` for the most-copied rule of the live table, `runs` times. A `-C` that
    /// does not find a rule that is there is the kube-router duplication bug, reported as such.
    pub fn check_latency(&self, runs: u32) -> Result<CheckLatency> {
        if !self.live {
            return Err(Error::invalid("--check-latency", "times the live table: drop --file"));
        }
        let (table, chain, spec, _) = self
            .analysis
            .most_copied()
            .ok_or_else(|| Error::could_not_run("--check-latency", "the table has no rules to check"))?;
        let spec_args =
            save_format::arguments(spec).map_err(|e| Error::could_not_run("--check-latency", e))?;
        let mut args: Vec<&str> = vec!["-w", "5", "-t", table, "-C", chain];
        args.extend(spec_args.iter().map(|a| a.as_ref()));
        let mut times = Vec::new();
        for _ in 0..runs.max(1) {
            let (found, took) = cmd::run(&args)?;
            if !found {
                return Err(Error::could_not_run(
                    format!("iptables -t {table} -C {chain} ..."),
                    "iptables -C did not find a rule that iptables-save lists: this host has the -C bug (see --self-test)",
                ));
            }
            times.push(took.as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        Ok(CheckLatency {
            rule: format!("-t {table} -C {chain} {spec}"),
            runs: times.len() as u32,
            min_ms: crate::round3(times[0]),
            median_ms: crate::round3(times[times.len() / 2]),
            max_ms: crate::round3(times[times.len() - 1]),
        })
    }
}

/// Adds a kube-router-shaped rule (comment + addrtype + multiport) to a scratch chain, asks
/// `iptables -C` for it, and removes the chain again whatever happened.
pub fn self_test() -> Result<SelfTest> {
    let (version, backend) = cmd::version()?;
    let chain = format!("NETPROBE-SELFTEST-{}", std::process::id());
    let rule: &[&str] = &[
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        "netprobe self-test - NETPROBESELFTEST",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-m",
        "multiport",
        "--dports",
        "30000:32767",
        "-j",
        "RETURN",
    ];
    cmd::run(&["-w", "5", "-t", "filter", "-N", &chain])?;
    let outcome = (|| {
        cmd::run(&[&["-w", "5", "-t", "filter", "-A", &chain][..], rule].concat())?;
        cmd::run(&[&["-w", "5", "-t", "filter", "-C", &chain][..], rule].concat())
    })();
    let flushed = cmd::run(&["-w", "5", "-t", "filter", "-F", &chain]);
    let deleted = cmd::run(&["-w", "5", "-t", "filter", "-X", &chain]);
    let (found, _) = outcome?;
    flushed?;
    deleted?;
    Ok(SelfTest {
        check_works: found,
        iptables_version: format!("{version} ({backend})"),
        detail: if found {
            format!("iptables {version} ({backend}) found the rule it had just added: -C works here")
        } else {
            format!(
                "iptables {version} ({backend}) -C did not find the rule it had just added: kube-router and \
                 other tools that check before appending will duplicate rules on every sync; upgrade iptables"
            )
        },
    })
}
