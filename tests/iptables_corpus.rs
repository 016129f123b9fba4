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
