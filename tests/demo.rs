//! `netprobe demo`: all four incidents staged and diagnosed, nothing left behind; `--keep` and
//! `--clean`; Ctrl-C still removes everything. One test, in sequence: `--clean` would remove the
//! namespaces of a demo running beside it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn demo_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("npdemo"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_demo_shows_every_verdict_and_leaves_nothing_behind() {
    if netprobe_lab::lab_or_skip("demo-check").is_none() {
        return;
    }
    assert!(demo_namespaces().is_empty(), "no demo lab before the test");
    let bin = env!("CARGO_BIN_EXE_netprobe");

    let output = Command::new(bin).arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    for verdict in [
        "DUPLICATE  2 MACs answer",
        "OK  one MAC answers",
        "LOST-IN-NETWORK 0/5",
        "OK  VXLAN on UDP 8472 passes",
        "FAILING",
        "BLOATED",
        "OK  1,322 rules, 0 of them duplicates",
        "FAULT  dns failing -> vxlan lost-in-network",
        "cause: DNS fails for pods on node-b",
        "fix:   allow UDP 8472 between nodes",
        "OK  nothing wrong found",
    ] {
        assert!(text.contains(verdict), "missing {verdict:?} in:\n{text}");
    }
    assert!(text.contains("demo: 5 of 5 incident(s) diagnosed as staged"), "{text}");
    assert!(demo_namespaces().is_empty(), "the demo removed its namespaces");

    // --keep leaves one part up; --clean removes it.
    let kept = Command::new(bin).args(["demo", "arp", "--keep"]).output().unwrap();
    assert_eq!(kept.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&kept.stdout).contains("sudo netprobe demo --clean"));
    assert_eq!(demo_namespaces().len(), 4, "switch, client, sp1, sp2");
    let cleaned = Command::new(bin).args(["demo", "--clean"]).output().unwrap();
    assert_eq!(cleaned.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&cleaned.stdout).starts_with("removed 4 demo namespace(s)"));
    assert!(demo_namespaces().is_empty());

    // Ctrl-C in the middle: exit 3, and the lab is gone all the same.
    let child = Command::new(bin)
        .args(["demo", "iptables"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while demo_namespaces().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("interrupted"));
    assert!(demo_namespaces().is_empty(), "Ctrl-C removed the lab");

    // --clean beside a running demo leaves it alone; a SIGKILLed demo's lab is a leftover that
    // --clean removes, processes included.
    let mut child = Command::new(bin)
        .args(["demo", "iptables"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while demo_namespaces().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let running = demo_namespaces();
    assert!(!running.is_empty());
    let cleaned = Command::new(bin).args(["demo", "--clean"]).output().unwrap();
    assert!(String::from_utf8_lossy(&cleaned.stdout).starts_with("removed 0 demo namespace(s)"));
    assert!(demo_namespaces().iter().all(|n| running.contains(n) || n.contains("iptables")), "still there");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!demo_namespaces().is_empty(), "SIGKILL leaves the lab behind");
    let cleaned = Command::new(bin).args(["demo", "--clean"]).output().unwrap();
    assert_eq!(cleaned.status.code(), Some(0));
    assert!(demo_namespaces().is_empty(), "{}", String::from_utf8_lossy(&cleaned.stdout));
}
