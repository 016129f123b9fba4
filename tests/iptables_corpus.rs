//! `netprobe iptables --file` on real rule sets nobody here wrote (tests/corpus/README.md). No
//! privilege needed.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/iptables").join(name)
}

fn run(file: &str, extra: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(["iptables", "--file"])
        .arg(corpus(file))
        .args(["-o", "json"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{file}: {stderr}");
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), report, stderr)
}

/// (family, rules, duplicates, verdict) of each rule set.
fn sets(report: &Value) -> Vec<(String, u64, u64, String)> {
    report["rulesets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["family"].as_str().unwrap().to_string(),
                r["total_rules"].as_u64().unwrap(),
                r["duplicate_rules"].as_u64().unwrap(),
                r["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn an_ipv4_dump_followed_by_an_ipv6_dump_is_never_merged() {
    let (code, report, _) = run("synology-v4-then-v6.rules", &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(sets(&report), vec![("ipv4".into(), 43, 0, "ok".into()), ("ipv6".into(), 47, 0, "ok".into())]);
    assert_eq!(report["rulesets"][1]["first_line"], 54);
    assert_eq!(report["rulesets"][1]["restore_command"], "ip6tables-legacy-restore --noflush");
    let (code, report, _) = run("synology-v4-then-v6.rules", &["-6"]);
    assert_eq!((code, sets(&report).len()), (0, 1));
}

#[test]
fn real_dumps_get_the_verdict_their_copies_deserve() {
    for (file, want) in [
        ("veroneau.net.rules", (0, 263, 3, "ok")),
        ("psa1.rules", (0, 36, 1, "ok")),
        ("ugent.rules", (1, 232, 171, "bloated")),
        ("shorewall.rules", (1, 102, 30, "bloated")),
    ] {
        let (code, report, stderr) = run(file, &[]);
        let set = &sets(&report)[0];
        assert_eq!((code, set.1, set.2, set.3.as_str()), want, "{file}: {stderr}");
    }
    let (_, report, _) = run("psa1.rules", &[]);
    assert_eq!(report["rulesets"][0]["explanation"], Value::Null, "a stray copy is shown, not explained");
}

#[test]
fn a_paste_with_a_shell_prompt_is_refused_naming_the_line() {
    let (code, _, stderr) = run("pastebin-with-prompt.rules", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("line 1: not iptables-save output"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
}

#[test]
fn iptables_list_output_is_read_with_a_note() {
    let (code, report, stderr) = run("kube-router-list-S.txt", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(sets(&report), vec![("ipv4".into(), 27, 24, "bloated".into())]);
    assert!(report["notes"][0].as_str().unwrap().contains("`iptables -S` output"), "{report}");
    let set = &report["rulesets"][0];
    assert_eq!(set["chains"][0]["owner"], "kube-router");
    assert!(set["orphan_chains"].as_array().unwrap().is_empty(), "the kubelet's canary is a marker: {set}");
}

#[test]
fn pasted_dumps_are_read_as_pasted() {
    // Indented four blanks, as in a chat or an issue: the same verdict as the file itself.
    let (code, report, stderr) = run("psa1-indented.rules", &[]);
    assert_eq!((code, sets(&report)), (0, vec![("ipv4".into(), 36, 1, "ok".into())]), "{stderr}");
    // Cut short inside its first table: what is there is analysed, and said to be cut.
    let (code, report, stderr) = run("ugent-cut-short.rules", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(sets(&report)[0].1 > 0, "{report}");
    let notes = report["notes"].to_string();
    assert!(notes.contains("without COMMIT (cut short?)"), "{notes}");
    // ...and no cleanup script is written from it.
    let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(["iptables", "--cleanup-script", "--file"])
        .arg(corpus("ugent-cut-short.rules"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("give the whole dump"));
    // `iptables -S` then `iptables -S -t nat` (real iptables 1.8.9 over the CNI plugins' rules):
    // nat's chains are nat's.
    let (code, report, stderr) = run("cni-list-S-then-S-t-nat.txt", &[]);
    assert_eq!(code, 0, "{stderr}");
    let chains = report["rulesets"][0]["chains"].as_array().unwrap();
    let table_of = |chain: &str| {
        chains.iter().find(|c| c["chain"] == chain).map(|c| c["table"].as_str().unwrap().to_string())
    };
    assert_eq!(table_of("CNI-HOSTPORT-DNAT").as_deref(), Some("nat"), "{report}");
    assert_eq!(table_of("CNI-FORWARD").as_deref(), Some("filter"));
    assert_eq!(sets(&report)[0].1, 34, "every rule of both listings");
}

#[test]
fn the_cni_plugins_rules_are_owned_by_who_wrote_them() {
    // bridge, portmap and firewall (containernetworking-plugins 1.1.1) for three pods.
    let (code, report, stderr) = run("cni-plugins-three-pods.rules", &[]);
    assert_eq!((code, sets(&report)), (0, vec![("ipv4".into(), 34, 0, "ok".into())]), "{stderr}");
    let chains = report["rulesets"][0]["chains"].as_array().unwrap();
    for chain in chains.iter().filter(|c| c["chain"].as_str().unwrap().starts_with("CNI-DN-")) {
        assert_eq!(chain["owner"], "cni-portmap", "{chain}");
    }
    assert!(report["rulesets"][0]["orphan_chains"].as_array().unwrap().is_empty());
    // portmap's removal cut half way (the jump to a pod's DNAT chain gone, the chain left):
    // the chain is an orphan.
    let (_, report, _) = run("cni-portmap-half-deleted.rules", &[]);
    let orphans = &report["rulesets"][0]["orphan_chains"];
    assert_eq!(
        orphans,
        &serde_json::json!([{"table": "nat", "chain": "CNI-DN-6029b5edc6546994e6e87"}]),
        "{report}"
    );
}

#[test]
fn an_nft_listing_is_read_and_other_dumps_are_named() {
    let nft = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/nft/kube-proxy-overall.nft");
    let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(["iptables", "-o", "json", "--file"])
        .arg(&nft)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(sets(&report), vec![("ipv4".into(), 57, 0, "ok".into())]);
    assert_eq!(report["rulesets"][0]["backend"], "nftables");
    assert_eq!(report["rulesets"][0]["chains"][0]["owner"], "kube-proxy");
}
