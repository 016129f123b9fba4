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
    overlay_with(test, agents, &[])
}

fn overlay_with(test: &str, agents: bool, agent_env: &[&str]) -> Option<(Lab, Overlay)> {
    overlay_with_args(test, agents, agent_env, &[])
}

fn overlay_with_args(
    test: &str,
    agents: bool,
    agent_env: &[&str],
    agent_args: &[&str],
) -> Option<(Lab, Overlay)> {
    if !on_path("dnsmasq") {
        skip(test, "dnsmasq is not installed (apt-get install dnsmasq-base)");
        return None;
    }
    let mut lab = lab_or_skip(test)?;
    let exe = env!("CARGO_BIN_EXE_netprobe");
    let options = Options { agents: agents.then_some(exe), token: TOKEN, agent_env, agent_args };
    let overlay = Overlay::build(&mut lab, options).unwrap();
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

    // Healthy: every step that applies passes. The agents run no mesh, so the vxlan step probes
    // every pair of the three nodes instead of reading it.
    let (code, out, err) = doctor(&overlay, &["-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["node"], "node-a", "found by its InternalIP on this host");
    assert_eq!(step(&report, "mesh")["status"], "skipped", "{}", step(&report, "mesh"));
    assert_eq!(step(&report, "dns")["status"], "ok");
    let vxlan = step(&report, "vxlan");
    assert_eq!(
        (&vxlan["status"], &vxlan["command"]),
        (&Value::from("ok"), &Value::from("netprobe vxlan --all-nodes")),
        "{vxlan}"
    );
    assert_eq!(vxlan["pairs"].as_array().unwrap().len(), 6, "{vxlan}");
    assert_eq!(step(&report, "conntrack")["status"], "ok", "{}", step(&report, "conntrack"));
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
    assert_eq!(failing[0]["address"].as_str(), overlay.nodes[1].dns_ip.as_deref());
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
    assert!(out.contains("3. vxlan     LOST-IN-NETWORK"), "{out}");
    assert!(out.contains("\nfix:   allow UDP 8472 between nodes"), "{out}");

    // The security group is fixed: ok again.
    overlay.allow_vxlan()?;
    let (code, out, err) = doctor(&overlay, &["-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    Ok(())
}

/// Polls `netprobe vxlan --all-nodes --from-mesh` on node-a until `done` says so (at most 60 s).
fn mesh_until(overlay: &Overlay, done: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let output = overlay.nodes[0]
            .ns
            .command(env!("CARGO_BIN_EXE_netprobe"))
            .args(["vxlan", "--all-nodes", "--from-mesh", "-o", "json", "--kubeconfig"])
            .arg(overlay.api.kubeconfig())
            .env("NETPROBE_TOKEN", &overlay.token)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if done(&report) {
            return report;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "the mesh never got there: {report}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn a_broken_pair_whose_pods_run_no_dns_is_found_from_the_mesh_and_mtu_covers_every_pair() -> TestResult {
    let test = "a_broken_pair_whose_pods_run_no_dns_is_found_from_the_mesh_and_mtu_covers_every_pair";
    let peers = "--peers=198.51.100.1,203.0.113.2,192.0.2.3";
    let Some((_lab, overlay)) = overlay_with_args(test, true, &[], &["--mesh-every", "1s", peers]) else {
        return Ok(());
    };
    // Every pair judged ok by the mesh: doctor reads it, and probes nothing it does not need.
    mesh_until(&overlay, |m| m["verdict"] == "ok" && m["pairs"] == 6);
    let (code, out, err) = doctor(&overlay, &["-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(step(&report, "mesh")["status"], "ok", "{}", step(&report, "mesh"));
    assert_eq!(step(&report, "vxlan")["status"], "skipped", "{}", step(&report, "vxlan"));

    // VXLAN between node-b and node-c dies; no DNS pod runs on node-c, so DNS stays ok.
    overlay.drop_vxlan_between("node-b", "node-c")?;
    mesh_until(&overlay, |m| m["failing"] == 2);
    let (code, out, err) = doctor(&overlay, &["-o", "json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(step(&report, "dns")["status"], "ok", "{}", step(&report, "dns"));
    assert_eq!(step(&report, "mesh")["status"], "fault", "{}", step(&report, "mesh"));
    let vxlan = step(&report, "vxlan");
    assert_eq!(
        vxlan["command"], "netprobe vxlan node-a=198.51.100.1 node-b=203.0.113.2 node-c=192.0.2.3",
        "{vxlan}"
    );
    assert_eq!(vxlan["result"], "lost-in-network", "{vxlan}");
    assert_eq!(
        report["cause"],
        "VXLAN (UDP 8472) between node-b and node-c (both directions) is lost in the network while other UDP passes",
        "{report}"
    );
    assert_eq!(report["fix"], "allow UDP 8472 between nodes in the security group, NACL or firewall");

    // --mtu: every pair, each with its path MTU.
    overlay.allow_vxlan()?;
    let (_, out, err) = doctor(&overlay, &["--mtu", "-o", "json"]);
    let report: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out} {err}"))?;
    let vxlan = step(&report, "vxlan");
    assert_eq!(vxlan["command"], "netprobe vxlan --all-nodes --mtu", "{vxlan}");
    let pairs = vxlan["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 6, "{vxlan}");
    assert!(pairs.iter().all(|p| p["mtu"]["path_mtu"].is_u64()), "{vxlan}");
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

/// Runs netprobe on the laptop of [`doctor_and_arp_from_a_laptop_that_reaches_only_the_api_server`].
fn on_laptop(
    laptop: &netprobe_lab::Netns,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let output = laptop
        .command(env!("CARGO_BIN_EXE_netprobe"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("NETPROBE_TOKEN", TOKEN)
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

#[test]
fn doctor_and_arp_from_a_laptop_that_reaches_only_the_api_server() -> TestResult {
    use netprobe_lab::fake_api::{write_kubeconfig, FakeApi, FakeApiConfig};
    let test = "doctor_and_arp_from_a_laptop_that_reaches_only_the_api_server";
    let dir = std::env::temp_dir().join(format!("netprobe-laptop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The agents read the API in the "api" namespace through the router; the laptop reaches it on
    // a link of its own, and nothing else (the api namespace does not forward).
    let (agent_kubeconfig, laptop_kubeconfig) = (dir.join("agents"), dir.join("laptop"));
    write_kubeconfig(&agent_kubeconfig, "http://10.0.1.1:6443");
    write_kubeconfig(&laptop_kubeconfig, "http://10.0.2.1:6443");
    let agent_env = format!("KUBECONFIG={}", agent_kubeconfig.display());
    let Some((mut lab, overlay)) = overlay_with(test, true, &[&agent_env]) else { return Ok(()) };
    let api_ns = lab.host("api")?;
    let laptop = lab.host("laptop")?;
    lab.link(&api_ns, "10.0.1.1/24", &overlay.router, "10.0.1.254/24")?;
    api_ns.sh("ip route add default via 10.0.1.254")?;
    lab.link(&laptop, "10.0.2.2/24", &api_ns, "10.0.2.1/24")?;
    let pods: Vec<(String, std::net::IpAddr)> =
        overlay.nodes.iter().map(|n| (format!("netprobe-agent-{}", n.name), n.ip.parse().unwrap())).collect();
    let pod_list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items":
        overlay.nodes.iter().map(|n| serde_json::json!({
            "metadata": {"name": format!("netprobe-agent-{}", n.name), "namespace": "netprobe"},
            "spec": {"nodeName": n.name, "containers": [{"name": "agent"}]},
            "status": {"podIP": n.ip, "conditions": [{"type": "Ready", "status": "True"}]}
        })).collect::<Vec<_>>()});
    let mut routes = netprobe_lab::overlay::api_routes();
    routes.push(("/api/v1/namespaces/netprobe/pods", 200, pod_list.to_string()));
    let _api = FakeApi::serve(
        &api_ns,
        FakeApiConfig { listen: Some("0.0.0.0:6443".parse()?), routes, pods, ..FakeApiConfig::default() },
    );
    assert!(
        laptop.sh(&format!("ping -c1 -W1 {}", overlay.nodes[0].ip)).is_err(),
        "the laptop reaches no node"
    );

    // Healthy, then the security group drops UDP 8472: from the laptop, the verdicts doctor gives
    // on node-a, run by node-a's agent.
    for broken in [false, true] {
        if broken {
            overlay.drop_vxlan()?;
        }
        let (code, out, err) = doctor(&overlay, &["-o", "json"]);
        let here: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out} {err}"))?;
        let (laptop_code, out, err) = on_laptop(&laptop, &laptop_kubeconfig, &["doctor", "-o", "json"]);
        let there: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out} {err}"))?;
        assert_eq!(laptop_code, code, "{there}\n{err}");
        assert!(err.contains("ran on node node-a (its agent, through the API server)"), "{err}");
        assert_eq!(there["node"], "node-a");
        assert_eq!(
            (&there["verdict"], &there["cause"], &there["fix"]),
            (&here["verdict"], &here["cause"], &here["fix"])
        );
        for probe in ["dns", "vxlan", "arp", "iptables"] {
            assert_eq!(step(&there, probe)["status"], step(&here, probe)["status"], "{probe}: {there}");
        }
    }
    overlay.allow_vxlan()?;

    // node-b's connection tracking table from the laptop: read by node-b's agent, in node-b.
    let (code, out, err) = on_laptop(
        &laptop,
        &laptop_kubeconfig,
        &["conntrack", "--node", "node-b", "--window", "200ms", "-o", "json"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    // node-b's own table: flows to its DNS pod, which the laptop never made. (The count may be
    // above what is listed: expired entries count until reaped, and listing them reaps them.)
    let pod = overlay.nodes[1].dns_ip.clone().unwrap();
    let destinations = report["top_destinations"].to_string();
    assert!(destinations.contains(&format!("\"{pod}\"")), "{report}");
    let node_b = overlay.nodes[1].ns.sh("cat /proc/sys/net/netfilter/nf_conntrack_count")?;
    let (here, listed) = (node_b.trim().parse::<u64>()?, report["entries_listed"].as_u64().unwrap());
    assert!(
        listed > 0 && listed.abs_diff(here) < 50,
        "node-b has {here}, the report listed {listed}: {report}"
    );
    assert!(err.contains("ran on node node-b"), "{err}");

    // The VIPs from the laptop: probed by the agent of the node on their segment.
    let (code, out, err) = on_laptop(&laptop, &laptop_kubeconfig, &["arp", "--all-services", "-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["vips"][0]["target"], LB_VIP, "{report}");
    assert!(err.contains("ran on node node-a"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
