//! The command line's shared behaviour: exit codes, help, version, completions, unbuilt commands.

mod common;
use common::isolated;
use std::process::{Command, Output};

fn netprobe(args: &[&str]) -> Output {
    isolated().args(args).output().unwrap()
}

#[test]
fn conflicting_arp_flags_are_usage_errors() {
    for args in [
        &["arp", "192.0.2.100", "--watch", "-c", "5"][..],
        &["arp", "192.0.2.100", "--watch", "--wait", "2s"],
        &["arp", "192.0.2.100", "--duration", "5s"],
        &["arp", "192.0.2.100", "--watch", "--tcp-timeout", "1s"],
        &["arp", "192.0.2.100", "--pcap", "x.pcap", "-i", "eth0"],
    ] {
        let output = netprobe(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

#[test]
fn help_and_version_exit_0() {
    let help = netprobe(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Exit codes") && text.contains("3  the probe could not run"), "{text}");
    let version = netprobe(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("netprobe {}", env!("CARGO_PKG_VERSION"))
    );
    let arp_help = netprobe(&["arp", "--help"]);
    assert!(String::from_utf8_lossy(&arp_help.stdout).contains("--node <NAME=IP>"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["nonsense"],
        &["arp"],
        &["arp", "not-an-ip"],
        &["arp", "192.0.2.100", "--interval", "soon"],
        &["arp", "192.0.2.100", "--node", "sp1"],
        &["arp", "192.0.2.100", "-c", "0"],
        &["arp", "192.0.2.100", "-o", "yaml"],
    ] {
        let output = netprobe(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"), "{args:?}");
    }
}

#[test]
fn vxlan_and_agent_need_a_token_and_two_nodes() {
    let run = |args: &[&str], token: Option<&str>| {
        let mut cmd = isolated();
        cmd.args(args).env_remove("NETPROBE_TOKEN");
        if let Some(t) = token {
            cmd.env("NETPROBE_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let agent = run(&["agent", "--listen", "127.0.0.1:0"], None);
    assert_eq!(agent.status.code(), Some(2), "the agent refuses to start without a token");
    assert!(String::from_utf8_lossy(&agent.stderr).contains("NETPROBE_TOKEN"));
    let missing = run(&["agent", "--token-file", "/nonexistent/token"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(run(&["vxlan", "192.0.2.1"], Some("t")).status.code(), Some(2), "one node is not a pair");
    assert_eq!(run(&["vxlan", "192.0.2.1", "192.0.2.2"], None).status.code(), Some(2), "no token");
    assert_eq!(run(&["vxlan", "bad host!", "192.0.2.2"], Some("t")).status.code(), Some(2));
    assert_eq!(
        run(&["vxlan", "192.0.2.1", "192.0.2.2", "--count", "1000"], Some("t")).status.code(),
        Some(2)
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = netprobe(&["completions", shell]);
        assert_eq!(output.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains("netprobe") && script.contains("arp"), "{shell}");
    }
}

#[test]
fn dns_bad_input_is_exit_2_in_one_line() {
    for (args, env_kubeconfig) in [
        (&["dns", "--endpoints", "not-an-ip"][..], None),
        (&["dns", "--endpoints", "192.0.2.53", "--type", "BOGUS"][..], None),
        (&["dns", "--endpoints", "192.0.2.53", "--protocol", "sctp"][..], None),
        (&["dns", "--endpoints", "192.0.2.53", "--name", "a,b"][..], None),
        (
            &["dns", "--endpoints", "192.0.2.53", "--name", "kubernetes.default", "--name", "bad name"][..],
            None,
        ),
        (&["dns"][..], Some("/nonexistent/kubeconfig")),
    ] {
        let mut cmd = isolated();
        cmd.args(args);
        if let Some(path) = env_kubeconfig {
            cmd.env("KUBECONFIG", path);
        }
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        // clap's own errors add a line pointing at --help; ours are one line. Never debug text.
        assert!(!stderr.contains("Err(") && !stderr.contains("Errors"), "plain words: {stderr}");
    }
}

#[test]
fn the_demo_without_root_is_exit_3_saying_sudo() {
    // As nobody (setpriv, util-linux): no namespaces can be made. Switching users needs root:
    // without it this test is a lab test, skipped like them.
    if !running_as_root() {
        netprobe_lab::skip("demo-not-root", "switching to nobody needs root");
        return;
    }
    let me = std::path::Path::new(env!("CARGO_BIN_EXE_netprobe"));
    let Ok(output) = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(me)
        .arg("demo")
        .output()
    else {
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("Permission denied") && output.status.code() != Some(3) {
        eprintln!("skipping: nobody cannot execute {}", me.display());
        return;
    }
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("sudo"), "{stderr}");
}

/// setpriv can only switch users when the test runs as root.
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn with_o_json_an_error_is_a_json_object_on_stdout_and_a_line_on_stderr() {
    for (args, code, kind) in [
        // A usage error clap finds.
        (&["-o", "json", "arp", "192.0.2.100", "--count", "0"][..], 2, "bad-input"),
        // Bad input the probe finds.
        (&["--json", "iptables", "--file", "/nonexistent/rules"], 2, "bad-input"),
    ] {
        let output = netprobe(args);
        assert_eq!(output.status.code(), Some(code), "{args:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let error: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(error["error"]["kind"], kind, "{stdout}");
        assert_eq!(error["error"]["exit_code"], code, "{stdout}");
        assert!(!error["error"]["message"].as_str().unwrap().is_empty(), "{stdout}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.trim().is_empty(), "the line for people stays on stderr");
    }
    // Without -o json, stdout stays empty.
    let output = netprobe(&["iptables", "--file", "/nonexistent/rules"]);
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("netprobe: /nonexistent/rules"));
}

#[test]
fn color_is_chosen_with_the_color_flag() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/iptables/psa1.rules");
    let verdict_line = |color: &str| {
        let output = netprobe(&["iptables", "--file", file, "--color", color]);
        String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().to_string()
    };
    assert!(verdict_line("always").starts_with("\x1b["), "{:?}", verdict_line("always"));
    assert!(!verdict_line("never").contains('\x1b'));
    // auto: stdout is a pipe here, so no colour.
    assert!(!verdict_line("auto").contains('\x1b'));
}
