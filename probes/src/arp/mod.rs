//! `netprobe arp`: every MAC that answers ARP for an address (a MetalLB layer-2 VIP), live or from
//! a capture file.
//!
//! Live, requests always go out as broadcast (a speaker that only sees unicast re-checks would hide)
//! and the capture keeps listening until the deadline, so late answerers count too. The same
//! [`tally::Tally`] reads live frames and capture files, so both give the same verdict.

mod report;
mod tally;
pub mod watch;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

pub use report::{ArpReport, NodeAddress, Responder, RttMs, Verdict};
pub use tally::Tally;

use crate::net::capture::LiveCapture;
use crate::net::{capture_file, interface};
use crate::wire::arp::{self, ArpFrame};
use crate::wire::MacAddr;
use crate::{Error, Result};

/// A node name and its IP, from `--node NAME=IP`: responders sharing the node's MAC get its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
}

/// The MACs seen answering for each `--node` IP, shared by the one-shot probe and `--watch`.
#[derive(Clone, Debug, Default)]
pub struct NodeMacs(Vec<(Node, Vec<MacAddr>)>);

impl NodeMacs {
    pub fn new(nodes: Vec<Node>) -> NodeMacs {
        NodeMacs(nodes.into_iter().map(|n| (n, Vec::new())).collect())
    }

    /// Records the sender of an ARP reply for a node's IP.
    pub fn learn(&mut self, frame: &ArpFrame) {
        if frame.op != arp::Op::Reply || frame.is_gratuitous() {
            return;
        }
        for (_, macs) in self.0.iter_mut().filter(|(n, _)| n.ip == frame.sender_ip) {
            if !macs.contains(&frame.sender_mac) {
                macs.push(frame.sender_mac);
            }
        }
    }

    /// Whether some MAC has answered for the node at `ip`.
    pub fn resolved(&self, ip: Ipv4Addr) -> bool {
        self.0.iter().any(|(n, macs)| n.ip == ip && !macs.is_empty())
    }

    /// The name of the node whose MAC `mac` is.
    pub fn name_of(&self, mac: MacAddr) -> Option<String> {
        self.0.iter().find(|(_, macs)| macs.contains(&mac)).map(|(n, _)| n.name.clone())
    }

    pub fn into_addresses(self) -> Vec<NodeAddress> {
        self.0.into_iter().map(|(node, macs)| NodeAddress { name: node.name, ip: node.ip, macs }).collect()
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub target: Ipv4Addr,
    /// `None`: the interface of the route to `target`.
    pub interface: Option<String>,
    pub count: u32,
    pub interval: Duration,
    /// How long to keep listening after the last request.
    pub wait: Duration,
    /// `None`: the interface's first IPv4 address.
    pub source: Option<Ipv4Addr>,
    pub nodes: Vec<Node>,
}

impl Config {
    pub fn new(target: Ipv4Addr) -> Config {
        Config {
            target,
            interface: None,
            count: 3,
            interval: Duration::from_millis(200),
            wait: Duration::from_secs(1),
            source: None,
            nodes: Vec::new(),
        }
    }
}

/// Probes live: `count` broadcast requests for the target (and one per unresolved node each round),
/// then listens until `wait` after the last.
pub fn probe(config: &Config) -> Result<ArpReport> {
    if config.count == 0 {
        return Err(Error::invalid("--count 0", "send at least one request"));
    }
    let (name, mac, source) = probe_endpoint(config.interface.as_deref(), config.target, config.source)?;

    // Filter first, then send: nothing can answer before we listen.
    let mut capture = LiveCapture::open(&name, "arp")?;
    let mut tally = Tally::new(config.target, config.nodes.clone(), false);
    let start = Instant::now();
    let mut last_send = start;
    for round in 0..config.count {
        let send_at = start + config.interval * round;
        drain(&mut capture, &mut tally, send_at)?;
        last_send = Instant::now();
        let at = capture.send(&arp::request(mac, source, config.target))?;
        tally.request_sent(at);
        for node in config.nodes.iter().filter(|n| !tally.nodes().resolved(n.ip)) {
            capture.send(&arp::request(mac, source, node.ip))?;
        }
    }
    drain(&mut capture, &mut tally, last_send + config.wait)?;

    let mut report = tally.finish();
    report.interface = Some(name);
    report.source_ip = Some(source);
    Ok(report)
}

/// The interface to probe on (given, or the route's), its MAC, and the source address (given, or
/// the interface's first IPv4 address).
fn probe_endpoint(
    interface: Option<&str>,
    target: Ipv4Addr,
    source: Option<Ipv4Addr>,
) -> Result<(String, MacAddr, Ipv4Addr)> {
    let name = match interface {
        Some(name) => name.to_string(),
        None => interface::for_route_to(target)?,
    };
    let iface = interface::lookup(&name)?;
    let mac = iface.mac.filter(|m| *m != MacAddr::ZERO).ok_or_else(|| {
        Error::could_not_run(
            format!("probing ARP on {name}"),
            "it has no Ethernet address: pick another with -i",
        )
    })?;
    let source = source.or_else(|| iface.ipv4.first().copied()).ok_or_else(|| {
        Error::could_not_run(
            format!("probing ARP on {name}"),
            "it has no IPv4 address to ask from: give one with -s/--source",
        )
    })?;
    Ok((name, mac, source))
}

/// Reads a pcap or pcapng capture (Ethernet, Linux SLL or SLL2) of an ARP exchange and gives the
/// same report as a live probe. Requests for the target in the capture count as `sent`.
pub fn from_capture(path: &Path, target: Ipv4Addr, nodes: Vec<Node>) -> Result<ArpReport> {
    let mut tally = Tally::new(target, nodes, true);
    capture_file::for_each_frame(path, |frame| {
        if let Some(arp) = ArpFrame::from_link(frame.link, &frame.data) {
            tally.observe(frame.at, &arp);
        }
    })?;
    let mut report = tally.finish();
    report.capture_file = Some(path.display().to_string());
    Ok(report)
}

fn drain(capture: &mut LiveCapture, tally: &mut Tally, until: Instant) -> Result<()> {
    while let Some(frame) = capture.next_before(until)? {
        if let Some(arp) = ArpFrame::from_link(frame.link, &frame.data) {
            tally.observe(frame.at, &arp);
        }
    }
    Ok(())
}
