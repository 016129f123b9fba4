//! `netprobe vxlan` and `netprobe agent` in a lab: node namespaces behind a router namespace whose
//! FORWARD chain plays the security group, each node with a flannel-style kernel vxlan device on
//! UDP 8472 and an agent on its host network.

use std::time::Duration;

use netprobe_lab::fake_api::{fixture, FakeApi};
use netprobe_lab::{http_get, http_request, Netns};
use serde_json::Value;

mod common;
use common::*;

#[test]
fn two_nodes_every_place_a_packet_can_die() -> TestResult {
    let Some(c) = cluster("vx-two", 2) else { return Ok(()) };
    let fdb_before = c.nodes[1].0.sh("bridge fdb show dev flannel.1")?;

    // Open: both directions pass.
    let (code, report) = c.json();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["port"], 8472);
    for (a, b) in [(N1, N2), (N2, N1)] {
        let p = pair(&report, a, b);
        assert_eq!(
            (p["verdict"].as_str(), p["sent"].as_u64(), p["left_source"].as_u64(), p["arrived"].as_u64()),
            (Some("ok"), Some(5), Some(5), Some(5)),
            "{p}"
        );
        assert_eq!(p["control_udp"], "ok");
    }

    // The security group drops UDP 8472 both ways: lost in the network, other UDP passes.
    c.router.sh("iptables -A FORWARD -p udp --dport 8472 -j DROP")?;
    let (code, report) = c.json();
    assert_eq!(code, 1);
    let p = pair(&report, N1, N2);
    assert_eq!(
        (p["verdict"].as_str(), p["left_source"].as_u64(), p["arrived"].as_u64()),
        (Some("lost-in-network"), Some(5), Some(0))
    );
    assert_eq!(p["control_udp"], "ok");
    assert_eq!(
        p["diagnosis"],
        "UDP 8472 from 198.51.100.1 to 203.0.113.2 is dropped in the network while other UDP passes: allow UDP 8472 between nodes in the security group, NACL or firewall"
    );
    assert_eq!(pair(&report, N2, N1)["verdict"], "lost-in-network");
    // The table: a matrix with the diagnosis under it.
    let (_, table, _) = c.vxlan(&[], TOKEN);
    assert!(table.starts_with("FAULT  2 of 2 direction(s) fail on UDP 8472"), "{table}");
    assert!(table.contains("LOST-IN-NETWORK 0/5") && table.contains("allow UDP 8472"), "{table}");

    // One way only.
    c.router.sh(&format!(
        "iptables -F FORWARD && iptables -A FORWARD -s {N1} -d {N2} -p udp --dport 8472 -j DROP"
    ))?;
    let (_, report) = c.json();
    assert_eq!(pair(&report, N1, N2)["verdict"], "lost-in-network");
    assert_eq!(pair(&report, N2, N1)["verdict"], "ok");

    // All UDP dropped: the control is lost too.
    c.router.sh("iptables -F FORWARD && iptables -A FORWARD -p udp -j DROP")?;
    let (_, report) = c.json();
    let p = pair(&report, N1, N2);
    assert_eq!((p["verdict"].as_str(), p["control_udp"].as_str()), (Some("lost-in-network"), Some("lost")));
    assert!(p["diagnosis"].as_str().unwrap().starts_with("all UDP from 198.51.100.1 to 203.0.113.2"), "{p}");
    c.router.sh("iptables -F FORWARD")?;

    // The destination's own INPUT chain drops it: reached the interface, the rule is named.
    c.nodes[1].0.sh("iptables -A INPUT -p udp --dport 8472 -j DROP")?;
    let (_, report) = c.json();
    let p = pair(&report, N1, N2);
    assert_eq!(
        (p["verdict"].as_str(), p["arrived"].as_u64()),
        (Some("dropped-at-destination"), Some(5)),
        "{p}"
    );
    assert_eq!(p["rule"], "-t filter -A INPUT -p udp -m udp --dport 8472 -j DROP");
    assert_eq!(pair(&report, N2, N1)["verdict"], "ok");
    c.nodes[1].0.sh("iptables -F INPUT")?;

    // The source's OUTPUT chain drops it: it never leaves.
    c.nodes[0].0.sh("iptables -A OUTPUT -p udp --dport 8472 -j DROP")?;
    let (_, report) = c.json();
    let p = pair(&report, N1, N2);
    assert_eq!(
        (p["verdict"].as_str(), p["left_source"].as_u64()),
        (Some("blocked-at-source"), Some(0)),
        "{p}"
    );
    assert_eq!(p["rule"], "-t filter -A OUTPUT -p udp -m udp --dport 8472 -j DROP");
    assert!(
        p["evidence"]
            .as_str()
            .unwrap()
            .starts_with("sendto(2) on 198.51.100.1 failed (Operation not permitted"),
        "{p}"
    );
    c.nodes[0].0.sh("iptables -F OUTPUT")?;

    // After all that probing the real VTEP learned nothing.
    assert_eq!(
        c.nodes[1].0.sh("bridge fdb show dev flannel.1")?,
        fdb_before,
        "the kernel VTEP's FDB is unchanged"
    );
    Ok(())
}

#[test]
fn a_wrong_token_or_a_missing_agent_is_exit_3_naming_it() -> TestResult {
    let Some(mut c) = cluster("vx-auth", 2) else { return Ok(()) };
    let (code, _, err) = c.vxlan(&[], "not-the-token");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refused the token") && err.contains("NETPROBE_TOKEN"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let (code, _, err) = c.vxlan(&[], "");
    assert_eq!(code, 2, "no token at all is bad input: {err}");

    // Stop node2's agent: unreachable, named.
    let agent = c.agents[1];
    c.lab.kill(agent);
    let (code, _, err) = c.vxlan(&[], TOKEN);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("203.0.113.2:9473") && err.contains("unreachable"), "{err}");
    Ok(())
}

#[test]
fn a_three_node_mesh_finds_the_one_unreachable_node() -> TestResult {
    let Some(c) = cluster("vx-mesh", 3) else { return Ok(()) };
    let n3 = c.nodes[2].1;
    c.router.sh(&format!("iptables -A FORWARD -d {n3} -p udp --dport 8472 -j DROP && iptables -A FORWARD -s {n3} -p udp --dport 8472 -j DROP"))?;
    let (code, report) = c.json();
    assert_eq!(code, 1);
    let pairs = report["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 6, "every ordered pair");
    for p in pairs {
        let touches_n3 = p["from"] == n3 || p["to"] == n3;
        let want = if touches_n3 { "lost-in-network" } else { "ok" };
        assert_eq!(p["verdict"], want, "{p}");
    }
    let (_, table, _) = c.vxlan(&[], TOKEN);
    assert!(table.contains("FROM \\ TO"), "a from x to matrix: {table}");
    Ok(())
}

#[test]
fn busy_drop_counters_that_cannot_match_the_probes_name_nothing() -> TestResult {
    let Some(mut c) = cluster("vx-busy", 2) else { return Ok(()) };
    // node2 drops DNS and INVALID packets, and the router keeps sending it DNS while we probe.
    c.nodes[1].0.sh(
        "iptables -A INPUT -m conntrack --ctstate INVALID -j DROP && iptables -A INPUT -p udp --dport 53 -j DROP",
    )?;
    let router = c.router.clone();
    c.lab.spawn(
        &router,
        &["bash", "-c", &format!("while true; do echo x > /dev/udp/{N2}/53; sleep 0.01; done")],
    )?;
    let (code, report) = c.json();
    let p = pair(&report, N1, N2);
    assert_eq!((code, p["verdict"].as_str(), &p["rule"]), (0, Some("ok"), &Value::Null), "{p}");
    // The kernel itself says the probes reached flannel.1's socket, past every firewall.
    assert_eq!(
        (p["delivery"].as_str(), p["drop_location"].as_str()),
        (Some("kernel"), Some("vxlan_rcv")),
        "{p}"
    );
    assert!(
        p["evidence"]
            .as_str()
            .unwrap()
            .contains("dropped 5 of the 5 probes that reached its interface with VXLAN_VNI_NOT_FOUND"),
        "{p}"
    );
    let counted = c.nodes[1].0.sh("iptables -L INPUT -v -x -n | awk '/dpt:53/ {print $1}'")?;
    assert!(counted.trim().parse::<u64>()? > 0, "the DNS drop rule did count packets meanwhile");
    Ok(())
}

#[test]
fn native_nftables_rules_are_read_and_an_uncounted_one_is_named_by_the_kernel() -> TestResult {
    let Some(c) = cluster("vx-nft", 2) else { return Ok(()) };
    // A native nftables firewall (not iptables-nft) on node2 drops VXLAN, counting.
    c.nodes[1].0.sh(
        "nft add table inet fw && nft 'add chain inet fw in { type filter hook input priority 0; }' && \
         nft add rule inet fw in udp dport 8472 counter drop",
    )?;
    let (code, report) = c.json();
    let p = pair(&report, N1, N2);
    assert_eq!((code, p["verdict"].as_str()), (1, Some("dropped-at-destination")), "{p}");
    assert!(p["rule"].as_str().unwrap().starts_with("nft: inet fw in handle"), "{p}");
    assert_eq!(
        (p["drop_reason"].as_str(), p["drop_location"].as_str()),
        (Some("NETFILTER_DROP"), Some("nft_do_chain"))
    );
    // The same rule without a counter: no counter grows, but the kernel says its firewall took
    // every probe (what counters alone leave unverified, below).
    c.nodes[1].0.sh("nft flush chain inet fw in && nft add rule inet fw in udp dport 8472 drop")?;
    let (code, report) = c.json();
    let p = pair(&report, N1, N2);
    assert_eq!(
        (code, p["verdict"].as_str(), p["delivery"].as_str(), &p["rule"]),
        (1, Some("dropped-at-destination"), Some("kernel"), &Value::Null),
        "{p}"
    );
    assert_eq!(
        (p["drop_reason"].as_str(), p["drop_location"].as_str()),
        (Some("NETFILTER_DROP"), Some("nft_do_chain"))
    );
    assert!(p["diagnosis"].as_str().unwrap().contains("without a counter"), "{p}");
    // The other direction passes: the kernel dropped those at flannel.1's socket, as it should.
    assert_eq!(pair(&report, N2, N1)["drop_location"], "vxlan_rcv");
    Ok(())
}

#[test]
fn without_the_kernels_word_an_uncounted_drop_leaves_delivery_unverified() -> TestResult {
    let Some(c) = cluster_with("vx-notrace", 2, &[], &["--no-drop-trace"]) else { return Ok(()) };
    c.nodes[1].0.sh(
        "nft add table inet fw && nft 'add chain inet fw in { type filter hook input priority 0; }' && \
         nft add rule inet fw in udp dport 8472 drop",
    )?;
    let (code, report) = c.json();
    let p = pair(&report, N1, N2);
    assert_eq!(
        (code, p["verdict"].as_str(), p["delivery"].as_str()),
        (0, Some("unverified"), Some("unverified")),
        "{p}"
    );
    let note = p["delivery_note"].as_str().unwrap();
    assert!(
        note.contains("without a counter")
            && note.contains("not traced: tracing turned off (--no-drop-trace)"),
        "{p}"
    );
    let (_, table, _) = c.vxlan(&[], TOKEN);
    assert!(table.contains("unverified"), "{table}");
    Ok(())
}

#[test]
fn agents_that_cannot_read_their_firewall_say_so() -> TestResult {
    let Some(c) = cluster_with("vx-nocounters", 2, &["PATH=/var/empty"], &["--no-drop-trace"]) else {
        return Ok(());
    };
    let (code, report) = c.json();
    assert_eq!(code, 0, "{report}");
    for (a, b) in [(N1, N2), (N2, N1)] {
        let p = pair(&report, a, b);
        assert_eq!((p["arrived"].as_u64(), p["verdict"].as_str()), (Some(5), Some("unverified")), "{p}");
        assert!(p["delivery_note"].as_str().unwrap().contains("not installed"), "{p}");
    }
    Ok(())
}

#[test]
fn the_kernels_word_stands_where_the_counters_cannot_be_read() -> TestResult {
    let Some(c) = cluster_with("vx-nocounters-traced", 2, &["PATH=/var/empty"], &[]) else { return Ok(()) };
    // Without iptables and nft the counters are unreadable; the kernel says every probe got
    // past the firewalls to flannel.1's socket. Then flannel.1 goes: nothing listens on 8472.
    // (Without `ip` either, the agents cannot list their vxlan devices.)
    let (code, report) = c.json();
    assert_eq!(code, 0, "{report}");
    let p = pair(&report, N1, N2);
    assert_eq!((p["verdict"].as_str(), p["delivery"].as_str()), (Some("ok"), Some("kernel")), "{p}");
    assert!(
        p["delivery_note"].as_str().unwrap().contains("not installed"),
        "the counters' failure is still said: {p}"
    );
    c.nodes[1].0.sh("ip link del flannel.1")?;
    let (code, report) = c.json();
    assert_eq!(code, 0, "{report}");
    // Nothing listens on 8472 there, and without `ip` the agent cannot read its devices: whether
    // the overlay uses that port on node2 cannot be told, so never ok.
    let p = pair(&report, N1, N2);
    assert_eq!(
        (p["verdict"].as_str(), p["drop_reason"].as_str(), p["drop_location"].as_str()),
        (Some("unverified"), Some("NO_SOCKET"), Some("__udp4_lib_rcv")),
        "{p}"
    );
    assert!(p["evidence"].as_str().unwrap().contains("with NO_SOCKET"), "{p}");
    assert!(p["delivery_note"].as_str().unwrap().contains("VXLAN devices could not be read"), "{p}");
    Ok(())
}

/// An API in `ns` that lists the lab's three Nodes, then says on its watch, 25 s on, that
/// k8s-worker-2 was deleted.
fn api_that_deletes_worker_2(ns: &Netns) -> FakeApi {
    let nodes: Value = serde_json::from_str(&fixture("nodes-vxlan.json")).unwrap();
    let worker2 =
        nodes["items"].as_array().unwrap().iter().find(|n| n["metadata"]["name"] == "k8s-worker-2").unwrap();
    let deleted = serde_json::json!({"type": "DELETED", "object": worker2}).to_string();
    FakeApi::start_with_watches(
        ns,
        vec![("/api/v1/nodes", 200, fixture("nodes-vxlan.json"))],
        vec![("/api/v1/nodes", vec![(Duration::from_secs(25), deleted)])],
    )
}

#[test]
fn all_nodes_come_from_the_api_named_and_a_node_without_an_agent_is_named_with_the_fix() -> TestResult {
    let Some(mut c) = cluster("vx-allnodes", 3) else { return Ok(()) };
    // The API lists the three nodes (control plane included); node3's agent is not running.
    let api = api_that_deletes_worker_2(&c.nodes[0].0);
    let stopped = c.agents[2];
    c.lab.kill(stopped);
    let run = |args: &[&str]| {
        let output = c.nodes[0]
            .0
            .command(env!("CARGO_BIN_EXE_netprobe"))
            .args(["vxlan", "--all-nodes", "--timeout", "500ms"])
            .args(args)
            .env("NETPROBE_TOKEN", TOKEN)
            .env("KUBECONFIG", api.kubeconfig())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
    };
    let (code, out, err) = run(&["-o", "json"]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(code, 3, "a mesh with a node unchecked is not ok: {report}");
    let p = pair(&report, N1, N2);
    assert_eq!(
        (p["from_node"].as_str(), p["to_node"].as_str()),
        (Some("k8s-cp-1"), Some("k8s-worker-1")),
        "{p}"
    );
    assert_eq!(p["verdict"], "ok", "{p}");
    assert_eq!(report["pairs"].as_array().unwrap().len(), 2, "{report}");
    let untested = &report["untested"][0];
    assert_eq!(
        (untested["node"].as_str(), untested["ip"].as_str()),
        (Some("k8s-worker-2"), Some("192.0.2.3"))
    );
    assert!(
        untested["reason"].as_str().unwrap().contains("kubectl apply -k deploy/kubernetes/"),
        "{untested}"
    );

    let (_, table, _) = run(&[]);
    assert!(table.contains("k8s-cp-1") && table.contains("k8s-worker-1"), "{table}");
    assert!(table.contains("untested k8s-worker-2 (192.0.2.3)"), "{table}");

    // Without RBAC to list nodes: exit 3 naming the verb, in one line.
    drop(api);
    let forbidden = FakeApi::start(&c.nodes[0].0, vec![("/api/v1/nodes", 403, fixture("forbidden.json"))]);
    let output = c.nodes[0]
        .0
        .command(env!("CARGO_BIN_EXE_netprobe"))
        .args(["vxlan", "--all-nodes"])
        .env("NETPROBE_TOKEN", TOKEN)
        .env("KUBECONFIG", forbidden.kubeconfig())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("list nodes in the core API group") && stderr.lines().count() == 1, "{stderr}");

    // Explicit nodes still work, with the agents' port given once.
    let output = c.nodes[0]
        .0
        .command(env!("CARGO_BIN_EXE_netprobe"))
        .args(["vxlan", N1, N2, "--agent-port", "9473", "--timeout", "500ms"])
        .env("NETPROBE_TOKEN", TOKEN)
        .output()?;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// Prometheus's answer to an instant query, as (from, to) -> value.
fn prometheus_query(router: &Netns, query: &str) -> Vec<((String, String), String)> {
    let (code, body) =
        http_get(router, "127.0.0.1:9090".parse().unwrap(), &format!("/api/v1/query?query={query}"))
            .unwrap_or((0, String::new()));
    if code != 200 {
        return Vec::new();
    }
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut pairs: Vec<((String, String), String)> = answer["data"]["result"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| {
                    let label = |name: &str| r["metric"][name].as_str().unwrap_or_default().to_string();
                    ((label("from"), label("to")), r["value"][1].as_str().unwrap_or_default().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    pairs
}

/// Polls Prometheus until `want` holds for netprobe_vxlan_pair_up (generous: the figures of how
/// fast are the README's, not this test's).
fn until_pairs(router: &Netns, want: impl Fn(&str, &str) -> &'static str) -> Vec<((String, String), String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let pairs = prometheus_query(router, "netprobe_vxlan_pair_up");
        let holds = pairs.len() == 6 && pairs.iter().all(|((from, to), value)| value == want(from, to));
        if holds || std::time::Instant::now() > deadline {
            return pairs;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_mesh_puts_every_pair_in_a_real_prometheus_and_a_dropped_path_goes_to_zero_and_back() -> TestResult {
    let Some(prometheus) = ["/usr/bin/prometheus"].into_iter().find(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            ".ci/run installs prometheus, and it is missing"
        );
        netprobe_lab::skip("vx-mesh", "prometheus is not installed");
        return Ok(());
    };
    let peers = "--peers=198.51.100.1,203.0.113.2,192.0.2.3";
    let Some(mut c) = cluster_with("vx-mesh", 3, &[], &["--mesh-every", "2s", peers]) else { return Ok(()) };
    // A real Prometheus in the router's namespace scrapes the three agents every second.
    let dir = std::env::temp_dir().join(format!("netprobe-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n\
         scrape_configs:\n\
         - job_name: netprobe\n  static_configs:\n  - targets: ['198.51.100.1:9473', '203.0.113.2:9473', '192.0.2.3:9473']\n",
    )?;
    let (config_flag, storage_flag) = (
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
    );
    let router = c.router.clone();
    c.lab
        .spawn(&router, &[prometheus, &config_flag, &storage_flag, "--web.listen-address=127.0.0.1:9090"])?;
    router.wait_listening("tcp", 9090, Duration::from_secs(60))?;

    let all_up = until_pairs(&router, |_, _| "1");
    assert!(all_up.len() == 6 && all_up.iter().all(|(_, v)| v == "1"), "every pair up: {all_up:?}");

    // The security group drops VXLAN between node1 and node2, both ways.
    router.sh(&format!(
        "iptables -I FORWARD -s {N1} -d {N2} -p udp --dport 8472 -j DROP && \
         iptables -I FORWARD -s {N2} -d {N1} -p udp --dport 8472 -j DROP"
    ))?;
    let cut =
        |from: &str, to: &str| if (from == N1 && to == N2) || (from == N2 && to == N1) { "0" } else { "1" };
    let pairs = until_pairs(&router, cut);
    assert!(
        pairs.len() == 6 && pairs.iter().all(|((f, t), v)| v == cut(f, t)),
        "only the cut pairs are 0: {pairs:?}"
    );
    // The receivers diagnose the cut pairs: lost in the network, while other UDP passes.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let verdicts = loop {
        let verdicts =
            prometheus_query(&router, "netprobe_vxlan_pair_verdict%7Bverdict%3D%22lost-in-network%22%7D");
        if verdicts.iter().filter(|((f, t), _)| cut(f, t) == "0").count() == 2
            || std::time::Instant::now() > deadline
        {
            break verdicts;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let lost = verdicts.iter().filter(|((f, t), _)| cut(f, t) == "0").count();
    assert_eq!(lost, 2, "{verdicts:?}");

    router.sh("iptables -F FORWARD")?;
    let back = until_pairs(&router, |_, _| "1");
    assert!(
        back.len() == 6 && back.iter().all(|(_, v)| v == "1"),
        "back to 1 once the rule is gone: {back:?}"
    );
    let (code, metrics) = http_get(&router, format!("{N1}:9473").parse()?, "/metrics")?;
    assert_eq!(code, 200, "no token needed for /metrics");
    assert!(
        metrics.contains("netprobe_agent_requests_total{endpoint=\"/v1/expect-many\",code=\"200\"}"),
        "{metrics}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn the_mesh_takes_its_peers_from_the_api_and_names_them() -> TestResult {
    let Some(mut c) = cluster("vx-meshapi", 3) else { return Ok(()) };
    // node1's agent again, now with the mesh, its peers from the API (the Nodes of the lab); the
    // workers' agents with the mesh too (their peers given), so that beacons come to node1.
    // The API lists three Nodes, then its watch says k8s-worker-2 was deleted.
    let api = api_that_deletes_worker_2(&c.nodes[0].0);
    let kubeconfig = api.kubeconfig();
    let (kubeconfig_env, token_env) =
        (format!("KUBECONFIG={}", kubeconfig.display()), format!("NETPROBE_TOKEN={TOKEN}"));
    let peers = "--peers=198.51.100.1,203.0.113.2,192.0.2.3";
    for (i, name) in ["k8s-cp-1", "k8s-worker-1", "k8s-worker-2"].into_iter().enumerate() {
        c.lab.kill(c.agents[i]);
        let (node, ip) = c.nodes[i].clone();
        let (listen, node_name) = (format!("{ip}:9473"), format!("NODE_NAME={name}"));
        let mut argv =
            vec!["env", &token_env, &kubeconfig_env, &node_name, NETPROBE, "agent", "--listen", &listen];
        argv.extend(["--mesh-every", "1s", if i == 0 { "--peers-from-api" } else { peers }]);
        c.agents[i] = c.lab.spawn(&node, &argv)?;
        node.wait_listening("tcp", 9473, Duration::from_secs(10))?;
    }
    let node1 = c.nodes[0].0.clone();
    let want = ["k8s-worker-1", "k8s-worker-2"]
        .map(|from| format!("netprobe_vxlan_pair_up{{from=\"{from}\",to=\"k8s-cp-1\"}} 1"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let (_, metrics) = http_get(&node1, format!("{N1}:9473").parse()?, "/metrics")?;
        if want.iter().all(|line| metrics.lines().any(|l| l == line)) || std::time::Instant::now() > deadline
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    for line in &want {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("from=\"k8s-cp-1\""), "this node is not its own peer: {metrics}");
    // The watch deletes k8s-worker-2: its series go, k8s-worker-1's stay.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let (_, metrics) = http_get(&node1, format!("{N1}:9473").parse()?, "/metrics")?;
        if !metrics.contains("from=\"k8s-worker-2\"") || std::time::Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(!metrics.contains("from=\"k8s-worker-2\""), "a Node deleted is no longer a peer: {metrics}");
    assert!(metrics.lines().any(|l| l == want[0]), "{metrics}");
    Ok(())
}

#[test]
fn a_sender_that_asks_keeps_the_capture_open_and_one_too_late_sends_nothing() -> TestResult {
    let Some(c) = cluster("vx-late", 2) else { return Ok(()) };
    let (n1, n2) = (&c.nodes[0].0, &c.nodes[1].0);
    let agent2: std::net::SocketAddr = format!("{N2}:9473").parse()?;
    let agent1: std::net::SocketAddr = format!("{N1}:9473").parse()?;
    let expect = |id: u32| {
        let body = format!(
            r#"{{"probe_id":{id},"from":"{N1}","to":"{N2}","port":8472,"vni":16777200,"window_ms":3000}}"#
        );
        let (code, answer) = http_request(n1, agent2, "POST", "/v1/expect", Some(TOKEN), &body).unwrap();
        assert_eq!(code, 200, "{answer}");
        serde_json::from_str::<Value>(&answer).unwrap()["control_port"].as_u64().unwrap()
    };
    let send = |id: u32, control_port: u64| {
        let body = format!(
            r#"{{"probe_id":{id},"to":"{N2}","port":8472,"control_port":{control_port},"vni":16777200,"count":5}}"#
        );
        http_request(n1, agent1, "POST", "/v1/send", Some(TOKEN), &body).unwrap()
    };
    let collect = |id: u32| {
        let body = format!(r#"{{"probe_id":{id}}}"#);
        http_request(n2, agent2, "POST", "/v1/collect", Some(TOKEN), &body).unwrap()
    };

    // Probe 77: node2 listens 3 s; the sender asks at 1.5 s (as a loaded sender does before its
    // probes leave), which keeps the capture open 3 s from then; the probes leave at 3.5 s, past
    // the first window, and are heard. Each step has a second or more to spare on a busy machine.
    let control_port = expect(77);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, answer) = http_get(n1, agent2, "/v1/expectation/77")?;
    assert_eq!(code, 401, "the question needs the token: {answer}");
    let (code, answer) = http_request(n1, agent2, "GET", "/v1/expectation/77", Some(TOKEN), "")?;
    assert_eq!(code, 200, "{answer}");
    std::thread::sleep(Duration::from_millis(2000));
    let (code, answer) = send(77, control_port);
    assert_eq!(code, 200, "{answer}");
    std::thread::sleep(Duration::from_millis(200));
    let (code, answer) = collect(77);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(serde_json::from_str::<Value>(&answer)?["arrived"], 5, "{answer}");

    // Probe 78: nobody asks until long after the window; the send is refused, nothing is sent,
    // so no verdict can call the probes lost.
    let control_port = expect(78);
    std::thread::sleep(Duration::from_millis(4500));
    let (code, answer) = send(78, control_port);
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("does not expect probe 78"), "{answer}");
    Ok(())
}

#[test]
fn probes_with_a_broken_udp_checksum_are_dropped_at_the_destination_and_say_why() -> TestResult {
    let test = "probes_with_a_broken_udp_checksum_are_dropped_at_the_destination_and_say_why";
    if !netprobe_lab::on_path("ethtool") {
        netprobe_lab::skip(test, "ethtool is not installed (apt-get install ethtool)");
        return Ok(());
    }
    let Some(c) = cluster(test, 2) else { return Ok(()) };
    // Checksums computed and checked in software on every veth, then the router breaks the UDP
    // checksum of everything to 8472: what a broken checksum offload does to VXLAN in the wild.
    for (node, _) in &c.nodes {
        node.sh("ethtool -K eth0 tx off rx off >/dev/null")?;
    }
    c.router.sh("for d in eth0 eth1; do ethtool -K $d tx off rx off >/dev/null; done")?;
    c.router.sh("nft add table inet mangle && \
         nft 'add chain inet mangle fw { type filter hook forward priority 0; }' && \
         nft add rule inet mangle fw udp dport 8472 udp checksum set 0x1234")?;
    let (code, out, err) = c.vxlan(&["-o", "json"], TOKEN);
    assert_eq!(code, 1, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out)?;
    for pair in report["pairs"].as_array().unwrap() {
        // The capture saw every probe arrive; the kernel dropped them all for their checksum.
        assert_eq!(pair["arrived"], 5, "{pair}");
        assert_eq!(pair["verdict"], "dropped-at-destination", "{pair}");
        assert_eq!(pair["drop_reason"], "UDP_CSUM", "{pair}");
        assert!(pair["evidence"].as_str().unwrap().contains("InCsumErrors grew by"), "{pair}");
        assert!(pair["diagnosis"].as_str().unwrap().contains("tx-checksum-ip-generic off"), "{pair}");
        // The source's own flannel.1 offloads its checksum (the kernel's default): said, as the
        // suspect for the node's own VXLAN traffic.
        assert_eq!(pair["source_vxlan_device"]["name"], "flannel.1", "{pair}");
        assert_eq!(pair["source_vxlan_device"]["tx_checksum_offload"], true, "{pair}");
        assert!(
            pair["diagnosis"].as_str().unwrap().contains("flannel.1 has tx-checksum-ip-generic on"),
            "{pair}"
        );
    }
    // Without the broken checksums, the same pairs are ok.
    c.router.sh("nft delete table inet mangle")?;
    let (code, out, err) = c.vxlan(&["-o", "json"], TOKEN);
    assert_eq!(code, 0, "{out}\n{err}");
    Ok(())
}

#[test]
fn the_path_mtu_is_found_to_the_byte_and_a_black_hole_is_named() -> TestResult {
    let Some(c) = cluster("vx-mtu", 2) else { return Ok(()) };
    // node2 sits behind a 1400-byte link (the router's eth1 and node2's eth0), and its flannel.1
    // was sized for it (1350); node1's flannel.1 is still sized for its own 1500-byte link (1450).
    c.router.sh("ip link set eth1 mtu 1400")?;
    c.nodes[1].0.sh("ip link set eth0 mtu 1400 && ip link set flannel.1 mtu 1350")?;
    let run = |c: &Cluster| {
        let (code, out, err) = c.vxlan(&["--mtu", "-o", "json"], TOKEN);
        let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
        (code, report)
    };

    // The route cache of node1 holds no path MTU for node2, before and after: the sized probes
    // leave on a raw socket, so the router's fragmentation-needed changes nothing on the node
    // (through a UDP socket the kernel cached 1400 for ten minutes, for every sender on it).
    let cache = |c: &Cluster| c.nodes[0].0.sh(&format!("ip -d route show cache {N2}")).unwrap();
    assert_eq!(cache(&c), "", "nothing cached before");

    // The router says so (ICMP fragmentation-needed), but node1's pods would still send 1450.
    let (code, report) = run(&c);
    assert_eq!(cache(&c), "", "the search left the route cache as it was");
    assert_eq!(pair(&report, N1, N2)["mtu"]["route_cache"], "unchanged", "{report}");
    assert_eq!(code, 1, "{report}");
    let there = pair(&report, N1, N2);
    assert_eq!(there["verdict"], "path-mtu-too-small", "{there}");
    let m = &there["mtu"];
    assert_eq!((m["path_mtu"].as_u64(), m["inner_mtu"].as_u64()), (Some(1400), Some(1350)), "{m}");
    assert_eq!(
        (m["interface_mtu"].as_u64(), m["vxlan_device"].as_str(), m["vxlan_mtu"].as_u64()),
        (Some(1500), Some("flannel.1"), Some(1450))
    );
    assert_eq!(m["frag_needed"], serde_json::json!({"from": "198.51.100.254", "mtu": 1400}), "{m}");
    assert_eq!(m["black_hole"], false);
    assert!(m["rounds"].as_u64().unwrap() <= 4, "{m}");
    assert_eq!(
        there["diagnosis"],
        "flannel.1 MTU 1450 but the path from 198.51.100.1 to 203.0.113.2 carries 1400-byte packets: pods' packets over 1350 bytes are lost; set the CNI MTU to 1350; 198.51.100.254 sent ICMP fragmentation-needed (next-hop MTU 1400), so TCP in the pods can still adapt"
    );
    // Back the other way node2's own interface is the limit, and its flannel.1 fits.
    let back = pair(&report, N2, N1);
    assert_eq!(
        (back["verdict"].as_str(), back["mtu"]["path_mtu"].as_u64()),
        (Some("ok"), Some(1400)),
        "{back}"
    );
    assert_eq!(back["mtu"]["too_small"], false);

    // A firewall eats ICMP fragmentation-needed: the same size, now a black hole.
    c.router.sh("iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP")?;
    let (code, report) = run(&c);
    assert_eq!(code, 1, "{report}");
    let m = &pair(&report, N1, N2)["mtu"];
    assert_eq!(
        (m["path_mtu"].as_u64(), m["black_hole"].as_bool(), m["frag_needed"].is_null()),
        (Some(1400), Some(true), true),
        "{m}"
    );
    let (_, table, _) = c.vxlan(&["--mtu"], TOKEN);
    assert!(table.contains("NONE (black hole)") && table.contains("flannel.1 1450 TOO BIG"), "{table}");

    // node1's flannel.1 sized for the path: nothing is lost, the black hole stays named.
    c.nodes[0].0.sh("ip link set flannel.1 mtu 1350")?;
    let (code, report) = run(&c);
    assert_eq!(code, 0, "{report}");
    assert_eq!(pair(&report, N1, N2)["mtu"]["black_hole"], true);
    Ok(())
}
