//! Which firewall rules of a node could have dropped the probes: rules with a DROP or REJECT
//! verdict, on a chain the probes traverse (reached from the input or output hooks through jumps
//! the probes can take), whose matches the probe flow (UDP from A to B:port, a new flow) can pass.
//! Pure: it reads the texts [`crate::net::firewall`] collects, iptables-save -c and nft's JSON.
//!
//! A match it cannot evaluate (an ipset, a mark, an interface) counts as "may match": the driver
//! blames a rule only when, in addition, its counter grew by at least the probes that went missing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;

use serde_json::Value;

use super::api::GrownRule;
use crate::iptables::save_format::{arguments, classify, Line};
use crate::net::firewall::Snapshot;

/// The probes' path through this node's netfilter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Arriving: PREROUTING, INPUT.
    Inbound,
    /// Leaving: OUTPUT, POSTROUTING.
    Outbound,
}

/// The probe flow, as a firewall sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub source: Ipv4Addr,
    /// `None` when this side does not know it.
    pub destination: Option<Ipv4Addr>,
    pub port: u16,
    pub path: Path,
}

/// The packet counters of every rule that could drop the flow, by a stable key, with the text
/// shown to people; and the rules that could drop it but count nothing (nft rules without a
/// `counter`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidates {
    pub counted: BTreeMap<String, (String, u64)>,
    pub uncounted: Vec<String>,
    /// The kernel's drop counters at the time of the snapshot.
    pub kernel: crate::net::snmp::KernelCounters,
}

pub fn candidates(snapshot: &Snapshot, flow: &Flow) -> Candidates {
    let mut out = Candidates { kernel: snapshot.kernel, ..Candidates::default() };
    for (tool, text) in &snapshot.iptables {
        iptables_candidates(tool, text, flow, &mut out);
    }
    if let Some(json) = &snapshot.nft_json {
        nft_candidates(json, flow, &mut out);
    }
    out
}

/// The rules whose counters grew from `before` to `after`, most first.
pub fn grown(before: &Candidates, after: &Candidates) -> Vec<GrownRule> {
    let mut grown: Vec<GrownRule> = after
        .counted
        .iter()
        .filter_map(|(key, (text, packets))| {
            let delta = packets.saturating_sub(before.counted.get(key).map_or(0, |(_, p)| *p));
            (delta > 0).then(|| GrownRule { rule: text.clone(), packets: delta })
        })
        .collect();
    grown.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.rule.cmp(&b.rule)));
    grown
}

fn hook_chains(path: Path) -> &'static [(&'static str, &'static str)] {
    match path {
        Path::Inbound => &[
            ("raw", "PREROUTING"),
            ("mangle", "PREROUTING"),
            ("nat", "PREROUTING"),
            ("mangle", "INPUT"),
            ("filter", "INPUT"),
            ("security", "INPUT"),
            ("nat", "INPUT"),
        ],
        Path::Outbound => &[
            ("raw", "OUTPUT"),
            ("mangle", "OUTPUT"),
            ("nat", "OUTPUT"),
            ("filter", "OUTPUT"),
            ("security", "OUTPUT"),
            ("mangle", "POSTROUTING"),
            ("nat", "POSTROUTING"),
        ],
    }
}

struct SavedRule {
    spec: String,
    packets: u64,
}

fn iptables_candidates(tool: &str, text: &str, flow: &Flow, out: &mut Candidates) {
    // table -> chain -> rules, in order.
    let mut tables: HashMap<String, HashMap<String, Vec<SavedRule>>> = HashMap::new();
    let mut table = String::new();
    for line in text.lines() {
        match classify(line) {
            Ok(Line::Table(name)) => table = name.to_string(),
            Ok(Line::Rule { chain, spec }) => {
                let packets = line
                    .strip_prefix('[')
                    .and_then(|rest| rest.split_once(':'))
                    .and_then(|(p, _)| p.parse::<u64>().ok())
                    .unwrap_or(0);
                tables
                    .entry(table.clone())
                    .or_default()
                    .entry(chain.to_string())
                    .or_default()
                    .push(SavedRule { spec: spec.to_string(), packets });
            }
            _ => {}
        }
    }
    for (table_name, chains) in &tables {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue: VecDeque<&str> =
            hook_chains(flow.path).iter().filter(|(t, _)| t == table_name).map(|(_, c)| *c).collect();
        while let Some(chain) = queue.pop_front() {
            if !seen.insert(chain) {
                continue;
            }
            for (position, rule) in chains.get(chain).into_iter().flatten().enumerate() {
                let Ok(args) = arguments(&rule.spec) else { continue };
                let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
                if !iptables_can_match(&args, flow) {
                    continue;
                }
                match target(&args) {
                    Some("DROP") | Some("REJECT") => {
                        let key = format!("{tool} -t {table_name} -A {chain} #{position} {}", rule.spec);
                        let text = format!("-t {table_name} -A {chain} {}", rule.spec);
                        out.counted.insert(key, (text, rule.packets));
                    }
                    Some(next) if chains.contains_key(next) => {
                        if let Some((name, _)) = chains.get_key_value(next) {
                            queue.push_back(name);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn target<'a>(args: &[&'a str]) -> Option<&'a str> {
    args.windows(2).find(|w| matches!(w[0], "-j" | "--jump" | "-g" | "--goto")).map(|w| w[1])
}

/// Whether a rule's matches can pass the probe flow. Unknown matches may.
fn iptables_can_match(args: &[&str], flow: &Flow) -> bool {
    let mut negate = false;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        if arg == "!" {
            negate = true;
            i += 1;
            continue;
        }
        let value = args.get(i + 1).copied().unwrap_or("");
        let verdict = match arg {
            "-p" | "--protocol" => Some(matches!(value, "udp" | "17" | "all" | "0")),
            "--dport" | "--destination-port" => Some(port_in(value, flow.port)),
            "--dports" | "--destination-ports" => Some(value.split(',').any(|p| port_in(p, flow.port))),
            "-s" | "--source" => (!flow.source.is_unspecified()).then(|| cidr_contains(value, flow.source)),
            "-d" | "--destination" => flow.destination.map(|d| cidr_contains(value, d)),
            // Our probes start new flows; a rule only for INVALID or ESTABLISHED traffic passes them.
            "--ctstate" | "--state" => Some(value.split(',').any(|s| s == "NEW")),
            "--dst-type" => Some(match flow.path {
                Path::Inbound => value.split(',').any(|t| t == "LOCAL"),
                Path::Outbound => value.split(',').any(|t| t == "UNICAST"),
            }),
            // TCP-only and ICMP-only options cannot match UDP.
            "--tcp-flags" | "--syn" | "--tcp-option" | "--icmp-type" => Some(false),
            _ => None,
        };
        let takes_value = !matches!(arg, "--syn");
        if let Some(matches) = verdict {
            if matches == negate {
                return false;
            }
        }
        negate = false;
        i += if takes_value && verdict.is_some() { 2 } else { 1 };
    }
    true
}

/// `8472`, `8000:9000`, `:1024`, `1024:` as iptables writes ports and ranges.
fn port_in(text: &str, port: u16) -> bool {
    match text.split_once(':') {
        Some((low, high)) => {
            let low = if low.is_empty() { 0 } else { low.parse().unwrap_or(u16::MAX) };
            let high = if high.is_empty() { u16::MAX } else { high.parse().unwrap_or(0) };
            (low..=high).contains(&port)
        }
        None => text.parse::<u16>().is_ok_and(|p| p == port),
    }
}

/// `192.0.2.0/24`, `192.0.2.1`, `192.0.2.0/255.255.255.0`, comma-separated lists.
fn cidr_contains(text: &str, ip: Ipv4Addr) -> bool {
    text.split(',').any(|one| {
        let (addr, len) = one.split_once('/').unwrap_or((one, "32"));
        let Ok(addr) = addr.parse::<Ipv4Addr>() else { return true }; // IPv6 or a name: may
        let mask = match len.parse::<u32>() {
            Ok(bits) if bits <= 32 => u32::MAX.checked_shl(32 - bits).unwrap_or(0),
            _ => len.parse::<Ipv4Addr>().map(u32::from).unwrap_or(u32::MAX),
        };
        u32::from(addr) & mask == u32::from(ip) & mask
    })
}

/// iptables-nft's own tables: read through iptables-nft-save, not twice.
fn is_iptables_nft_table(family: &str, table: &str) -> bool {
    matches!(family, "ip" | "ip6") && matches!(table, "filter" | "nat" | "mangle" | "raw" | "security")
}

fn nft_candidates(json: &str, flow: &Flow, out: &mut Candidates) {
    let Ok(doc) = serde_json::from_str::<Value>(json) else { return };
    let Some(items) = doc.get("nftables").and_then(Value::as_array) else { return };
    let hooks: &[&str] = match flow.path {
        Path::Inbound => &["prerouting", "input", "ingress"],
        Path::Outbound => &["output", "postrouting"],
    };
    // (family, table) -> chain -> rules.
    let mut rules: HashMap<(String, String), HashMap<String, Vec<&Value>>> = HashMap::new();
    let mut bases: Vec<(String, String, String)> = Vec::new();
    for item in items {
        if let Some(chain) = item.get("chain") {
            let (family, table, name) = (text(chain, "family"), text(chain, "table"), text(chain, "name"));
            let families_ok = matches!(family.as_str(), "ip" | "inet" | "netdev");
            if families_ok && chain.get("hook").and_then(Value::as_str).is_some_and(|h| hooks.contains(&h)) {
                bases.push((family, table, name));
            }
        } else if let Some(rule) = item.get("rule") {
            let key = (text(rule, "family"), text(rule, "table"));
            rules.entry(key).or_default().entry(text(rule, "chain")).or_default().push(rule);
        }
    }
    for (family, table, base) in bases {
        if is_iptables_nft_table(&family, &table) {
            continue;
        }
        let Some(chains) = rules.get(&(family.clone(), table.clone())) else { continue };
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([base]);
        while let Some(chain) = queue.pop_front() {
            if !seen.insert(chain.clone()) {
                continue;
            }
            for rule in chains.get(&chain).into_iter().flatten() {
                let exprs = rule.get("expr").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
                if !exprs.iter().all(|e| nft_can_match(e, flow)) {
                    continue;
                }
                let drops = exprs.iter().any(|e| e.get("drop").is_some() || e.get("reject").is_some());
                let jump = exprs.iter().find_map(|e| {
                    e.get("jump")
                        .or_else(|| e.get("goto"))
                        .and_then(|j| j.get("target"))
                        .and_then(Value::as_str)
                });
                if drops {
                    let handle = rule.get("handle").and_then(Value::as_u64).unwrap_or(0);
                    let shown = format!("nft: {family} {table} {chain} handle {handle}");
                    let counter = exprs.iter().find_map(|e| e.get("counter")).and_then(|c| c.get("packets"));
                    match counter.and_then(Value::as_u64) {
                        Some(packets) => {
                            out.counted
                                .insert(format!("nft {family} {table} {chain} {handle}"), (shown, packets));
                        }
                        None => out.uncounted.push(shown),
                    }
                } else if let Some(next) = jump {
                    queue.push_back(next.to_string());
                }
            }
        }
    }
}

fn text(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Whether one nft expression can pass the probe flow. Unknown expressions may.
fn nft_can_match(expr: &Value, flow: &Flow) -> bool {
    let Some(m) = expr.get("match") else { return true };
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    let (left, right) = (m.get("left").unwrap_or(&Value::Null), m.get("right").unwrap_or(&Value::Null));
    let positive = match op {
        "==" | "in" => true,
        "!=" => false,
        _ => return true,
    };
    let hit = if let Some(payload) = left.get("payload") {
        let protocol = payload.get("protocol").and_then(Value::as_str).unwrap_or("");
        let field = payload.get("field").and_then(Value::as_str).unwrap_or("");
        match (protocol, field) {
            ("udp", "dport") => {
                Some(nft_value_has(right, &|v| v.as_u64() == Some(u64::from(flow.port)), flow.port))
            }
            ("udp", _) => None,
            ("ip", "saddr") => Some(nft_addr_has(right, flow.source)),
            ("ip", "daddr") => flow.destination.map(|d| nft_addr_has(right, d)),
            ("ip", "protocol") => Some(nft_value_has(right, &|v| v.as_str() == Some("udp"), 0)),
            // Any other transport's header: not a UDP packet.
            ("tcp" | "sctp" | "dccp" | "icmp" | "icmpv6" | "udplite", _) => Some(false),
            _ => None,
        }
    } else if let Some(meta) = left.get("meta") {
        match meta.get("key").and_then(Value::as_str) {
            Some("l4proto") => {
                Some(nft_value_has(right, &|v| v.as_str() == Some("udp") || v.as_u64() == Some(17), 0))
            }
            _ => None,
        }
    } else if let Some(ct) = left.get("ct") {
        match ct.get("key").and_then(Value::as_str) {
            Some("state") => Some(nft_value_has(right, &|v| v.as_str() == Some("new"), 0)),
            _ => None,
        }
    } else {
        None
    };
    match hit {
        Some(hit) => hit == positive,
        None => true,
    }
}

/// Whether an nft right-hand side (a value, a set, a range) holds what `is` accepts; `port` for ranges.
fn nft_value_has(right: &Value, is: &dyn Fn(&Value) -> bool, port: u16) -> bool {
    if let Some(set) = right.get("set").and_then(Value::as_array) {
        return set.iter().any(|v| nft_value_has(v, is, port));
    }
    if let Some(range) = right.get("range").and_then(Value::as_array) {
        let (low, high) = (range.first().and_then(Value::as_u64), range.get(1).and_then(Value::as_u64));
        return matches!((low, high), (Some(l), Some(h)) if (l..=h).contains(&u64::from(port)));
    }
    if let Some(items) = right.as_array() {
        return items.iter().any(|v| nft_value_has(v, is, port));
    }
    is(right)
}

fn nft_addr_has(right: &Value, ip: Ipv4Addr) -> bool {
    if let Some(set) = right.get("set").and_then(Value::as_array) {
        return set.iter().any(|v| nft_addr_has(v, ip));
    }
    if let Some(prefix) = right.get("prefix") {
        let addr = prefix.get("addr").and_then(Value::as_str).unwrap_or("");
        let len = prefix.get("len").and_then(Value::as_u64).unwrap_or(32);
        return cidr_contains(&format!("{addr}/{len}"), ip);
    }
    right.as_str().is_none_or(|a| cidr_contains(a, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

    fn inbound() -> Flow {
        Flow { source: A, destination: Some(B), port: 8472, path: Path::Inbound }
    }

    fn snapshot(iptables: &str, nft: Option<&str>) -> Snapshot {
        Snapshot {
            iptables: vec![("iptables-nft".into(), iptables.into())],
            nft_json: nft.map(str::to_string),
            errors: vec![],
            kernel: Default::default(),
        }
    }

    /// A busy node's filter table: kube-proxy's INVALID drop, an SSH block, a TCP rule, a DROP
    /// on another port, a rule only for another node, and the one that drops the probes, behind
    /// a jump.
    const BUSY: &str = "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n:NODES - [0:0]\n:UNUSED - [0:0]\n\
        [90:9000] -A INPUT -m conntrack --ctstate INVALID -j DROP\n\
        [40:2400] -A INPUT -p tcp -m tcp --dport 22 -j DROP\n\
        [7:700] -A INPUT -p udp -m udp --dport 53 -j DROP\n\
        [5:500] -A INPUT -s 192.0.2.0/24 -p udp -j DROP\n\
        [0:0] -A INPUT -j NODES\n\
        [12:1200] -A NODES ! -p udp -j DROP\n\
        [5:600] -A NODES -p udp -m udp --dport 8472 -j DROP\n\
        [66:600] -A UNUSED -j DROP\n\
        [3:300] -A OUTPUT -p udp -m multiport --dports 4789,8472 -j REJECT\n\
        COMMIT\n";

    #[test]
    fn only_rules_the_probes_can_meet_are_candidates() {
        let found = candidates(&snapshot(BUSY, None), &inbound());
        let texts: Vec<&str> = found.counted.values().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, vec!["-t filter -A NODES -p udp -m udp --dport 8472 -j DROP"]);
        let outbound = Flow { path: Path::Outbound, ..inbound() };
        let found = candidates(&snapshot(BUSY, None), &outbound);
        let texts: Vec<&str> = found.counted.values().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, vec!["-t filter -A OUTPUT -p udp -m multiport --dports 4789,8472 -j REJECT"]);
    }

    #[test]
    fn growth_is_measured_per_rule() {
        let before = candidates(&snapshot(BUSY, None), &inbound());
        let after =
            candidates(&snapshot(&BUSY.replace("[5:600] -A NODES", "[10:1100] -A NODES"), None), &inbound());
        assert_eq!(
            grown(&before, &after),
            vec![GrownRule {
                rule: "-t filter -A NODES -p udp -m udp --dport 8472 -j DROP".into(),
                packets: 5
            }]
        );
        assert!(grown(&before, &before).is_empty());
    }

    #[test]
    fn matches_evaluate_ports_addresses_and_negations() {
        let flow = inbound();
        let can = |spec: &str| {
            let args = arguments(spec).unwrap();
            let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
            iptables_can_match(&args, &flow)
        };
        assert!(can("-p udp --dport 8000:9000 -j DROP"));
        assert!(!can("-p udp ! --dport 8472 -j DROP"));
        assert!(can("-d 203.0.113.0/255.255.255.0 -j DROP"));
        assert!(!can("! -s 198.51.100.0/24 -j DROP"));
        assert!(can("-m set --match-set blocked src -j DROP"), "unknown: may match");
        assert!(!can("-p tcp --syn -j DROP"));
        assert!(can("-m addrtype --dst-type LOCAL -j DROP"));
        assert!(port_in(":9000", 8472) && port_in("8472:", 8472) && !port_in("22", 8472));
    }

    const NFT: &str = r#"{"nftables":[{"metainfo":{"version":"1.0.6","release_name":"Lester Gooch #5","json_schema_version":1}},
      {"table":{"family":"inet","name":"fw","handle":1}},
      {"chain":{"family":"inet","table":"fw","name":"in","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}},
      {"chain":{"family":"inet","table":"fw","name":"vxlan","handle":2}},
      {"rule":{"family":"inet","table":"fw","chain":"in","handle":3,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22}},{"counter":{"packets":40,"bytes":2400}},{"drop":null}]}},
      {"rule":{"family":"inet","table":"fw","chain":"in","handle":4,"expr":[{"match":{"op":"==","left":{"ct":{"key":"state"}},"right":"invalid"}},{"counter":{"packets":90,"bytes":9000}},{"drop":null}]}},
      {"rule":{"family":"inet","table":"fw","chain":"in","handle":5,"expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"udp"}},{"jump":{"target":"vxlan"}}]}},
      {"rule":{"family":"inet","table":"fw","chain":"vxlan","handle":6,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":{"set":[4789,8472]}}},{"counter":{"packets":5,"bytes":500}},{"drop":null}]}},
      {"rule":{"family":"inet","table":"fw","chain":"vxlan","handle":7,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":{"range":[8000,9000]}}},{"reject":null}]}},
      {"rule":{"family":"ip","table":"filter","chain":"INPUT","handle":9,"expr":[{"counter":{"packets":1,"bytes":1}},{"drop":null}]}},
      {"chain":{"family":"ip","table":"filter","name":"INPUT","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}}]}"#;

    #[test]
    fn native_nft_rules_are_read_and_uncounted_ones_named() {
        let found = candidates(&snapshot("", Some(NFT)), &inbound());
        let texts: Vec<&str> = found.counted.values().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            texts,
            vec!["nft: inet fw vxlan handle 6"],
            "the iptables-nft table is read through iptables"
        );
        assert_eq!(found.uncounted, vec!["nft: inet fw vxlan handle 7"]);
    }
}
