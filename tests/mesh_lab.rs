//! The always-on mesh in a lab: three nodes behind a router (whose forward chain plays the
//! network), each with a flannel-style vxlan device and an agent sending beacons every second.
//! Sequence gaps (random loss on the path), a restarting peer, a cut of one direction and its heal,
//! each read from the agents' own /metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use netprobe_lab::{http_get, Netns};

mod common;
use common::*;

const PEERS: &str = "--peers=198.51.100.1,203.0.113.2,192.0.2.3";

/// The agent on `ip` (in `ns`): its pair series, by (from, to), as metric name -> value.
fn pairs(ns: &Netns, ip: &str) -> HashMap<(String, String), HashMap<String, String>> {
    let mut pairs: HashMap<(String, String), HashMap<String, String>> = HashMap::new();
    let Ok((200, text)) = http_get(ns, format!("{ip}:9473").parse().unwrap(), "/metrics") else {
        return pairs;
    };
    for line in text.lines().filter(|l| l.starts_with("netprobe_vxlan_")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some((name, labels)) = series.split_once('{') else { continue };
        let label = |key: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches(['"', '}']).to_string())
        };
        let (Some(from), Some(to)) = (label("from"), label("to")) else { continue };
        let key = match label("verdict") {
            Some(verdict) if name.ends_with("pair_verdict") => format!("verdict={verdict}"),
            _ => name.to_string(),
        };
        pairs.entry((from, to)).or_default().insert(key, value.to_string());
    }
    pairs
}

fn up(c: &Cluster, from: &str, to: &str) -> Option<String> {
    let (ns, _) = c.nodes.iter().find(|(_, ip)| *ip == to).unwrap();
    pairs(ns, to).get(&(from.to_string(), to.to_string()))?.get("netprobe_vxlan_pair_up").cloned()
}

/// Waits (up to `limit`) until `holds`, returning whether it did.
fn until(limit: Duration, mut holds: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if holds() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

fn every_pair_up(c: &Cluster) -> bool {
    let ips: Vec<&str> = c.nodes.iter().map(|(_, ip)| *ip).collect();
    ips.iter()
        .all(|to| ips.iter().filter(|from| *from != to).all(|from| up(c, from, to).as_deref() == Some("1")))
}

#[test]
fn beacons_see_gaps_a_cut_and_its_heal_and_a_restarting_peer_is_never_down() -> TestResult {
    let Some(mut c) = cluster_with("mesh-beacons", 3, &[], &["--mesh-every", "1s", PEERS]) else {
        return Ok(());
    };
    assert!(
        until(Duration::from_secs(60), || every_pair_up(&c)),
        "every pair up: {:?}",
        pairs(&c.nodes[1].0, N2)
    );

    // Sequence gaps: the path from node1 to node2 loses about half of the beacons.
    c.router.sh(&format!(
        "nft add table inet lossy && nft add chain inet lossy path '{{ type filter hook forward priority 0; }}' && \
         nft add rule inet lossy path ip saddr {N1} ip daddr {N2} udp dport 8472 numgen random mod 2 == 0 drop"
    ))?;
    let lossy = until(Duration::from_secs(40), || {
        let seen = pairs(&c.nodes[1].0, N2);
        seen.get(&(N1.to_string(), N2.to_string())).is_some_and(|p| p.contains_key("verdict=partial-loss"))
    });
    let seen = pairs(&c.nodes[1].0, N2);
    let pair = &seen[&(N1.to_string(), N2.to_string())];
    assert!(lossy, "random loss is partial loss: {pair:?}");
    let count = |name: &str| pair[name].parse::<f64>().unwrap();
    assert!(
        count("netprobe_vxlan_probes_arrived_total") < count("netprobe_vxlan_probes_sent_total"),
        "the numbers show the gaps: {pair:?}"
    );
    assert_eq!(up(&c, N2, N1).as_deref(), Some("1"), "the other direction is not touched");
    c.router.sh("nft delete table inet lossy")?;
    assert!(
        until(Duration::from_secs(30), || up(&c, N1, N2).as_deref() == Some("1")),
        "ok once the loss stops"
    );

    // A restarting peer: node3's agent away for 4 s, then back. Its pairs may be untested (no
    // `up`), never down.
    let node3 = c.nodes[2].0.clone();
    c.lab.kill(c.agents[2]);
    let restart_at = Instant::now() + Duration::from_secs(4);
    let mut down = Vec::new();
    while Instant::now() < restart_at {
        for to in [N1, N2] {
            if up(&c, N3, to).as_deref() == Some("0") {
                down.push(to);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let token = format!("NETPROBE_TOKEN={TOKEN}");
    let listen = format!("{N3}:9473");
    let argv = ["env", token.as_str(), NETPROBE, "agent", "--listen", &listen, "--mesh-every", "1s", PEERS];
    c.agents[2] = c.lab.spawn(&node3, &argv)?;
    node3.wait_listening("tcp", 9473, Duration::from_secs(10))?;
    let back = until(Duration::from_secs(30), || {
        for to in [N1, N2] {
            if up(&c, N3, to).as_deref() == Some("0") {
                down.push(to);
            }
        }
        every_pair_up(&c)
    });
    assert!(down.is_empty(), "a restarting agent is never a path down: {down:?}");
    assert!(back, "every pair up again after the restart");

    // A cut of one direction: node1 -> node2 loses every VXLAN packet; node2 -> node1 does not.
    c.router.sh(&format!("iptables -I FORWARD -s {N1} -d {N2} -p udp --dport 8472 -j DROP"))?;
    assert!(until(Duration::from_secs(30), || up(&c, N1, N2).as_deref() == Some("0")), "the cut is seen");
    let diagnosed = until(Duration::from_secs(30), || {
        let seen = pairs(&c.nodes[1].0, N2);
        seen.get(&(N1.to_string(), N2.to_string())).is_some_and(|p| p.contains_key("verdict=lost-in-network"))
    });
    let seen = pairs(&c.nodes[1].0, N2);
    assert!(diagnosed, "the diagnosis names where: {:?}", seen.get(&(N1.to_string(), N2.to_string())));
    assert!(
        seen[&(N1.to_string(), N2.to_string())].contains_key("netprobe_vxlan_pair_cause"),
        "with its cause: {seen:?}"
    );
    assert_eq!(up(&c, N2, N1).as_deref(), Some("1"), "the other direction stays up");
    assert_eq!(up(&c, N1, N3).as_deref(), Some("1"), "node1's other pairs stay up");

    // Healed.
    c.router.sh("iptables -F FORWARD")?;
    assert!(until(Duration::from_secs(30), || up(&c, N1, N2).as_deref() == Some("1")), "healed");
    let seen = pairs(&c.nodes[1].0, N2);
    assert!(!seen[&(N1.to_string(), N2.to_string())].contains_key("netprobe_vxlan_pair_cause"), "{seen:?}");
    Ok(())
}
