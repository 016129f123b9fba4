//! The fault matrix: every way the overlay breaks that netprobe was shown to miss or misname,
//! injected for real (the router's nftables and routes, the nodes' vxlan devices and sysctls), with
//! the agents' drop tracing on (the default) and off. Each asserts the verdict and the evidence it
//! rests on; no injected fault may ever give `ok`.

use serde_json::Value;

mod common;
use common::*;

/// The two ways the agents run: tracing the kernel's drops, and with counters alone.
const MODES: [(&str, &[&str]); 2] = [("traced", &[]), ("untraced", &["--no-drop-trace"])];

/// One cluster of this file at a time: the kernel's drop tracepoint sees every network namespace,
/// and these clusters share their addresses (and their probes' lengths can coincide), so a fault
/// injected in one (an nftables drop) was once read as the drops of another's probes: "dropped at
/// destination, NETFILTER_DROP" where that cluster had no VXLAN device. A lab-only confusion: a
/// real node is one kernel with one agent.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `family` on a fresh two-node cluster in each mode.
fn in_both_modes(test: &str, family: impl Fn(&mut Cluster, bool) -> TestResult) -> TestResult {
    // A test that failed holding the lock poisons it; the next ones still run.
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for (mode, args) in MODES {
        let Some(mut c) = cluster_with(&format!("{test}-{mode}"), 2, &[], args) else { return Ok(()) };
        family(&mut c, mode == "traced").map_err(|e| format!("{mode}: {e}"))?;
    }
    Ok(())
}

/// No pair of an injected fault is ever ok, and the report's verdict is a fault.
fn never_ok(code: i32, report: &Value, pairs: &[(&str, &str)]) {
    assert_eq!((code, report["verdict"].as_str()), (1, Some("fault")), "{report}");
    for (from, to) in pairs {
        let p = pair(report, from, to);
        assert_ne!(p["verdict"], "ok", "{p}");
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[test]
fn partial_loss_is_partial_loss_whatever_the_traced_drops_say() -> TestResult {
    in_both_modes("vxf-loss", |c, _| {
        // 30% of UDP 8472 lost on the router, at random (this kernel has no netem).
        c.router.sh(
            "nft add table inet loss && nft 'add chain inet loss fw { type filter hook forward priority 0; }' && \
             nft add rule inet loss fw udp dport 8472 numgen random mod 100 '<' 30 drop",
        )?;
        let (code, report) = c.json_with(&["--count", "100"]);
        never_ok(code, &report, &[(N1, N2), (N2, N1)]);
        for (from, to) in [(N1, N2), (N2, N1)] {
            let p = pair(&report, from, to);
            let arrived = p["arrived"].as_u64().unwrap();
            // 0 or 100 of 100 at 30% loss: about 1e-16 and 1e-52.
            assert!(arrived > 0 && arrived < 100, "{p}");
            assert_eq!((p["verdict"].as_str(), p["sent"].as_u64()), (Some("partial-loss"), Some(100)), "{p}");
            assert!(text(&p["diagnosis"]).starts_with(&format!("{arrived} of 100 UDP 8472 probes")), "{p}");
        }
        Ok(())
    })
}

#[test]
fn a_vtep_on_another_port_is_a_fault_both_ways() -> TestResult {
    in_both_modes("vxf-port", |c, traced| {
        // node2's flannel.1 listens on 4789; node1 (and the probes) use 8472.
        c.nodes[1].0.sh(
            "ip link del flannel.1 && ip link add flannel.1 type vxlan id 1 local 203.0.113.2 dstport 4789 dev eth0 && \
             ip link set flannel.1 up",
        )?;
        let (code, report) = c.json();
        never_ok(code, &report, &[(N1, N2), (N2, N1)]);
        let there = pair(&report, N1, N2);
        assert_eq!(
            (there["verdict"].as_str(), there["arrived"].as_u64()),
            (Some("vtep-port-mismatch"), Some(5))
        );
        assert!(
            text(&there["diagnosis"]).contains(
                "203.0.113.2's flannel.1 listens on UDP 4789, 198.51.100.1's flannel.1 sends to UDP 8472"
            ),
            "{there}"
        );
        // What the kernel or its counters said of the probes on 8472: nothing listens there.
        let evidence = text(&there["evidence"]);
        if traced {
            assert!(evidence.contains("NO_SOCKET"), "{there}");
        } else {
            assert!(evidence.contains("UdpNoPorts grew by"), "{there}");
        }
        // The other way the probes reach 8472, but node2's own VXLAN goes to 4789, where nothing
        // listens on node1.
        let back = pair(&report, N2, N1);
        assert_eq!(back["verdict"], "vtep-port-mismatch", "{back}");
        assert!(text(&back["diagnosis"]).contains("203.0.113.2's flannel.1 sends to UDP 4789"), "{back}");
        Ok(())
    })
}

#[test]
fn a_node_without_the_overlays_device_is_a_fault_and_no_device_anywhere_is_said() -> TestResult {
    in_both_modes("vxf-nodev", |c, _| {
        c.nodes[1].0.sh("ip link del flannel.1")?;
        let (code, report) = c.json();
        never_ok(code, &report, &[(N1, N2)]);
        let there = pair(&report, N1, N2);
        assert_eq!(there["verdict"], "vtep-port-mismatch", "{there}");
        assert!(
            text(&there["diagnosis"]).contains("203.0.113.2 has no VXLAN device listening on UDP 8472"),
            "{there}"
        );
        // No node has one (a plain network, or an overlay on another port): the probes prove UDP
        // delivery and the report says the overlay's own device was not tested.
        c.nodes[0].0.sh("ip link del flannel.1")?;
        let (code, report) = c.json();
        assert_eq!(code, 0, "{report}");
        for (from, to) in [(N1, N2), (N2, N1)] {
            let p = pair(&report, from, to);
            assert_eq!(p["verdict"], "ok", "{p}");
            assert!(text(&p["delivery_note"]).contains("no VXLAN device listens on UDP 8472"), "{p}");
            assert!(text(&p["delivery_note"]).contains("not tested"), "{p}");
        }
        Ok(())
    })
}

#[test]
fn the_reverse_path_filter_is_named_not_the_security_group() -> TestResult {
    in_both_modes("vxf-rpf", |c, traced| {
        // node2 has a second link to the router; the router sends UDP 8472 for node2 over it,
        // while node2's route back to node1 is its first link: with strict rp_filter node2's
        // kernel drops the probes that arrive on eth1.
        let (node2, router) = (c.nodes[1].0.clone(), c.router.clone());
        let (on_router, on_node) = c.lab.link(&router, "192.0.2.129/25", &node2, "192.0.2.130/25")?;
        assert_eq!(on_node, "eth1");
        router.sh(
            &format!("ip route add 203.0.113.2/32 via 192.0.2.130 dev {on_router} table 100 && ip rule add ipproto udp dport 8472 lookup 100"),
        )?;
        node2.sh("sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.eth1.rp_filter=1")?;
        let (code, report) = c.json();
        never_ok(code, &report, &[(N1, N2)]);
        let p = pair(&report, N1, N2);
        assert_eq!(
            (p["verdict"].as_str(), p["arrived"].as_u64()),
            (Some("dropped-at-destination"), Some(5)),
            "{p}"
        );
        let diagnosis = text(&p["diagnosis"]);
        assert!(diagnosis.contains("reverse-path filter"), "{p}");
        assert!(diagnosis.contains("eth1") && diagnosis.contains("net.ipv4.conf.eth1.rp_filter"), "{p}");
        assert!(!diagnosis.contains("security group"), "{p}");
        assert_eq!(p["arrived_on"], serde_json::json!(["eth1"]), "{p}");
        if traced {
            assert_eq!(p["drop_reason"], "IP_RPFILTER", "{p}");
        } else {
            assert!(text(&p["evidence"]).contains("TcpExtIPReversePathFilter grew by"), "{p}");
        }
        assert_eq!(pair(&report, N2, N1)["verdict"], "ok");
        Ok(())
    })
}

#[test]
fn a_reject_is_a_reject_in_the_network_and_at_the_destination() -> TestResult {
    in_both_modes("vxf-reject", |c, _| {
        c.router
            .sh("iptables -A FORWARD -p udp --dport 8472 -j REJECT --reject-with icmp-admin-prohibited")?;
        let (code, report) = c.json();
        never_ok(code, &report, &[(N1, N2), (N2, N1)]);
        let p = pair(&report, N1, N2);
        assert_eq!((p["verdict"].as_str(), p["arrived"].as_u64()), (Some("rejected"), Some(0)), "{p}");
        assert!(text(&p["evidence"]).contains("ICMP administratively prohibited from 198.51.100.254"), "{p}");
        assert!(text(&p["diagnosis"]).contains("198.51.100.254 rejects"), "{p}");
        c.router.sh("iptables -F FORWARD")?;

        c.nodes[1].0.sh("iptables -A INPUT -p udp --dport 8472 -j REJECT")?;
        let (code, report) = c.json();
        never_ok(code, &report, &[(N1, N2)]);
        let p = pair(&report, N1, N2);
        assert_eq!((p["verdict"].as_str(), p["arrived"].as_u64()), (Some("rejected"), Some(5)), "{p}");
        assert_eq!(
            p["rule"],
            "-t filter -A INPUT -p udp -m udp --dport 8472 -j REJECT --reject-with icmp-port-unreachable"
        );
        assert!(text(&p["evidence"]).contains("ICMP port unreachable from 203.0.113.2"), "{p}");
        assert_eq!(pair(&report, N2, N1)["verdict"], "ok");
        Ok(())
    })
}

#[test]
fn lost_in_the_network_names_the_likely_causes_in_order() -> TestResult {
    in_both_modes("vxf-lost", |c, _| {
        // Only VXLAN's port: a rule for that port first.
        c.router.sh("iptables -A FORWARD -p udp --dport 8472 -j DROP")?;
        let (code, report) = c.json();
        never_ok(code, &report, &[(N1, N2), (N2, N1)]);
        let p = pair(&report, N1, N2);
        assert_eq!(p["verdict"], "lost-in-network", "{p}");
        let said = text(&p["diagnosis"]);
        assert!(said.contains("allow UDP 8472 between nodes in the security group, NACL or firewall"), "{p}");
        // All UDP: a stateful middlebox with a full table drops every new flow too.
        c.router.sh("iptables -F FORWARD && iptables -A FORWARD -p udp -j DROP")?;
        let (_, report) = c.json();
        let said = text(&pair(&report, N1, N2)["diagnosis"]).to_string();
        let group = said.find("security group").unwrap_or(usize::MAX);
        let table = said.find("connection table").unwrap_or(usize::MAX);
        assert!(group < table && table < usize::MAX, "both, the group first: {said}");
        Ok(())
    })
}
