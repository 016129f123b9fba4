//! `netprobe arp` against the kernel's own ARP in a lab: a client and speakers on one bridge.
//! Each test builds its own namespaces and removes them on Drop.

mod common;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use netprobe_lab::fake_api::{fixture, FakeApi};
use netprobe_lab::{lab_or_skip, Lab, Netns, NsThread};
use netprobe_probes::net::capture::LiveCapture;
use netprobe_probes::net::Link;
use netprobe_probes::wire::neighbour::{NeighbourFrame, Op};
use netprobe_probes::wire::{arp, ndp};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const VIP: &str = "192.0.2.100";
const CLIENT: &str = "192.0.2.1/24";
// Speakers use MACs from the IANA documentation block (RFC 7042): a real OUI, so the vendor
// lookup has something to find.
const SP1: (&str, &str, &str) = ("sp1", "192.0.2.11", "00:00:5e:00:53:11");
const SP2: (&str, &str, &str) = ("sp2", "192.0.2.12", "00:00:5e:00:53:12");

struct Segment {
    lab: Lab,
    client: Netns,
    speakers: Vec<Netns>,
}

/// A bridge with a client and one namespace per speaker. A speaker with `owns_vip` has the VIP as
/// a second address, so its kernel answers ARP for it, as a MetalLB speaker's node does.
fn segment(test: &str, speakers: &[((&str, &str, &str), bool)]) -> Option<Segment> {
    let mut lab = lab_or_skip(test)?;
    let switch = lab.switch("sw").unwrap();
    let client = lab.host("client").unwrap();
    lab.plug(&switch, &client, CLIENT, None).unwrap();
    let mut hosts = Vec::new();
    for ((role, ip, mac), owns_vip) in speakers {
        let host = lab.host(role).unwrap();
        lab.plug(&switch, &host, &format!("{ip}/24"), Some(mac)).unwrap();
        if *owns_vip {
            host.sh(&format!("ip addr add {VIP}/32 dev eth0")).unwrap();
        }
        hosts.push(host);
    }
    Some(Segment { lab, client, speakers: hosts })
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {:?} / {:?}", self.stdout, self.stderr))
    }
}

fn netprobe_in(ns: &Netns, args: &[&str]) -> Run {
    netprobe_env(ns, args, &[])
}

fn netprobe_env(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> Run {
    let (code, stdout, stderr) = common::netprobe_in(ns, args, env);
    Run { code, stdout, stderr }
}

fn macs(report: &Value) -> Vec<String> {
    let mut macs: Vec<String> = report["responders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mac"].as_str().unwrap().to_string())
        .collect();
    macs.sort();
    macs
}

#[test]
fn one_owner_is_ok() -> TestResult {
    let Some(seg) = segment("arp-ok", &[(SP1, true), (SP2, false)]) else { return Ok(()) };
    let run = netprobe_in(&seg.client, &["arp", VIP, "-o", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["probe"], "arp");
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["interface"], "eth0", "found from the route to the VIP");
    assert_eq!(report["source_ip"], "192.0.2.1");
    assert_eq!(report["sent"], 3);
    assert_eq!(macs(&report), vec![SP1.2]);
    let responder = &report["responders"][0];
    assert_eq!(responder["replies"], 3, "every broadcast request is answered");
    let rtt = &responder["rtt_ms"];
    assert!(rtt["min"].as_f64().unwrap() <= rtt["avg"].as_f64().unwrap());
    // RTT figures are the benchmarks' business; here: measured, for each reply.
    assert!(rtt["max"].as_f64().is_some(), "{rtt}");
    assert_eq!(responder["locally_administered"], false);
    if std::path::Path::new("/usr/share/ieee-data/oui.txt").exists() {
        assert_eq!(responder["vendor"], "ICANN, IANA Department");
    }
    Ok(())
}

#[test]
fn two_owners_are_a_duplicate_labelled_by_node() -> TestResult {
    let Some(seg) = segment("arp-dup", &[(SP1, true), (SP2, true)]) else { return Ok(()) };
    let nodes = ["--node", "sp1=192.0.2.11", "--node", "sp2=192.0.2.12"];
    let run = netprobe_in(&seg.client, &[&["arp", VIP, "--json"][..], &nodes].concat());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["verdict"], "duplicate");
    assert_eq!(macs(&report), vec![SP1.2, SP2.2]);
    for responder in report["responders"].as_array().unwrap() {
        let want = if responder["mac"] == SP1.2 { "sp1" } else { "sp2" };
        assert_eq!(responder["node"], want);
        assert_eq!(responder["replies"], 3);
    }
    assert_eq!(report["nodes"][0]["macs"][0], SP1.2);

    // The table a person reads: verdict first, one row per MAC.
    let run = netprobe_in(&seg.client, &[&["arp", VIP], &nodes[..]].concat());
    assert_eq!(run.code, 1);
    assert!(run.stdout.starts_with("DUPLICATE  2 MACs answer for 192.0.2.100"), "{}", run.stdout);
    let rows: Vec<&str> = run.stdout.lines().filter(|l| l.contains("00:00:5e:00:53:1")).collect();
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert!(rows.iter().any(|r| r.contains("sp1")) && rows.iter().any(|r| r.contains("sp2")));
    assert!(run.stdout.contains("next: "), "{}", run.stdout);
    Ok(())
}

#[test]
fn a_responder_outside_the_listed_nodes_is_called_out() -> TestResult {
    let Some(seg) = segment("arp-unknown", &[(SP1, true), (SP2, true)]) else { return Ok(()) };
    let run = netprobe_in(&seg.client, &["arp", VIP, "--node", "sp1=192.0.2.11", "-o", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    let unknown: Vec<&Value> =
        report["responders"].as_array().unwrap().iter().filter(|r| r["node"].is_null()).collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["mac"], SP2.2);
    let run = netprobe_in(&seg.client, &["arp", VIP, "--node", "sp1=192.0.2.11"]);
    assert!(run.stdout.contains("UNKNOWN HOST"), "{}", run.stdout);
    assert!(run.stdout.contains("match no --node"), "{}", run.stdout);
    Ok(())
}

#[test]
fn a_silent_vip_is_no_reply() -> TestResult {
    let Some(seg) = segment("arp-silent", &[(SP1, false)]) else { return Ok(()) };
    let run = netprobe_in(&seg.client, &["arp", VIP, "-c", "2", "--wait", "300ms", "-o", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["verdict"], "no-reply");
    assert_eq!(report["sent"], 2);
    assert_eq!(report["responders"].as_array().unwrap().len(), 0);
    Ok(())
}

/// A speaker in user space, as MetalLB's is: answers every request for `vip` (ARP, or a Neighbor
/// Solicitation for an IPv6 VIP) `delay` late from a thread inside `ns`, by its eth0's MAC; with
/// `unicast` false only those sent to broadcast or a multicast group, never those to its own MAC.
fn user_space_speaker(ns: &Netns, vip: IpAddr, delay: Duration, unicast: bool) -> NsThread {
    let (thread, ()) = NsThread::start(ns, move |stop, ready| {
        let own = netprobe_probes::net::interface::lookup("eth0").unwrap().mac.unwrap();
        let mut capture = LiveCapture::open("eth0", netprobe_probes::arp::capture_filter(vip)).unwrap();
        ready.send(()).unwrap();
        let mut due: Vec<(Instant, Vec<u8>)> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let tick = Instant::now() + Duration::from_millis(10);
            while let Some(frame) = capture.next_before(tick).unwrap() {
                let Some(req) = NeighbourFrame::from_link(frame.link, &frame.data) else { continue };
                let group_addressed = frame.data[0] & 1 == 1; // the I/G bit of the destination
                if req.op != Op::Request
                    || req.target_ip != vip
                    || req.is_gratuitous()
                    || !(unicast || group_addressed)
                {
                    continue;
                }
                let answer = match (vip, req.sender_ip) {
                    (IpAddr::V4(vip), IpAddr::V4(asker)) => {
                        arp::reply(own, vip, req.sender_mac, asker).to_vec()
                    }
                    (IpAddr::V6(vip), IpAddr::V6(asker)) => {
                        ndp::advertisement(own, vip, Some((req.sender_mac, asker)))
                    }
                    _ => continue,
                };
                due.push((Instant::now() + delay, answer));
            }
            let now = Instant::now();
            for (_, frame) in due.iter().filter(|(at, _)| *at <= now) {
                capture.send(frame).unwrap();
            }
            due.retain(|(at, _)| *at > now);
        }
    })
    .expect("user-space speaker started");
    thread
}

#[test]
fn a_responder_300ms_late_is_still_found() -> TestResult {
    const LATE: (&str, &str, &str) = ("late", "192.0.2.13", "02:00:00:00:53:13");
    let Some(seg) = segment("arp-late", &[(SP1, true), (LATE, false)]) else { return Ok(()) };
    let _late = user_space_speaker(&seg.speakers[1], VIP.parse()?, Duration::from_millis(300), true);
    let run = netprobe_in(&seg.client, &["arp", VIP, "-o", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["verdict"], "duplicate");
    assert_eq!(macs(&report), vec![SP1.2, LATE.2]);
    let late = report["responders"].as_array().unwrap().iter().find(|r| r["mac"] == LATE.2).unwrap().clone();
    assert_eq!(late["replies"], 3, "all three late answers arrive before the deadline");
    // Never less than the responder's delay: a reply matched to a later request than its own
    // would read 100 ms (requests are 200 ms apart).
    assert!(late["rtt_ms"]["min"].as_f64().unwrap() >= 300.0, "matched to its own request: {late}");
    assert_eq!(late["locally_administered"], true);
    assert!(late["vendor"].is_null());
    Ok(())
}

#[test]
fn a_missing_interface_is_exit_3_with_the_fix() -> TestResult {
    let Some(seg) = segment("arp-noif", &[(SP1, true)]) else { return Ok(()) };
    let run = netprobe_in(&seg.client, &["arp", VIP, "-i", "nosuch0"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("no interface named nosuch0"), "{}", run.stderr);
    assert!(run.stderr.contains("ip -br link"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    assert!(run.stdout.is_empty());
    Ok(())
}

#[test]
fn without_cap_net_raw_it_is_exit_3_naming_sudo_and_setcap() -> TestResult {
    let Some(seg) = segment("arp-nocap", &[(SP1, true)]) else { return Ok(()) };
    // setpriv (util-linux) drops CAP_NET_RAW from the bounding set, so even root runs without it.
    let run = netprobe_in(&seg.client, &[]);
    assert_eq!(run.code, 2, "no subcommand is a usage error");
    let output = seg
        .client
        .command("setpriv")
        .args([
            "--bounding-set",
            "-net_raw",
            "--inh-caps",
            "-net_raw",
            env!("CARGO_BIN_EXE_netprobe"),
            "arp",
            VIP,
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("CAP_NET_RAW") && stderr.contains("sudo") && stderr.contains("setcap"),
        "{stderr}"
    );
    Ok(())
}

/// Captures the client's side of a probe with tcpdump into `file` (`extra` adds tcpdump flags).
fn capture_probe(seg: &mut Segment, file: &std::path::Path, extra: &[&str], nodes: &[&str]) -> Value {
    let mut argv = vec!["tcpdump", "-U", "-n", "-w", file.to_str().unwrap()];
    argv.extend(extra);
    argv.push("arp");
    let pid = seg.lab.spawn(&seg.client, &argv).unwrap();
    // tcpdump writes the file header once its capture is active.
    let start = Instant::now();
    while std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) < 24 {
        assert!(start.elapsed() < Duration::from_secs(10), "tcpdump did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = netprobe_in(&seg.client, &[&["arp", VIP, "-o", "json"], nodes].concat());
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    run.json()
}

#[test]
fn a_tcpdump_capture_gives_the_live_verdict() -> TestResult {
    let Some(mut seg) = segment("arp-pcap", &[(SP1, true), (SP2, true)]) else { return Ok(()) };
    let dir = std::env::temp_dir().join(format!("netprobe-arp-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (name, extra) in [("eth.pcap", &["-i", "eth0"][..]), ("sll2.pcap", &["-i", "any"][..])] {
        let file = dir.join(name);
        let live = capture_probe(&mut seg, &file, extra, &[]);
        let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
            .args(["arp", VIP, "--pcap", file.to_str().unwrap(), "-o", "json"])
            .output()?;
        assert_eq!(output.status.code(), Some(1), "{name}");
        let offline: Value = serde_json::from_slice(&output.stdout)?;
        assert_eq!(offline["verdict"], live["verdict"], "{name}");
        assert_eq!(macs(&offline), macs(&live), "{name}");
        // An Ethernet capture keeps the destinations: three broadcast requests, three to each MAC.
        // A cooked one (-i any) cannot tell them apart, and says so.
        let (sent, replies, unicast) = match name {
            "eth.pcap" => (3, 3, serde_json::json!({"sent": 3, "replies": 3})),
            _ => (9, 6, Value::Null),
        };
        assert_eq!(offline["sent"], sent, "{name}: the capture holds our requests");
        for responder in offline["responders"].as_array().unwrap() {
            assert_eq!(
                (&responder["replies"], &responder["unicast"]),
                (&Value::from(replies), &unicast),
                "{name}"
            );
        }
        let cooked_note =
            offline["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("Linux cooked"));
        assert_eq!(cooked_note, name == "sll2.pcap", "{name}: {}", offline["notes"]);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The API as the cluster serves it: the Nodes (two of them the speakers, one on another subnet,
/// one without an address yet) and the LoadBalancer Services.
fn cluster_api(ns: &Netns) -> FakeApi {
    FakeApi::start(
        ns,
        vec![
            ("/api/v1/nodes", 200, fixture("nodes-l2.json")),
            ("/api/v1/namespaces/metallb-test/services/web", 200, fixture("service-web-loadbalancer.json")),
            ("/api/v1/services", 200, fixture("services-loadbalancers.json")),
        ],
    )
}

fn node_of(report: &Value, mac: &str) -> String {
    let responders = report["responders"].as_array().unwrap();
    let responder = responders.iter().find(|r| r["mac"] == mac).unwrap_or_else(|| panic!("{mac}: {report}"));
    responder["node"].as_str().unwrap_or("(none)").to_string()
}

#[test]
fn a_services_vip_comes_from_the_api_and_speakers_are_named_by_node_without_node_flags() -> TestResult {
    let Some(seg) = segment("arp-svc", &[(SP1, true), (SP2, true)]) else { return Ok(()) };
    let api = cluster_api(&seg.client);
    let kubeconfig = api.kubeconfig();
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];

    let run = netprobe_env(&seg.client, &["arp", "--service", "metallb-test/web", "-o", "json"], &env);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    let vip = &report["vips"][0];
    assert_eq!((vip["service"].as_str(), vip["target"].as_str()), (Some("metallb-test/web"), Some(VIP)));
    assert_eq!(vip["verdict"], "duplicate");
    assert_eq!(node_of(vip, SP1.2), "k8s-worker-1");
    assert_eq!(node_of(vip, SP2.2), "k8s-worker-2");
    let labelled: Vec<&str> =
        vip["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(labelled, ["k8s-worker-1", "k8s-worker-2"], "only the nodes on this segment");

    // The table says the same, by node name.
    let run = netprobe_env(&seg.client, &["arp", "--service", "metallb-test/web"], &env);
    assert!(run.stdout.contains("service metallb-test/web, VIP 192.0.2.100"), "{}", run.stdout);
    assert!(run.stdout.contains("k8s-worker-1") && run.stdout.contains("k8s-worker-2"), "{}", run.stdout);

    // A plain VIP with a kubeconfig: the same names, still without --node.
    let run = netprobe_env(&seg.client, &["arp", VIP, "-o", "json"], &env);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(node_of(&run.json(), SP2.2), "k8s-worker-2");

    // The kubeconfig as a flag, with a context named (kubectl's flags), and a context it lacks.
    let flags = ["--kubeconfig", kubeconfig.to_str().unwrap(), "--context", "lab"];
    let run = netprobe_in(
        &seg.client,
        &[&["arp", "--service", "metallb-test/web", "-o", "json"][..], &flags].concat(),
    );
    assert_eq!(
        (run.code, run.json()["vips"][0]["verdict"].as_str()),
        (1, Some("duplicate")),
        "{}",
        run.stderr
    );
    let wrong = ["--kubeconfig", kubeconfig.to_str().unwrap(), "--context", "nope"];
    let run = netprobe_in(&seg.client, &[&["arp", "--service", "metallb-test/web"][..], &wrong].concat());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("nope") && run.stderr.lines().count() == 1, "{}", run.stderr);

    // A Service that does not exist: one line, exit 2.
    let run = netprobe_env(&seg.client, &["arp", "--service", "metallb-test/nope"], &env);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("service metallb-test/nope") && run.stderr.lines().count() == 1,
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn all_services_gives_a_row_per_vip_on_this_segment_and_says_why_the_others_were_skipped() -> TestResult {
    let Some(seg) = segment("arp-allsvc", &[(SP1, true), (SP2, true)]) else { return Ok(()) };
    // metallb-test/api's VIP is announced by one speaker only.
    seg.speakers[0].sh("ip addr add 192.0.2.101/32 dev eth0")?;
    let api = cluster_api(&seg.client);
    let kubeconfig = api.kubeconfig();
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];
    let run = netprobe_env(&seg.client, &["arp", "--all-services", "-o", "json"], &env);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["verdict"], "fault");
    let rows: Vec<(String, String)> = report["vips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["service"].as_str().unwrap().into(), v["verdict"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        rows,
        [("metallb-test/web".into(), "duplicate".into()), ("metallb-test/api".into(), "ok".into())]
    );
    assert_eq!(node_of(&report["vips"][1], SP1.2), "k8s-worker-1");
    let skipped: Vec<&str> =
        report["skipped"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(skipped, ["shop/checkout", "shop/pending"], "a VIP with no route here, one with no IP yet");

    let run = netprobe_env(&seg.client, &["arp", "--all-services"], &env);
    assert!(
        run.stdout.starts_with("FAULT  2 VIP(s) probed: 1 ok, 1 duplicate, 0 no-reply; 2 skipped"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("skipped shop/checkout 203.0.113.50: no route from this host"),
        "{}",
        run.stdout
    );

    // Without RBAC to list services: exit 3 naming the verb.
    drop(api);
    let forbidden = FakeApi::start(&seg.client, vec![("/api/v1/services", 403, fixture("forbidden.json"))]);
    let kubeconfig = forbidden.kubeconfig();
    let run = netprobe_env(
        &seg.client,
        &["arp", "--all-services"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("list services in the core API group"), "{}", run.stderr);
    Ok(())
}

/// Not a test: rebuilds the fixtures in pcaps/ (see pcaps/README.md). Run with
/// `cargo test --test arp_lab -- --ignored regenerate_pcap_fixtures`.
#[test]
#[ignore]
fn regenerate_pcap_fixtures() -> TestResult {
    let pcaps = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps");
    let nodes = ["--node", "sp1=192.0.2.11", "--node", "sp2=192.0.2.12"];
    let mut seg = segment("fx-single", &[(SP1, true), (SP2, false)]).expect("a lab");
    capture_probe(&mut seg, &pcaps.join("arp-single.pcap"), &["-i", "eth0"], &nodes);
    drop(seg);
    let mut seg = segment("fx-dup", &[(SP1, true), (SP2, true)]).expect("a lab");
    capture_probe(&mut seg, &pcaps.join("arp-duplicate.pcap"), &["-i", "eth0"], &nodes);
    capture_probe(&mut seg, &pcaps.join("arp-duplicate-any.pcap"), &["-i", "any", "-y", "LINUX_SLL"], &nodes);
    Ok(())
}

#[test]
fn a_pool_scan_names_the_addresses_already_owned_and_the_duplicates() -> TestResult {
    // sp1 holds .105 of the pool; sp1 and sp2 both hold .110; the rest is free.
    let Some(seg) = segment("arp-range", &[(SP1, false), (SP2, false)]) else { return Ok(()) };
    seg.speakers[0].sh("ip addr add 192.0.2.105/32 dev eth0 && ip addr add 192.0.2.110/32 dev eth0")?;
    seg.speakers[1].sh("ip addr add 192.0.2.110/32 dev eth0")?;
    let run = netprobe_in(&seg.client, &["arp", "--range", "192.0.2.100-192.0.2.120", "-o", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!((report["addresses"].as_u64(), report["interface"].as_str()), (Some(21), Some("eth0")));
    let owned: Vec<(String, String, usize)> = report["owned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["address"].as_str().unwrap().into(),
                o["verdict"].as_str().unwrap().into(),
                o["macs"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        owned,
        vec![("192.0.2.105".into(), "in-use".into(), 1), ("192.0.2.110".into(), "duplicate".into(), 2)]
    );
    assert_eq!(report["owned"][0]["macs"][0], SP1.2);

    // A free pool (the speakers' own addresses are outside it): ok, and the table says so.
    let run = netprobe_in(&seg.client, &["arp", "--range", "192.0.2.200/29"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with("OK  all 8 addresses of 192.0.2.200-192.0.2.207 are free"),
        "{}",
        run.stdout
    );

    // Bad input is one line and exit 2, before anything is sent.
    let run = netprobe_in(&seg.client, &["arp", "--range", "192.0.2.0/16"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("at most 4096"), "{}", run.stderr);
    Ok(())
}

/// The IPv6 segment: the client at 2001:db8::1, each speaker at 2001:db8::1N, and on the owners
/// the VIP 2001:db8::100, so their kernels answer neighbour discovery for it (nodad: no wait for
/// duplicate address detection, which would refuse the second owner, as it would not a MetalLB
/// speaker answering from user space).
fn segment6(test: &str, speakers: &[((&str, &str, &str), bool)]) -> Option<Segment> {
    let seg = segment(test, speakers)?;
    seg.client.sh("ip -6 addr add 2001:db8::1/64 dev eth0 nodad").unwrap();
    for (host, ((_, ip, _), owns_vip)) in seg.speakers.iter().zip(speakers) {
        let last = ip.rsplit('.').next().unwrap();
        host.sh(&format!("ip -6 addr add 2001:db8::{last}/64 dev eth0 nodad")).unwrap();
        if *owns_vip {
            host.sh(&format!("ip -6 addr add {VIP6}/128 dev eth0 nodad")).unwrap();
        }
    }
    Some(seg)
}

const VIP6: &str = "2001:db8::100";

#[test]
fn an_ipv6_vip_with_two_owners_is_a_duplicate_over_neighbour_discovery() -> TestResult {
    let Some(seg) = segment6("arp-ndp-dup", &[(SP1, true), (SP2, true)]) else { return Ok(()) };
    let nodes = ["--node", "sp1=2001:db8::11", "--node", "sp2=2001:db8::12"];
    let run = netprobe_in(&seg.client, &[&["arp", VIP6, "-o", "json"][..], &nodes].concat());
    assert_eq!(run.code, 1, "{} {}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(
        (report["verdict"].as_str(), report["target"].as_str()),
        (Some("duplicate"), Some(VIP6)),
        "{report}"
    );
    assert_eq!(report["source_ip"], "2001:db8::1", "a global address before the link-local one");
    assert_eq!(macs(&report), vec![SP1.2, SP2.2]);
    for responder in report["responders"].as_array().unwrap() {
        let want = if responder["mac"] == SP1.2 { "sp1" } else { "sp2" };
        assert_eq!(
            (responder["node"].as_str(), responder["replies"].as_u64()),
            (Some(want), Some(3)),
            "{responder}"
        );
    }
    // The second speaker gone: one owner.
    seg.speakers[1].sh(&format!("ip -6 addr del {VIP6}/128 dev eth0"))?;
    let run = netprobe_in(&seg.client, &[&["arp", VIP6][..], &nodes].concat());
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with("OK  one MAC answers for 2001:db8::100: 00:00:5e:00:53:11 (node sp1)"),
        "{}",
        run.stdout
    );
    // Addresses of the other family are refused before anything is sent.
    let run = netprobe_in(&seg.client, &["arp", VIP6, "--node", "sp1=192.0.2.11"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("give --node and --source addresses of the VIP's family"), "{}", run.stderr);
    Ok(())
}

#[test]
fn an_ipv6_takeover_is_watched_and_its_unsolicited_advertisement_read_from_a_capture() -> TestResult {
    let Some(mut seg) = segment6("arp-ndp-watch", &[(SP1, true), (SP2, false)]) else { return Ok(()) };
    let dir = std::env::temp_dir().join(format!("netprobe-arp-ndp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pcap = dir.join("takeover.pcap");
    let client = seg.client.clone();
    let tcpdump =
        seg.lab.spawn(&client, &["tcpdump", "-i", "eth0", "-U", "-w", pcap.to_str().unwrap(), "icmp6"])?;
    // sp2 takes the VIP over while we watch, and announces it unasked (an unsolicited Neighbor
    // Advertisement to all nodes, from user space, as a new MetalLB leader does).
    let watch = seg
        .client
        .command(env!("CARGO_BIN_EXE_netprobe"))
        .args(["arp", VIP6, "--watch", "--interval", "300ms", "--duration", "4s", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1500));
    seg.speakers[1].sh(&format!("ip -6 addr add {VIP6}/128 dev eth0 nodad"))?;
    announce6(&seg.speakers[1], VIP6);
    let output = watch.wait_with_output()?;
    seg.lab.kill(tcpdump);
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = lines.last().unwrap();
    assert_eq!(
        (summary["event"].as_str(), summary["verdict"].as_str()),
        (Some("summary"), Some("duplicate")),
        "{text}"
    );
    let owners: Vec<&str> =
        summary["owners"].as_array().unwrap().iter().map(|o| o["mac"].as_str().unwrap()).collect();
    assert!(owners.contains(&SP1.2) && owners.contains(&SP2.2), "{text}");
    assert!(lines.iter().any(|l| l["event"] == "duplicate-start"), "{text}");

    // The capture of the same minutes, read offline: sp2's unsolicited advertisement is a claim
    // (an announcement), beside the replies to the watch's solicitations.
    let run = netprobe_in(&seg.client, &["arp", VIP6, "--pcap", pcap.to_str().unwrap(), "-o", "json"]);
    let report = run.json();
    assert_eq!(report["verdict"], "duplicate", "{report}");
    let sp2 = report["responders"].as_array().unwrap().iter().find(|r| r["mac"] == SP2.2).unwrap();
    assert!(sp2["announcements"].as_u64().unwrap() >= 1, "the unsolicited NA is counted: {sp2}");
    assert!(
        report["sent"].as_u64().unwrap() >= 5,
        "the watch's solicitations are the capture's probes: {report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Sends one unsolicited Neighbor Advertisement for `vip` from `ns`'s eth0, by its own MAC.
fn announce6(ns: &Netns, vip: &str) {
    let vip: std::net::Ipv6Addr = vip.parse().unwrap();
    let (thread, ()) = NsThread::start(ns, move |_, ready| {
        let own = netprobe_probes::net::interface::lookup("eth0").unwrap().mac.unwrap();
        let mut capture = LiveCapture::open("eth0", "icmp6").unwrap();
        capture.send(&netprobe_probes::wire::ndp::advertisement(own, vip, None)).unwrap();
        ready.send(()).unwrap();
    })
    .expect("announcement sent");
    drop(thread);
}

/// keepalived (Debian's package) on each speaker, VRRP instance 51 for the VIP on eth0, the
/// first speaker preferred; files in `dir`. Waits until the first speaker holds the VIP.
fn keepalived(s: &mut Segment, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    for (i, host) in s.speakers.clone().iter().enumerate() {
        let conf = dir.join(format!("ka{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id ka{i}\n  vrrp_garp_master_delay 1\n  vrrp_garp_master_repeat 5\n}}\n\
                 vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {}\n  advert_int 1\n  nopreempt\n\
                 virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n",
                200 - 50 * i
            ),
        )?;
        let pid = |what: &str| dir.join(format!("ka{i}-{what}.pid")).to_string_lossy().into_owned();
        let argv = [
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-f",
            conf.to_str().unwrap(),
            "-p",
            &pid("main"),
            "-r",
            &pid("vrrp"),
        ];
        s.lab.spawn(host, &argv)?;
        if i == 0 {
            // The first becomes master before the second starts (nopreempt keeps it so).
            let deadline = Instant::now() + Duration::from_secs(15);
            while !host.sh("ip -br addr show eth0")?.contains(VIP) {
                assert!(Instant::now() < deadline, "keepalived did not take {VIP}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

#[test]
fn keepalived_one_owner_a_failover_and_a_split_brain() -> TestResult {
    let test = "arp-keepalived";
    if !netprobe_lab::on_path("keepalived") {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("keepalived is not installed (apt-get install keepalived)");
        }
        netprobe_lab::skip(test, "keepalived is not installed (apt-get install keepalived)");
        return Ok(());
    }
    let Some(mut s) = segment(test, &[(SP1, false), (SP2, false)]) else { return Ok(()) };
    let dir = std::env::temp_dir().join(format!("netprobe-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    keepalived(&mut s, &dir)?;
    std::thread::sleep(Duration::from_secs(2));

    // One master: one MAC.
    let run = netprobe_in(&s.client, &["arp", VIP, "-o", "json"]);
    assert_eq!((run.code, run.json()["verdict"].as_str()), (0, Some("ok")), "{}", run.stdout);
    assert_eq!(macs(&run.json()), vec![SP1.2]);

    // The master's node loses its link while we watch: the backup takes over after about 3
    // advert intervals, with bursts of gratuitous ARP. One gap, one owner change, in order.
    let client = s.client.clone();
    let watch = std::thread::spawn(move || {
        netprobe_in(
            &client,
            &["arp", VIP, "--watch", "--interval", "200ms", "--duration", "9s", "-o", "json"],
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    s.speakers[0].sh("ip link set eth0 down")?;
    let run = watch.join().unwrap();
    let lines: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "owner-change").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "no-reply-start").count(), 1, "{kinds:?}");
    let times: Vec<&str> = lines.iter().filter_map(|l| l["at"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order: {times:?}");
    let summary = lines.last().unwrap();
    assert_eq!(
        (summary["verdict"].as_str(), summary["duplicate_intervals"].as_u64()),
        (Some("unstable"), Some(0)),
        "{summary}"
    );

    // Split brain: the first comes back, but VRRP no longer gets through either way (each
    // drops the other's adverts): both are masters, and both answer.
    for speaker in &s.speakers {
        speaker.sh("iptables -A INPUT -p vrrp -j DROP")?;
    }
    s.speakers[0].sh("ip link set eth0 up")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.speakers[0].sh("ip -br addr show eth0")?.contains(VIP) {
        assert!(Instant::now() < deadline, "the first speaker never became master again");
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = netprobe_in(&s.client, &["arp", VIP, "-o", "json"]);
    assert_eq!((run.code, run.json()["verdict"].as_str()), (1, Some("duplicate")), "{}", run.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn kube_proxy_ipvs_without_strict_arp_answers_from_every_node() -> TestResult {
    // kube-proxy in IPVS mode binds every Service VIP to kube-ipvs0 (a dummy device: ifb here,
    // this kernel has no dummy driver) on every node; the kernel answers ARP for any local
    // address on any interface unless arp_ignore says otherwise (strictARP sets arp_ignore=1,
    // arp_announce=2).
    let Some(s) = segment("arp-ipvs", &[(SP1, false), (SP2, false)]) else { return Ok(()) };
    for node in &s.speakers {
        node.sh(&format!("ip link add kube-ipvs0 type ifb && ip addr add {VIP}/32 dev kube-ipvs0"))?;
    }
    let nodes = [format!("n1={}", SP1.1), format!("n2={}", SP2.1)];
    let run = netprobe_in(&s.client, &["arp", VIP, "--node", &nodes[0], "--node", &nodes[1], "-o", "json"]);
    let report = run.json();
    assert_eq!((run.code, report["verdict"].as_str()), (1, Some("duplicate")), "{report}");
    let next = report["next_step"].as_str().unwrap();
    assert!(next.contains("kube-proxy in IPVS mode") && next.contains("strictARP"), "{next}");
    // strictARP: no node's kernel answers for the VIP any more (the speaker would, from user
    // space): nothing answers here.
    for node in &s.speakers {
        node.sh("sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2")?;
    }
    let run = netprobe_in(&s.client, &["arp", VIP, "--node", &nodes[0], "--node", &nodes[1], "-o", "json"]);
    assert_eq!(run.json()["verdict"], "no-reply", "{}", run.stdout);
    Ok(())
}

#[test]
fn a_speaker_that_answers_broadcast_but_not_unicast_is_broadcast_only_in_both_families() -> TestResult {
    // sp1: a user-space speaker that ignores requests sent to its own MAC (MetalLB issue 2920);
    // sp2's kernel owns the VIP and answers both (it joins in after the first runs).
    let Some(seg) = segment6("arp-unicast", &[(SP1, false), (SP2, false)]) else { return Ok(()) };
    for vip in [VIP, VIP6] {
        let speaker = user_space_speaker(&seg.speakers[0], vip.parse()?, Duration::ZERO, false);
        let run = netprobe_in(&seg.client, &["arp", vip, "-o", "json"]);
        let report = run.json();
        assert_eq!((run.code, report["verdict"].as_str()), (1, Some("broadcast-only")), "{report}");
        let responder = &report["responders"][0];
        assert_eq!(
            (responder["mac"].as_str(), responder["replies"].as_u64()),
            (Some(SP1.2), Some(3)),
            "{report}"
        );
        assert_eq!(responder["unicast"], serde_json::json!({"sent": 3, "replies": 0}), "{report}");
        assert!(report["next_step"].as_str().unwrap().contains("requests to its MAC"), "{report}");
        // --no-unicast: the broadcast answers alone, as before.
        let run = netprobe_in(&seg.client, &["arp", vip, "--no-unicast", "-o", "json"]);
        assert_eq!((run.code, run.json()["verdict"].as_str()), (0, Some("ok")), "{}", run.stdout);
        drop(speaker);

        // The kernel's own answers unicast requests and solicitations (to the VIP itself) too.
        let (prefix, flags) = if vip == VIP { ("32", "") } else { ("128", " nodad") };
        seg.speakers[1].sh(&format!("ip addr add {vip}/{prefix} dev eth0{flags}"))?;
        let run = netprobe_in(&seg.client, &["arp", vip]);
        assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("3 broadcast request(s), then 3 to each responder's MAC,"),
            "{}",
            run.stdout
        );
        let run = netprobe_in(&seg.client, &["arp", vip, "-o", "json"]);
        let responder = &run.json()["responders"][0];
        assert_eq!(
            (responder["mac"].as_str(), responder["unicast"]["replies"].as_u64()),
            (Some(SP2.2), Some(3)),
            "{responder}"
        );
        seg.speakers[1].sh(&format!("ip addr del {vip}/{prefix} dev eth0"))?;
    }
    Ok(())
}
