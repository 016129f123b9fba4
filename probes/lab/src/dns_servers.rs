//! Real DNS servers from Debian for DNS labs: BIND (named), NSD, Unbound, Knot Resolver (kresd),
//! each started in a namespace with a configuration written to a directory of the test's, and
//! stopped with the lab. They listen on one address only, so several can share a namespace.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use crate::{dns_responder, Lab, LabError, Netns, NsThread, Result};

/// The zone every server here is about.
pub const ZONE: &str = "cluster.local";

/// A zone file for `cluster.local` with `records` (relative name, IPv4 address), e.g.
/// `("kubernetes.default.svc", "10.96.0.1")`.
pub fn zone_text(records: &[(&str, &str)]) -> String {
    let mut text = String::from(
        "$TTL 30\n@ IN SOA ns.cluster.local. hostmaster.cluster.local. 1 3600 600 86400 30\n@ IN NS ns.cluster.local.\nns IN A 192.0.2.53\n",
    );
    for (name, ip) in records {
        text.push_str(&format!("{name} IN A {ip}\n"));
    }
    text
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| LabError(format!("writing {}: {e}", path.display())))
}

fn dir_for(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| LabError(format!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Starts `argv` in `ns` and waits until it listens on UDP `ip`:53.
fn start(lab: &mut Lab, ns: &Netns, ip: Ipv4Addr, argv: &[&str]) -> Result<()> {
    lab.spawn(ns, argv)?;
    ns.wait_listening_at("udp", &format!("{ip}:53"), Duration::from_secs(15))
        .map_err(|e| LabError(format!("{} did not start: {e} (apt-get install it)", argv[0])))
}

/// BIND authoritative for `cluster.local` on `ip`. `zone` is the zone file's text; `None` gives a
/// zone file that does not load, so BIND answers SERVFAIL for every name in it.
pub fn bind(lab: &mut Lab, ns: &Netns, ip: Ipv4Addr, dir: &Path, zone: Option<&str>) -> Result<()> {
    bind_with(lab, ns, ip, dir, zone, "")
}

/// [`bind`] with response rate limiting (`rate-limit { responses-per-second N; slip 2; }`):
/// past N answers a second to one client, it drops every other reply and sends the rest
/// truncated with no answer (the "slip"), so the client retries over TCP.
pub fn bind_rate_limited(
    lab: &mut Lab,
    ns: &Netns,
    ip: Ipv4Addr,
    dir: &Path,
    zone: &str,
    per_second: u32,
) -> Result<()> {
    let limit = format!(" rate-limit {{ responses-per-second {per_second}; slip 2; window 1; }};");
    bind_with(lab, ns, ip, dir, Some(zone), &limit)
}

fn bind_with(
    lab: &mut Lab,
    ns: &Netns,
    ip: Ipv4Addr,
    dir: &Path,
    zone: Option<&str>,
    options: &str,
) -> Result<()> {
    let dir = dir_for(dir, &format!("bind-{ip}"))?;
    write(&dir.join("zone"), zone.unwrap_or("this is not a zone file\n"))?;
    let d = dir.display();
    write(
        &dir.join("named.conf"),
        &format!(
            "options {{ directory \"{d}\"; listen-on port 53 {{ {ip}; }}; listen-on-v6 {{ none; }}; recursion no; \
             pid-file \"{d}/named.pid\"; dnssec-validation no;{options} }};\n\
             zone \"{ZONE}\" {{ type primary; file \"{d}/zone\"; }};\n"
        ),
    )?;
    let conf = dir.join("named.conf");
    start(lab, ns, ip, &["named", "-f", "-u", "root", "-c", conf.to_str().unwrap_or_default()])
}

/// NSD authoritative for `cluster.local` on `ip`, with `zone` as the zone file's text.
pub fn nsd(lab: &mut Lab, ns: &Netns, ip: Ipv4Addr, dir: &Path, zone: &str) -> Result<()> {
    let dir = dir_for(dir, &format!("nsd-{ip}"))?;
    write(&dir.join("zone"), zone)?;
    let d = dir.display();
    write(
        &dir.join("nsd.conf"),
        &format!(
            "server:\n  ip-address: {ip}\n  port: 53\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  \
             pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
             logfile: \"{d}/nsd.log\"\n  do-ip6: no\nremote-control:\n  control-enable: no\nzone:\n  name: {ZONE}\n  zonefile: zone\n"
        ),
    )?;
    let conf = dir.join("nsd.conf");
    start(lab, ns, ip, &["nsd", "-d", "-c", conf.to_str().unwrap_or_default()])
}

/// Unbound on `ip` with an access control that refuses everyone: it answers REFUSED (with no
/// question section, as Unbound does).
pub fn unbound_refusing(lab: &mut Lab, ns: &Netns, ip: Ipv4Addr, dir: &Path) -> Result<()> {
    let dir = dir_for(dir, &format!("unbound-{ip}"))?;
    let d = dir.display();
    write(
        &dir.join("unbound.conf"),
        &format!(
            "server:\n  interface: {ip}\n  port: 53\n  access-control: 0.0.0.0/0 refuse\n  username: \"\"\n  chroot: \"\"\n  \
             directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  do-ip6: no\n  use-syslog: no\n  logfile: \"{d}/unbound.log\"\n\
             remote-control:\n  control-enable: no\n"
        ),
    )?;
    let conf = dir.join("unbound.conf");
    start(lab, ns, ip, &["unbound", "-d", "-c", conf.to_str().unwrap_or_default()])
}

/// Unbound on `ip` as a cluster's DNS would be: `records` (name, IPv4 address) of its own zone
/// answered locally, every other name forwarded to `upstream` (as CoreDNS's forward plugin does
/// to the node's resolv.conf). An upstream where nothing listens makes it fail external names
/// only.
pub fn unbound_forwarding(
    lab: &mut Lab,
    ns: &Netns,
    ip: Ipv4Addr,
    dir: &Path,
    records: &[(&str, &str)],
    upstream: std::net::SocketAddrV4,
) -> Result<()> {
    let dir = dir_for(dir, &format!("unbound-{ip}"))?;
    let d = dir.display();
    let local: String = records
        .iter()
        .map(|(name, address)| format!("  local-data: \"{name}.{ZONE}. 30 IN A {address}\"\n"))
        .collect();
    write(
        &dir.join("unbound.conf"),
        &format!(
            "server:\n  interface: {ip}\n  port: 53\n  access-control: 0.0.0.0/0 allow\n  username: \"\"\n  chroot: \"\"\n  \
             directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  do-ip6: no\n  use-syslog: no\n  logfile: \"{d}/unbound.log\"\n  \
             do-not-query-localhost: no\n  local-zone: \"{ZONE}.\" static\n{local}\
             forward-zone:\n  name: \".\"\n  forward-addr: {}@{}\nremote-control:\n  control-enable: no\n",
            upstream.ip(),
            upstream.port()
        ),
    )?;
    let conf = dir.join("unbound.conf");
    start(lab, ns, ip, &["unbound", "-d", "-c", conf.to_str().unwrap_or_default()])
}

/// dnsdist on `ip` in front of `backend` (as a Service's load balancer in front of the pods),
/// with `rules` (Lua) added to its configuration: `setACL({"0.0.0.0/0"})` to let the lab's
/// addresses in (its default ACL admits only private ranges), `addAction(MaxQPSIPRule(5),
/// DropAction())` for a rate limiter.
pub fn dnsdist(
    lab: &mut Lab,
    ns: &Netns,
    ip: Ipv4Addr,
    dir: &Path,
    backend: Ipv4Addr,
    rules: &str,
) -> Result<()> {
    let dir = dir_for(dir, &format!("dnsdist-{ip}"))?;
    write(
        &dir.join("dnsdist.conf"),
        &format!(
            "setLocal(\"{ip}:53\")\nsetSecurityPollSuffix(\"\")\nnewServer({{address=\"{backend}:53\"}})\n{rules}\n"
        ),
    )?;
    let conf = dir.join("dnsdist.conf");
    start(
        lab,
        ns,
        ip,
        &["dnsdist", "--supervised", "--disable-syslog", "-C", conf.to_str().unwrap_or_default()],
    )
}

/// Knot Resolver on `ip`, forwarding every question to `upstream` (as CoreDNS forwards).
pub fn kresd_forwarder(
    lab: &mut Lab,
    ns: &Netns,
    ip: Ipv4Addr,
    dir: &Path,
    upstream: Ipv4Addr,
) -> Result<()> {
    let dir = dir_for(dir, &format!("kresd-{ip}"))?;
    write(
        &dir.join("kresd.conf"),
        &format!(
            "net.listen('{ip}', 53, {{ kind = 'dns' }})\nmodules.unload('ta_update')\nmodules.unload('priming')\n\
             trust_anchors.remove('.')\npolicy.add(policy.all(policy.FORWARD('{upstream}')))\ncache.size = 1 * MB\n"
        ),
    )?;
    let conf = dir.join("kresd.conf");
    let rundir = dir.to_str().unwrap_or_default().to_string();
    start(lab, ns, ip, &["kresd", "-n", "-c", conf.to_str().unwrap_or_default(), &rundir])
}

/// A CoreDNS stand-in answering `name` with `answer` on `ip`:53: dnsmasq (UDP and TCP), or
/// netprobe's own UDP responder where dnsmasq is not installed (returned: it stops when dropped).
pub fn stand_in(
    lab: &mut Lab,
    ns: &Netns,
    ip: Ipv4Addr,
    name: &str,
    answer: Ipv4Addr,
) -> Result<Option<NsThread>> {
    if !crate::on_path("dnsmasq") {
        return dns_responder::serve(ns, ip, name, answer).map(Some);
    }
    let listen = format!("--listen-address={ip}");
    let address = format!("--address=/{}/{answer}", name.trim_end_matches('.'));
    // dnsmasq's standard error goes to a file, so that a stand-in that never listens says why.
    let log = std::env::temp_dir().join(format!("{}-dnsmasq-{ip}.log", ns.name));
    let stderr =
        std::fs::File::create(&log).map_err(|e| LabError(format!("creating {}: {e}", log.display())))?;
    let pid = lab.spawn_with_stderr(
        ns,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--bind-interfaces",
            &listen,
            &address,
        ],
        stderr,
    )?;
    // Generous (on a loaded machine a process can take seconds to start), but no longer than
    // dnsmasq lives.
    let mut listening = ns.wait_listening("udp", 53, Duration::from_secs(1));
    for _ in 0..20 {
        if listening.is_ok() || lab.exited(pid).is_some() {
            break;
        }
        listening = ns.wait_listening("udp", 53, Duration::from_secs(1));
    }
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    listening.map_err(|LabError(why)| {
        let status = lab.exited(pid).map_or("still running".to_string(), |s| s.to_string());
        LabError(format!("{why}: dnsmasq {status}, it said: {}", said.trim()))
    })?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stand_in_that_cannot_listen_says_what_dnsmasq_said() {
        if !crate::on_path("dnsmasq") {
            return crate::skip("stand-in diagnostics", "dnsmasq is not installed");
        }
        let Some(mut lab) = crate::lab_or_skip("stand-in diagnostics") else { return };
        let pod = lab.host("pod").unwrap();
        // 192.0.2.99 is not on any of the pod's interfaces: dnsmasq cannot bind it and exits.
        let stood =
            stand_in(&mut lab, &pod, "192.0.2.99".parse().unwrap(), "x.test.", "192.0.2.1".parse().unwrap());
        let Err(err) = stood else { panic!("dnsmasq listened on an address the pod does not have") };
        let err = err.to_string();
        assert!(err.contains("nothing listens on udp port 53"), "{err}");
        assert!(err.contains("dnsmasq exit status"), "it says dnsmasq is gone: {err}");
        assert!(err.contains("192.0.2.99") && err.contains("it said: "), "{err}");
    }
}
