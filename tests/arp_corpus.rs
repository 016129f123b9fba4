//! `netprobe arp --pcap` (one-shot and `--watch`) on captures nobody here wrote, and on the lab
//! captures that pin what they taught (tests/corpus/README.md). No privilege needed.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/arp").join(name)
}

/// Runs `netprobe arp TARGET --pcap FILE -o json [extra]`: (exit code, the last JSON line, stderr).
fn run(file: &str, target: &str, extra: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(["arp", target, "--pcap"])
        .arg(corpus(file))
        .args(["-o", "json"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{file}: {stderr}");
    let last = stdout.lines().last().unwrap_or("null");
    let report = serde_json::from_str(last).unwrap_or_else(|e| panic!("{file}: {e}: {stdout} {stderr}"));
    (output.status.code().unwrap_or(-1), report, stderr)
}

fn responders(report: &Value) -> Vec<(String, u64, u64)> {
    report["responders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["mac"].as_str().unwrap().to_string(),
                r["replies"].as_u64().unwrap(),
                r["announcements"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_switched_port_counts_only_the_requests_whose_replies_it_sees() {
    let (code, report, _) = run("switched-lan.pcap", "192.0.2.100", &[]);
    assert_eq!((code, report["verdict"].as_str()), (0, Some("ok")));
    assert_eq!(report["sent"], 6, "our 6 requests, not the other host's");
    assert_eq!(responders(&report), vec![("00:00:5e:00:53:11".to_string(), 6, 0)]);
    assert!(report["responders"][0]["rtt_ms"]["max"].as_f64().unwrap() < 10.0, "{report}");
    assert!(report["notes"][0].as_str().unwrap().starts_with("6 request(s) for 192.0.2.100 from 1 host(s)"));

    let (code, summary, _) = run("switched-lan.pcap", "192.0.2.100", &["--watch"]);
    assert_eq!((code, summary["verdict"].as_str()), (0, Some("stable")), "{summary}");
    assert_eq!(summary["longest_no_owner_s"], 0.0);
}

#[test]
fn a_long_office_capture_has_lan_rtts_and_no_minutes_long_gaps() {
    let (code, report, _) = run("arp-oobr.pcap", "192.168.0.1", &[]);
    assert_eq!((code, report["verdict"].as_str()), (0, Some("ok")));
    assert_eq!(report["sent"], 23, "the requests of the one host whose replies the capture shows");
    let rtt = &report["responders"][0]["rtt_ms"];
    assert!(rtt["max"].as_f64().unwrap() < 10.0, "matched per asker, not n-th to n-th: {rtt}");

    let (_, summary, _) = run("arp-oobr.pcap", "192.168.0.1", &["--watch"]);
    assert_eq!(summary["owner_changes"], 0);
    // The capture's damaged replies leave a few requests unanswered: each is a 1 s gap at most.
    assert!(summary["longest_no_owner_s"].as_f64().unwrap() <= 1.0, "{summary}");
}

#[test]
fn announcements_alone_are_claims() {
    let (code, report, _) = run("garp-only.pcap", "192.0.2.100", &[]);
    assert_eq!((code, report["verdict"].as_str()), (1, Some("duplicate")));
    assert_eq!(
        responders(&report),
        vec![("00:00:5e:00:53:11".to_string(), 0, 2), ("00:00:5e:00:53:12".to_string(), 0, 2)]
    );
    let (_, summary, _) = run("garp-only.pcap", "192.0.2.100", &["--watch"]);
    assert_eq!(summary["owner_changes"], 1, "{summary}");
    // A real client's RFC 3927 announcements of its own link-local address.
    let (code, report, _) = run("eapon1.pcap", "169.254.67.194", &[]);
    assert_eq!((code, report["verdict"].as_str()), (0, Some("ok")), "{report}");
    assert_eq!(report["responders"][0]["replies"], 0);
}

#[test]
fn vlan_stacks_are_read() {
    let (code, report, _) = run("802.1ad_QinQ.pcap", "172.21.79.100", &[]);
    assert_eq!((code, report["verdict"].as_str(), report["sent"].as_u64()), (0, Some("ok"), Some(1)));
    assert_eq!(responders(&report), vec![("00:80:ea:81:88:63".to_string(), 1, 0)]);
    // Requests only, under two 802.1Q tags: seen, but their answers are not in the capture.
    for (file, target) in [("q-in-q.pcap", "128.2.46.148"), ("ArpRequestWithVlan.pcap", "192.168.2.254")] {
        let (code, report, _) = run(file, target, &[]);
        assert_eq!((code, report["verdict"].as_str()), (1, Some("no-reply")), "{file}");
        let note = report["notes"][0].as_str().unwrap_or_default();
        assert!(note.starts_with("1 request(s)"), "{file}: the tagged request was read: {report}");
    }
}

#[test]
fn frames_cut_by_the_snap_length_are_read_as_libpcap_reads_them() {
    let (code, report, _) = run("snaplen50.pcap", "192.0.2.100", &[]);
    // arping asks by broadcast once, then by unicast to the MAC that answered.
    assert_eq!((code, report["verdict"].as_str(), report["sent"].as_u64()), (0, Some("ok"), Some(1)));
    assert_eq!(report["responders"][0]["unicast"], serde_json::json!({"sent": 2, "replies": 2}));
    for file in ["msnlb.pcap", "msnlb2.pcapng"] {
        let (code, report, stderr) = run(file, "192.168.100.80", &[]);
        assert_eq!((code, report["verdict"].as_str()), (1, Some("no-reply")), "{file}: {stderr}");
        assert_eq!(report["summary"], "no reply or announcement for 192.168.100.80 in this capture");
    }
}

#[test]
fn interfaces_of_other_link_types_are_skipped_with_a_note() {
    let (code, report, _) = run("multi-linktype.pcapng", "192.0.2.100", &[]);
    assert_eq!((code, report["verdict"].as_str()), (0, Some("ok")), "{report}");
    assert_eq!(report["sent"], 3, "1 Ethernet broadcast request and 2 from the SLL2 interface");
    assert_eq!(
        report["responders"][0]["unicast"],
        serde_json::json!({"sent": 2, "replies": 2}),
        "the Ethernet ones"
    );
    let notes = report["notes"].to_string();
    assert!(notes.contains("Linux cooked"), "the SLL2 interface's unicast requests cannot be told: {notes}");
    assert!(notes.contains("10 frame(s) of an interface with link type 228 were skipped"), "{notes}");
}

#[test]
fn damaged_timestamps_never_panic() {
    for file in ["year10000.pcapng", "farfuture.pcapng", "backwards.pcap"] {
        for watch in [false, true] {
            let extra: &[&str] = if watch { &["--watch"] } else { &[] };
            let (code, report, _) = run(file, "192.0.2.100", extra);
            assert!(code == 0 || code == 1, "{file} watch={watch}: {code} {report}");
            if let Some(rtt) = report["responders"][0]["rtt_ms"]["max"].as_f64() {
                assert!(rtt < 10_000.0, "{file}: {rtt}");
            }
        }
    }
    let (_, summary, _) = run("backwards.pcap", "192.0.2.100", &["--watch"]);
    assert_eq!(summary["owner_changes"], 3);
}

#[test]
fn flags_that_shape_sending_are_refused_with_a_capture() {
    for flag in [["--count", "5"], ["--interval", "1s"], ["--wait", "2s"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
            .args(["arp", "192.0.2.100", "--pcap"])
            .arg(corpus("snaplen50.pcap"))
            .args(flag)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"), "{flag:?}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(["arp", "192.0.2.100", "--watch", "--duration", "5s", "--pcap"])
        .arg(corpus("snaplen50.pcap"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn ipv6_duplicate_address_detection_probes_name_the_host_about_to_take_the_address() {
    // tcpdump's icmpv6-ns-nonce.pcap: one DAD solicitation (source ::) with a nonce option.
    let (code, report, _) = run("icmpv6-ns-nonce.pcap", "fe80::546f:f7ff:fee1:f", &[]);
    assert_eq!(
        (code, report["verdict"].as_str(), report["sent"].as_u64()),
        (1, Some("no-reply"), Some(0)),
        "{report}"
    );
    let note = report["notes"][0].as_str().unwrap();
    assert!(
        note.starts_with(
            "1 duplicate address detection probe(s) for fe80::546f:f7ff:fee1:f from 56:6f:f7:e1:00:0f (1)"
        ),
        "{note}"
    );
    // tcpdump's ipv6-bad-version.pcap: two solicitations, each followed by a packet whose IPv6
    // version field is 0, which is not read as anything.
    let (_, report, _) = run("ipv6-bad-version.pcap", "1111:2222:3333:4444:20c:29ff:fe76:6c14", &[]);
    assert_eq!(report["responders"].as_array().unwrap().len(), 0, "{report}");
    assert!(report["notes"][0].as_str().unwrap().contains("from 00:0c:29:76:6c:14 (1)"), "{report}");
    let (_, report, _) = run("ipv6-bad-version.pcap", "fe80::20c:29ff:fe76:6c14", &[]);
    assert!(
        report["notes"][0].as_str().unwrap().starts_with("1 duplicate address detection probe(s)"),
        "{report}"
    );
}

/// Every line of `netprobe arp TARGET --pcap FILE --watch -o json`.
fn watch_lines(file: &str, target: &str) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(["arp", target, "--watch", "-o", "json", "--pcap"])
        .arg(corpus(file))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_keepalived_failover_is_an_owner_change_not_a_duplicate() {
    // keepalived 2.2.7 in the lab: the master's link goes down, the backup takes over ~2.7 s
    // later with bursts of gratuitous ARP; the client asked every 200 ms throughout.
    let (code, report, _) = run("keepalived-failover.pcap", "192.0.2.100", &[]);
    assert_eq!((code, report["verdict"].as_str()), (1, Some("owner-changed")), "{report}");
    let change = &report["owner_changes"][0];
    assert_eq!(
        (change["from"].as_str(), change["to"].as_str()),
        (Some("00:00:5e:00:53:12"), Some("00:00:5e:00:53:11"))
    );
    let gap = change["gap_s"].as_f64().unwrap();
    assert!(gap > 2.0 && gap < 3.0, "{change}");
    assert!(!report["next_step"].as_str().unwrap().contains("second MetalLB"), "{report}");
    // --watch: one gap, one owner change, every event in time order.
    let lines = watch_lines("keepalived-failover.pcap", "192.0.2.100");
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "no-reply-start").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "owner-change").count(), 1, "{kinds:?}");
    let times: Vec<&str> = lines.iter().filter_map(|l| l["at"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order: {times:?}");
    let summary = lines.last().unwrap();
    let longest = summary["longest_no_owner_s"].as_f64().unwrap();
    assert!(longest > 2.0 && longest < 3.0, "{summary}");
}

#[test]
fn a_keepalived_split_brain_is_a_duplicate() {
    // VRRP dropped on the backup: both become master and both answer.
    let (code, report, _) = run("keepalived-split-brain.pcap", "192.0.2.100", &[]);
    assert_eq!((code, report["verdict"].as_str()), (1, Some("duplicate")), "{report}");
    assert_eq!(report["responders"].as_array().unwrap().len(), 2);
}

#[test]
fn a_pcapng_whose_first_interface_is_not_ethernet_is_read_from_its_other_interfaces() {
    // A raw-IP interface (a tun0, LINKTYPE 228) described first, then Ethernet: was refused as
    // "link type 228 is not supported".
    let (code, report, stderr) = run("tun-first.pcapng", "192.0.2.100", &[]);
    assert_eq!((code, report["verdict"].as_str()), (0, Some("ok")), "{stderr}");
    assert_eq!(report["sent"], 1, "arping: one broadcast request, then two by unicast");
    assert!(report["notes"].to_string().contains("link type 228 were skipped"), "{report}");
}

#[test]
fn the_kernels_unicast_rechecks_are_read_and_unanswered_ones_are_broadcast_only() {
    // The client's kernel re-checking its entry for the VIP (tests/corpus/README.md, section 6).
    let (code, report, out) = run("kernel-unicast-recheck-answered.pcap", "192.0.2.100", &[]);
    assert_eq!(
        (code, report["verdict"].as_str(), report["sent"].as_u64()),
        (0, Some("ok"), Some(1)),
        "{out}"
    );
    assert_eq!(report["responders"][0]["unicast"], serde_json::json!({"sent": 5, "replies": 5}), "{out}");
    let (code, report, out) = run("kernel-unicast-recheck-unanswered.pcap", "192.0.2.100", &[]);
    assert_eq!((code, report["verdict"].as_str()), (1, Some("broadcast-only")), "{out}");
    let responder = &report["responders"][0];
    assert_eq!(
        (responder["mac"].as_str(), responder["replies"].as_u64()),
        (Some("00:00:5e:00:53:11"), Some(2)),
        "{out}"
    );
    assert_eq!(responder["unicast"], serde_json::json!({"sent": 6, "replies": 0}), "{out}");
}
