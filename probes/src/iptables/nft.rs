//! Native nftables rule sets, as `nft list ruleset` prints them: kube-proxy's nftables mode
//! (`table ip kube-proxy`), firewalld, and any table written with nft itself. iptables-save never
//! shows these. They are read into the same [`Analysis`] as iptables-save output, one rule set
//! per nft family, so counts, duplicates, owners and orphan chains come from the same code.
//!
//! Tables that iptables-nft manages are iptables-nft-save's to read (nft marks each with a
//! warning line before it): they are left out here, so no rule is counted twice.

use super::analysis::Analysis;
use super::report::Family;
use super::save_format::RuleFacts;

/// One native table as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftTable {
    /// `ip`, `ip6`, `inet`, `arp`, `bridge` or `netdev`.
    pub family: String,
    pub name: String,
    pub chains: Vec<NftChain>,
    /// Chains the table's maps send packets to (`... : goto CHAIN` in a verdict map).
    pub map_targets: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftChain {
    pub name: String,
    /// A base chain: hooked into the stack (`type filter hook input ...`), entered by packets,
    /// not by a jump.
    pub base: bool,
    /// Each rule as listed, its counter's numbers and handle left out.
    pub rules: Vec<String>,
}

/// What a listing holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub tables: Vec<NftTable>,
    /// `family name` of the tables iptables-nft manages (read by iptables-nft-save instead).
    pub iptables_nft: Vec<String>,
}

/// Whether `text` looks like `nft list ruleset` output: its first line that says anything opens
/// a table (or is nft's own warning comment before one).
pub fn looks_like_listing(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with("table ") && l.ends_with('{') || l.starts_with("# Warning: table "))
}

/// Reads `nft list ruleset` text (with or without `-a` handles). Errors name the line.
pub fn parse(text: &str) -> Result<Listing, String> {
    enum Place {
        Top,
        Table,
        Chain,
        /// Inside a set, map or other object of the table, this many braces deep.
        Object(usize),
    }
    let mut listing = Listing::default();
    let mut place = Place::Top;
    let mut managed_next = false;
    // A rule whose braces are not closed on its line (a long anonymous set) goes on.
    let mut pending: Option<(String, i64)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let fail = |why: &str| format!("line {line_no}: {why}: {}", excerpt(raw));
        let line = strip_handle(raw.trim());
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if line.contains("managed by iptables-nft") {
                managed_next = true;
            }
            continue;
        }
        let opens = line.matches('{').count() as i64;
        let closes = line.matches('}').count() as i64;
        match place {
            Place::Top => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let ["table", family, name, "{"] = words[..] else {
                    return Err(fail("not `nft list ruleset` output (expected `table FAMILY NAME {`)"));
                };
                if managed_next {
                    listing.iptables_nft.push(format!("{family} {name}"));
                }
                listing.tables.push(NftTable {
                    family: family.to_string(),
                    name: name.to_string(),
                    ..NftTable::default()
                });
                place = Place::Table;
            }
            Place::Table => {
                let table = listing.tables.last_mut().expect("inside a table");
                let words: Vec<&str> = line.split_whitespace().collect();
                match words[..] {
                    ["}"] => {
                        place = Place::Top;
                        managed_next = false;
                    }
                    ["chain", name, "{"] => {
                        table.chains.push(NftChain { name: name.to_string(), ..NftChain::default() });
                        place = Place::Chain;
                    }
                    [_, _, "{"] | [_, _, _, "{"] => place = Place::Object(1),
                    ["comment", ..] | ["flags", ..] => {}
                    _ => return Err(fail("expected a chain, set, map or object of the table")),
                }
            }
            Place::Chain => {
                let chain =
                    listing.tables.last_mut().and_then(|t| t.chains.last_mut()).expect("inside a chain");
                if let Some((mut rule, depth)) = pending.take() {
                    rule.push(' ');
                    rule.push_str(line);
                    let depth = depth + opens - closes;
                    match depth > 0 {
                        true => pending = Some((rule, depth)),
                        false => chain.rules.push(normalise(&rule)),
                    }
                    continue;
                }
                if line == "}" {
                    place = Place::Table;
                } else if line.starts_with("type ") && line.contains(" hook ") {
                    chain.base = true;
                } else if line.starts_with("policy ")
                    || line.starts_with("comment ")
                    || line.starts_with("devices ")
                {
                } else if opens > closes {
                    pending = Some((line.to_string(), opens - closes));
                } else {
                    chain.rules.push(normalise(line));
                }
            }
            Place::Object(depth) => {
                let table = listing.tables.last_mut().expect("inside a table");
                table.map_targets.extend(targets(line));
                let depth = depth as i64 + opens - closes;
                place = if depth <= 0 { Place::Table } else { Place::Object(depth as usize) };
            }
        }
    }
    match place {
        Place::Top if pending.is_none() => Ok(listing),
        _ => Err(format!(
            "the input ends inside table {} (cut short?)",
            listing.tables.last().map(|t| format!("{} {}", t.family, t.name)).unwrap_or_default()
        )),
    }
}

/// Builds one rule set per nft family of the native tables, labelled with the command and nft
/// version that printed them. iptables-nft's tables are left out: those nft marked, and those in
/// `read_elsewhere` (`ip filter`, ...: what iptables-nft-save printed; nft marks them only on a
/// terminal).
pub fn analyses(
    listing: &Listing,
    command: &str,
    version: Option<&str>,
    read_elsewhere: &[String],
) -> Vec<Analysis> {
    let mut sets: Vec<(String, Analysis)> = Vec::new();
    for table in &listing.tables {
        let label = format!("{} {}", table.family, table.name);
        if listing.iptables_nft.contains(&label) || read_elsewhere.contains(&label) {
            continue;
        }
        let index = match sets.iter().position(|(family, _)| *family == table.family) {
            Some(index) => index,
            None => {
                let family = family_of(&table.family);
                sets.push((table.family.clone(), Analysis::native(family, command, version)));
                sets.len() - 1
            }
        };
        let set = &mut sets[index].1;
        for chain in &table.chains {
            set.add_chain(&label, &chain.name, !chain.base);
        }
        for chain in &table.chains {
            for rule in &chain.rules {
                set.add_rule(&label, &chain.name, rule, facts(rule));
                // A verdict map in a rule sends to several chains (kube-proxy's numgen vmap).
                for target in targets(rule) {
                    set.add_target(&label, &target);
                }
            }
        }
        for target in &table.map_targets {
            set.add_target(&label, target);
        }
    }
    sets.into_iter().map(|(_, set)| set).collect()
}

/// The report's family of an nft family.
fn family_of(family: &str) -> Family {
    match family {
        "ip" => Family::Ipv4,
        "ip6" => Family::Ipv6,
        "inet" => Family::Inet,
        "arp" => Family::Arp,
        "bridge" => Family::Bridge,
        _ => Family::Netdev,
    }
}

/// What the analysis needs of a rule: where it jumps, its comment, and whether its copies act
/// apart.
pub fn facts(rule: &str) -> RuleFacts {
    let stateful = [
        ("numgen ", "numgen: each copy draws its own number (a load balancer's odds change with copies)"),
        ("limit rate", "limit: each copy limits on its own"),
        ("quota ", "quota: each copy counts its own"),
        ("ct count", "ct count: each copy counts its own"),
        ("meter ", "meter: each copy keeps its own"),
        ("update @", "update @set: each copy updates the set"),
        ("add @", "add @set: each copy adds to the set"),
    ];
    let xor = rule.contains("mark set") && (rule.contains(" ^ ") || rule.contains(" xor "));
    let reason = stateful.iter().find(|(pattern, _)| rule.contains(pattern)).map(|(_, why)| why.to_string());
    RuleFacts {
        target: targets(rule).into_iter().next(),
        comment: comment(rule),
        stateful: reason.or_else(|| xor.then(|| "mark ^: a second copy undoes the first".to_string())),
        xor,
    }
}

/// The chains a piece of nft text jumps or goes to.
fn targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        if matches!(word, "jump" | "goto") {
            if let Some(target) = words.next() {
                let target = target.trim_end_matches([',', '}', ';']).trim_matches('"');
                if !target.is_empty() {
                    out.push(target.to_string());
                }
            }
        }
    }
    out
}

/// The text of `comment "..."`, the last one of the rule.
fn comment(rule: &str) -> Option<String> {
    let (_, after) = rule.rsplit_once("comment \"")?;
    Some(after.split('"').next()?.to_string())
}

/// A rule as a key for copies: the counter's numbers left out (they differ between copies),
/// blanks collapsed.
fn normalise(rule: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut words = rule.split_whitespace().peekable();
    while let Some(word) = words.next() {
        out.push(word);
        if word == "counter" && words.peek() == Some(&"packets") {
            // counter packets N bytes M
            for _ in 0..4 {
                words.next();
            }
        }
    }
    out.join(" ")
}

/// A line without nft -a's `# handle N`.
fn strip_handle(line: &str) -> &str {
    match line.rfind(" # handle ") {
        Some(at) => line[..at].trim_end(),
        None => line,
    }
}

fn excerpt(line: &str) -> String {
    let cut: String = line.trim().chars().take(60).collect();
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::Thresholds;

    fn corpus(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/nft").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn kube_proxys_own_rules_are_read_table_by_chain() {
        // tests/corpus/nft: kube-proxy's expected rules of its TestOverallNFTablesRules, loaded
        // into nft 1.0.6 and listed.
        let text = corpus("kube-proxy-overall.nft");
        assert!(looks_like_listing(&text));
        let listing = parse(&text).unwrap();
        assert_eq!(listing.tables.len(), 1);
        let table = &listing.tables[0];
        assert_eq!((table.family.as_str(), table.name.as_str()), ("ip", "kube-proxy"));
        let rules: usize = table.chains.iter().map(|c| c.rules.len()).sum();
        assert_eq!(rules, 57, "its 57 `add rule` lines");
        assert!(table.chains.iter().any(|c| c.name == "nat-prerouting" && c.base));
        assert!(table.map_targets.iter().any(|t| t == "service-ULMVA6XW-ns1/svc1/tcp/p80"));
        let sets = analyses(&listing, "nft list ruleset", Some("1.0.6"), &[]);
        assert_eq!(sets.len(), 1);
        let report = sets[0].report(&Thresholds::default(), String::new());
        assert_eq!((report.total_rules, report.duplicate_rules), (57, 0));
        assert_eq!(report.family, Family::Ipv4);
        assert!(report.chains.iter().all(|c| c.owner == Some("kube-proxy")), "{:?}", report.chains);
        // Every chain is a base chain, jumped to, or a map's verdict: none is an orphan.
        assert_eq!(report.orphan_chains, vec![], "{:?}", report.orphan_chains);
    }

    #[test]
    fn copies_within_a_chain_are_duplicates_whatever_their_counters() {
        let text = "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\
                    \t\ttcp dport 22 counter packets 5 bytes 300 accept\n\t\ttcp dport 22 counter packets 0 bytes 0 accept\n\
                    \t\tip saddr { 192.0.2.1,\n\t\t\t     192.0.2.2 } drop\n\t\tlimit rate 5/second accept\n\t\tlimit rate 5/second accept\n\t}\n\
                    \tchain unused {\n\t}\n}\n";
        let listing = parse(text).unwrap();
        assert_eq!(
            listing.tables[0].chains[0].rules[2], "ip saddr { 192.0.2.1, 192.0.2.2 } drop",
            "a set over two lines"
        );
        let sets = analyses(&listing, "nft list ruleset", None, &[]);
        let report =
            sets[0].report(&Thresholds { min_duplicates: 1, ..Thresholds::default() }, String::new());
        assert_eq!((report.family, report.total_rules, report.duplicate_rules), (Family::Inet, 5, 2));
        let kept: Vec<&str> = report.kept_stateful.iter().map(|g| g.rule.as_str()).collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(report.orphan_chains.len(), 1);
        assert_eq!(report.orphan_chains[0].chain, "unused");
    }

    #[test]
    fn tables_iptables_nft_manages_are_left_to_iptables_nft_save() {
        // nft 1.0.6 after `iptables-nft -A INPUT -p tcp --dport 22 -j ACCEPT` beside kube-proxy.
        let text = "# Warning: table ip filter is managed by iptables-nft, do not touch!\ntable ip filter {\n\tchain INPUT {\n\
                    \t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 22 counter packets 0 bytes 0 accept\n\t}\n}\n\
                    table ip kube-proxy {\n\tchain services {\n\t\tjump other # handle 4\n\t}\n\tchain other {\n\t}\n}\n";
        let listing = parse(text).unwrap();
        assert_eq!(listing.iptables_nft, ["ip filter"]);
        let sets = analyses(&listing, "nft list ruleset", None, &[]);
        let report = sets[0].report(&Thresholds::default(), String::new());
        assert_eq!(report.total_rules, 1, "only kube-proxy's rule");
        assert_eq!(report.chains[0].table, "ip kube-proxy");
        // Piped, nft writes no warning: the tables iptables-nft-save printed are left out too.
        let unmarked =
            text.replacen("# Warning: table ip filter is managed by iptables-nft, do not touch!\n", "", 1);
        let sets = analyses(&parse(&unmarked).unwrap(), "nft list ruleset", None, &["ip filter".into()]);
        assert_eq!(sets[0].report(&Thresholds::default(), String::new()).total_rules, 1);
    }

    #[test]
    fn other_text_is_refused_naming_the_line() {
        assert!(!looks_like_listing("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"));
        assert!(parse("table ip t {\n\tchain c {\n").unwrap_err().contains("ends inside table ip t"));
        assert!(parse("hello\n").unwrap_err().starts_with("line 1: not `nft list ruleset` output"));
        assert_eq!(
            normalise("tcp dport 22  counter packets 9 bytes 540 accept"),
            "tcp dport 22 counter accept"
        );
        let f = facts("numgen random mod 2 vmap { 0 : goto a , 1 : goto b } comment \"lb\"");
        assert_eq!((f.target.as_deref(), f.comment.as_deref()), (Some("a"), Some("lb")));
        assert!(f.stateful.is_some());
        assert!(facts("meta mark set meta mark ^ 0x00004000").xor);
    }
}
