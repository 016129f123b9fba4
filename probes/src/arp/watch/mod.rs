//! `netprobe arp --watch`: who owns the VIP over time. A broadcast request every interval, every ARP
//! frame about the VIP in between (gratuitous ones from a new leader included), and optionally a TCP
//! connect to a service on the VIP each interval, to tie stalls to changes of owner.
//!
//! [`Watcher`] is the pure state machine; [`watch_on`] (any link and clock, [`watch_live`] on the
//! real ones) and [`watch_capture`] feed it.

mod report;
#[cfg(test)]
mod tests;
mod watcher;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::Node;
use crate::net::capture::LiveCapture;
use crate::net::tcp_connect::{ConnectLoop, ConnectTimer};
use crate::net::{capture_file, signal, Clock, Link, SystemClock};
use crate::wire::neighbour::{NeighbourFrame, Op};
use crate::wire::MacAddr;
use crate::{Error, Result};

pub use report::*;
pub use watcher::Watcher;

#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub target: IpAddr,
    pub interface: Option<String>,
    pub interval: Duration,
    /// `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    pub source: Option<IpAddr>,
    pub nodes: Vec<Node>,
    pub tcp: Option<SocketAddr>,
    pub tcp_timeout: Duration,
}

/// Watches live until `duration` or Ctrl-C, handing each event to `on_event` as it happens.
pub fn watch_live(config: &WatchConfig, on_event: impl FnMut(&WatchEvent)) -> Result<WatchSummary> {
    if config.interval.is_zero() {
        return Err(Error::invalid("--interval 0", "watching needs a pause between requests, e.g. 1s"));
    }
    let (name, mac, source) =
        super::link::probe_endpoint(config.interface.as_deref(), config.target, config.source)?;
    let mut capture = LiveCapture::open(&name, super::link::capture_filter(config.target))?;
    signal::catch_interrupts();
    let mut tcp = config.tcp.map(|target| ConnectLoop::start(target, config.interval, config.tcp_timeout));
    let tcp = tcp.as_mut().map(|t| t as &mut dyn ConnectTimer);
    watch_on(&mut capture, &SystemClock, config, mac, source, signal::interrupted, tcp, on_event)
}

/// The watch loop on any [`Link`] and [`Clock`]: a request every interval, every frame observed,
/// connect results folded in, until `duration` has passed or `stop()` says so.
#[allow(clippy::too_many_arguments)]
pub fn watch_on(
    link: &mut impl Link,
    clock: &impl Clock,
    config: &WatchConfig,
    mac: MacAddr,
    source: IpAddr,
    stop: impl Fn() -> bool,
    mut tcp: Option<&mut dyn ConnectTimer>,
    mut on_event: impl FnMut(&WatchEvent),
) -> Result<WatchSummary> {
    let mut watcher = Watcher::new(config.target, config.nodes.clone(), config.tcp.map(|t| t.to_string()));
    let begin = clock.now();
    let end =
        config.duration.map(|d| begin.checked_add(d).ok_or_else(|| Error::invalid("--duration", "too long")));
    let end = end.transpose()?;
    let mut next_probe = begin;
    loop {
        let now = clock.now();
        if stop() || end.is_some_and(|end| now >= end) {
            break;
        }
        if now >= next_probe {
            let at = link.send(&super::link::ask(mac, source, config.target)?)?;
            for node in config.nodes.iter().filter(|n| !watcher.nodes().resolved(n.ip)) {
                link.send(&super::link::ask(mac, source, node.ip)?)?;
            }
            watcher.probe_sent(at);
            next_probe = next_probe
                .checked_add(config.interval)
                .ok_or_else(|| Error::invalid("--interval", "too long"))?;
        }
        if let Some(tcp) = tcp.as_deref_mut() {
            for (at, result) in tcp.finished() {
                watcher.tcp_result(at, result);
            }
        }
        // Short waits keep connect results and Ctrl-C prompt.
        let mut until = next_probe.min(clock.now() + Duration::from_millis(50));
        if let Some(end) = end {
            until = until.min(end);
        }
        if let Some(frame) = link.next_before(until)? {
            if let Some(arp) = NeighbourFrame::from_link(frame.link, &frame.data) {
                watcher.observe(frame.at, &arp);
            }
        }
        for event in watcher.take_events() {
            on_event(&event);
        }
    }
    let (events, summary) = watcher.end(clock.wall());
    for event in events {
        on_event(&event);
    }
    Ok(summary)
}

/// Replays a capture's timeline. Each request for the VIP from a host that some reply in the
/// capture is addressed to is one probe; other hosts' requests are left out (their answers are not
/// in the capture, so their silence says nothing). Two passes over the file: askers, then events.
pub fn watch_capture(
    path: &Path,
    target: IpAddr,
    nodes: Vec<Node>,
    mut on_event: impl FnMut(&WatchEvent),
) -> Result<WatchSummary> {
    let mut visible: HashSet<IpAddr> = HashSet::new();
    let mut askers: HashSet<IpAddr> = HashSet::new();
    capture_file::for_each_frame(path, |frame| {
        if let Some(arp) = NeighbourFrame::from_link(frame.link, &frame.data) {
            if arp.op == Op::Reply && arp.sender_ip == target && !arp.is_gratuitous() {
                visible.insert(arp.target_ip);
            } else if is_probe_request(&arp, target) {
                askers.insert(arp.sender_ip);
            }
        }
    })?;
    let mut watcher = Watcher::new(target, nodes, None);
    let mut left_out = 0u64;
    let file = capture_file::for_each_frame(path, |frame| {
        if let Some(arp) = NeighbourFrame::from_link(frame.link, &frame.data) {
            if is_probe_request(&arp, target) {
                if visible.contains(&arp.sender_ip) {
                    watcher.probe_sent(frame.at);
                } else {
                    left_out += 1;
                }
            } else {
                watcher.observe(frame.at, &arp);
            }
            for event in watcher.take_events() {
                on_event(&event);
            }
        }
    })?;
    let end = watcher.last_seen();
    let (events, mut summary) = watcher.end(end);
    for event in events {
        on_event(&event);
    }
    if left_out > 0 {
        let hosts = askers.difference(&visible).count();
        summary.notes.push(format!(
            "{left_out} request(s) for {target} from {hosts} host(s) whose replies this capture does not show were left out"
        ));
    }
    summary.notes.extend(file.notes);
    Ok(summary)
}

/// A request for `target` from a host with an address (not an announcement, not an RFC 5227 probe).
fn is_probe_request(arp: &NeighbourFrame, target: IpAddr) -> bool {
    arp.op == Op::Request
        && arp.target_ip == target
        && !arp.is_gratuitous()
        && !arp.sender_ip.is_unspecified()
}
