//! `netprobe agent` cannot be turned against anyone or taken down: two nodes with agents (and
//! flannel's vxlan device, VNI 1) and a victim that runs no agent, all behind a router. Requests
//! are made from the router's namespace with a plain TCP client, so every byte is ours to choose.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use netprobe_lab::{lab_or_skip, Lab, Netns, NsThread};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TOKEN: &str = "hardening-token-51c2";
const N1: &str = "198.51.100.1";
const N2: &str = "203.0.113.2";
const VICTIM: &str = "192.0.2.3";

struct Nodes {
    _lab: Lab,
    router: Netns,
    victim: Netns,
    agents: Vec<u32>,
}

fn nodes(test: &str) -> Option<Nodes> {
    let mut lab = lab_or_skip(test)?;
    let router = lab.router("router").unwrap();
    let mut agents = Vec::new();
    let mut hosts = Vec::new();
    for (i, (net, ip)) in [("198.51.100", N1), ("203.0.113", N2), ("192.0.2", VICTIM)].iter().enumerate() {
        let host = lab.host(&format!("n{i}")).unwrap();
        lab.link(&host, &format!("{ip}/24"), &router, &format!("{net}.254/24")).unwrap();
        host.sh(&format!("ip route add default via {net}.254")).unwrap();
        hosts.push(host);
    }
    // The victim runs no agent; it counts every UDP datagram it receives.
    let victim = hosts.pop().unwrap();
    victim.sh("iptables -A INPUT -p udp -j ACCEPT").unwrap();
    for (node, ip) in hosts.iter().zip([N1, N2]) {
        node.sh(&format!(
            "ip link add flannel.1 type vxlan id 1 local {ip} dstport 8472 dev eth0 && ip link set flannel.1 up"
        ))
        .unwrap();
        let token = format!("NETPROBE_TOKEN={TOKEN}");
        let listen = format!("{ip}:9473");
        let argv = ["env", &token, env!("CARGO_BIN_EXE_netprobe"), "agent", "--listen", &listen];
        agents.push(lab.spawn(node, &argv).unwrap());
        node.wait_listening("tcp", 9473, Duration::from_secs(10)).unwrap();
    }
    Some(Nodes { _lab: lab, router, victim, agents })
}

/// One HTTP/1.1 request made from inside `ns`: (status, body). `raw` overrides the whole request.
fn http(ns: &Netns, to: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let request = {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {to}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    raw(ns, to, request.into_bytes())
}

fn raw(ns: &Netns, to: &str, request: Vec<u8>) -> (u16, String) {
    let to = format!("{to}:9473");
    let (_thread, answer) = NsThread::start(ns, move |_, ready| {
        let answer = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect(&to)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.write_all(&request)?;
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            Ok(text)
        })()
        .unwrap_or_else(|e| format!("error {e}"));
        let _ = ready.send(answer);
    })
    .unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn udp_received(victim: &Netns) -> u64 {
    let text = victim.sh("iptables -L INPUT -v -x -n | awk '/udp/ {print $1}'").unwrap();
    text.trim().parse().unwrap_or(0)
}

fn expect(router: &Netns, node: &str, from: &str, probe_id: u64, vni: u32) -> (u16, String) {
    let body =
        format!(r#"{{"probe_id":{probe_id},"from":"{from}","port":8472,"vni":{vni},"window_ms":5000}}"#);
    http(router, node, "POST", "/v1/expect", Some(TOKEN), &body)
}

fn send(router: &Netns, node: &str, to: &str, probe_id: u64, control_port: u16, vni: u32) -> (u16, String) {
    let body = format!(
        r#"{{"probe_id":{probe_id},"to":"{to}","port":8472,"control_port":{control_port},"vni":{vni},"count":100}}"#
    );
    http(router, node, "POST", "/v1/send", Some(TOKEN), &body)
}

#[test]
fn with_the_token_an_agent_still_sends_only_to_agents_expecting_the_probe() -> TestResult {
    let Some(n) = nodes("hard-reflect") else { return Ok(()) };
    for to in [VICTIM, "127.0.0.1", "224.0.0.1", "203.0.113.255", N1] {
        let (status, body) = send(&n.router, N1, to, 7, 40000, 16777200);
        assert_eq!(status, 403, "{to}: {body}");
    }
    assert_eq!(udp_received(&n.victim), 0, "the victim received nothing");
    // Flannel's VNI is refused on both sides.
    let (status, body) = expect(&n.router, N2, N1, 8, 1);
    assert_eq!(status, 403, "{body}");
    // A real exchange still works: node2 expects, node1 sends exactly that.
    let (status, body) = expect(&n.router, N2, N1, 9, 16777200);
    assert_eq!(status, 200, "{body}");
    let control_port: u16 =
        body.split("\"control_port\":").nth(1).and_then(|r| r.split(',').next()).unwrap().parse()?;
    let (status, body) = send(&n.router, N1, N2, 9, control_port, 16777200);
    assert_eq!(status, 200, "{body}");
    // The same probe to another port than node2 agreed to: refused.
    let (status, _) = send(&n.router, N1, N2, 9, 22, 16777200);
    assert_eq!(status, 403);
    let _ = &n.agents;
    Ok(())
}

#[test]
fn a_caller_without_the_token_cannot_hold_the_agent() -> TestResult {
    let Some(n) = nodes("hard-dos") else { return Ok(()) };
    // A 1.9 MB body announced and never sent, without the token: refused at once, unread.
    let request = "POST /v1/expect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1900000\r\n\r\n";
    let (status, body) = raw(&n.router, N1, request.as_bytes().to_vec());
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("probe_id"), "no schema details for strangers: {body}");

    // 400 connections, idle or dripping half a request line, from the router.
    let pid = n.agents[0];
    let (holder, opened) = NsThread::start(&n.router, |stop, ready| {
        let mut held = Vec::new();
        for i in 0..400 {
            if let Ok(mut s) = TcpStream::connect((N1, 9473)) {
                if i % 2 == 0 {
                    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: ");
                }
                held.push(s);
            }
        }
        let _ = ready.send(held.len());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    })?;
    assert!(opened > 0);
    // After the header deadline (5 s) and some slack, the agent holds none of them and answers.
    std::thread::sleep(Duration::from_secs(8));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    assert!(fds < 100, "the agent holds {fds} descriptors");
    let (status, body) = http(&n.router, N1, "GET", "/healthz", None, "");
    assert_eq!((status, body.as_str()), (200, "ok"));
    drop(holder);
    Ok(())
}

#[test]
fn sends_at_once_are_capped() -> TestResult {
    let Some(n) = nodes("hard-caps") else { return Ok(()) };
    let mut ports = Vec::new();
    for id in 0..12u64 {
        let (status, body) = expect(&n.router, N2, N1, 100 + id, 16777200);
        assert_eq!(status, 200, "{body}");
        ports.push(
            body.split("\"control_port\":")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap()
                .parse::<u16>()?,
        );
    }
    let router = n.router.clone();
    let threads: Vec<_> = ports
        .into_iter()
        .enumerate()
        .map(|(i, port)| {
            let router = router.clone();
            std::thread::spawn(move || send(&router, N1, N2, 100 + i as u64, port, 16777200).0)
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429), "12 sends of 100 probes at once exceed the cap of 8: {statuses:?}");
    Ok(())
}
