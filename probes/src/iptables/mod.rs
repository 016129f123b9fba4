//! `netprobe iptables`: rule bloat (duplicate rules, huge tables) in iptables-save output, live or
//! from a file, for every family and backend that holds rules, what is likely causing it, and a
//! linear cleanup script (applied only with --apply, after checking nothing changed).

mod analysis;
pub mod nft;
mod owner;
mod report;
pub mod save_format;

use std::io::BufReader;
use std::path::PathBuf;

pub use analysis::{analyse, check_bug_version, Analysis, Thresholds};
pub use owner::owner;
pub use report::{
    Applied, ChainRef, ChainSummary, CheckLatency, DuplicateGroup, Family, HashGroup, IptablesReport,
    RulesetReport, SelfTest, Verdict,
};
pub use save_format::Header;

use crate::net::iptables::{self as cmd, Backend, Tool};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The `*-save` commands of this host (or namespace).
    Live,
    /// A saved dump; `-` reads standard input.
    File(PathBuf),
}

/// Which rule sets to look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only IPv6 (`Some(true)`) or only IPv4 (`Some(false)`).
    pub ipv6: Option<bool>,
    pub backend: Option<Backend>,
}

impl Selection {
    fn allows(self, family: Family, backend: Option<&str>) -> bool {
        let family_ok = match self.ipv6 {
            None => true,
            // nftables' inet tables hold both families.
            Some(_) if family == Family::Inet => true,
            Some(v6) => v6 == (family == Family::Ipv6),
        };
        let backend_ok = match self.backend {
            None => true,
            Some(b) => backend == Some(b.name()),
        };
        family_ok && backend_ok
    }
}

/// One rule set and where it came from.
pub struct LoadedSet {
    pub analysis: Analysis,
    /// The tool that printed it (live); its binary runs the self-test, -C timings and --apply.
    pub tool: Option<Tool>,
    pub restore_command: String,
}

/// The rule sets read, after selection.
pub struct Loaded {
    pub sets: Vec<LoadedSet>,
    pub source: String,
    pub notes: Vec<String>,
}

pub fn load(input: &Input, selection: Selection) -> Result<Loaded> {
    let mut loaded = match input {
        Input::File(path) if path.as_os_str() == "-" => {
            let stdin = std::io::stdin();
            from_reader(stdin.lock(), "standard input")?
        }
        Input::File(path) => {
            let name = path.display().to_string();
            crate::net::input::require_regular_file(path)
                .map_err(|e| Error::invalid(name.clone(), e.to_string()))?;
            let file = std::fs::File::open(path)
                .map_err(|e| Error::invalid(name.clone(), format!("cannot open: {e}")))?;
            from_reader(BufReader::with_capacity(1 << 16, file), &name)?
        }
        Input::Live => load_live(selection)?,
    };
    let before = loaded.sets.len();
    loaded.sets.retain(|s| selection.allows(s.analysis.family(), s.analysis.backend()));
    if loaded.sets.is_empty() && before > 0 {
        return Err(Error::invalid(
            loaded.source.clone(),
            "no rule set of the family and backend asked for (-4/-6, --backend) in it",
        ));
    }
    Ok(loaded)
}

fn from_reader<R: std::io::BufRead>(mut reader: R, name: &str) -> Result<Loaded> {
    // What the input is, from its start: iptables-save (streamed, it may be a million lines),
    // or an nft listing, or something people paste for it that is neither.
    let start = {
        let chunk = reader.fill_buf().map_err(|e| Error::invalid(name, format!("cannot read: {e}")))?;
        String::from_utf8_lossy(&chunk[..chunk.len().min(4096)]).into_owned()
    };
    if nft::looks_like_listing(&start) {
        return nft_from_reader(reader, name);
    }
    if let Some(what) = not_a_rule_dump(&start) {
        return Err(Error::invalid(name, what));
    }
    let sets = analyse(reader).map_err(|e| Error::invalid(name, e))?;
    let mut notes = Vec::new();
    if sets.iter().any(|s| s.list_format) {
        notes.push(
            "read as `iptables -S` output: it has no counters and names no table; each listing's table is told by the built-in chains of its -P lines (filter when they say nothing else)"
                .to_string(),
        );
    }
    for table in sets.iter().filter_map(|s| s.cut_short.as_deref()) {
        notes.push(format!(
            "the input ends inside table {table} without COMMIT (cut short?): what is there was analysed, and no cleanup script is written from it"
        ));
    }
    if sets.len() > 1 {
        notes.push(format!("{} rule sets in one input, analysed apart (never merged)", sets.len()));
    }
    let sets = sets
        .into_iter()
        .map(|analysis| {
            let restore_command = restore_for(&analysis);
            LoadedSet { analysis, tool: None, restore_command }
        })
        .collect();
    Ok(Loaded { sets, source: name.to_string(), notes })
}

/// An `nft list ruleset` listing, read whole: one rule set per nft family.
fn nft_from_reader<R: std::io::BufRead>(mut reader: R, name: &str) -> Result<Loaded> {
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .map_err(|e| Error::invalid(name, format!("cannot read as text: {e}")))?;
    let listing = nft::parse(&text).map_err(|e| Error::invalid(name, e))?;
    let sets: Vec<LoadedSet> =
        nft::analyses(&listing, "nft list ruleset", None, &[]).into_iter().map(native_set).collect();
    let mut notes = vec!["read as `nft list ruleset` output: native nftables tables (kube-proxy's nftables mode, firewalld), no counters compared".to_string()];
    if !listing.iptables_nft.is_empty() {
        notes.push(format!(
            "{} managed by iptables-nft: left to iptables-nft-save (give its output for those)",
            listing.iptables_nft.join(", ")
        ));
    }
    if sets.is_empty() {
        return Err(Error::invalid(name, "an nft listing with no native table in it (only iptables-nft's)"));
    }
    Ok(Loaded { sets, source: name.to_string(), notes })
}

/// A native nftables rule set: no restore command writes it (nft deletes rules by handle).
fn native_set(analysis: Analysis) -> LoadedSet {
    LoadedSet { analysis, tool: None, restore_command: "nft -f".into() }
}

/// What an input that is not a rule dump is, in a sentence with what to give instead; `None`
/// when it may be one.
fn not_a_rule_dump(start: &str) -> Option<String> {
    let first = start.lines().map(str::trim).find(|l| !l.is_empty())?;
    if first.starts_with("{\"nftables\"") || first.starts_with("{ \"nftables\"") {
        Some("this is `nft -j list ruleset` JSON: give `nft list ruleset` (text) instead".into())
    } else if first.starts_with("Chain ") && first.contains("(policy")
        || first.starts_with("Chain ") && first.contains("references)")
    {
        Some("this is `iptables -L` output, which leaves out what rules match on: give `iptables-save` (or `iptables -S`) instead".into())
    } else {
        None
    }
}

/// The restore command for a rule set read from a file: family and backend from its header.
fn restore_for(analysis: &Analysis) -> String {
    Tool { ipv6: analysis.family() == Family::Ipv6, backend: analysis.backend().and_then(Backend::from_name) }
        .restore()
}

/// Every family and backend of this host that holds rules (or the default iptables-save when none
/// does), each read by its own `*-save`.
fn load_live(selection: Selection) -> Result<Loaded> {
    let split = cmd::exists("iptables-legacy-save") && cmd::exists("iptables-nft-save");
    let backends: Vec<Option<Backend>> =
        if split { vec![Some(Backend::Nft), Some(Backend::Legacy)] } else { vec![None] };
    let mut sets = Vec::new();
    let mut first_error = None;
    for backend in backends {
        if selection.backend.is_some() && split && backend != selection.backend {
            continue;
        }
        for ipv6 in [false, true] {
            if selection.ipv6.is_some_and(|want| want != ipv6) {
                continue;
            }
            let tool = Tool { ipv6, backend };
            match read_tool(tool) {
                Ok(analysis) => {
                    sets.push(LoadedSet { analysis, tool: Some(tool), restore_command: tool.restore() })
                }
                // An unsupported family or backend (a missing kernel module) is not our failure,
                // unless nothing at all can be read.
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    let mut notes = Vec::new();
    // Native nftables tables, which no iptables-save shows.
    if selection.backend.is_none() {
        // The tables iptables-nft-save printed are iptables-nft's: read there, not again.
        let read: Vec<String> = sets
            .iter()
            .filter(|s| s.analysis.backend() == Some("nf_tables"))
            .flat_map(|s| {
                let family = if s.analysis.family() == Family::Ipv6 { "ip6" } else { "ip" };
                s.analysis.table_names().map(move |t| format!("{family} {t}"))
            })
            .collect();
        match read_nft(&read) {
            Ok(native) => {
                sets.extend(native.into_iter().filter(|s| selection.allows(s.family(), None)).map(native_set))
            }
            Err(why) => notes.push(why),
        }
    }
    if sets.is_empty() {
        return Err(
            first_error.unwrap_or_else(|| Error::could_not_run("reading iptables", "no iptables tool ran"))
        );
    }
    let with_rules: Vec<usize> = (0..sets.len()).filter(|&i| sets[i].analysis.total_rules() > 0).collect();
    let keep = if with_rules.is_empty() { vec![0] } else { with_rules };
    let mut index = 0;
    sets.retain(|_| {
        index += 1;
        keep.contains(&(index - 1))
    });
    let backends: std::collections::BTreeSet<&str> = sets
        .iter()
        .filter(|s| !s.analysis.is_native_nftables())
        .filter_map(|s| s.analysis.backend())
        .collect();
    if backends.len() > 1 {
        notes.push(
            "both iptables backends hold rules: a tool that checks one backend but writes the other adds a copy on every sync"
                .to_string(),
        );
    }
    Ok(Loaded { sets, source: "live".into(), notes })
}

/// This host's native nftables tables (`nft list ruleset`), or why they could not be read, as a
/// note: iptables' own sets are read all the same.
fn read_nft(read_elsewhere: &[String]) -> std::result::Result<Vec<Analysis>, String> {
    if !cmd::exists("nft") {
        return Err("nft is not installed: native nftables tables (kube-proxy's nftables mode, firewalld) were not read".into());
    }
    let text =
        crate::net::firewall::run_bounded("nft", &["list", "ruleset"], std::time::Duration::from_secs(30))
            .map_err(|e| format!("nft list ruleset failed ({e}): native nftables tables were not read"))?;
    let listing = nft::parse(&text).map_err(|e| {
        format!("nft list ruleset could not be read ({e}): native nftables tables were not read")
    })?;
    let version = cmd::nft_version();
    Ok(nft::analyses(&listing, "nft list ruleset", version.as_deref(), read_elsewhere))
}

fn read_tool(tool: Tool) -> Result<Analysis> {
    let save = tool.save();
    let mut sets = cmd::with_save_output(&save, &[], analyse)?;
    let mut analysis = if sets.is_empty() {
        return Err(Error::could_not_run(save, "printed nothing"));
    } else {
        sets.remove(0)
    };
    let (version, backend) = cmd::version(&tool.binary())?;
    let family = if tool.ipv6 { Family::Ipv6 } else { Family::Ipv4 };
    analysis.set_live_source(Header { command: save, version, backend: Some(backend), family });
    Ok(analysis)
}

/// What the report and the actions need besides the rule sets.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub thresholds: Thresholds,
    pub dedupe_stateful: bool,
}

impl Loaded {
    /// The report of every rule set, its verdict decided by [`decide`].
    pub fn report(&self, options: &Options) -> IptablesReport {
        let rulesets = self
            .sets
            .iter()
            .map(|s| s.analysis.report(&options.thresholds, s.restore_command.clone()))
            .collect();
        let mut report = IptablesReport {
            probe: "iptables",
            source: self.source.clone(),
            verdict: Verdict::Ok,
            rulesets,
            notes: self.notes.clone(),
            check_latency: None,
            self_test: None,
            applied: None,
        };
        decide(&mut report);
        report
    }

    /// The one rule set a cleanup script or --apply is for: the only one with duplicates. Never
    /// one cut short: its script would flush chains and leave out the rules the input lacks.
    pub fn cleanup_target(&self) -> Result<&LoadedSet> {
        if let Some(native) =
            self.sets.iter().find(|s| s.analysis.is_native_nftables() && s.analysis.duplicate_rules() > 0)
        {
            let table =
                native.analysis.most_copied().map(|(t, c, _, _)| format!("{t} {c}")).unwrap_or_default();
            return Err(Error::invalid(
                "--cleanup-script",
                format!("the copies are in native nftables ({table}), which iptables-restore does not write: list them with `nft -a list chain {table}` and remove each extra copy with `nft delete rule {} handle N`", table.rsplit_once(' ').map_or(table.as_str(), |(t, _)| t)),
            ));
        }
        if let Some(table) = self.sets.iter().find_map(|s| s.analysis.cut_short.as_deref()) {
            return Err(Error::invalid(
                "--cleanup-script",
                format!("the input ends inside table {table} without COMMIT: a script from it would drop the rules it lacks; give the whole dump"),
            ));
        }
        let dirty: Vec<&LoadedSet> = self.sets.iter().filter(|s| s.analysis.duplicate_rules() > 0).collect();
        match dirty[..] {
            [one] => Ok(one),
            [] => self.sets.iter().find(|s| !s.analysis.is_native_nftables()).ok_or_else(|| {
                Error::invalid(
                    "--cleanup-script",
                    "only native nftables tables were read: nothing for iptables-restore",
                )
            }),
            _ => {
                let which: Vec<String> = dirty
                    .iter()
                    .map(|s| format!("{} ({})", s.analysis.family().word(), s.restore_command))
                    .collect();
                Err(Error::invalid(
                    "--cleanup-script",
                    format!(
                        "{} rule sets hold duplicates: {}; a script feeds one restore command, so pick one with -4/-6 and --backend",
                        dirty.len(),
                        which.join(", ")
                    ),
                ))
            }
        }
    }

    /// Times `iptables -C` for the most-copied rule of the live table, `runs` times. A `-C` that
    /// does not find a rule that is there is the kube-router duplication bug, reported as such.
    pub fn check_latency(&self, runs: u32) -> Result<CheckLatency> {
        let set = self.cleanup_target()?;
        let tool =
            set.tool.ok_or_else(|| Error::invalid("--check-latency", "times the live table: drop --file"))?;
        let (table, chain, spec, _) = set
            .analysis
            .most_copied()
            .ok_or_else(|| Error::could_not_run("--check-latency", "the table has no rules to check"))?;
        let spec_args =
            save_format::arguments(spec).map_err(|e| Error::could_not_run("--check-latency", e))?;
        let mut args: Vec<&str> = vec!["-w", "5", "-t", table, "-C", chain];
        args.extend(spec_args.iter().map(|a| a.as_ref()));
        let binary = tool.binary();
        let mut times = Vec::new();
        for _ in 0..runs.max(1) {
            let (found, took) = cmd::run(&binary, &args)?;
            if !found {
                return Err(Error::could_not_run(
                    format!("{binary} -t {table} -C {chain} ..."),
                    "-C did not find a rule that the save command lists: this host has the -C bug (see --self-test)",
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

    /// Writes the cleanup script of the target rule set to `out`.
    pub fn write_cleanup_script<W: std::io::Write>(&self, out: &mut W, options: &Options) -> Result<()> {
        let set = self.cleanup_target()?;
        set.analysis
            .write_cleanup_script(out, &set.restore_command, options.dedupe_stateful)
            .map_err(|e| Error::could_not_run("writing the cleanup script", e.to_string()))
    }

    /// Applies the cleanup to the live rule set: re-reads each chain it will rewrite right before,
    /// refuses if any changed since it was read, feeds one restore per table, and reads them back.
    pub fn apply(&self, options: &Options) -> Result<Applied> {
        let set = self.cleanup_target()?;
        let tool =
            set.tool.ok_or_else(|| Error::invalid("--apply", "changes the live tables: drop --file"))?;
        let plan = set.analysis.cleanup_plan(options.dedupe_stateful);
        if plan.is_empty() {
            return Ok(Applied {
                restore_command: set.restore_command.clone(),
                chains: vec![],
                removed: 0,
                verified: true,
            });
        }
        let mut tables: Vec<&str> = plan.iter().map(|(t, _, _, _)| t.as_str()).collect();
        tables.dedup();
        // 1. Nothing changed since the analysis: the script would otherwise drop new rules.
        for table in &tables {
            let now = read_table(tool, table)?;
            for (t, chain, _, _) in plan.iter().filter(|(t, _, _, _)| t == table) {
                let then = set.analysis.chain_state(t, chain);
                let current = now.chain_state(t, chain);
                if then != current {
                    let count = |s: Option<(u64, u64)>| {
                        s.map(|(_, n)| n.to_string()).unwrap_or_else(|| "gone".into())
                    };
                    return Err(Error::could_not_run(
                        "--apply",
                        format!(
                            "{t}/{chain} changed since it was read ({} rules then, {} now): nothing was applied; run it again",
                            count(then),
                            count(current)
                        ),
                    ));
                }
            }
        }
        // 2. One restore per table, each atomic.
        let mut script = Vec::new();
        set.analysis
            .write_cleanup_script(&mut script, &set.restore_command, options.dedupe_stateful)
            .map_err(|e| Error::could_not_run("--apply", e.to_string()))?;
        let text = String::from_utf8_lossy(&script);
        for table in &tables {
            let part = table_part(&text, table);
            cmd::restore(&set.restore_command, part.as_bytes()).map_err(|e| {
                Error::could_not_run(
                    format!("--apply to {table}"),
                    format!("{e} (tables before it were applied)"),
                )
            })?;
        }
        // 3. Read back: every rewritten chain holds exactly its distinct rules.
        let mut verified = true;
        for table in &tables {
            let after = read_table(tool, table)?;
            for (t, chain, _, want) in plan.iter().filter(|(t, _, _, _)| t == table) {
                verified &= after.chain_state(t, chain).map(|(_, n)| n) == Some(*want);
            }
        }
        Ok(Applied {
            restore_command: set.restore_command.clone(),
            chains: plan.iter().map(|(t, c, _, _)| format!("{t}/{c}")).collect(),
            removed: plan.iter().map(|(_, _, now, after)| now - after).sum(),
            verified,
        })
    }
}

/// One table of this host, read now.
fn read_table(tool: Tool, table: &str) -> Result<Analysis> {
    let mut sets = cmd::with_save_output(&tool.save(), &["-t", table], analyse)?;
    sets.pop().ok_or_else(|| Error::could_not_run(format!("reading {table}"), "printed nothing"))
}

/// The lines of a cleanup script from `*table` to its COMMIT.
fn table_part(script: &str, table: &str) -> String {
    let start = format!("*{table}");
    let mut out = String::new();
    let mut inside = false;
    for line in script.lines() {
        if line == start {
            inside = true;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
            if line == "COMMIT" {
                break;
            }
        }
    }
    out
}

/// The one place the iptables verdict is decided: the worst rule set's, and `check-broken` when
/// the self-test found `iptables -C` blind to a rule it was just given.
pub fn decide(report: &mut IptablesReport) {
    let mut verdict = if report.rulesets.iter().any(|r| r.verdict == Verdict::Bloated) {
        Verdict::Bloated
    } else {
        Verdict::Ok
    };
    if report.self_test.as_ref().is_some_and(|t| !t.check_works) && verdict == Verdict::Ok {
        verdict = Verdict::CheckBroken;
    }
    report.verdict = verdict;
}

/// The tool of the rule set the self-test is about: the selected one, or the default.
pub fn self_test_tool(selection: Selection) -> Tool {
    Tool { ipv6: selection.ipv6 == Some(true), backend: selection.backend }
}

/// Adds a kube-router-shaped rule (comment + addrtype + multiport) to a scratch chain, asks
/// `-C` for it, and removes the chain again whatever happened, all with `tool`'s binary.
pub fn self_test(tool: Tool) -> Result<SelfTest> {
    let binary = tool.binary();
    let (version, backend) = cmd::version(&binary)?;
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
    let run = |args: &[&str]| cmd::run(&binary, &[&["-w", "5", "-t", "filter"][..], args].concat());
    run(&["-N", &chain])?;
    let outcome =
        run(&[&["-A", &chain][..], rule].concat()).and_then(|_| run(&[&["-C", &chain][..], rule].concat()));
    let flushed = run(&["-F", &chain]);
    let deleted = run(&["-X", &chain]);
    let (found, _) = outcome?;
    flushed?;
    deleted?;
    Ok(SelfTest {
        command: binary.clone(),
        check_works: found,
        iptables_version: format!("{version} ({backend})"),
        detail: if found {
            format!("{binary} {version} ({backend}) found the rule it had just added: -C works here")
        } else {
            format!(
                "{binary} {version} ({backend}) -C did not find the rule it had just added: kube-router and \
                 other tools that check before appending will duplicate rules on every sync; upgrade iptables"
            )
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_split_per_table() {
        let script = "# header\n*filter\n-F A\n-A A -j ACCEPT\nCOMMIT\n*nat\n-F B\nCOMMIT\n";
        assert_eq!(table_part(script, "nat"), "*nat\n-F B\nCOMMIT\n");
        assert_eq!(table_part(script, "filter"), "*filter\n-F A\n-A A -j ACCEPT\nCOMMIT\n");
        assert_eq!(table_part(script, "raw"), "");
    }

    #[test]
    fn files_of_two_rule_sets_need_a_choice_for_their_script() {
        let text = "# Generated by iptables-save v1.8.7 (legacy) on Mon\n*filter\n:INPUT ACCEPT [0:0]\n\
                    -A INPUT -j ACCEPT\n-A INPUT -j ACCEPT\nCOMMIT\n\
                    # Generated by ip6tables-save v1.8.7 (legacy) on Mon\n*filter\n:INPUT ACCEPT [0:0]\n\
                    -A INPUT -j DROP\n-A INPUT -j DROP\nCOMMIT\n";
        let loaded = from_reader(text.as_bytes(), "both.rules").unwrap();
        let err = loaded.cleanup_target().err().unwrap();
        assert!(err.is_bad_input() && err.to_string().contains("pick one with -4/-6"), "{err}");
        assert_eq!(loaded.sets[1].restore_command, "ip6tables-legacy-restore --noflush");
        let report = loaded.report(&Options {
            thresholds: Thresholds { min_duplicates: 1, ..Thresholds::default() },
            ..Options::default()
        });
        assert_eq!(report.rulesets.len(), 2);
        assert_eq!(report.verdict, Verdict::Bloated);
        assert!(report.notes[0].contains("2 rule sets"));
    }

    #[test]
    fn a_broken_check_is_a_fault_of_its_own() {
        let loaded = from_reader(&b"*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"[..], "x").unwrap();
        let mut report = loaded.report(&Options::default());
        assert_eq!(report.verdict, Verdict::Ok);
        report.self_test = Some(SelfTest {
            command: "iptables".into(),
            check_works: false,
            iptables_version: "1.8.10 (nf_tables)".into(),
            detail: String::new(),
        });
        decide(&mut report);
        assert_eq!(report.verdict, Verdict::CheckBroken);
    }
}
