//! `netprobe demo`: the three incidents of the mission rebuilt in network namespaces on this
//! machine, each diagnosed by the real probe (this binary, run inside the lab), then removed. The
//! lab is the same library the integration tests use (crate netprobe-lab).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use netprobe_lab::overlay::{Options, Overlay};
use netprobe_lab::{dns_servers, iptables_dump, on_path, remove_leftovers, Lab, LabError, Netns, NsThread};
use netprobe_probes::net::signal;
use netprobe_probes::{Error, Health};

use crate::cli::{DemoArgs, DemoPart};
use crate::exit::Exit;

/// Every demo namespace starts with this, so `--clean` finds what `--keep` left.
const PREFIX: &str = "npdemo";
const VIP: &str = "192.0.2.100";

fn lab_error(e: LabError) -> Error {
    Error::could_not_run("building the demo lab", e.0)
}

pub fn run(args: DemoArgs) -> Result<Exit, Error> {
    if args.clean {
        // What --keep left and what killed runs left; never a demo that is still running.
        let removed = remove_leftovers(PREFIX, true).map_err(lab_error)?;
        println!("removed {} demo namespace(s){}", removed.len(), if removed.is_empty() { "" } else { ":" });
        for name in removed {
            println!("  {name}");
        }
        return Ok(Exit::Healthy);
    }
    // A demo killed before it could clean up (SIGKILL) left its lab: remove it now.
    let leftovers = remove_leftovers(PREFIX, false).map_err(lab_error)?;
    if !leftovers.is_empty() {
        println!("removed {} namespace(s) a killed demo left behind", leftovers.len());
    }
    for (tool, package) in
        [("ip", "iproute2"), ("iptables", "iptables"), ("iptables-restore", "iptables"), ("ss", "iproute2")]
    {
        if !on_path(tool) {
            return Err(Error::could_not_run(
                "netprobe demo",
                format!("needs {tool}: apt-get install {package}"),
            ));
        }
    }
    signal::catch_interrupts();
    let parts = match args.part {
        DemoPart::All => {
            vec![DemoPart::Arp, DemoPart::Vxlan, DemoPart::Dns, DemoPart::Iptables, DemoPart::Doctor]
        }
        one => vec![one],
    };
    let started = Instant::now();
    let mut as_staged = 0;
    for part in &parts {
        let mut lab = Lab::with_prefix(PREFIX, &format!("{part:?}").to_lowercase()).map_err(lab_error)?;
        let ok = match part {
            DemoPart::Arp => arp(&mut lab)?,
            DemoPart::Vxlan => vxlan(&mut lab)?,
            DemoPart::Dns => dns(&mut lab)?,
            DemoPart::Doctor => doctor(&mut lab)?,
            _ => iptables(&mut lab)?,
        };
        as_staged += usize::from(ok);
        if args.keep {
            let names = lab.keep();
            println!("\nkept the lab up: {}", names.join(" "));
            println!(
                "  enter a namespace: sudo ip netns exec {} bash",
                names.last().cloned().unwrap_or_default()
            );
            println!("  remove it all:     sudo netprobe demo --clean");
        }
    }
    println!(
        "\ndemo: {as_staged} of {} incident(s) diagnosed as staged in {:.1} s{}",
        parts.len(),
        started.elapsed().as_secs_f64(),
        if args.keep { "" } else { "; everything it made is removed" }
    );
    Ok(Exit::from_health(if as_staged == parts.len() { Health::Ok } else { Health::Fault }))
}

/// Stops the demo (and so removes the lab) when Ctrl-C arrived.
fn check_interrupt() -> Result<(), Error> {
    if signal::interrupted() {
        return Err(Error::could_not_run("netprobe demo", "interrupted: everything it made was removed"));
    }
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
    let _ = std::io::stdout().flush();
}

/// Runs this binary with `args` inside `ns`, its output going straight to ours; true when its exit
/// code is `expected`.
fn probe(ns: &Netns, args: &[&str], env: &[(&str, &str)], expected: i32) -> Result<bool, Error> {
    check_interrupt()?;
    println!("$ netprobe {}", args.join(" "));
    let _ = std::io::stdout().flush();
    let exe =
        std::env::current_exe().map_err(|e| Error::could_not_run("finding this binary", e.to_string()))?;
    let mut cmd = ns.command(exe.to_str().unwrap_or("netprobe"));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|e| Error::could_not_run("running the probe", e.to_string()))?;
    check_interrupt()?;
    Ok(status.code() == Some(expected))
}

fn sh(ns: &Netns, script: &str) -> Result<String, Error> {
    ns.sh(script).map_err(lab_error)
}

fn arp(lab: &mut Lab) -> Result<bool, Error> {
    step("arp: incident 1, duplicate MetalLB speakers: sp1 and sp2 both answer ARP for the VIP 192.0.2.100");
    let switch = lab.switch("sw").map_err(lab_error)?;
    let client = lab.host("client").map_err(lab_error)?;
    lab.plug(&switch, &client, "192.0.2.1/24", None).map_err(lab_error)?;
    let mut speakers = Vec::new();
    for (name, ip, mac) in
        [("sp1", "192.0.2.11", "00:00:5e:00:53:11"), ("sp2", "192.0.2.12", "00:00:5e:00:53:12")]
    {
        let host = lab.host(name).map_err(lab_error)?;
        lab.plug(&switch, &host, &format!("{ip}/24"), Some(mac)).map_err(lab_error)?;
        sh(&host, &format!("ip addr add {VIP}/32 dev eth0"))?;
        speakers.push(host);
    }
    let args = ["arp", VIP, "--node", "sp1=192.0.2.11", "--node", "sp2=192.0.2.12"];
    let duplicate = probe(&client, &args, &[], 1)?;
    step("arp: the second speaker is gone (one leader, as the official chart runs it)");
    sh(&speakers[1], &format!("ip addr del {VIP}/32 dev eth0"))?;
    let single = probe(&client, &args, &[], 0)?;
    Ok(duplicate && single)
}

/// A token the demo's agents take, new each run.
fn demo_token() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(7)
    )
}

fn vxlan(lab: &mut Lab) -> Result<bool, Error> {
    step("vxlan: incident 2, a security group (the router's FORWARD chain) drops UDP 8472 between two nodes");
    let router = lab.router("router").map_err(lab_error)?;
    let token = demo_token();
    let exe =
        std::env::current_exe().map_err(|e| Error::could_not_run("finding this binary", e.to_string()))?;
    let exe = exe.to_str().unwrap_or("netprobe").to_string();
    let mut nodes = Vec::new();
    for (i, (net, ip)) in
        [("198.51.100", "198.51.100.1"), ("203.0.113", "203.0.113.2")].into_iter().enumerate()
    {
        let node = lab.host(&format!("node{}", i + 1)).map_err(lab_error)?;
        lab.link(&node, &format!("{ip}/24"), &router, &format!("{net}.254/24")).map_err(lab_error)?;
        sh(&node, &format!("ip route add default via {net}.254"))?;
        sh(&node, &format!("ip link add flannel.1 type vxlan id 1 local {ip} dstport 8472 dev eth0 && ip link set flannel.1 up"))?;
        let env_token = format!("NETPROBE_TOKEN={token}");
        lab.spawn(&node, &["env", &env_token, &exe, "agent", "--listen", &format!("{ip}:9473")])
            .map_err(lab_error)?;
        nodes.push(node);
    }
    for node in &nodes {
        node.wait_listening("tcp", 9473, Duration::from_secs(10)).map_err(lab_error)?;
    }
    sh(&router, "iptables -A FORWARD -p udp --dport 8472 -j DROP")?;
    let args = ["vxlan", "198.51.100.1", "203.0.113.2"];
    let env = [("NETPROBE_TOKEN", token.as_str())];
    let lost = probe(&nodes[0], &args, &env, 1)?;
    step("vxlan: the security group allows UDP 8472 again");
    sh(&router, "iptables -F FORWARD")?;
    let open = probe(&nodes[0], &args, &env, 0)?;
    Ok(lost && open)
}

fn dns(lab: &mut Lab) -> Result<bool, Error> {
    let dnsmasq = on_path("dnsmasq");
    step(&format!(
        "dns: incident 2 seen from DNS: two CoreDNS stand-ins ({}), the one on the other node unreachable, the Service VIP 192.0.2.10 spread over both by DNAT",
        if dnsmasq { "dnsmasq" } else { "netprobe's built-in responder, UDP only: apt-get install dnsmasq-base for the real thing" }
    ));
    let switch = lab.switch("sw").map_err(lab_error)?;
    let client = lab.host("client").map_err(lab_error)?;
    lab.plug(&switch, &client, "192.0.2.1/24", None).map_err(lab_error)?;
    let mut responders: Vec<NsThread> = Vec::new();
    for (name, ip) in [("dns1", "192.0.2.53"), ("dns2", "192.0.2.54")] {
        let host = lab.host(name).map_err(lab_error)?;
        lab.plug(&switch, &host, &format!("{ip}/24"), None).map_err(lab_error)?;
        let ip: Ipv4Addr = ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
        responders.extend(
            dns_servers::stand_in(
                lab,
                &host,
                ip,
                "kubernetes.default.svc.cluster.local",
                Ipv4Addr::new(10, 96, 0, 1),
            )
            .map_err(lab_error)?,
        );
        if name == "dns2" {
            sh(
                &host,
                "iptables -A INPUT -p udp --dport 53 -j DROP && iptables -A INPUT -p tcp --dport 53 -j DROP",
            )?;
        }
    }
    for proto in ["udp", "tcp"] {
        sh(
            &client,
            &format!(
                "iptables -t nat -A OUTPUT -d 192.0.2.10 -p {proto} --dport 53 -m statistic --mode random --probability 0.5 -j DNAT --to-destination 192.0.2.53 && \
                 iptables -t nat -A OUTPUT -d 192.0.2.10 -p {proto} --dport 53 -j DNAT --to-destination 192.0.2.54"
            ),
        )?;
    }
    let mut args = vec![
        "dns",
        "--endpoints",
        "192.0.2.53,192.0.2.54",
        "--service-ip",
        "192.0.2.10",
        "--interval",
        "10ms",
        "--timeout",
        "300ms",
    ];
    if !dnsmasq {
        args.extend(["--protocol", "udp"]);
    }
    let failing = probe(&client, &args, &[], 1)?;
    drop(responders);
    Ok(failing)
}

fn iptables(lab: &mut Lab) -> Result<bool, Error> {
    step("iptables: incident 3, kube-router's rules copied on every sync: a 100,000-line iptables-save loaded into a node");
    let node = lab.host("node").map_err(lab_error)?;
    let mut dump = Vec::new();
    iptables_dump::write_kube_router_bloat(&mut dump, 100_000, 100)
        .map_err(|e| Error::could_not_run("generating the dump", e.to_string()))?;
    restore(&node, &[], &dump)?;
    let bloated = probe(&node, &["iptables"], &[], 1)?;

    step("iptables: the cleanup script applied with iptables-restore --noflush");
    let exe =
        std::env::current_exe().map_err(|e| Error::could_not_run("finding this binary", e.to_string()))?;
    let script = node
        .command(exe.to_str().unwrap_or("netprobe"))
        .args(["iptables", "--cleanup-script"])
        .output()
        .map_err(|e| Error::could_not_run("writing the cleanup script", e.to_string()))?;
    let rules = |text: &str| text.lines().filter(|l| l.starts_with("-A ")).count();
    let before = rules(&sh(&node, "iptables-save")?);
    let started = Instant::now();
    restore(&node, &["--noflush"], &script.stdout)?;
    let took = started.elapsed();
    let after = rules(&sh(&node, "iptables-save")?);
    println!("$ iptables-restore --noflush < cleanup.rules\n{before} rules before, {after} after, applied in {:.2} s", took.as_secs_f64());
    let clean = probe(&node, &["iptables"], &[], 0)?;
    Ok(bloated && clean)
}

fn doctor(lab: &mut Lab) -> Result<bool, Error> {
    step("doctor: incident 2 end to end: node-a, node-b and node-c behind a security group that drops UDP 8472, pods routed over flannel.1 (VXLAN), a CoreDNS stand-in on node-a and node-b, the kube-dns Service by DNAT, agents on every node, and the API describing it");
    let exe =
        std::env::current_exe().map_err(|e| Error::could_not_run("finding this binary", e.to_string()))?;
    let exe = exe.to_str().unwrap_or("netprobe").to_string();
    let token = demo_token();
    let overlay =
        Overlay::build(lab, Options { agents: Some(&exe), token: &token, agent_env: &[], agent_args: &[] })
            .map_err(lab_error)?;
    overlay.drop_vxlan().map_err(lab_error)?;
    let kubeconfig = overlay.api.kubeconfig();
    let kubeconfig = kubeconfig.to_str().unwrap_or_default();
    let node_a = &overlay.nodes[0].ns;
    let env = [("NETPROBE_TOKEN", token.as_str())];
    let fault = probe(node_a, &["doctor", "--kubeconfig", kubeconfig], &env, 1)?;
    step("doctor: the security group allows UDP 8472 again");
    overlay.allow_vxlan().map_err(lab_error)?;
    let healthy = probe(node_a, &["doctor", "--kubeconfig", kubeconfig], &env, 0)?;
    Ok(fault && healthy)
}

fn restore(ns: &Netns, args: &[&str], text: &[u8]) -> Result<(), Error> {
    let mut child = ns
        .command("iptables-restore")
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Error::could_not_run("iptables-restore", e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text).map_err(|e| Error::could_not_run("iptables-restore", e.to_string()))?;
    }
    let status = child.wait().map_err(|e| Error::could_not_run("iptables-restore", e.to_string()))?;
    if !status.success() {
        return Err(Error::could_not_run(
            "iptables-restore in the demo lab",
            format!("it failed ({status})"),
        ));
    }
    Ok(())
}
