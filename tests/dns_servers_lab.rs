//! `netprobe dns` against real DNS servers from Debian in a lab: BIND answering, BIND with a zone
//! that does not load (SERVFAIL), NSD without the name (NXDOMAIN), Unbound refusing (REFUSED,
//! without a question section), Knot Resolver forwarding to BIND, and a relay that holds BIND's
//! answers back (late answers), and a relay that drops the second of two back-to-back queries from
//! one source port (the conntrack insert race's loss), behind a Service VIP made with DNAT. Each
//! server has its own address on one bridge. And the servers that turn some queries away: BIND
//! with response rate limiting, dnsdist rate limiting (dropping, refusing, truncating) or
//! refusing us by its default ACL, and Unbound whose upstream is gone.

mod common;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use netprobe_lab::{dns_relay, dns_servers, lab_or_skip, Lab, Netns, NsThread};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BIND_OK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const BIND_SERVFAIL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 54);
const NSD_NXDOMAIN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 55);
const UNBOUND_REFUSED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 56);
const KRESD: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 57);
const LATE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 58);
const RACING: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 59);
/// The Service VIP: the client DNATs it to the racing relay, as kube-proxy would to a pod.
const SERVICE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

struct Servers {
    _relays: [NsThread; 2],
    _lab: Lab,
    client: Netns,
    dir: PathBuf,
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn servers(test: &str) -> Option<Servers> {
    let mut lab = lab_or_skip(test)?;
    let dir = std::env::temp_dir().join(format!("netprobe-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let switch = lab.switch("sw").unwrap();
    let client = lab.host("client").unwrap();
    lab.plug(&switch, &client, "192.0.2.1/24", None).unwrap();
    let host = lab.host("dns").unwrap();
    lab.plug(&switch, &host, "192.0.2.53/24", None).unwrap();
    for ip in [BIND_SERVFAIL, NSD_NXDOMAIN, UNBOUND_REFUSED, KRESD, LATE, RACING] {
        host.sh(&format!("ip addr add {ip}/24 dev eth0")).unwrap();
    }
    let zone = dns_servers::zone_text(&[("kubernetes.default.svc", "10.96.0.1")]);
    let other_zone = dns_servers::zone_text(&[]);
    dns_servers::bind(&mut lab, &host, BIND_OK, &dir, Some(&zone)).unwrap();
    dns_servers::bind(&mut lab, &host, BIND_SERVFAIL, &dir, None).unwrap();
    dns_servers::nsd(&mut lab, &host, NSD_NXDOMAIN, &dir, &other_zone).unwrap();
    dns_servers::unbound_refusing(&mut lab, &host, UNBOUND_REFUSED, &dir).unwrap();
    dns_servers::kresd_forwarder(&mut lab, &host, KRESD, &dir, BIND_OK).unwrap();
    let late = dns_relay::delayed(&host, LATE, BIND_OK, Duration::from_millis(3000)).unwrap();
    let racing = dns_relay::racing(&host, RACING, BIND_OK).unwrap();
    client
        .sh(&format!(
            "iptables -t nat -A OUTPUT -d {SERVICE} -p udp --dport 53 -j DNAT --to-destination {RACING}"
        ))
        .unwrap();
    Some(Servers { _relays: [late, racing], _lab: lab, client, dir })
}

/// netprobe in `ns` with `-o json`: (exit code, the report, stderr).
fn netprobe(ns: &Netns, args: &[&str]) -> (i32, Value, String) {
    let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
    let (code, stdout, stderr) = common::netprobe_in(ns, &args, &[]);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    (code, report, stderr)
}

fn endpoint(report: &Value, address: Ipv4Addr) -> &Value {
    let address = address.to_string();
    report["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == address.as_str()).unwrap()
}

fn kinds(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect()
}

#[test]
fn error_replies_from_real_servers_are_not_answers() -> TestResult {
    let Some(lab) = servers("dns-real-rcodes") else { return Ok(()) };
    let list =
        [BIND_OK, BIND_SERVFAIL, NSD_NXDOMAIN, UNBOUND_REFUSED, KRESD].map(|ip| ip.to_string()).join(",");
    let (code, report, err) = netprobe(
        &lab.client,
        &["dns", "--endpoints", &list, "--count", "5", "--interval", "10ms", "--timeout", "3s"],
    );
    assert_eq!(code, 1, "{err}");
    let verdict = |ip| endpoint(&report, ip)["verdict"].as_str().unwrap().to_string();
    assert_eq!(verdict(BIND_OK), "ok", "the healthy server is not the odd one out");
    assert_eq!(verdict(KRESD), "ok", "a resolver forwarding to it agrees");
    assert_eq!(verdict(BIND_SERVFAIL), "failing");
    assert_eq!(verdict(NSD_NXDOMAIN), "inconsistent", "NXDOMAIN where others resolve the name");
    assert_eq!(verdict(UNBOUND_REFUSED), "failing");
    assert_eq!(endpoint(&report, BIND_SERVFAIL)["rcodes"]["SERVFAIL"], 10);
    assert_eq!(endpoint(&report, NSD_NXDOMAIN)["rcodes"]["NXDOMAIN"], 10);
    assert_eq!(
        endpoint(&report, UNBOUND_REFUSED)["rcodes"]["REFUSED"],
        10,
        "a reply without a question counts"
    );
    for ip in [BIND_SERVFAIL, NSD_NXDOMAIN, UNBOUND_REFUSED] {
        assert_eq!(endpoint(&report, ip)["answered"], 0, "{ip}: an error reply is not an answer");
    }
    let kinds = kinds(&report);
    assert_eq!(kinds, vec!["server-errors", "server-errors", "inconsistent-answers"], "{report}");
    Ok(())
}

#[test]
fn a_name_nobody_knows_is_a_fault_that_says_so() -> TestResult {
    let Some(lab) = servers("dns-real-nx") else { return Ok(()) };
    let list = format!("{BIND_OK},{NSD_NXDOMAIN}");
    let args = [
        "dns",
        "--endpoints",
        &list,
        "--name",
        "kubernetes.default.svc.cluster.local.cluster.local",
        "--count",
        "3",
    ];
    let (code, report, err) = netprobe(&lab.client, &args);
    assert_eq!(code, 1, "{err}");
    assert_eq!(endpoint(&report, BIND_OK)["verdict"], "nxdomain");
    assert_eq!(endpoint(&report, NSD_NXDOMAIN)["verdict"], "nxdomain");
    assert_eq!(kinds(&report), vec!["name-exists-nowhere"]);
    Ok(())
}

#[test]
fn answers_after_the_timeout_are_late_not_lost() -> TestResult {
    let Some(lab) = servers("dns-real-late") else { return Ok(()) };
    // 3 s late against a 2 s timeout, heard within the grace period (4 s): a second of margin
    // either way for a loaded machine.
    let args = [
        "dns",
        "--endpoints",
        &LATE.to_string(),
        "--protocol",
        "udp",
        "--count",
        "3",
        "--timeout",
        "2s",
        "--concurrency",
        "3",
    ];
    let (code, report, err) = netprobe(&lab.client, &args);
    assert_eq!(code, 1, "{err}");
    let e = endpoint(&report, LATE);
    assert_eq!((e["late"].as_u64(), e["timeouts"].as_u64()), (Some(3), Some(0)), "{e}");
    assert!(e["late_max_ms"].as_f64().unwrap() >= 3000.0, "{e}");
    let late = &report["findings"][0];
    assert_eq!(late["kind"], "late-answers");
    assert!(late["message"].as_str().unwrap().contains("raise --timeout or look upstream"), "{late}");
    Ok(())
}

#[test]
fn glibc_pairs_that_lose_one_answer_behind_the_service_are_the_conntrack_race_pattern() -> TestResult {
    let Some(lab) = servers("dns-like-glibc") else { return Ok(()) };
    let (bind, service) = (BIND_OK.to_string(), SERVICE.to_string());
    let args = ["dns", "--endpoints", &bind, "--service-ip", &service, "--count", "8", "--timeout", "500ms"];

    // Asked as glibc asks, every pair through the Service loses its second query.
    let glibc: Vec<&str> = args.iter().copied().chain(["--like-glibc"]).collect();
    let (code, report, err) = netprobe(&lab.client, &glibc);
    assert_eq!(code, 1, "{err} {report}");
    assert_eq!(report["type"], "A+AAAA");
    let row = &report["services"][0];
    assert_eq!(row["pairs"], serde_json::json!({"sent": 8, "part_lost": 8, "all_lost": 0}), "{report}");
    assert_eq!((row["sent"].as_u64(), row["answered"].as_u64()), (Some(16), Some(8)));
    assert_eq!(row["verdict"], "degraded");
    assert_eq!(endpoint(&report, BIND_OK)["pairs"]["part_lost"], 0, "the server itself answers both");
    assert!(kinds(&report).contains(&"half-answered-pairs".to_string()), "{report}");
    // Conntrack was read from the client's namespace (its DNAT made entries), and it counted no
    // failed insert: the loss is elsewhere, and the finding says so.
    let conntrack = &report["conntrack"];
    assert_eq!(
        (conntrack["insert_failed"].as_u64(), conntrack["error"].as_str()),
        (Some(0), None),
        "{report}"
    );
    let finding = report["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "half-answered-pairs");
    let message = finding.unwrap()["message"].as_str().unwrap();
    assert!(message.starts_with("192.0.2.10:53: 8 of 8 A+AAAA pairs"), "{message}");
    assert!(message.contains("lost elsewhere") && message.contains("single-request-reopen"), "{message}");

    // Asked one query per socket, as dig does, the same path answers every query: only the
    // glibc pattern shows the loss.
    let (code, report, err) = netprobe(&lab.client, &[&args[..], &["--protocol", "udp"]].concat());
    assert_eq!(code, 0, "{err} {report}");
    assert!(report["services"][0].get("pairs").is_none() && report.get("conntrack").is_none());
    assert_eq!(report["services"][0]["answered"], 8);
    Ok(())
}

const BIND_RRL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 60);
const DNSDIST_DROP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 61);
const DNSDIST_REFUSE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 62);
const DNSDIST_TRUNCATE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 63);
const DNSDIST_ACL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 64);
const UNBOUND_NO_UPSTREAM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 65);

/// BIND answering, and the servers in front of it or beside it that turn queries away.
fn limiting(test: &str) -> Option<(Lab, Netns, PathBuf)> {
    let mut lab = lab_or_skip(test)?;
    for tool in ["dnsdist", "unbound", "named"] {
        if !netprobe_lab::on_path(tool) {
            let why = format!("{tool} is not installed (apt-get install dnsdist unbound bind9)");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{why}");
            }
            netprobe_lab::skip(test, &why);
            return None;
        }
    }
    let dir = std::env::temp_dir().join(format!("netprobe-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let switch = lab.switch("sw").unwrap();
    let client = lab.host("client").unwrap();
    lab.plug(&switch, &client, "192.0.2.1/24", None).unwrap();
    let host = lab.host("dns").unwrap();
    lab.plug(&switch, &host, "192.0.2.53/24", None).unwrap();
    for ip in [BIND_RRL, DNSDIST_DROP, DNSDIST_REFUSE, DNSDIST_TRUNCATE, DNSDIST_ACL, UNBOUND_NO_UPSTREAM] {
        host.sh(&format!("ip addr add {ip}/24 dev eth0")).unwrap();
    }
    let records = [("kubernetes.default.svc", "10.96.0.1")];
    let zone = dns_servers::zone_text(&records);
    dns_servers::bind(&mut lab, &host, BIND_OK, &dir, Some(&zone)).unwrap();
    dns_servers::bind_rate_limited(&mut lab, &host, BIND_RRL, &dir, &zone, 5).unwrap();
    let open = "setACL({\"0.0.0.0/0\"})";
    for (ip, action) in [
        (DNSDIST_DROP, "DropAction()"),
        (DNSDIST_REFUSE, "RCodeAction(DNSRCode.REFUSED)"),
        (DNSDIST_TRUNCATE, "TCAction()"),
    ] {
        let rules = format!("{open}\naddAction(MaxQPSIPRule(5), {action})");
        dns_servers::dnsdist(&mut lab, &host, ip, &dir, BIND_OK, &rules).unwrap();
    }
    // Its default ACL: private ranges only, so the lab's documentation addresses are turned away.
    dns_servers::dnsdist(&mut lab, &host, DNSDIST_ACL, &dir, BIND_OK, "").unwrap();
    // Its upstream: a port where nothing listens.
    let upstream = std::net::SocketAddrV4::new(BIND_OK, 5399);
    dns_servers::unbound_forwarding(&mut lab, &host, UNBOUND_NO_UPSTREAM, &dir, &records, upstream).unwrap();
    Some((lab, client, dir))
}

#[test]
fn a_rate_limiter_is_named_not_the_network_nor_an_acl() -> TestResult {
    let Some((_lab, client, dir)) = limiting("dns-rate-limits") else { return Ok(()) };
    let list = [BIND_RRL, DNSDIST_DROP, DNSDIST_REFUSE, DNSDIST_TRUNCATE].map(|ip| ip.to_string()).join(",");
    // 40 queries a transport at 100 a second, against limits of 5 a second.
    let args = ["dns", "--endpoints", &list, "--count", "40", "--interval", "10ms", "--timeout", "500ms"];
    let (code, report, err) = netprobe(&client, &args);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{err}");
    for ip in [BIND_RRL, DNSDIST_DROP, DNSDIST_REFUSE, DNSDIST_TRUNCATE] {
        let e = endpoint(&report, ip);
        assert_eq!(e["verdict"], "degraded", "{ip}: {e}");
        assert!(e["answered"].as_u64().unwrap() > 0, "{ip}: {e}");
        let said: Vec<&Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["message"].as_str().unwrap().starts_with(&format!("{ip}:53 ")))
            .collect();
        assert!(said.iter().any(|f| f["kind"] == "rate-limited"), "{ip}: {said:?}");
        assert!(said.iter().all(|f| !f["message"].as_str().unwrap().contains("ACL (")), "{ip}: {said:?}");
    }
    let message = |ip: Ipv4Addr| {
        let prefix = format!("{ip}:53 ");
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["message"].as_str().unwrap().starts_with(&prefix))
            .unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        message(BIND_RRL).contains("UDP answers that came whole in"),
        "BIND's slip: {}",
        message(BIND_RRL)
    );
    assert!(message(DNSDIST_REFUSE).contains("REFUSED"), "{}", message(DNSDIST_REFUSE));
    assert!(
        message(DNSDIST_DROP).contains("TCP connections after reading the query"),
        "{}",
        message(DNSDIST_DROP)
    );
    assert!(
        message(DNSDIST_TRUNCATE).contains("UDP answers that came whole in"),
        "{}",
        message(DNSDIST_TRUNCATE)
    );
    Ok(())
}

#[test]
fn a_server_that_turns_us_away_is_told_from_a_path_that_drops() -> TestResult {
    let Some((_lab, client, dir)) = limiting("dns-acl-upstream") else { return Ok(()) };
    // dnsdist's default ACL: silence over UDP, TCP accepted and closed without a reply.
    let acl = DNSDIST_ACL.to_string();
    let (code, report, err) =
        netprobe(&client, &["dns", "--endpoints", &acl, "--count", "3", "--timeout", "500ms"]);
    assert_eq!(code, 1, "{err}");
    let e = endpoint(&report, DNSDIST_ACL);
    assert_eq!((e["verdict"].as_str(), e["closed"].as_u64()), (Some("failing"), Some(3)), "{e}");
    let said = report["findings"][0]["message"].as_str().unwrap();
    assert!(
        said.contains("accepted the connection, read the query and closed it")
            && said.contains("not the path"),
        "{said}"
    );

    // Unbound answers the cluster's name and nothing for an external one: its upstream, not the pod.
    let unbound = UNBOUND_NO_UPSTREAM.to_string();
    let args = [
        "dns",
        "--endpoints",
        &unbound,
        "--name",
        "kubernetes.default.svc.cluster.local",
        "--name",
        "example.com.",
        "--count",
        "3",
        "--timeout",
        "500ms",
    ];
    let (code, report, err) = netprobe(&client, &args);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{err}");
    assert_eq!(endpoint(&report, UNBOUND_NO_UPSTREAM)["verdict"], "ok", "the cluster's name: {report}");
    assert_eq!(report["other_names"][0]["name"], "example.com.");
    assert_eq!(endpoint(&report["other_names"][0], UNBOUND_NO_UPSTREAM)["verdict"], "failing");
    assert_eq!(kinds(&report), vec!["upstream-broken"], "{report}");
    assert!(kinds(&report["other_names"][0]).is_empty(), "no 'unreachable' beside it: {report}");
    Ok(())
}
