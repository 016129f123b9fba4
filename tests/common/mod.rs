//! Helpers the integration tests share: running the binary (in a lab's namespace, or isolated in
//! an empty one), and the vxlan lab's cluster (nodes behind a router, each with a flannel-style vxlan device and an agent).
//! Each test file uses some of them.
#![allow(dead_code)]

use std::time::Duration;

use netprobe_lab::{lab_or_skip, Lab, Netns};
use serde_json::Value;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The binary under test.
pub const NETPROBE: &str = env!("CARGO_BIN_EXE_netprobe");

/// Runs netprobe in `ns` with `env` added (and none of the caller's NODE_NAME or KUBECONFIG):
/// (exit code, stdout, stderr). A panic is never an answer.
pub fn netprobe_in(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = ns.command(NETPROBE);
    command.args(args).env_remove("NODE_NAME").env_remove("KUBECONFIG").envs(env.iter().copied());
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

/// netprobe in a new and empty network namespace when this runs as root (`unshare --net`): a test
/// of bad flags must not send a packet even if the flags were wrongly accepted.
pub fn isolated() -> std::process::Command {
    use std::process::Command;
    let can = Command::new("unshare").args(["--net", "true"]).status().map(|s| s.success()).unwrap_or(false);
    if can {
        let mut command = Command::new("unshare");
        command.arg("--net").arg(NETPROBE);
        command
    } else {
        Command::new(NETPROBE)
    }
}

/// The agents' token in the vxlan labs.
pub const TOKEN: &str = "lab-token-7f3a";

/// The vxlan lab's node addresses, in order.
pub const N1: &str = "198.51.100.1";
pub const N2: &str = "203.0.113.2";
pub const N3: &str = "192.0.2.3";

pub struct Cluster {
    pub lab: Lab,
    pub router: Netns,
    pub nodes: Vec<(Netns, &'static str)>,
    pub agents: Vec<u32>,
}

/// Nodes on their own subnets behind one router: 198.51.100.1, 203.0.113.2, 192.0.2.3, each
/// with flannel.1 (VNI 1, UDP 8472) and an agent on its host network.
pub fn cluster(test: &str, count: usize) -> Option<Cluster> {
    cluster_with(test, count, &[], &[])
}

/// [`cluster`], with `agent_env` (`NAME=VALUE`) added to the agents' environment and `agent_args`
/// to their command lines.
pub fn cluster_with(test: &str, count: usize, agent_env: &[&str], agent_args: &[&str]) -> Option<Cluster> {
    let mut lab = lab_or_skip(test)?;
    let router = lab.router("router").unwrap();
    let plan = [("198.51.100", "1"), ("203.0.113", "2"), ("192.0.2", "3")];
    let mut nodes = Vec::new();
    let mut agents = Vec::new();
    for (i, (net, host)) in plan.iter().take(count).enumerate() {
        let node = lab.host(&format!("node{}", i + 1)).unwrap();
        let ip: &'static str = Box::leak(format!("{net}.{host}").into_boxed_str());
        lab.link(&node, &format!("{ip}/24"), &router, &format!("{net}.254/24")).unwrap();
        node.sh(&format!("ip route add default via {net}.254")).unwrap();
        // Flannel's device: VNI 1 on 8472, learning on (so a wrongly accepted probe would show).
        node.sh(&format!(
            "ip link add flannel.1 type vxlan id 1 local {ip} dstport 8472 dev eth0 && \
             ip addr add 10.244.{i}.0/32 dev flannel.1 && ip link set flannel.1 up"
        ))
        .unwrap();
        let token = format!("NETPROBE_TOKEN={TOKEN}");
        let listen = format!("{ip}:9473");
        let argv: Vec<&str> = ["env", token.as_str()]
            .into_iter()
            .chain(agent_env.iter().copied())
            .chain([NETPROBE, "agent", "--listen", &listen])
            .chain(agent_args.iter().copied())
            .collect();
        agents.push(lab.spawn(&node, &argv).unwrap());
        nodes.push((node, ip));
    }
    for (node, _) in &nodes {
        node.wait_listening("tcp", 9473, Duration::from_secs(10)).unwrap();
    }
    Some(Cluster { lab, router, nodes, agents })
}

impl Cluster {
    /// `netprobe vxlan` over every node, run from the first: (exit code, stdout, stderr).
    pub fn vxlan(&self, extra: &[&str], token: &str) -> (i32, String, String) {
        let ips: Vec<&str> = self.nodes.iter().map(|(_, ip)| *ip).collect();
        let args: Vec<&str> = ["vxlan"]
            .into_iter()
            .chain(ips)
            .chain(["--timeout", "500ms"])
            .chain(extra.iter().copied())
            .collect();
        netprobe_in(&self.nodes[0].0, &args, &[("NETPROBE_TOKEN", token)])
    }

    /// [`Cluster::vxlan`] with `-o json` and `extra`: the exit code and the report.
    pub fn json_with(&self, extra: &[&str]) -> (i32, Value) {
        let args: Vec<&str> = ["-o", "json"].into_iter().chain(extra.iter().copied()).collect();
        let (code, out, err) = self.vxlan(&args, TOKEN);
        let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
        (code, report)
    }

    pub fn json(&self) -> (i32, Value) {
        self.json_with(&[])
    }
}

/// The pair from `from` to `to` in a vxlan report.
pub fn pair<'a>(report: &'a Value, from: &str, to: &str) -> &'a Value {
    report["pairs"].as_array().unwrap().iter().find(|p| p["from"] == from && p["to"] == to).unwrap()
}
