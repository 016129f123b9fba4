//! `netprobe dns` against real DNS servers (dnsmasq) in a lab: a client, three servers on a bridge,
//! and a Service VIP made with iptables DNAT (`-m statistic --mode random`) as kube-proxy does.
//! Discovery goes through kube's client to a small HTTP server in the client's namespace that
//! serves the responses in tests/fixtures/k8s/.

mod common;
use common::netprobe_in;
use std::path::PathBuf;
use std::time::Duration;

use netprobe_lab::fake_api::{fixture, FakeApi};
use netprobe_lab::{lab_or_skip, Lab, Netns};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const NAME: &str = "kubernetes.default.svc.cluster.local";

struct DnsLab {
    /// Keeps the namespaces and dnsmasq processes alive for the test.
    _lab: Lab,
    client: Netns,
    /// dns1 (192.0.2.53, also 2001:db8::53), dns2 (.54), dns3 (.55).
    servers: Vec<Netns>,
    dir: PathBuf,
}

/// Servers at 192.0.2.53 (answers 10.96.0.1), .54 (same, but its port 53 is dropped by iptables)
/// and .55 (answers 10.96.0.99); the Service VIP 192.0.2.10 spreads over .53 and .54.
fn dns_lab(test: &str) -> Option<DnsLab> {
    let mut lab = lab_or_skip(test)?;
    let dir = std::env::temp_dir().join(format!("netprobe-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let switch = lab.switch("sw").unwrap();
    let client = lab.host("client").unwrap();
    lab.plug(&switch, &client, "192.0.2.1/24", None).unwrap();
    client.sh("ip -6 addr add 2001:db8::1/64 dev eth0 nodad").unwrap();
    let mut servers = Vec::new();
    for (role, ip, answer) in [
        ("dns1", "192.0.2.53", "10.96.0.1"),
        ("dns2", "192.0.2.54", "10.96.0.1"),
        ("dns3", "192.0.2.55", "10.96.0.99"),
    ] {
        let host = lab.host(role).unwrap();
        lab.plug(&switch, &host, &format!("{ip}/24"), None).unwrap();
        let pid_file = dir.join(format!("{role}.pid"));
        let mut argv = vec![
            "dnsmasq".to_string(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--user=root".into(),
            format!("--listen-address={ip}"),
            "--bind-interfaces".into(),
            format!("--address=/{NAME}/{answer}"),
            // Four 200-byte TXT records: too big for a 512-byte UDP reply, so it comes truncated.
            format!("--txt-record=big.test,{}", "a".repeat(200)),
            format!("--txt-record=big.test,{}", "b".repeat(200)),
            format!("--txt-record=big.test,{}", "c".repeat(200)),
            format!("--txt-record=big.test,{}", "d".repeat(200)),
            format!("--pid-file={}", pid_file.display()),
        ];
        if role == "dns1" {
            // dns1 is dual-stack, as the new CoreDNS pod of a dual-stack cluster.
            host.sh("ip -6 addr add 2001:db8::53/64 dev eth0 nodad").unwrap();
            argv.push("--listen-address=2001:db8::53".into());
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        lab.spawn(&host, &argv).unwrap();
        if role == "dns2" {
            host.sh(
                "iptables -A INPUT -p udp --dport 53 -j DROP && iptables -A INPUT -p tcp --dport 53 -j DROP",
            )
            .unwrap();
        }
        // dnsmasq writes its pid file once it is listening.
        for _ in 0..200 {
            if pid_file.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(pid_file.exists(), "dnsmasq in {role} did not start (apt-get install dnsmasq-base)");
        servers.push(host);
    }
    for proto in ["udp", "tcp"] {
        client
            .sh(&format!(
                "iptables -t nat -A OUTPUT -d 192.0.2.10 -p {proto} --dport 53 -m statistic --mode random --probability 0.5 -j DNAT --to-destination 192.0.2.53 && \
                 iptables -t nat -A OUTPUT -d 192.0.2.10 -p {proto} --dport 53 -j DNAT --to-destination 192.0.2.54 && \
                 ip6tables -t nat -A OUTPUT -d 2001:db8::10 -p {proto} --dport 53 -j DNAT --to-destination 2001:db8::53"
            ))
            .unwrap();
    }
    Some(DnsLab { _lab: lab, client, servers, dir })
}

impl Drop for DnsLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn endpoint<'a>(report: &'a Value, address: &str) -> &'a Value {
    report["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == address).unwrap()
}

fn kinds(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect()
}

#[test]
fn each_endpoint_gets_its_verdict_over_udp_and_tcp() -> TestResult {
    let Some(lab) = dns_lab("dns-verdicts") else { return Ok(()) };
    let args = [
        "dns",
        "--each-endpoint",
        "--endpoints",
        "192.0.2.53,192.0.2.54,192.0.2.55",
        "--service-ip",
        "192.0.2.10",
        "--count",
        "20",
        "--interval",
        "10ms",
        "--timeout",
        "2s",
        "--concurrency",
        "20",
        "-o",
        "json",
    ];
    let (code, out, err) = netprobe_in(&lab.client, &args, &[]);
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["probe"], "dns");
    assert_eq!(report["name"], "kubernetes.default.svc.cluster.local.");
    assert_eq!(report["verdict"], "fault");

    let healthy = endpoint(&report, "192.0.2.53");
    assert_eq!(healthy["verdict"], "ok");
    assert_eq!((healthy["sent"].as_u64(), healthy["answered"].as_u64()), (Some(40), Some(40)));
    assert_eq!(healthy["rcodes"]["NOERROR"], 40);
    assert_eq!(healthy["answers"], serde_json::json!(["10.96.0.1"]));
    for proto in ["udp", "tcp"] {
        assert_eq!(healthy["protocols"][proto]["answered"], 20, "{proto}");
    }

    let dropped = endpoint(&report, "192.0.2.54");
    assert_eq!(dropped["verdict"], "failing");
    assert_eq!((dropped["answered"].as_u64(), dropped["timeouts"].as_u64()), (Some(0), Some(40)));

    let other = endpoint(&report, "192.0.2.55");
    assert_eq!(other["verdict"], "inconsistent");
    assert_eq!(other["answers"], serde_json::json!(["10.96.0.99"]));

    // Half the Service's queries land on the dropped server: roughly half fail.
    let service = &report["services"][0];
    let failed = service["sent"].as_u64().unwrap() - service["answered"].as_u64().unwrap();
    assert!((5..=35).contains(&failed), "{service}");
    assert_eq!(service["verdict"], "degraded");
    let kinds = kinds(&report);
    assert!(kinds.contains(&"endpoint-unreachable".into()), "{kinds:?}");
    assert!(kinds.contains(&"inconsistent-answers".into()), "{kinds:?}");

    // The table a person reads: the failing endpoint shouts.
    let table_args: Vec<&str> = args[..args.len() - 2].to_vec();
    let (code, out, _) = netprobe_in(&lab.client, &table_args, &[]);
    assert_eq!(code, 1);
    assert!(out.starts_with("FAULT"), "{out}");
    assert!(out.lines().any(|l| l.contains("192.0.2.54:53") && l.contains("FAILING")), "{out}");
    Ok(())
}

#[test]
fn a_port_without_a_server_is_refused_at_once_not_timed_out() -> TestResult {
    let Some(lab) = dns_lab("dns-refused") else { return Ok(()) };
    let args = ["dns", "--endpoints", "192.0.2.55:5300", "--count", "3", "--timeout", "20s", "-o", "json"];
    let started = std::time::Instant::now();
    let (code, out, err) = netprobe_in(&lab.client, &args, &[]);
    assert_eq!(code, 1, "{err}");
    // Waiting would take 3 x (20 s + 5 s of grace): far from the few seconds a refusal takes.
    assert!(started.elapsed() < Duration::from_secs(15), "ICMP port unreachable ends each query at once");
    let report: Value = serde_json::from_str(&out)?;
    let e = endpoint(&report, "192.0.2.55");
    assert_eq!(e["verdict"], "failing");
    assert_eq!((e["refused"].as_u64(), e["timeouts"].as_u64()), (Some(6), Some(0)), "{e}");
    assert!(e["first_error"].as_str().unwrap().contains("refused"), "{e}");
    Ok(())
}

#[test]
fn a_truncated_udp_reply_is_asked_again_over_tcp() -> TestResult {
    let Some(lab) = dns_lab("dns-trunc") else { return Ok(()) };
    let args = [
        "dns",
        "--endpoints",
        "192.0.2.53",
        "--name",
        "big.test",
        "--type",
        "TXT",
        "--protocol",
        "udp",
        "--count",
        "5",
        "-o",
        "json",
    ];
    let (code, out, err) = netprobe_in(&lab.client, &args, &[]);
    assert_eq!(code, 0, "{err}{out}");
    let report: Value = serde_json::from_str(&out)?;
    let e = endpoint(&report, "192.0.2.53");
    assert_eq!(e["answered"], 5);
    assert_eq!(e["truncated_retried"], 5, "{e}");
    assert_eq!(e["answers"].as_array().unwrap().len(), 4, "the full answer came over TCP: {e}");
    Ok(())
}

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices";
const SERVICE: &str = "/api/v1/namespaces/kube-system/services/kube-dns";

#[test]
fn discovery_names_pods_and_nodes_and_points_at_the_overlay() -> TestResult {
    let Some(lab) = dns_lab("dns-discover") else { return Ok(()) };
    let api = FakeApi::start(
        &lab.client,
        vec![
            (SLICES, 200, fixture("endpointslices-kube-dns.json")),
            (SERVICE, 200, fixture("service-kube-dns.json")),
        ],
    );
    let kubeconfig = api.kubeconfig();
    // 60 queries per protocol: enough for the Service's failure share to be told apart (see
    // dns::share_explains), so the finding below is not a matter of luck.
    // --slow 2s: this test is about discovery; on a loaded machine 60 queries at once can take a
    // p95 past the default 250 ms, which would make the healthy pod degraded.
    let args = [
        "dns",
        "--each-endpoint",
        "--slow",
        "2s",
        "--count",
        "60",
        "--interval",
        "2ms",
        "--timeout",
        "2s",
        "--concurrency",
        "60",
        "-o",
        "json",
    ];
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap()), ("NODE_NAME", "node-a")];
    let (code, out, err) = netprobe_in(&lab.client, &args, &env);
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["this_node"], "node-a");
    let a = endpoint(&report, "192.0.2.53");
    assert_eq!((a["node"].as_str(), a["pod"].as_str()), (Some("node-a"), Some("coredns-7db6d8ff4d-m2q8x")));
    assert_eq!((a["ready"].as_bool(), a["serving"].as_bool()), (Some(true), Some(true)));
    assert_eq!(a["verdict"], "ok", "{a}");
    let b = endpoint(&report, "192.0.2.54");
    assert_eq!((b["node"].as_str(), b["verdict"].as_str()), (Some("node-b"), Some("failing")));
    assert_eq!(report["services"][0]["address"], "192.0.2.10", "the ClusterIP came from the Service");

    let kinds = kinds(&report);
    assert!(kinds.contains(&"cross-node".into()), "{kinds:?}");
    assert!(kinds.contains(&"service-failures-explained".into()), "{kinds:?}");
    let cross = report["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "cross-node").unwrap();
    assert!(cross["message"].as_str().unwrap().contains("netprobe vxlan node-a node-b"), "{cross}");
    Ok(())
}

#[test]
fn a_forbidden_api_is_exit_3_naming_the_permission() -> TestResult {
    let Some(lab) = dns_lab("dns-rbac") else { return Ok(()) };
    let api = FakeApi::start(&lab.client, vec![(SLICES, 403, fixture("forbidden.json"))]);
    let kubeconfig = api.kubeconfig();
    let (code, _, err) = netprobe_in(&lab.client, &["dns"], &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("list endpointslices in discovery.k8s.io"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // An API nobody listens on (the same kubeconfig, kept past the server): exit 3 too.
    let dead = lab.dir.join("kubeconfig-dead");
    std::fs::copy(&kubeconfig, &dead)?;
    drop(api);
    let (code, _, err) = netprobe_in(&lab.client, &["dns"], &[("KUBECONFIG", dead.to_str().unwrap())]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("unreachable"), "{err}");
    Ok(())
}

#[test]
fn one_transport_blocked_is_named_and_big_answers_need_tcp() -> TestResult {
    let Some(lab) = dns_lab("dns-proto") else { return Ok(()) };
    // dns1 drops UDP 53, dns3 drops TCP 53.
    lab.servers[0].sh("iptables -A INPUT -p udp --dport 53 -j DROP")?;
    lab.servers[2].sh("iptables -A INPUT -p tcp --dport 53 -j DROP")?;
    let args = [
        "dns",
        "--endpoints",
        "192.0.2.53,192.0.2.55",
        "--count",
        "4",
        "--timeout",
        "2s",
        "--concurrency",
        "4",
        "-o",
        "json",
    ];
    let (code, out, err) = netprobe_in(&lab.client, &args, &[]);
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out)?;
    let messages: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "protocol-blocked")
        .map(|f| f["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(messages.len(), 2, "{report}");
    assert!(messages[0].starts_with("192.0.2.53:53 answers over TCP but not over UDP"), "{messages:?}");
    assert!(messages[1].starts_with("192.0.2.55:53 answers over UDP but not over TCP"), "{messages:?}");

    // A big answer over UDP comes truncated; the TCP retry to dns3 cannot get through.
    let big =
        ["dns", "--endpoints", "192.0.2.55", "--name", "big.test", "--type", "TXT", "--protocol", "udp"];
    let (code, out, err) = netprobe_in(
        &lab.client,
        &[&big[..], &["--count", "3", "--timeout", "2s", "--concurrency", "3", "-o", "json"]].concat(),
        &[],
    );
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out)?;
    let e = endpoint(&report, "192.0.2.55");
    assert_eq!((e["tcp_retry_failed"].as_u64(), e["verdict"].as_str()), (Some(3), Some("failing")), "{e}");
    assert_eq!(kinds(&report), vec!["too-big-for-udp"], "not called unreachable: {report}");
    // With a large enough EDNS buffer (dig's +bufsize) the answer fits in UDP.
    let edns = [&big[..], &["--count", "3", "--edns-bufsize", "4096", "-o", "json"]].concat();
    let (code, out, err) = netprobe_in(&lab.client, &edns, &[]);
    assert_eq!(code, 0, "{err}{out}");
    let report: Value = serde_json::from_str(&out)?;
    let e = endpoint(&report, "192.0.2.55");
    assert_eq!((e["answered"].as_u64(), e["truncated_retried"].as_u64()), (Some(3), Some(0)), "{e}");
    assert_eq!(e["answers"].as_array().unwrap().len(), 4);
    Ok(())
}

#[test]
fn refused_no_route_and_silence_each_in_their_own_words() -> TestResult {
    let Some(lab) = dns_lab("dns-silences") else { return Ok(()) };
    lab.client.sh("ip route add unreachable 203.0.113.0/24")?;
    let args = [
        "dns",
        "--endpoints",
        "192.0.2.55:5353,203.0.113.53,192.0.2.54,[2001:db8::53]:53",
        "--protocol",
        "udp",
        "--count",
        "2",
        "--timeout",
        "2s",
        "--concurrency",
        "2",
        "-o",
        "json",
    ];
    let (code, out, err) = netprobe_in(&lab.client, &args, &[]);
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out)?;
    let messages: Vec<&str> =
        report["findings"].as_array().unwrap().iter().map(|f| f["message"].as_str().unwrap()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].starts_with("192.0.2.55:5353 refused 2 of 2 queries"), "{messages:?}");
    assert!(messages[1].starts_with("203.0.113.53:53: no route to 203.0.113.53"), "{messages:?}");
    assert!(messages[2].starts_with("192.0.2.54:53 answered none of 2 queries"), "{messages:?}");
    // The IPv6 endpoint is written as [address]:port and answers.
    assert_eq!(endpoint(&report, "2001:db8::53")["verdict"], "ok");
    let (_, table, _) = netprobe_in(&lab.client, &args[..args.len() - 2], &[]);
    assert!(table.contains("[2001:db8::53]:53"), "{table}");
    Ok(())
}

#[test]
fn a_failing_service_in_front_of_healthy_endpoints_points_at_the_path() -> TestResult {
    let Some(lab) = dns_lab("dns-svcpath") else { return Ok(()) };
    // A second Service VIP whose DNAT also sends half the queries to an address nobody has (an
    // endpoint kube-proxy still lists but that is gone).
    for proto in ["udp", "tcp"] {
        lab.client.sh(&format!(
            "iptables -t nat -A OUTPUT -d 192.0.2.11 -p {proto} --dport 53 -m statistic --mode random --probability 0.5 -j DNAT --to-destination 192.0.2.53 && \
             iptables -t nat -A OUTPUT -d 192.0.2.11 -p {proto} --dport 53 -j DNAT --to-destination 198.51.100.99"
        ))?;
    }
    lab.client.sh("ip route add blackhole 198.51.100.0/24")?;
    let args = [
        "dns",
        "--endpoints",
        "192.0.2.53",
        "--service-ip",
        "192.0.2.11",
        "--count",
        "10",
        "--interval",
        "5ms",
        "--timeout",
        "2s",
        "--concurrency",
        "10",
        "-o",
        "json",
    ];
    let (code, out, err) = netprobe_in(&lab.client, &args, &[]);
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(endpoint(&report, "192.0.2.53")["verdict"], "ok");
    assert!(kinds(&report).contains(&"service-path".to_string()), "{report}");
    Ok(())
}

const ROLLING: &str = "endpointslices-rolling-dualstack.json";

#[test]
fn discovery_during_a_rollout_on_a_dual_stack_cluster() -> TestResult {
    let Some(lab) = dns_lab("dns-rolling") else { return Ok(()) };
    let api = FakeApi::start(
        &lab.client,
        vec![(SLICES, 200, fixture(ROLLING)), (SERVICE, 200, fixture("service-kube-dns-dualstack.json"))],
    );
    let kubeconfig = api.kubeconfig();
    let args = [
        "dns",
        "--count",
        "5",
        "--interval",
        "5ms",
        "--timeout",
        "2s",
        "--concurrency",
        "5",
        "--node",
        "node-a",
        "-o",
        "json",
    ];
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];
    let (code, out, err) = netprobe_in(&lab.client, &args, &env);
    let report: Value = serde_json::from_str(&out)?;
    // The lab's Service VIP still sends half its queries to the old pod (as a kube-proxy that has
    // not caught up would): that is the Service's fault, named as such; the old pod is not judged.
    assert_eq!(code, 1, "{err}");
    let addresses: Vec<&str> =
        report["endpoints"].as_array().unwrap().iter().map(|e| e["address"].as_str().unwrap()).collect();
    assert_eq!(
        addresses,
        vec!["192.0.2.53", "192.0.2.54", "2001:db8::53"],
        "each endpoint once, both families"
    );
    let old = endpoint(&report, "192.0.2.54");
    assert_eq!((old["verdict"].as_str(), old["terminating"].as_bool()), (Some("not-ready"), Some(true)));
    assert_eq!(
        kinds(&report),
        vec!["service-path"],
        "no cross-node finding for a pod on its way out: {report}"
    );
    let path = report["findings"][0]["message"].as_str().unwrap();
    assert!(path.contains("still sending to the not-ready 192.0.2.54:53"), "{path}");
    let services: Vec<&str> =
        report["services"].as_array().unwrap().iter().map(|s| s["address"].as_str().unwrap()).collect();
    assert_eq!(services, vec!["192.0.2.10", "2001:db8::10"], "every clusterIP");
    assert_eq!(report["services"][1]["verdict"], "ok");

    // --family 4: the IPv6 endpoint and ClusterIP are left out.
    let (_, out, _) = netprobe_in(&lab.client, &[&args[..], &["--family", "4"]].concat(), &env);
    let report: Value = serde_json::from_str(&out)?;
    assert_eq!(report["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(report["services"].as_array().unwrap().len(), 1);

    // With --service-ip, the Service is never read: a 403 on it does not matter.
    drop(api);
    let api = FakeApi::start(
        &lab.client,
        vec![(SLICES, 200, fixture(ROLLING)), (SERVICE, 403, fixture("forbidden.json"))],
    );
    let kubeconfig = api.kubeconfig();
    let with_ip = [&args[..], &["--service-ip", "192.0.2.10", "--family", "4"]].concat();
    let (code, out, err) =
        netprobe_in(&lab.client, &with_ip, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    assert!(code == 0 || code == 1, "{err}{out}");
    assert_eq!(serde_json::from_str::<Value>(&out)?["services"][0]["address"], "192.0.2.10");
    let (code, _, err) = netprobe_in(&lab.client, &args, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    assert_eq!(code, 3, "without --service-ip the 403 on the Service stops discovery: {err}");
    assert!(err.contains("get services"), "{err}");
    Ok(())
}

/// --reuse-sockets (dnsperf's way, for load) answers as a socket per query does, from a
/// conntrack entry per socket instead of one per query; the default leaves one per query.
#[test]
fn reused_sockets_leave_a_conntrack_entry_per_socket_not_per_query() -> TestResult {
    let Some(lab) = dns_lab("dns-reuse") else { return Ok(()) };
    // The client's nat rules (the Service's DNAT) make conntrack track its flows.
    let entries = || -> u64 {
        lab.client.sh("cat /proc/sys/net/netfilter/nf_conntrack_count").unwrap().trim().parse().unwrap()
    };
    let run = |extra: &[&str]| -> Value {
        let mut args = vec![
            "dns",
            "--endpoints",
            "192.0.2.53",
            "--protocol",
            "udp",
            "--count",
            "100",
            "--interval",
            "0",
            "--concurrency",
            "4",
            "--timeout",
            "2s",
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = netprobe_in(&lab.client, &args, &[]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let before = entries();
    let reused = run(&["--reuse-sockets"]);
    let after_reused = entries();
    assert_eq!(reused["udp_sockets"], "reused");
    assert_eq!(reused["endpoints"][0]["answered"], 100);
    assert!(after_reused - before <= 4, "{before} -> {after_reused} entries for 4 sockets");

    let fresh = run(&[]);
    let after_fresh = entries();
    assert!(fresh.get("udp_sockets").is_none(), "a socket per query is the default: {fresh}");
    assert_eq!(fresh["endpoints"][0]["answered"], 100);
    assert!(after_fresh - after_reused >= 90, "{after_reused} -> {after_fresh} entries for 100 queries");
    Ok(())
}
