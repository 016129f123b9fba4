//! `netprobe iptables` on live tables: each test loads rules into its own network namespace with
//! iptables-restore (nf_tables backend, as Debian 12 ships it) and runs netprobe inside it.

mod common;
use std::io::Write;
use std::process::{Command, Stdio};

use netprobe_lab::iptables_dump::write_kube_router_bloat;
use netprobe_lab::{lab_or_skip, Netns};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn restore(ns: &Netns, args: &[&str], text: &[u8]) {
    let mut child = ns.command("iptables-restore").args(args).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(text).unwrap();
    assert!(child.wait().unwrap().success(), "iptables-restore {args:?} failed");
}

/// netprobe in `ns`: (exit code, stdout).
fn netprobe(ns: &Netns, args: &[&str]) -> (i32, String) {
    let (code, stdout, _) = common::netprobe_in(ns, args, &[]);
    (code, stdout)
}

/// `iptables-save` as (table, chain, rule) lines, counters and comments dropped, in order.
fn saved_rules(ns: &Netns) -> Vec<(String, String)> {
    let text = ns.sh("iptables-save").unwrap();
    let mut table = String::new();
    let mut rules = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_string();
        } else if line.starts_with("-A ") {
            rules.push((table.clone(), line.to_string()));
        } else if line.starts_with(':') {
            rules.push((table.clone(), line.split(' ').take(2).collect::<Vec<_>>().join(" ")));
        }
    }
    rules
}

/// Each chain's rules with later copies removed, order kept: what a cleanup must leave.
fn first_copies(rules: &[(String, String)]) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    rules.iter().filter(|r| seen.insert((*r).clone())).cloned().collect()
}

#[test]
fn live_analysis_and_cleanup_script_remove_every_duplicate_and_nothing_else() -> TestResult {
    let Some(mut lab) = lab_or_skip("ipt-clean") else { return Ok(()) };
    let node = lab.host("node")?;
    let mut dump = Vec::new();
    let counts = write_kube_router_bloat(&mut dump, 20_000, 20)?;
    restore(&node, &[], &dump);

    let (code, out) = netprobe(&node, &["iptables", "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["source"], "live");
    assert_eq!(report["verdict"], "bloated");
    assert_eq!(report["rulesets"].as_array().unwrap().len(), 1, "only the set that holds rules: {out}");
    let set = &report["rulesets"][0];
    assert_eq!((set["backend"].as_str(), set["family"].as_str()), (Some("nf_tables"), Some("ipv4")));
    assert_eq!(set["save_command"], "iptables-nft-save");
    assert_eq!(set["total_rules"], counts.rules);
    assert_eq!(set["duplicate_rules"], counts.duplicates);

    let before = saved_rules(&node);
    let (code, script) = netprobe(&node, &["iptables", "--cleanup-script"]);
    assert_eq!(code, 0);
    assert_eq!(saved_rules(&node), before, "printing the script changed nothing");
    assert!(script.lines().filter(|l| l.starts_with("-A ")).count() < 500, "only first copies");
    restore(&node, &["--noflush"], script.as_bytes());

    let after = saved_rules(&node);
    assert_eq!(after, first_copies(&before), "first copies kept, in order; no other rule touched");
    let (code, out) = netprobe(&node, &["iptables", "-o", "json"]);
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["rulesets"][0]["duplicate_rules"], 0);
    assert_eq!(report["rulesets"][0]["total_rules"], counts.rules - counts.duplicates);
    assert_eq!(code, 0, "{out}");
    Ok(())
}

#[test]
fn self_test_and_check_latency_leave_no_trace() -> TestResult {
    let Some(mut lab) = lab_or_skip("ipt-self") else { return Ok(()) };
    let node = lab.host("node")?;
    let mut dump = Vec::new();
    write_kube_router_bloat(&mut dump, 2_000, 5)?;
    restore(&node, &[], &dump);
    let before = saved_rules(&node);

    let (code, out) = netprobe(&node, &["iptables", "--self-test", "--check-latency", "-o", "json"]);
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(code, 1, "the dump is bloated");
    let version = Command::new("iptables").arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout);
    let buggy = ["v1.8.0 ", "v1.8.1 ", "v1.8.2 ", "v1.8.3 ", "v1.8.4 ", "v1.8.10 "]
        .iter()
        .any(|v| version.contains(v));
    assert_eq!(report["self_test"]["check_works"], !buggy, "{version}: {}", report["self_test"]);
    assert_eq!(report["self_test"]["command"], "iptables");
    let latency = &report["check_latency"];
    assert_eq!(latency["runs"], 5);
    assert!(latency["median_ms"].as_f64().unwrap() > 0.0);
    assert!(latency["rule"].as_str().unwrap().starts_with("-t filter -C KUBE-ROUTER-"), "{latency}");

    assert_eq!(saved_rules(&node), before, "the scratch chain is gone and nothing else changed");
    Ok(())
}

/// kube-router's three INPUT rules for an IPv6 cluster, `copies` times each: (dump, rules, duplicates).
fn ipv6_kube_router_bloat(copies: u64) -> (String, u64, u64) {
    let mut text = String::from("*filter\n:INPUT ACCEPT [0:0]\n:KUBE-ROUTER-INPUT - [0:0]\n");
    text.push_str(
        "-A INPUT -m comment --comment \"kube-router netpol - 4IA2OSFRMVNDXBVV\" -j KUBE-ROUTER-INPUT\n",
    );
    for _ in 0..copies {
        text.push_str("-A KUBE-ROUTER-INPUT -d 2001:db8:43::/112 -m comment --comment \"allow traffic to primary cluster IP range - EKROEGTNIJ3AP3LC\" -j RETURN\n");
        text.push_str("-A KUBE-ROUTER-INPUT -p tcp -m comment --comment \"allow LOCAL TCP traffic to node ports - LR7XO7NXDBGQJD2M\" -m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN\n");
        text.push_str("-A KUBE-ROUTER-INPUT -p udp -m comment --comment \"allow LOCAL UDP traffic to node ports - 76UCBPIZNGJNWNUZ\" -m addrtype --dst-type LOCAL -m multiport --dports 30000:32767 -j RETURN\n");
    }
    text.push_str("COMMIT\n");
    (text, 1 + 3 * copies, 3 * (copies - 1))
}

/// Loads `text` into `ns` with a restore command (`ip6tables-legacy-restore`, say); false when this
/// kernel cannot (no legacy iptables modules).
fn try_restore(ns: &Netns, command: &str, text: &[u8]) -> bool {
    let mut child = ns.command(command).stdin(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let written = child.stdin.take().unwrap().write_all(text);
    child.wait().unwrap().success() && written.is_ok()
}

#[test]
fn every_backend_and_family_is_a_rule_set_of_its_own() -> TestResult {
    let Some(mut lab) = lab_or_skip("ipt-mixed") else { return Ok(()) };
    let node = lab.host("node")?;
    restore(&node, &[], b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n");
    // kube-router's bloat in ip6tables, legacy backend, as on a k3s node that ships its own.
    let (dump, total, duplicates) = ipv6_kube_router_bloat(300);
    if !try_restore(&node, "ip6tables-legacy-restore", dump.as_bytes()) {
        eprintln!("skipping: this kernel has no legacy ip6tables (ip6_tables module)");
        return Ok(());
    }
    let (code, out) = netprobe(&node, &["iptables", "-o", "json"]);
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(code, 1, "{out}");
    let sets: Vec<(String, String, u64)> = report["rulesets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["family"].as_str().unwrap().into(),
                s["backend"].as_str().unwrap().into(),
                s["total_rules"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sets, vec![("ipv4".into(), "nf_tables".into(), 1), ("ipv6".into(), "legacy".into(), total)]);
    let v6 = &report["rulesets"][1];
    assert_eq!((v6["verdict"].as_str(), v6["duplicate_rules"].as_u64()), (Some("bloated"), Some(duplicates)));
    assert!(report["notes"][0].as_str().unwrap().contains("both iptables backends hold rules"), "{out}");

    // Its cleanup script is for ip6tables-legacy-restore, and applied there it leaves no copy.
    let (code, script) = netprobe(&node, &["iptables", "-6", "--backend", "legacy", "--cleanup-script"]);
    assert_eq!(code, 0);
    assert!(script.contains("# Apply with: ip6tables-legacy-restore --noflush < THIS_FILE"), "{script}");
    let mut child =
        node.command("ip6tables-legacy-restore").arg("--noflush").stdin(Stdio::piped()).spawn()?;
    child.stdin.take().unwrap().write_all(script.as_bytes())?;
    assert!(child.wait()?.success());
    let (code, out) = netprobe(&node, &["iptables", "-6", "-o", "json"]);
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!((code, report["rulesets"][0]["duplicate_rules"].as_u64()), (0, Some(0)), "{out}");
    // The self-test runs the binary of the rule set picked.
    let (_, out) = netprobe(&node, &["iptables", "-6", "--backend", "legacy", "--self-test", "-o", "json"]);
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["self_test"]["command"], "ip6tables-legacy");
    Ok(())
}

#[test]
fn apply_removes_the_copies_and_refuses_when_a_chain_changed_meanwhile() -> TestResult {
    let Some(mut lab) = lab_or_skip("ipt-apply") else { return Ok(()) };
    let node = lab.host("node")?;
    let mut dump = Vec::new();
    let counts = write_kube_router_bloat(&mut dump, 2_000, 5)?;
    restore(&node, &[], &dump);
    let before = saved_rules(&node);

    // The library's two steps, as --apply runs them, with a rule added in between: refused.
    let ns = node.clone();
    let refused = std::thread::spawn(move || -> Result<String, String> {
        ns.enter_current_thread().map_err(|e| e.to_string())?;
        use netprobe_probes::iptables::{load, Input, Options, Selection};
        let loaded = load(&Input::Live, Selection::default()).map_err(|e| e.to_string())?;
        ns.sh("iptables -A KUBE-ROUTER-INPUT -s 192.0.2.7/32 -j RETURN").map_err(|e| e.to_string())?;
        match loaded.apply(&Options::default()) {
            Ok(applied) => Err(format!("applied {applied:?}")),
            Err(e) => Ok(e.to_string()),
        }
    })
    .join()
    .unwrap()?;
    assert!(refused.contains("filter/KUBE-ROUTER-INPUT changed since it was read"), "{refused}");
    assert!(refused.contains("nothing was applied"), "{refused}");
    let added = saved_rules(&node);
    assert_eq!(added.len(), before.len() + 1, "the refused apply changed nothing");

    // Through the CLI, nothing changing meanwhile: applied and read back.
    let (code, out) = netprobe(&node, &["iptables", "--apply", "-o", "json"]);
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(code, 0, "{out}");
    let applied = &report["applied"];
    assert_eq!(applied["verified"], true, "{applied}");
    assert_eq!(applied["removed"], counts.duplicates);
    assert_eq!(applied["restore_command"], "iptables-nft-restore --noflush");
    assert_eq!(report["rulesets"][0]["duplicate_rules"], 0, "the report is of the rules after");
    assert_eq!(saved_rules(&node), first_copies(&added), "first copies kept in order, the new rule too");
    Ok(())
}

#[test]
fn kube_proxys_nftables_mode_is_read_live_beside_iptables() -> TestResult {
    let Some(mut lab) = lab_or_skip("ipt-nft-live") else { return Ok(()) };
    let ns = lab.host("node")?;
    // kube-proxy's own expected rules (its TestOverallNFTablesRules), then one rule re-added 30
    // times, as a writer that does not check first would; and an iptables-nft rule beside them.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/nft/kube-proxy-overall.nft-f");
    ns.sh(&format!("nft -f {}", script.display()))?;
    for _ in 0..30 {
        ns.sh("nft add rule ip kube-proxy masquerading masquerade fully-random")?;
    }
    ns.sh("iptables-nft -A INPUT -p tcp --dport 22 -j ACCEPT")?;
    let before = ns.sh("nft list ruleset")?;
    let (code, out) = netprobe(&ns, &["iptables", "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out)?;
    let native = report["rulesets"].as_array().unwrap().iter().find(|r| r["backend"] == "nftables").unwrap();
    assert_eq!(
        (native["total_rules"].as_u64(), native["duplicate_rules"].as_u64()),
        (Some(87), Some(30)),
        "{native}"
    );
    assert_eq!(native["verdict"], "bloated");
    assert_eq!(native["duplicate_groups"][0]["chain"], "masquerading");
    assert_eq!(native["duplicate_groups"][0]["owner"], "kube-proxy");
    // The iptables-nft rule is read once, by iptables-nft-save, not again from the nft listing.
    let iptables =
        report["rulesets"].as_array().unwrap().iter().find(|r| r["backend"] == "nf_tables").unwrap();
    assert_eq!(iptables["total_rules"], 1, "{report}");
    // No iptables-restore script for nftables rules: the way to remove them is said instead.
    let output =
        ns.command(env!("CARGO_BIN_EXE_netprobe")).args(["iptables", "--cleanup-script"]).output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nft delete rule ip kube-proxy handle N"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(ns.sh("nft list ruleset")?, before, "reading changed nothing");
    Ok(())
}
