//! Bad input at the command line: one short message, exit 2 (or 3 when it could not run), never a
//! panic, never a verdict. Every netprobe here runs in a new, empty network namespace when it can
//! (`unshare --net`), so a wrongly accepted flag can send nothing anywhere.

mod common;
use common::isolated;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    isolated().args(args).env("NETPROBE_TOKEN", "t0ken").stdin(Stdio::null()).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_refused(args: &[&str], code: i32, says: &str) {
    let output = run(args);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(err.lines().filter(|l| !l.trim().is_empty()).count() <= 3, "short: {args:?}: {err}");
    assert!(output.stdout.is_empty(), "no verdict: {args:?}");
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netprobe-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn huge_durations_are_refused_not_panics() {
    for args in [
        &["arp", "192.0.2.100", "-c", "1", "--wait", "18446744073709551615s"][..],
        &["arp", "192.0.2.100", "--interval", "500000000000years"],
        &["arp", "192.0.2.100", "--watch", "--duration", "18446744073709551615s"],
        &["vxlan", "192.0.2.1", "192.0.2.2", "--timeout", "18446744073709551615s"],
        &["dns", "--endpoints", "192.0.2.53", "--interval", "18446744073709551615s"],
        &["dns", "--endpoints", "192.0.2.53", "--protocol", "udp", "--timeout", "18446744073709551615s"],
    ] {
        assert_refused(args, 2, "at most");
    }
}

#[test]
fn files_that_never_end_or_never_come_are_refused() {
    assert_refused(&["iptables", "--file", "/dev/zero"], 2, "not a regular file");
    assert_refused(&["arp", "192.0.2.100", "--pcap", "/dev/zero"], 2, "not a regular file");
    assert_refused(&["agent", "--token-file", "/dev/zero"], 2, "not a regular file");
    let fifo = temp("fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let fifo = fifo.to_str().unwrap();
    assert_refused(&["iptables", "--file", fifo], 2, "not a regular file");
    assert_refused(&["arp", "192.0.2.100", "--pcap", fifo], 2, "not a regular file");
    assert_refused(&["agent", "--token-file", fifo], 2, "not a regular file");
    // An endless line on standard input ends in an error, not in memory exhaustion.
    let output = isolated()
        .args(["iptables", "--file", "-"])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("a line longer than"), "{}", stderr(&output));
    // A token file larger than any token.
    let big = temp("big-token");
    std::fs::write(&big, vec![b'a'; 10_000]).unwrap();
    assert_refused(&["agent", "--token-file", big.to_str().unwrap()], 2, "larger than");
}

#[test]
fn a_cleanup_script_that_cannot_be_written_is_exit_3() {
    let rules = temp("dup.rules");
    let mut text = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
    for _ in 0..5000 {
        text.push_str(
            "-A INPUT -s 192.0.2.0/24 -m comment --comment \"a rule copied many times over\" -j ACCEPT\n",
        );
    }
    for i in 0..5000 {
        text.push_str(&format!("-A INPUT -s 198.51.100.{}/32 -j DROP\n", i % 250));
    }
    text.push_str("COMMIT\n");
    std::fs::write(&rules, text).unwrap();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let output = isolated()
        .args(["iptables", "--file", rules.to_str().unwrap(), "--cleanup-script"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("writing the cleanup script"), "{}", stderr(&output));
}

#[test]
fn vxlan_and_agent_refuse_what_cannot_work() {
    assert_refused(&["vxlan", "192.0.2.1", "192.0.2.2", "--port", "0"], 2, "--port 0");
    assert_refused(&["vxlan", "192.0.2.1", "192.0.2.1:9473"], 2, "give each node once");
    // A port another agent holds: exit 3, and no "serving on" before it. (In a new namespace even
    // an address it does not have can be bound, so the port is taken instead.) Two agents on one
    // port need a namespace of their own: without one this part is a lab test, skipped.
    if !Command::new("unshare").args(["--net", "true"]).status().map(|s| s.success()).unwrap_or(false) {
        netprobe_lab::skip("agent-port-taken", "unshare --net needs root");
        return;
    }
    let log = temp("first-agent.log");
    let script = format!(
        "NETPROBE_TOKEN=t {bin} agent --listen 127.0.0.1:9473 2> {log} & first=$!; \
         for i in $(seq 100); do grep -q 'serving on' {log} && break; sleep 0.1; done; \
         NETPROBE_TOKEN=t {bin} agent --listen 127.0.0.1:9473; code=$?; kill $first; exit $code",
        bin = env!("CARGO_BIN_EXE_netprobe"),
        log = log.display()
    );
    let output = Command::new("unshare").args(["--net", "sh", "-c", &script]).output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(err.contains("listening on 127.0.0.1:9473") && !err.contains("serving on"), "{err}");
}
