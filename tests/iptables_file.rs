//! `netprobe iptables --file`: generated dumps with known counts, and bad input. No privilege needed.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use netprobe_lab::iptables_dump::write_kube_router_bloat;
use serde_json::Value;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netprobe-iptf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn netprobe(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // A reader that stops early (bad input) closes the pipe: that is fine.
        let _ = pipe.write_all(bytes);
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

#[test]
fn a_generated_bloat_dump_gives_its_known_counts() {
    let path = temp("bloat.rules");
    let mut file = std::fs::File::create(&path).unwrap();
    let counts = write_kube_router_bloat(&mut file, 30_000, 25).unwrap();
    drop(file);
    let output = netprobe(&["iptables", "--file", path.to_str().unwrap(), "-o", "json"], None);
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["probe"], "iptables");
    assert_eq!(report["verdict"], "bloated");
    assert_eq!(report["rulesets"].as_array().unwrap().len(), 1);
    let report = &report["rulesets"][0];
    assert_eq!(report["family"], "ipv4");
    assert_eq!(report["total_rules"], counts.rules);
    assert_eq!(report["duplicate_rules"], counts.duplicates);
    assert_eq!(report["version"], "1.8.10");
    assert_eq!(report["backend"], "nf_tables");
    assert_eq!(report["restore_command"], "iptables-nft-restore --noflush");
    assert_eq!(report["duplicate_groups"][0]["copies"], counts.worst_copies);
    let worst = &report["chains"][0];
    assert_eq!(worst["chain"], "KUBE-ROUTER-INPUT");
    assert_eq!(worst["owner"], "kube-router");
    assert_eq!(report["orphan_chains"].as_array().unwrap().len() as u64, counts.orphan_chains);
    let hashes: Vec<&str> = report["kube_router_hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hash"].as_str().unwrap())
        .collect();
    assert!(hashes.contains(&"EKROEGTNIJ3AP3LC") && hashes.contains(&"LR7XO7NXDBGQJD2M"), "{hashes:?}");
    assert!(report["explanation"].as_str().unwrap().contains("iptables 1.8.10, one of them"));

    // The same text on standard input, and the table a person reads.
    let text = std::fs::read(&path).unwrap();
    let output = netprobe(&["iptables", "--file", "-"], Some(&text));
    assert_eq!(output.status.code(), Some(1));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.starts_with(&format!(
            // Both counts are between 10,000 and 99,999 here.
            "BLOATED  {},{:03} rules, {},{:03} of them duplicates",
            counts.rules / 1000,
            counts.rules % 1000,
            counts.duplicates / 1000,
            counts.duplicates % 1000
        )),
        "{table}"
    );
    assert!(table.contains("why: kube-router re-adds a rule"), "{table}");
}

#[test]
fn a_small_clean_dump_is_ok() {
    let text = b"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n";
    let output = netprobe(&["iptables", "--file", "-", "-o", "json"], Some(text));
    assert_eq!(output.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["rulesets"][0]["total_rules"], 2);
    assert_eq!(report["rulesets"][0]["duplicate_rules"], 0);
}

#[test]
fn thresholds_are_flags() {
    let text =
        b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n";
    let default = netprobe(&["iptables", "--file", "-"], Some(text));
    assert_eq!(default.status.code(), Some(0), "1 copy in 3 rules is under the minimum of 20 duplicates");
    let strict = netprobe(&["iptables", "--file", "-", "--min-duplicates", "1"], Some(text));
    assert_eq!(strict.status.code(), Some(1), "1 of 3 rules duplicated is over 10%");
    let lenient = netprobe(
        &["iptables", "--file", "-", "--min-duplicates", "1", "--max-duplicate-percent", "50"],
        Some(text),
    );
    assert_eq!(lenient.status.code(), Some(0));
    let few = netprobe(
        &["iptables", "--file", "-", "--max-duplicate-percent", "50", "--max-rules", "2"],
        Some(text),
    );
    assert_eq!(few.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&few.stdout).contains("3 rules in total (more than 2)"));
}

#[test]
fn bad_input_is_exit_2_naming_the_line_and_prints_no_script() {
    let cases: &[(&[u8], &str)] = &[
        (b"*filter\n:INPUT ACCEPT [0:0]\nhello\nCOMMIT\n", "line 3"),
        (b"\x00\x01\x02\xff\xfe", "line 1"),
        (b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment \"x\n", "line 3: unterminated quote"),
        (b"<html><body>not rules</body></html>\n", "line 1: not iptables-save output"),
    ];
    for (bytes, want) in cases {
        for extra in [&[][..], &["--cleanup-script"][..]] {
            let output = netprobe(&[&["iptables", "--file", "-"][..], extra].concat(), Some(bytes));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{want}: {stderr}");
            assert!(stderr.contains(want), "{want}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(output.stdout.is_empty(), "nothing on stdout, in particular no script");
        }
    }
    // Cut short: the report analyses what is there (with a note), a cleanup script is refused.
    let cut: &[u8] = b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n";
    let output = netprobe(&["iptables", "--file", "-"], Some(cut));
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("without COMMIT (cut short?)"));
    let output = netprobe(&["iptables", "--file", "-", "--cleanup-script"], Some(cut));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("without COMMIT"));
    assert!(output.stdout.is_empty(), "no script from a dump cut short");
    let output = netprobe(&["iptables", "--file", "/nonexistent/rules"], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot open"));
    let output = netprobe(&["iptables", "--file", "x", "--self-test"], None);
    assert_eq!(output.status.code(), Some(2), "--self-test is live only");
}

#[test]
fn random_bytes_never_panic() {
    // A fixed-seed generator: the same bytes every run.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let alphabet = b"*:-AC[]0123456789 \"\\\n\rOMITfilterINPUTj!#\xc3\xa9\xff";
    for round in 0..200 {
        let len = 1 + (round * 7) % 300;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect();
        let output = netprobe(&["iptables", "--file", "-", "-o", "json"], Some(&bytes));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(matches!(output.status.code(), Some(0..=2)), "{bytes:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{bytes:?}: {stderr}");
    }
}
