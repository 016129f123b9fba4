//! `netprobe doctor` in incident 2 built physically (netprobe_lab::overlay): two node namespaces
//! behind a router, pod networks over kernel vxlan devices, a DNS server in each pod network, the
//! Service VIP by DNAT, agents on both nodes and the stand-in API. Doctor runs on node-a.

use netprobe_lab::overlay::{Options, Overlay, LB_VIP};
use netprobe_lab::{lab_or_skip, on_path, skip, Lab};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TOKEN: &str = "doctor-lab-token-51c2";

/// The lab with dnsmasq in the pods (UDP and TCP, as CoreDNS), or `None` when it cannot be built.
fn overlay(test: &str, agents: bool) -> Option<(Lab, Overlay)> {
    if !on_path("dnsmasq") {
        skip(test, "dnsmasq is not installed (apt-get install dnsmasq-base)");
        return None;
    }
    let mut lab = lab_or_skip(test)?;
    let exe = env!("CARGO_BIN_EXE_netprobe");
    let overlay = Overlay::build(&mut lab, Options { agents: agents.then_some(exe), token: TOKEN }).unwrap();
    Some((lab, overlay))
}

/// `netprobe doctor ARGS` on node-a, with the lab's kubeconfig and token: exit code, stdout,
/// stderr.
fn doctor(overlay: &Overlay, args: &[&str]) -> (i32, String, String) {
    let kubeconfig = overlay.api.kubeconfig();
    let output = overlay.nodes[0]
        .ns
        .command(env!("CARGO_BIN_EXE_netprobe"))
        .arg("doctor")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(args)
        .env("NETPROBE_TOKEN", &overlay.token)
        .env_remove("NODE_NAME")
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

fn step<'a>(report: &'a Value, probe: &str) -> &'a Value {
    report["steps"].as_array().unwrap().iter().find(|s| s["probe"] == probe).unwrap()
}

#[test]
fn doctor_walks_from_dns_to_the_dropped_vxlan_port_and_back_to_ok() -> TestResult {
    let Some((_lab, overlay)) =
        overlay("doctor_walks_from_dns_to_the_dropped_vxlan_port_and_back_to_ok", true)
    else {
        return Ok(());
    };

    // Healthy: every step that applies passes; the tunnel is not needed to explain anything.
    let (code, out, err) = doctor(&overlay, &["-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["node"], "node-a", "found by its InternalIP on this host");
    assert_eq!(step(&report, "dns")["status"], "ok");
    assert_eq!(step(&report, "vxlan")["status"], "skipped");
    assert_eq!(step(&report, "arp")["status"], "ok", "{}", step(&report, "arp"));
    assert_eq!(step(&report, "arp")["vips"][0]["target"], LB_VIP);
    assert_eq!(step(&report, "iptables")["status"], "ok");
    assert!(report["cause"].is_null());

    // The security group drops UDP 8472: the pod on node-b goes silent, and doctor says why.
    overlay.drop_vxlan()?;
    let (code, out, err) = doctor(&overlay, &["-o", "json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["verdict"], "fault");
    let dns = step(&report, "dns");
    assert_eq!(dns["status"], "fault");
    let failing: Vec<&Value> =
        dns["endpoints"].as_array().unwrap().iter().filter(|e| e["verdict"] != "ok").collect();
    assert_eq!(failing.len(), 1, "{dns}");
    assert_eq!(failing[0]["address"], overlay.nodes[1].dns_ip);
    assert_eq!(failing[0]["node"], "node-b");
    let vxlan = step(&report, "vxlan");
    assert_eq!(vxlan["status"], "fault", "{vxlan}");
    assert_eq!(vxlan["result"], "lost-in-network");
    for pair in vxlan["pairs"].as_array().unwrap() {
        assert_eq!(pair["verdict"], "lost-in-network", "{pair}");
        assert_eq!(pair["control_udp"], "ok", "other UDP passes: {pair}");
    }
    let cause = report["cause"].as_str().unwrap();
    assert!(cause.starts_with("DNS fails for pods on node-b"), "{cause}");
    assert!(cause.contains("VXLAN (UDP 8472) between node-a and node-b (both directions) is lost in the network while other UDP passes"), "{cause}");
    assert_eq!(report["fix"], "allow UDP 8472 between nodes in the security group, NACL or firewall");
    assert_eq!(step(&report, "arp")["status"], "ok");
    assert_eq!(step(&report, "iptables")["status"], "ok");

    // The same run as a table: the chain, then the cause and its fix.
    let (code, out, _) = doctor(&overlay, &["--node", "node-a"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("FAULT  dns failing -> vxlan lost-in-network (from node node-a)"), "{out}");
    assert!(out.contains("\ncause: DNS fails for pods on node-b"), "{out}");
    assert!(out.contains("2. vxlan     LOST-IN-NETWORK"), "{out}");
    assert!(out.contains("\nfix:   allow UDP 8472 between nodes"), "{out}");

    // The security group is fixed: ok again.
    overlay.allow_vxlan()?;
    let (code, out, err) = doctor(&overlay, &["-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    Ok(())
}

#[test]
fn without_agents_doctor_reports_dns_and_says_what_it_could_not_check() -> TestResult {
    let Some((_lab, overlay)) =
        overlay("without_agents_doctor_reports_dns_and_says_what_it_could_not_check", false)
    else {
        return Ok(());
    };
    overlay.drop_vxlan()?;
    let (code, out, err) = doctor(&overlay, &["-o", "json"]);
    assert_eq!(code, 1, "the DNS fault stands: {out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(step(&report, "dns")["status"], "fault");
    let vxlan = step(&report, "vxlan");
    assert_eq!(vxlan["status"], "could-not-run", "{vxlan}");
    let cause = report["cause"].as_str().unwrap();
    assert!(cause.starts_with("DNS fails for pods on node-b"), "{cause}");
    assert!(cause.contains("could not be checked"), "{cause}");
    assert!(report["fix"].as_str().unwrap().contains("kubectl apply -k deploy/kubernetes/"), "{report}");
    Ok(())
}

#[test]
fn an_unreachable_api_is_exit_3_naming_the_server() -> TestResult {
    let Some(mut lab) = lab_or_skip("an_unreachable_api_is_exit_3_naming_the_server") else { return Ok(()) };
    let host = lab.host("client")?;
    let kubeconfig = std::env::temp_dir().join(format!("netprobe-doctor-unreachable-{}", std::process::id()));
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:1\n\
         contexts:\n- name: gone\n  context:\n    cluster: gone\n    user: u\ncurrent-context: gone\n\
         users:\n- name: u\n  user:\n    token: t\n",
    )?;
    let output = host
        .command(env!("CARGO_BIN_EXE_netprobe"))
        .arg("doctor")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()?;
    let _ = std::fs::remove_file(&kubeconfig);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("https://127.0.0.1:1"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    Ok(())
}
