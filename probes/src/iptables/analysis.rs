//! One streaming pass over iptables-save text: rules are counted per chain as they go by, and only
//! the distinct ones are kept (a million copies of three rules cost three entries). Duplicate lines
//! are byte-identical to a line already checked, so only new rules are tokenised.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use foldhash::fast::RandomState;
use indexmap::IndexMap;

use super::owner::{is_builtin, owner};
use super::report::{ChainRef, ChainSummary, DuplicateGroup, HashGroup, IptablesReport, Verdict};
use super::save_format::{classify, facts, kube_router_hash, Line};

/// When a rule set counts as bloated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// More copies than this of one rule in one chain.
    pub max_copies: u64,
    /// More than this share (percent) of all rules are duplicates.
    pub max_duplicate_percent: f64,
    /// More rules than this in total.
    pub max_rules: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { max_copies: 100, max_duplicate_percent: 10.0, max_rules: 50_000 }
    }
}

/// A rule set read to the end.
pub struct Analysis {
    tables: Vec<Table>,
    version: Option<String>,
    backend: Option<String>,
    total_rules: u64,
}

struct Table {
    name: String,
    chains: Vec<Chain>,
    by_name: HashMap<String, usize>,
    /// Chains some rule of this table jumps or goes to.
    targets: HashSet<String>,
}

struct Chain {
    name: String,
    user_defined: bool,
    /// Distinct rule specs in order of first appearance, with their copy counts.
    rules: IndexMap<Box<str>, Rule, RandomState>,
    total: u64,
}

struct Rule {
    copies: u64,
    kube_router_comment: Option<(Box<str>, Box<str>)>, // (hash, whole comment)
}

/// Reads iptables-save text to the end. Errors name the line: `line 12: ...`.
pub fn analyse<R: BufRead>(mut reader: R) -> Result<Analysis, String> {
    let mut analysis = Analysis { tables: Vec::new(), version: None, backend: None, total_rules: 0 };
    let mut open_table: Option<usize> = None;
    // Consecutive rules nearly always share a chain: remember the last one.
    let mut last_chain: Option<(usize, usize)> = None;
    let mut buf = Vec::with_capacity(512);
    let mut line_no: u64 = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| format!("line {}: {e}", line_no + 1))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = std::str::from_utf8(bytes).map_err(|_| format!("line {line_no}: not UTF-8 text"))?;
        let fail = |why: String| format!("line {line_no}: {why}");
        match classify(text).map_err(fail)? {
            Line::Blank => {}
            Line::Comment(comment) => {
                if analysis.version.is_none() {
                    if let Some((version, backend)) = header_version(comment) {
                        analysis.version = Some(version);
                        analysis.backend = Some(backend);
                    }
                }
            }
            Line::Table(name) => {
                if let Some(open) = open_table {
                    let open = &analysis.tables[open].name;
                    return Err(fail(format!("*{name} starts before table {open} was closed with COMMIT")));
                }
                let index = match analysis.tables.iter().position(|t| t.name == name) {
                    Some(index) => index,
                    None => {
                        analysis.tables.push(Table {
                            name: name.to_string(),
                            chains: Vec::new(),
                            by_name: HashMap::new(),
                            targets: HashSet::new(),
                        });
                        analysis.tables.len() - 1
                    }
                };
                open_table = Some(index);
                last_chain = None;
            }
            Line::Chain { name, policy } => {
                let table = open_table.ok_or_else(|| fail(format!("chain {name} outside a table")))?;
                let table = &mut analysis.tables[table];
                if !table.by_name.contains_key(name) {
                    table.by_name.insert(name.to_string(), table.chains.len());
                    table.chains.push(Chain {
                        name: name.to_string(),
                        user_defined: policy == "-" && !is_builtin(name),
                        rules: IndexMap::default(),
                        total: 0,
                    });
                }
            }
            Line::Rule { chain, spec } => {
                let table_index =
                    open_table.ok_or_else(|| fail(format!("rule for {chain} outside a table")))?;
                let table = &mut analysis.tables[table_index];
                let chain_index = match last_chain {
                    Some((t, c)) if t == table_index && table.chains[c].name == chain => c,
                    _ => *table
                        .by_name
                        .get(chain)
                        .ok_or_else(|| fail(format!("rule for chain {chain}, which was not declared")))?,
                };
                last_chain = Some((table_index, chain_index));
                let entry = &mut table.chains[chain_index];
                entry.total += 1;
                analysis.total_rules += 1;
                if let Some(rule) = entry.rules.get_mut(spec) {
                    rule.copies += 1;
                    continue;
                }
                let facts = facts(spec).map_err(fail)?;
                if let Some(target) = facts.target {
                    table.targets.insert(target);
                }
                let kube_router_comment =
                    facts.comment.as_deref().and_then(|c| kube_router_hash(c).map(|h| (h.into(), c.into())));
                table.chains[chain_index].rules.insert(spec.into(), Rule { copies: 1, kube_router_comment });
            }
            Line::Commit => {
                if open_table.take().is_none() {
                    return Err(fail("COMMIT without a table".into()));
                }
            }
        }
    }
    if let Some(open) = open_table {
        return Err(format!(
            "line {line_no}: the input ends inside table {} without COMMIT (cut short?)",
            analysis.tables[open].name
        ));
    }
    Ok(analysis)
}

/// `# Generated by iptables-save v1.8.9 (nf_tables) on ...` -> ("1.8.9", "nf_tables"). Versions that
/// predate the backend tag are legacy.
fn header_version(comment: &str) -> Option<(String, String)> {
    let rest = comment.strip_prefix("# Generated by ")?;
    let (_, after) = rest.split_once(" v")?;
    let version: String = after.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    if version.is_empty() {
        return None;
    }
    let backend = match after.split_once('(').and_then(|(_, b)| b.split_once(')')) {
        Some((backend, _)) => backend.to_string(),
        None => "legacy".to_string(),
    };
    Some((version, backend))
}

impl Analysis {
    pub fn total_rules(&self) -> u64 {
        self.total_rules
    }

    pub fn duplicate_rules(&self) -> u64 {
        self.chains().map(|(_, c)| c.total - c.rules.len() as u64).sum()
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Live dumps from some versions carry no header: take what `iptables --version` said.
    pub fn set_version_if_missing(&mut self, version: &str, backend: &str) {
        if self.version.is_none() {
            self.version = Some(version.to_string());
            self.backend = Some(backend.to_string());
        }
    }

    fn chains(&self) -> impl Iterator<Item = (&Table, &Chain)> {
        self.tables.iter().flat_map(|t| t.chains.iter().map(move |c| (t, c)))
    }

    /// The rule copied most often: (table, chain, spec, copies).
    pub fn most_copied(&self) -> Option<(&str, &str, &str, u64)> {
        self.chains()
            .flat_map(|(t, c)| c.rules.iter().map(move |(spec, r)| (t, c, spec, r.copies)))
            .max_by_key(|(_, _, _, copies)| *copies)
            .map(|(t, c, spec, copies)| (t.name.as_str(), c.name.as_str(), &**spec, copies))
    }

    pub fn report(&self, source: String, thresholds: &Thresholds) -> IptablesReport {
        let mut chains: Vec<ChainSummary> = self
            .chains()
            .map(|(t, c)| ChainSummary {
                table: t.name.clone(),
                chain: c.name.clone(),
                owner: owner(&c.name),
                rules: c.total,
                duplicates: c.total - c.rules.len() as u64,
            })
            .collect();
        chains.sort_by(|a, b| b.duplicates.cmp(&a.duplicates).then(b.rules.cmp(&a.rules)));

        let mut duplicate_groups: Vec<DuplicateGroup> = self
            .chains()
            .flat_map(|(t, c)| {
                c.rules.iter().filter(|(_, r)| r.copies > 1).map(move |(spec, r)| DuplicateGroup {
                    table: t.name.clone(),
                    chain: c.name.clone(),
                    rule: format!("-A {} {spec}", c.name),
                    copies: r.copies,
                })
            })
            .collect();
        duplicate_groups.sort_by_key(|g| std::cmp::Reverse(g.copies));

        let mut hashes: IndexMap<&str, HashGroup> = IndexMap::new();
        for (t, c) in self.chains() {
            for rule in c.rules.values().filter(|r| r.copies > 1) {
                let Some((hash, comment)) = &rule.kube_router_comment else { continue };
                let group = hashes.entry(&**hash).or_insert_with(|| HashGroup {
                    hash: hash.to_string(),
                    comment: comment.to_string(),
                    copies: 0,
                    chains: Vec::new(),
                });
                group.copies += rule.copies;
                let place = format!("{}/{}", t.name, c.name);
                if !group.chains.contains(&place) {
                    group.chains.push(place);
                }
            }
        }
        let mut kube_router_hashes: Vec<HashGroup> = hashes.into_values().collect();
        kube_router_hashes.sort_by_key(|g| std::cmp::Reverse(g.copies));

        let orphan_chains = self
            .chains()
            .filter(|(t, c)| c.user_defined && !t.targets.contains(&c.name))
            .map(|(t, c)| ChainRef { table: t.name.clone(), chain: c.name.clone() })
            .collect();

        let duplicate_rules = self.duplicate_rules();
        let reasons = self.reasons(thresholds, &duplicate_groups, duplicate_rules);
        let verdict = if reasons.is_empty() { Verdict::Ok } else { Verdict::Bloated };
        let explanation = explain(&duplicate_groups, self.version.as_deref(), duplicate_rules);
        IptablesReport {
            probe: "iptables",
            source,
            backend: self.backend.clone(),
            version: self.version.clone(),
            total_rules: self.total_rules,
            duplicate_rules,
            chains,
            duplicate_groups,
            kube_router_hashes,
            orphan_chains,
            verdict,
            reasons,
            explanation,
            other_rulesets: Vec::new(),
            check_latency: None,
            self_test: None,
        }
    }

    fn reasons(&self, limits: &Thresholds, groups: &[DuplicateGroup], duplicates: u64) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(worst) = groups.first().filter(|g| g.copies > limits.max_copies) {
            reasons.push(format!(
                "{} copies of one rule in {}/{} (more than {})",
                worst.copies, worst.table, worst.chain, limits.max_copies
            ));
        }
        if self.total_rules > 0 {
            let percent = duplicates as f64 * 100.0 / self.total_rules as f64;
            if percent > limits.max_duplicate_percent {
                reasons.push(format!(
                    "{percent:.1}% of all rules are duplicates (more than {}%)",
                    limits.max_duplicate_percent
                ));
            }
        }
        if self.total_rules > limits.max_rules {
            reasons.push(format!("{} rules in total (more than {})", self.total_rules, limits.max_rules));
        }
        reasons
    }

    /// An `iptables-restore --noflush` script that leaves one copy of every rule, in the order of
    /// first appearance, in each chain that has duplicates, and touches no other chain. Each such
    /// chain is flushed and rewritten inside its table's COMMIT, so the change is atomic per table
    /// and costs one pass, however many copies there were.
    pub fn write_cleanup_script<W: Write>(&self, out: &mut W) -> std::io::Result<()> {
        let duplicates = self.duplicate_rules();
        writeln!(
            out,
            "# netprobe iptables cleanup script: removes {duplicates} duplicate rule(s), keeping the first"
        )?;
        writeln!(
            out,
            "# copy of each rule in its original order. Only chains with duplicates are rewritten."
        )?;
        writeln!(
            out,
            "# Back up first (iptables-save > backup.rules), then: iptables-restore --noflush < THIS_FILE"
        )?;
        for table in &self.tables {
            let dirty: Vec<&Chain> = table.chains.iter().filter(|c| c.total > c.rules.len() as u64).collect();
            if dirty.is_empty() {
                continue;
            }
            writeln!(out, "*{}", table.name)?;
            for chain in dirty {
                writeln!(out, "-F {}", chain.name)?;
                for spec in chain.rules.keys() {
                    if spec.is_empty() {
                        writeln!(out, "-A {}", chain.name)?;
                    } else {
                        writeln!(out, "-A {} {spec}", chain.name)?;
                    }
                }
            }
            writeln!(out, "COMMIT")?;
        }
        Ok(())
    }
}

/// The likely cause in a sentence, with the fix.
fn explain(groups: &[DuplicateGroup], version: Option<&str>, duplicates: u64) -> Option<String> {
    let worst = groups.first()?;
    let kube_router = groups.iter().any(|g| owner(&g.chain) == Some("kube-router"));
    if kube_router {
        let this_host = match version {
            Some(v) if check_bug_version(v) => {
                format!(" These rules were written by iptables {v}, one of them.")
            }
            Some(v) => format!(
                " These rules were written by iptables {v}, which is not one of them, but kube-router may bundle its own."
            ),
            None => String::new(),
        };
        return Some(format!(
            "kube-router re-adds a rule whenever `iptables -C` says it is missing, and `-C` wrongly says so in \
             iptables 1.8.0-1.8.4 (nf_tables) and 1.8.10: every policy sync appends one more copy \
             (k3s-io/k3s#3117, #7244; cloudnativelabs/kube-router#1676).{this_host} Fix: move to an iptables \
             without the bug (or a k3s/kube-router release that bundles one), confirm with \
             `netprobe iptables --self-test`, then remove the {duplicates} copies with `netprobe iptables --cleanup-script`."
        ));
    }
    let who = owner(&worst.chain).map(|o| format!(" ({o})")).unwrap_or_default();
    Some(format!(
        "Rules are appended again without being checked first: {} copies of one rule in {}/{}{who}. Find what \
         writes that chain and why its existence check fails, then remove the copies with \
         `netprobe iptables --cleanup-script`.",
        worst.copies, worst.table, worst.chain
    ))
}

/// iptables versions whose `-C` misreports rules as missing (see [`explain`]).
pub fn check_bug_version(version: &str) -> bool {
    matches!(version, "1.8.0" | "1.8.1" | "1.8.2" | "1.8.3" | "1.8.4" | "1.8.10")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<Analysis, String> {
        analyse(text.as_bytes())
    }

    const SMALL: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 23 12:00:00 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-ROUTER-INPUT - [0:0]
:ORPHAN - [0:0]
[10:600] -A INPUT -m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT
-A KUBE-ROUTER-INPUT -d 10.43.0.0/16 -m comment --comment "allow traffic to primary cluster IP range - EKROEGTNIJ3AP3LC" -j RETURN
[3:180] -A KUBE-ROUTER-INPUT -d 10.43.0.0/16 -m comment --comment "allow traffic to primary cluster IP range - EKROEGTNIJ3AP3LC" -j RETURN
-A KUBE-ROUTER-INPUT -p tcp -m comment --comment "allow LOCAL TCP traffic to node ports - LR7XO7NXDBGQJD2M" -m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN
-A KUBE-ROUTER-INPUT -d 10.43.0.0/16 -m comment --comment "allow traffic to primary cluster IP range - EKROEGTNIJ3AP3LC" -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SEP-AAAA - [0:0]
-A PREROUTING ! -s 192.0.2.0/24 -j ACCEPT
COMMIT
"#;

    #[test]
    fn counts_rules_duplicates_owners_and_orphans() {
        let analysis = run(SMALL).unwrap();
        let report = analysis.report("test".into(), &Thresholds::default());
        assert_eq!(report.version.as_deref(), Some("1.8.9"));
        assert_eq!(report.backend.as_deref(), Some("nf_tables"));
        assert_eq!(report.total_rules, 6);
        assert_eq!(report.duplicate_rules, 2, "counters are ignored when comparing");
        let worst = &report.chains[0];
        assert_eq!(
            (worst.chain.as_str(), worst.owner, worst.rules, worst.duplicates),
            ("KUBE-ROUTER-INPUT", Some("kube-router"), 4, 2)
        );
        assert_eq!(report.duplicate_groups.len(), 1);
        assert_eq!(report.duplicate_groups[0].copies, 3);
        assert!(report.duplicate_groups[0].rule.starts_with("-A KUBE-ROUTER-INPUT -d 10.43.0.0/16"));
        assert_eq!(report.kube_router_hashes[0].hash, "EKROEGTNIJ3AP3LC");
        assert_eq!(report.kube_router_hashes[0].chains, vec!["filter/KUBE-ROUTER-INPUT"]);
        let orphans: Vec<String> =
            report.orphan_chains.iter().map(|o| format!("{}/{}", o.table, o.chain)).collect();
        assert_eq!(orphans, vec!["filter/ORPHAN", "nat/KUBE-SEP-AAAA"]);
        // 2 of 6 rules are duplicates: over the default 10% share.
        assert_eq!(report.verdict, Verdict::Bloated);
        assert!(report.reasons[0].contains("33.3% of all rules"), "{:?}", report.reasons);
        assert!(report.explanation.unwrap().contains("kube-router re-adds"));
    }

    #[test]
    fn thresholds_decide_the_verdict() {
        let analysis = run(SMALL).unwrap();
        let lenient = Thresholds { max_copies: 100, max_duplicate_percent: 50.0, max_rules: 50_000 };
        assert_eq!(analysis.report("t".into(), &lenient).verdict, Verdict::Ok);
        let strict_copies = Thresholds { max_copies: 2, ..lenient };
        let report = analysis.report("t".into(), &strict_copies);
        assert_eq!(report.verdict, Verdict::Bloated);
        assert!(report.reasons[0].starts_with("3 copies of one rule in filter/KUBE-ROUTER-INPUT"));
        let few_rules = Thresholds { max_rules: 5, ..lenient };
        assert!(analysis.report("t".into(), &few_rules).reasons[0].contains("6 rules in total"));
    }

    #[test]
    fn cleanup_script_keeps_first_copies_in_order_and_only_dirty_chains() {
        let mut script = Vec::new();
        run(SMALL).unwrap().write_cleanup_script(&mut script).unwrap();
        let script = String::from_utf8(script).unwrap();
        let body: Vec<&str> = script.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            vec![
                "*filter",
                "-F KUBE-ROUTER-INPUT",
                r#"-A KUBE-ROUTER-INPUT -d 10.43.0.0/16 -m comment --comment "allow traffic to primary cluster IP range - EKROEGTNIJ3AP3LC" -j RETURN"#,
                r#"-A KUBE-ROUTER-INPUT -p tcp -m comment --comment "allow LOCAL TCP traffic to node ports - LR7XO7NXDBGQJD2M" -m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN"#,
                "COMMIT",
            ]
        );
    }

    #[test]
    fn a_clean_rule_set_is_ok_with_an_empty_script() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n";
        let analysis = run(text).unwrap();
        let report = analysis.report("t".into(), &Thresholds::default());
        assert_eq!(report.verdict, Verdict::Ok);
        assert_eq!(report.explanation, None);
        assert_eq!(report.backend, None);
        let mut script = Vec::new();
        analysis.write_cleanup_script(&mut script).unwrap();
        assert!(String::from_utf8(script).unwrap().lines().all(|l| l.starts_with('#')));
    }

    #[test]
    fn structural_errors_name_the_line() {
        for (text, want) in [
            ("-A INPUT -j ACCEPT\n", "line 1: rule for INPUT outside a table"),
            (
                "*filter\n:INPUT ACCEPT [0:0]\n-A OUTPUT -j ACCEPT\nCOMMIT\n",
                "line 3: rule for chain OUTPUT, which was not declared",
            ),
            ("*filter\n*nat\n", "line 2: *nat starts before table filter was closed"),
            ("*filter\n:INPUT ACCEPT [0:0]\n", "line 2: the input ends inside table filter without COMMIT"),
            ("COMMIT\n", "line 1: COMMIT without a table"),
            (":INPUT ACCEPT [0:0]\n", "line 1: chain INPUT outside a table"),
            ("*filter\n:X - [0:0]\n-A X -m comment --comment \"open\nCOMMIT\n", "line 3: unterminated quote"),
            ("# fine\nrm -rf /\n", "line 2: not iptables-save output"),
        ] {
            let err = run(text).err().unwrap_or_else(|| panic!("{text:?} was accepted"));
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
        let err = analyse(&b"*filter\n\xff\xfe\n"[..]).err().unwrap();
        assert_eq!(err, "line 2: not UTF-8 text");
    }

    #[test]
    fn header_versions() {
        assert_eq!(
            header_version("# Generated by iptables-save v1.8.9 (nf_tables) on Mon"),
            Some(("1.8.9".into(), "nf_tables".into()))
        );
        assert_eq!(
            header_version("# Generated by iptables-save v1.8.7 (legacy) on Mon"),
            Some(("1.8.7".into(), "legacy".into()))
        );
        assert_eq!(
            header_version("# Generated by iptables-save v1.6.1 on Mon"),
            Some(("1.6.1".into(), "legacy".into()))
        );
        assert_eq!(header_version("# Completed on Mon"), None);
        assert!(check_bug_version("1.8.4") && check_bug_version("1.8.10") && !check_bug_version("1.8.9"));
    }
}
