//! `netprobe iptables` on live tables: each test loads rules into its own network namespace with
//! iptables-restore (nf_tables backend, as Debian 12 ships it) and runs netprobe inside it.

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

fn netprobe(ns: &Netns, args: &[&str]) -> (i32, String) {
    let output = ns.command(env!("CARGO_BIN_EXE_netprobe")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
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
    assert_eq!(report["source"], "iptables-save (nf_tables)");
    assert_eq!(report["backend"], "nf_tables");
    assert_eq!(report["total_rules"], counts.rules);
    assert_eq!(report["duplicate_rules"], counts.duplicates);
    assert_eq!(report["verdict"], "bloated");

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
    assert_eq!(report["duplicate_rules"], 0);
    assert_eq!(report["total_rules"], counts.rules - counts.duplicates);
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
    let latency = &report["check_latency"];
    assert_eq!(latency["runs"], 5);
    assert!(latency["median_ms"].as_f64().unwrap() > 0.0);
    assert!(latency["rule"].as_str().unwrap().starts_with("-t filter -C KUBE-ROUTER-"), "{latency}");

    assert_eq!(saved_rules(&node), before, "the scratch chain is gone and nothing else changed");
    Ok(())
}

#[test]
fn a_second_backend_with_rules_is_reported() -> TestResult {
    let Some(mut lab) = lab_or_skip("ipt-mixed") else { return Ok(()) };
    let node = lab.host("node")?;
    restore(&node, &[], b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n");
    if node.sh("iptables-legacy -N NETPROBE-LEGACY && iptables-legacy -A NETPROBE-LEGACY -j RETURN").is_err()
    {
        eprintln!("skipping the legacy half: this kernel has no legacy iptables (ip_tables module)");
        return Ok(());
    }
    let (code, out) = netprobe(&node, &["iptables", "-o", "json"]);
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(code, 0, "mixed backends are reported, not bloat by themselves: {out}");
    assert_eq!(report["other_rulesets"][0]["command"], "iptables-legacy-save");
    assert_eq!(report["other_rulesets"][0]["total_rules"], 1);
    assert!(report["explanation"].as_str().unwrap().contains("both iptables backends are in use"));
    Ok(())
}
