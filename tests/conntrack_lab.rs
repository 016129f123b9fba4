//! `netprobe conntrack` and the agent's /metrics against a real kernel's full table: a namespace
//! filled to the host's limit with assured TCP entries, new flows trickling in while it watches.

mod common;
use std::time::Duration;

use netprobe_lab::{conntrack, http_get, lab_or_skip, Netns, NsThread};
use serde_json::Value;

fn conntrack_json(ns: &Netns, extra: &[&str]) -> (i32, Value) {
    let (code, stdout, stderr) =
        common::netprobe_in(ns, &[&["conntrack", "-o", "json"][..], extra].concat(), &[]);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    (code, report)
}

/// New UDP flows from inside `ns`, one every 20 ms to a new port, until dropped.
fn trickle(ns: &Netns) -> NsThread {
    let (thread, ()) = NsThread::start(ns, |stop, ready| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        ready.send(()).unwrap();
        let mut port = 1024u16;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // A full table drops it on the way out (EPERM): that is the point.
            let _ = socket.send_to(b"x", ("127.3.0.1", port));
            port = port.wrapping_add(1).max(1024);
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .expect("trickle started");
    thread
}

#[test]
fn a_full_table_is_full_with_who_fills_it_the_kernels_words_and_its_metrics() {
    let Some(mut lab) = lab_or_skip("conntrack-full") else { return };
    let node = lab.host("node").unwrap();
    // The kernel names a namespace by its inode, and a new namespace may get a gone one's: a
    // "table full" logged about that inode earlier (another test, another lab) is shown with a
    // note, never judged by, in a namespace that is not the host's.
    let inode = std::fs::metadata(format!("/run/netns/{}", node.name))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let dmesg = || {
        String::from_utf8_lossy(&std::process::Command::new("dmesg").output().unwrap().stdout).into_owned()
    };
    let named =
        |log: &str| log.lines().filter(|l| l.contains(&format!("table full in netns {inode},"))).count();
    let unnamed =
        |log: &str| log.lines().filter(|l| l.contains("nf_conntrack: table full, dropping packet")).count();
    // Empty: ok (not-loaded on a host where nothing loaded conntrack yet).
    let (code, report) = conntrack_json(&node, &["--window", "200ms"]);
    assert!(matches!(report["verdict"].as_str(), Some("ok" | "not-loaded")) && code == 0, "{report}");
    if named(&dmesg()) > 0 {
        assert!(report["notes"].to_string().contains("can reuse"), "{report}");
    }

    let max: u32 = node.sh("cat /proc/sys/net/netfilter/nf_conntrack_max").unwrap().trim().parse().unwrap();
    // The agent's port stays untracked, so /metrics answers with the table full (as a node's
    // kubelet probes would not).
    node.sh("nft add table inet np_raw && nft add chain inet np_raw out '{ type filter hook output priority raw; }' && nft add rule inet np_raw out tcp dport 9473 notrack && nft add rule inet np_raw out tcp sport 9473 notrack").unwrap();
    let token = "NETPROBE_TOKEN=conntrack-lab-token";
    lab.spawn(&node, &["env", token, env!("CARGO_BIN_EXE_netprobe"), "agent", "--listen", "127.0.0.1:9473"])
        .unwrap();
    node.wait_listening("tcp", 9473, Duration::from_secs(10)).unwrap();

    // A connection can land on a closed one's tuple and take its entry over, so it may take a few
    // more connections than the limit; the report's count is what says the table is full.
    let made = conntrack::fill(&node, max + 1000).unwrap();
    assert!(made >= max - 100, "{made} connections for a limit of {max}");
    let _trickle = trickle(&node);
    let (code, report) = conntrack_json(&node, &["--window", "2s", "--top", "3"]);
    // The filler's connections end in a reset: closing TCP entries, which the kernel's garbage
    // collector evicts above 95% of the limit (so a table of closing connections does not stay
    // full, and the trickle gets a few entries in; one of established connections would). So
    // the table is full or close to it when netprobe reads it; the filler's last connection was
    // dropped either way.
    let (entries, limit) = (report["entries"].as_u64().unwrap(), report["max"].as_u64().unwrap());
    assert_eq!(limit, u64::from(max), "{report}");
    match report["verdict"].as_str() {
        Some("full") => {
            assert!(entries == limit || report["during_window"]["drop"].as_u64().unwrap() > 0, "{report}")
        }
        Some("near-full") => assert!(entries * 100 >= limit * 95, "{report}"),
        _ => panic!("{report}"),
    }
    assert_eq!(code, 1, "{report}");
    assert!(report["since_start"]["drop"].as_u64().unwrap() >= 1, "the filler's last connection: {report}");
    assert_eq!(report["top_sources"][0]["name"], "127.0.0.1", "{report}");
    // The list is read while the table lives (the kernel walks its buckets as it writes the file),
    // so it may miss a few entries that come and go: nearly all are the filler's.
    let filler = report["top_sources"][0]["entries"].as_u64().unwrap();
    assert!(filler.abs_diff(entries) < 2000, "the filler's {filler} of {entries}: {report}");
    let per_destination = report["top_destinations"][0]["entries"].as_u64().unwrap();
    assert!((1900..=2000).contains(&per_destination), "{report}");
    assert_eq!(report["protocols"][0]["name"], "tcp", "{report}");
    let next = report["next_step"].as_str().unwrap();
    assert!(next.contains("nf_conntrack_max") && next.contains("most entries come from 127.0.0.1"), "{next}");

    // The kernel's words, as dmesg shows them (ratelimited: maybe none): about this namespace
    // where the kernel names it.
    let log = dmesg();
    if named(&log) + unnamed(&log) > 0 {
        let kernel = &report["kernel_log"];
        assert!(
            kernel["table_full"].as_u64().unwrap() >= 1,
            "dmesg: {} named, {} unnamed: {kernel}",
            named(&log),
            unnamed(&log)
        );
        assert!(kernel["last"].as_str().unwrap().contains("table full"), "{kernel}");
    }

    let (status, metrics) = http_get(&node, "127.0.0.1:9473".parse().unwrap(), "/metrics").unwrap();
    assert_eq!(status, 200, "{metrics}");
    let value = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    };
    assert_eq!(value("netprobe_conntrack_max"), u64::from(max));
    assert!(value("netprobe_conntrack_entries") * 100 >= u64::from(max) * 95, "{metrics}");
    assert!(
        value("netprobe_conntrack_drop_total") >= report["since_start"]["drop"].as_u64().unwrap(),
        "{metrics}"
    );
}

#[test]
fn unanswered_udp_to_a_dead_upstream_fills_the_table_and_the_kernel_evicts_it() {
    // DNS queries to an upstream that never answers: each an unanswered entry for 30 s (here 10
    // minutes), which the kernel evicts to make room when the table is full (early_drop) rather
    // than drop the new flow.
    let Some(mut lab) = lab_or_skip("conntrack-udp") else { return };
    let node = lab.host("node").unwrap();
    node.sh(
        "ip link set lo up && ip link add eth0 type veth peer name peer0 && ip addr add 192.0.2.1/24 dev eth0 && \
         ip link set eth0 up && ip link set peer0 up && \
         ip neigh add 192.0.2.254 lladdr 02:00:00:00:00:fe dev eth0 nud permanent && \
         ip route add 198.51.100.0/24 via 192.0.2.254 && \
         nft add table inet np_conntrack && nft add chain inet np_conntrack out '{ type filter hook output priority 0; }' && \
         nft add rule inet np_conntrack out ct state new counter && \
         sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600",
    )
    .unwrap();
    let max: u32 = node.sh("cat /proc/sys/net/netfilter/nf_conntrack_max").unwrap().trim().parse().unwrap();
    let upstream = std::net::Ipv4Addr::new(198, 51, 100, 53);
    let sent = conntrack::unanswered_udp(&node, upstream, max).unwrap();
    assert_eq!(sent, max, "every query left");
    // More queries while netprobe watches: the table is full, the kernel evicts old ones.
    let (thread, ()) = NsThread::start(&node, move |stop, ready| {
        ready.send(()).unwrap();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let _ = socket.send_to(b"q", (upstream, 53));
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .unwrap();
    let (code, report) = conntrack_json(&node, &["--window", "2s"]);
    drop(thread);
    assert_eq!((code, report["verdict"].as_str()), (1, Some("full")), "{report}");
    assert!(report["during_window"]["early_drop"].as_u64().unwrap() > 0, "evicted to make room: {report}");
    assert_eq!(report["during_window"]["drop"], 0, "an unanswered entry was always there to evict: {report}");
    // The upstream and the addresses after it (64,000 ports each), nearly tied: one of them.
    let top = report["top_destinations"][0]["name"].as_str().unwrap();
    assert!(["198.51.100.53", "198.51.100.54", "198.51.100.55", "198.51.100.56"].contains(&top), "{report}");
    assert_eq!(report["unreplied"], report["entries_listed"], "none ever answered: {report}");
    assert_eq!(report["protocols"][0]["name"], "udp", "{report}");
}
