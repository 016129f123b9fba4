//! Generated iptables-save dumps shaped like incident 3: a single-server k3s node whose kube-router
//! appended its top-level rules again on every policy sync, on top of an ordinary rule set (kube-proxy
//! services, kube-router pod firewalls, flannel, about a thousand rules, like the agent nodes had).
//!
//! The counts are known exactly, so tests can check an analysis against them.

use std::io::{self, Write};

/// What a generated dump holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpCounts {
    /// Every line written, comments included.
    pub lines: u64,
    /// `-A` lines.
    pub rules: u64,
    /// `-A` lines that repeat an earlier rule of the same chain.
    pub duplicates: u64,
    /// Copies of the most copied rule.
    pub worst_copies: u64,
    /// User chains no rule jumps to.
    pub orphan_chains: u64,
}

/// The rules kube-router re-appends on each sync (chain, rule spec), comments as kube-router writes
/// them: text, ` - `, a 16-character hash.
const BLOAT: &[(&str, &str)] = &[
    (
        "KUBE-ROUTER-INPUT",
        r#"-d 10.43.0.0/16 -m comment --comment "allow traffic to primary cluster IP range - EKROEGTNIJ3AP3LC" -j RETURN"#,
    ),
    (
        "KUBE-ROUTER-INPUT",
        r#"-p tcp -m comment --comment "allow LOCAL TCP traffic to node ports - LR7XO7NXDBGQJD2M" -m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN"#,
    ),
    (
        "KUBE-ROUTER-INPUT",
        r#"-p udp -m comment --comment "allow LOCAL UDP traffic to node ports - 76UCBPIZNGJNWNUZ" -m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN"#,
    ),
    (
        "KUBE-ROUTER-FORWARD",
        r#"-d 10.43.0.0/16 -m comment --comment "allow traffic to primary cluster IP range - EKROEGTNIJ3AP3LC" -j RETURN"#,
    ),
    (
        "KUBE-ROUTER-OUTPUT",
        r#"-d 10.43.0.0/16 -m comment --comment "allow traffic to primary cluster IP range - EKROEGTNIJ3AP3LC" -j RETURN"#,
    ),
];

/// A 16-character base32-looking name for chain `n` of `kind` (deterministic).
fn hash16(kind: u32, n: u32) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut x =
        (u64::from(kind) << 32 | u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..16)
        .map(|_| {
            x = x.rotate_left(5).wrapping_mul(0x2545_F491_4F6C_DD1D);
            ALPHABET[(x >> 59) as usize] as char
        })
        .collect()
}

/// Writes a dump of about `lines` lines (exactly, when `lines` is at least the base rule set of
/// about a thousand lines): the base rule set plus kube-router's copies. `services` sets the size of
/// the base (kube-proxy services with two endpoints each).
pub fn write_kube_router_bloat<W: Write>(out: &mut W, lines: u64, services: u32) -> io::Result<DumpCounts> {
    let mut counts = DumpCounts { lines: 0, rules: 0, duplicates: 0, worst_copies: 1, orphan_chains: 0 };
    // --- filter: kube-router, kubelet and flannel, with pod firewalls.
    let pods = services;
    let pod_chains: Vec<String> = (0..pods).map(|p| format!("KUBE-POD-FW-{}", hash16(1, p))).collect();
    let mut filter_chains = vec![
        ":INPUT ACCEPT [0:0]".to_string(),
        ":FORWARD ACCEPT [0:0]".into(),
        ":OUTPUT ACCEPT [0:0]".into(),
        ":FLANNEL-FWD - [0:0]".into(),
        ":KUBE-FIREWALL - [0:0]".into(),
        ":KUBE-ROUTER-FORWARD - [0:0]".into(),
        ":KUBE-ROUTER-INPUT - [0:0]".into(),
        ":KUBE-ROUTER-OUTPUT - [0:0]".into(),
        ":KUBE-NWPLCY-DEFAULT - [0:0]".into(),
    ];
    filter_chains.extend(pod_chains.iter().map(|c| format!(":{c} - [0:0]")));
    let mut filter_rules: Vec<(String, String)> = vec![
        ("INPUT".into(), r#"-m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT"#.into()),
        ("INPUT".into(), "-j KUBE-FIREWALL".into()),
        ("FORWARD".into(), r#"-m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD"#.into()),
        ("FORWARD".into(), r#"-m comment --comment "flanneld forward" -j FLANNEL-FWD"#.into()),
        ("OUTPUT".into(), r#"-m comment --comment "kube-router netpol - VEAAIY32XVBHCSCY" -j KUBE-ROUTER-OUTPUT"#.into()),
        ("OUTPUT".into(), "-j KUBE-FIREWALL".into()),
        ("FLANNEL-FWD".into(), r#"-s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT"#.into()),
        ("FLANNEL-FWD".into(), r#"-d 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT"#.into()),
        ("KUBE-FIREWALL".into(), r#"! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"#.into()),
        ("KUBE-NWPLCY-DEFAULT".into(), r#"-m comment --comment "rule to mark traffic matching a network policy" -j MARK --set-xmark 0x10000/0x10000"#.into()),
    ];
    for (p, chain) in pod_chains.iter().enumerate() {
        let ip = format!("10.42.{}.{}", p / 250, p % 250 + 2);
        filter_rules.push(("KUBE-ROUTER-FORWARD".into(), format!(r#"-d {ip}/32 -m comment --comment "rule to jump traffic destined to POD name:task-{p} namespace: airflow to chain {chain}" -j {chain}"#)));
        filter_rules.push((chain.clone(), r#"-m comment --comment "rule for stateful firewall for pod" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"#.into()));
        filter_rules.push((chain.clone(), format!(r#"-d {ip}/32 -m comment --comment "rule to permit the traffic traffic to pods when source is the pod's local node" -m addrtype --src-type LOCAL -j ACCEPT"#)));
        filter_rules.push((chain.clone(), r#"-m comment --comment "run through default ingress network policy chain" -j KUBE-NWPLCY-DEFAULT"#.into()));
        filter_rules.push((chain.clone(), r#"-m comment --comment "rule to log dropped traffic POD name" -m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100"#.into()));
        filter_rules.push((chain.clone(), r#"-m comment --comment "rule to REJECT traffic destined for POD name" -m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable"#.into()));
    }
    // The first copy of each kube-router rule belongs to the base set.
    for (chain, spec) in BLOAT {
        filter_rules.push((chain.to_string(), spec.to_string()));
    }

    // --- nat: kube-proxy services, two endpoints each, and one stale endpoint chain (an orphan).
    let mut nat_chains = vec![
        ":PREROUTING ACCEPT [0:0]".to_string(),
        ":INPUT ACCEPT [0:0]".into(),
        ":OUTPUT ACCEPT [0:0]".into(),
        ":POSTROUTING ACCEPT [0:0]".into(),
        ":KUBE-MARK-MASQ - [0:0]".into(),
        ":KUBE-POSTROUTING - [0:0]".into(),
        ":KUBE-SERVICES - [0:0]".into(),
        ":KUBE-SEP-STALE0ENDPOINT0 - [0:0]".into(),
    ];
    counts.orphan_chains = 1;
    let mut nat_rules: Vec<(String, String)> = vec![
        ("PREROUTING".into(), r#"-m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.into()),
        ("OUTPUT".into(), r#"-m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.into()),
        ("POSTROUTING".into(), r#"-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING"#.into()),
        ("KUBE-MARK-MASQ".into(), "-j MARK --set-xmark 0x4000/0x4000".into()),
        ("KUBE-POSTROUTING".into(), "-m mark ! --mark 0x4000/0x4000 -j RETURN".into()),
        ("KUBE-POSTROUTING".into(), r#"-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully"#.into()),
        ("KUBE-SEP-STALE0ENDPOINT0".into(), "-p tcp -m tcp -j DNAT --to-destination 10.42.9.9:8080".into()),
    ];
    for s in 0..services {
        let svc = format!("KUBE-SVC-{}", hash16(2, s));
        let vip = format!("10.43.{}.{}", s / 250, s % 250 + 10);
        nat_chains.push(format!(":{svc} - [0:0]"));
        nat_rules.push(("KUBE-SERVICES".into(), format!(r#"-d {vip}/32 -p tcp -m comment --comment "airflow/svc-{s}:http cluster IP" -m tcp --dport 80 -j {svc}"#)));
        for e in 0..2u32 {
            let sep = format!("KUBE-SEP-{}", hash16(3, s * 2 + e));
            nat_chains.push(format!(":{sep} - [0:0]"));
            let probability =
                if e == 0 { "-m statistic --mode random --probability 0.50000000000 " } else { "" };
            nat_rules.push((svc.clone(), format!(r#"-m comment --comment "airflow/svc-{s}:http -> 10.42.{}.{}:8080" {probability}-j {sep}"#, s / 250, s % 250 + 2 + e)));
            nat_rules.push((
                sep.clone(),
                format!(
                    r#"-s 10.42.{}.{}/32 -m comment --comment "airflow/svc-{s}:http" -j KUBE-MARK-MASQ"#,
                    s / 250,
                    s % 250 + 2 + e
                ),
            ));
            nat_rules.push((sep, format!(r#"-p tcp -m comment --comment "airflow/svc-{s}:http" -m tcp -j DNAT --to-destination 10.42.{}.{}:8080"#, s / 250, s % 250 + 2 + e)));
        }
    }

    // Fixed lines: header comment, two table headers and COMMITs, one trailing comment.
    let fixed = 1 + 2 + 2 + 1;
    let base = fixed + (filter_chains.len() + nat_chains.len() + filter_rules.len() + nat_rules.len()) as u64;
    let extra = lines.saturating_sub(base);
    // Each sync adds one copy of every BLOAT rule; leftover lines are more copies of the first.
    let syncs = extra / BLOAT.len() as u64;
    let leftover = extra % BLOAT.len() as u64;

    writeln!(out, "# Generated by iptables-save v1.8.10 (nf_tables) on Mon Nov 23 00:00:00 2026")?;
    counts.lines += 1;
    for (table, chains, rules) in
        [("filter", &filter_chains, &filter_rules), ("nat", &nat_chains, &nat_rules)]
    {
        writeln!(out, "*{table}")?;
        for chain in chains.iter() {
            writeln!(out, "{chain}")?;
        }
        counts.lines += 1 + chains.len() as u64;
        // iptables-save groups rules by chain in declaration order.
        for declared in chains.iter() {
            let name = declared[1..].split(' ').next().unwrap_or_default();
            for (chain, spec) in rules.iter().filter(|(c, _)| c == name) {
                writeln!(out, "-A {chain} {spec}")?;
                counts.lines += 1;
                counts.rules += 1;
                let copies = match BLOAT.iter().position(|(c, s)| c == chain && s == spec) {
                    Some(0) if table == "filter" => syncs + leftover,
                    Some(_) if table == "filter" => syncs,
                    _ => 0,
                };
                for _ in 0..copies {
                    writeln!(out, "-A {chain} {spec}")?;
                }
                counts.lines += copies;
                counts.rules += copies;
                counts.duplicates += copies;
                counts.worst_copies = counts.worst_copies.max(copies + 1);
            }
        }
        writeln!(out, "COMMIT")?;
        counts.lines += 1;
    }
    writeln!(out, "# Completed on Mon Nov 23 00:00:00 2026")?;
    counts.lines += 1;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_what_was_written() {
        for (lines, services) in [(0, 3), (5_000, 20), (20_003, 40)] {
            let mut text = Vec::new();
            let counts = write_kube_router_bloat(&mut text, lines, services).unwrap();
            let text = String::from_utf8(text).unwrap();
            assert_eq!(counts.lines, text.lines().count() as u64);
            assert_eq!(counts.rules, text.lines().filter(|l| l.starts_with("-A ")).count() as u64);
            if lines > 0 {
                assert_eq!(counts.lines, lines, "exact line count");
            }
        }
    }

    #[test]
    fn names_are_stable_base32() {
        assert_eq!(hash16(1, 7), hash16(1, 7));
        assert_ne!(hash16(1, 7), hash16(1, 8));
        assert!(hash16(3, 0).bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    }
}
