//! `netprobe arp --watch`: who owns the VIP over time. A broadcast request every interval, every ARP
//! frame about the VIP in between (gratuitous ones from a new leader included), and optionally a TCP
//! connect to a service on the VIP each interval, to tie stalls to changes of owner.
//!
//! [`Watcher`] is the pure state machine; [`watch_live`] and [`watch_capture`] feed it.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::Serialize;

use super::{Node, NodeMacs};
use crate::net::capture::LiveCapture;
use crate::net::{capture_file, now_since_epoch, signal};
use crate::wire::arp::{self, ArpFrame, Op};
use crate::wire::MacAddr;
use crate::{round3, Error, Result};

/// An unanswered request this old when a gratuitous ARP arrives means nobody owned the VIP in
/// between (on a LAN answers take milliseconds).
const REPLY_GRACE: Duration = Duration::from_millis(150);

/// Connect-time spikes are counted as correlated when they start this close to an owner change.
const CORRELATION_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum WatchEvent {
    /// The VIP moved from one MAC to another (not emitted for the first owner).
    OwnerChange {
        at: String,
        from: MacAddr,
        to: MacAddr,
        from_node: Option<String>,
        to_node: Option<String>,
        seen_in: &'static str,
    },
    /// A gratuitous ARP for the VIP (a takeover announcement).
    Gratuitous {
        at: String,
        mac: MacAddr,
        node: Option<String>,
    },
    /// More than one MAC answered within one interval.
    DuplicateStart {
        at: String,
        macs: Vec<MacAddr>,
    },
    DuplicateEnd {
        at: String,
    },
    /// An interval without any answer.
    NoReplyStart {
        at: String,
    },
    NoReplyEnd {
        at: String,
    },
    /// A TCP connect much slower than usual, or failed.
    TcpSpike {
        at: String,
        target: String,
        connect_ms: Option<f64>,
        error: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WatchSummary {
    /// Always "summary": the last NDJSON line.
    pub event: &'static str,
    pub target: Ipv4Addr,
    pub duration_s: f64,
    pub probes: u32,
    /// Every owner with how long it held the VIP, in order of first ownership.
    pub owners: Vec<OwnerTime>,
    pub owner_changes: u32,
    /// The mean time between owner changes when they repeat regularly, else `None`.
    pub period_s: Option<f64>,
    pub longest_no_owner_s: f64,
    pub duplicate_intervals: u32,
    pub tcp: Option<TcpSummary>,
    /// `stable` (one owner all along) or `unstable`.
    pub verdict: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OwnerTime {
    pub mac: MacAddr,
    pub node: Option<String>,
    pub held_s: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcpSummary {
    pub target: String,
    pub probes: u32,
    pub failures: u32,
    /// Slow connects and failures.
    pub spikes: u32,
    pub correlated_with_owner_change: u32,
}

/// Wall-clock time as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(at: Duration) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + at).to_string()
}

pub struct Watcher {
    target: Ipv4Addr,
    nodes: NodeMacs,
    events: Vec<WatchEvent>,
    start: Option<Duration>,
    last_seen: Duration,
    probes: u32,
    /// MACs that answered since the last request, with their first reply's time; `None` before
    /// the first request.
    window: Option<Vec<(MacAddr, Duration)>>,
    /// The open window's earlier answers were already judged (at a gratuitous ARP): an empty rest
    /// of the interval is not a no-reply.
    window_judged: bool,
    /// When the open window's request went out.
    window_start: Duration,
    /// The current (or, during a gap, the last) owner, and whether it is answering now.
    owner: Option<MacAddr>,
    holding_since: Option<Duration>,
    held: Vec<(MacAddr, Duration)>,
    no_owner_since: Option<Duration>,
    ever_without_owner: bool,
    longest_no_owner: Duration,
    duplicate: bool,
    duplicate_intervals: u32,
    changes: Vec<Duration>,
    tcp: Option<TcpTally>,
}

struct TcpTally {
    target: String,
    probes: u32,
    failures: u32,
    spikes: Vec<Duration>,
    recent_ms: Vec<f64>,
}

impl Watcher {
    pub fn new(target: Ipv4Addr, nodes: Vec<Node>, tcp_target: Option<String>) -> Watcher {
        Watcher {
            target,
            nodes: NodeMacs::new(nodes),
            events: Vec::new(),
            start: None,
            last_seen: Duration::ZERO,
            probes: 0,
            window: None,
            window_judged: false,
            window_start: Duration::ZERO,
            owner: None,
            holding_since: None,
            held: Vec::new(),
            no_owner_since: None,
            ever_without_owner: false,
            longest_no_owner: Duration::ZERO,
            duplicate: false,
            duplicate_intervals: 0,
            changes: Vec::new(),
            tcp: tcp_target.map(|target| TcpTally {
                target,
                probes: 0,
                failures: 0,
                spikes: Vec::new(),
                recent_ms: Vec::new(),
            }),
        }
    }

    /// Events produced since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<WatchEvent> {
        std::mem::take(&mut self.events)
    }

    fn seen(&mut self, at: Duration) {
        self.start.get_or_insert(at);
        self.last_seen = self.last_seen.max(at);
    }

    fn node_of(&self, mac: MacAddr) -> Option<String> {
        self.nodes.name_of(mac)
    }

    /// What is known of the `--node` MACs so far.
    pub fn nodes(&self) -> &NodeMacs {
        &self.nodes
    }

    /// A request for the VIP went out at `at`: the previous interval is judged.
    pub fn probe_sent(&mut self, at: Duration) {
        self.seen(at);
        if let Some(window) = self.window.take() {
            if !(self.window_judged && window.is_empty()) {
                self.judge_window(at, window);
            }
        }
        self.window = Some(Vec::new());
        self.window_judged = false;
        self.window_start = at;
        self.probes += 1;
    }

    fn judge_window(&mut self, at: Duration, window: Vec<(MacAddr, Duration)>) {
        match window.len() {
            0 => {
                // Nobody owned the VIP since the unanswered request went out.
                let since = self.window_start.min(at);
                if self.no_owner_since.is_none() {
                    self.stop_holding(since);
                    self.no_owner_since = Some(since);
                    self.ever_without_owner = true;
                    self.events.push(WatchEvent::NoReplyStart { at: rfc3339(since) });
                }
            }
            1 => {
                if self.duplicate {
                    self.duplicate = false;
                    self.events.push(WatchEvent::DuplicateEnd { at: rfc3339(at) });
                }
                let (mac, first_reply) = window[0];
                self.answered_by(first_reply, mac, "reply");
            }
            _ => {
                self.end_no_reply(at);
                self.duplicate_intervals += 1;
                if !self.duplicate {
                    self.duplicate = true;
                    let macs = window.iter().map(|(mac, _)| *mac).collect();
                    self.events.push(WatchEvent::DuplicateStart { at: rfc3339(at), macs });
                }
            }
        }
    }

    fn stop_holding(&mut self, at: Duration) {
        if let (Some(owner), Some(since)) = (self.owner, self.holding_since.take()) {
            let held = at.saturating_sub(since);
            match self.held.iter_mut().find(|(mac, _)| *mac == owner) {
                Some((_, total)) => *total += held,
                None => self.held.push((owner, held)),
            }
        }
    }

    fn end_no_reply(&mut self, at: Duration) {
        if let Some(since) = self.no_owner_since.take() {
            self.longest_no_owner = self.longest_no_owner.max(at.saturating_sub(since));
            self.events.push(WatchEvent::NoReplyEnd { at: rfc3339(at) });
        }
    }

    /// `mac` answers for the VIP at `at`: it is the owner from now on.
    fn answered_by(&mut self, at: Duration, mac: MacAddr, seen_in: &'static str) {
        self.end_no_reply(at);
        match self.owner {
            Some(owner) if owner == mac => {
                self.holding_since.get_or_insert(at);
            }
            previous => {
                self.stop_holding(at);
                if let Some(from) = previous {
                    self.changes.push(at);
                    self.events.push(WatchEvent::OwnerChange {
                        at: rfc3339(at),
                        from,
                        to: mac,
                        from_node: self.node_of(from),
                        to_node: self.node_of(mac),
                        seen_in,
                    });
                }
                self.owner = Some(mac);
                self.holding_since = Some(at);
                if !self.held.iter().any(|(m, _)| *m == mac) {
                    self.held.push((mac, Duration::ZERO));
                }
            }
        }
    }

    /// Any ARP frame seen at `at`, in time order.
    pub fn observe(&mut self, at: Duration, frame: &ArpFrame) {
        self.nodes.learn(frame);
        if frame.sender_ip == self.target
            && frame.is_gratuitous()
            && matches!(frame.op, Op::Request | Op::Reply)
        {
            self.seen(at);
            let mac = frame.sender_mac;
            // Answers that came before the announcement are judged first, so events stay in order.
            let unanswered_for = at.saturating_sub(self.window_start);
            if let Some(window) = self
                .window
                .as_mut()
                .filter(|w| !w.is_empty() || unanswered_for >= REPLY_GRACE)
                .map(std::mem::take)
            {
                self.judge_window(at, window);
            }
            self.window_judged = self.window.is_some();
            self.events.push(WatchEvent::Gratuitous { at: rfc3339(at), mac, node: self.node_of(mac) });
            // A takeover is reported at once, not at the next request.
            self.answered_by(at, mac, "gratuitous");
            return;
        }
        if frame.op != Op::Reply {
            return;
        }
        if frame.sender_ip == self.target {
            self.seen(at);
            if let Some(window) = &mut self.window {
                if !window.iter().any(|(mac, _)| *mac == frame.sender_mac) {
                    window.push((frame.sender_mac, at));
                }
            }
        }
    }

    /// A TCP connect that started at `at` took `result` (or failed).
    pub fn tcp_result(&mut self, at: Duration, result: std::result::Result<Duration, String>) {
        let Some(tcp) = &mut self.tcp else { return };
        tcp.probes += 1;
        let spike = match &result {
            Err(_) => {
                tcp.failures += 1;
                true
            }
            Ok(took) => {
                let ms = took.as_secs_f64() * 1000.0;
                // Slow: over three times the recent median and at least 100 ms more.
                let mut recent = tcp.recent_ms.clone();
                recent.sort_by(f64::total_cmp);
                let slow = recent.len() >= 3 && {
                    let median = recent[recent.len() / 2];
                    ms > (median * 3.0).max(median + 100.0)
                };
                tcp.recent_ms.push(ms);
                if tcp.recent_ms.len() > 20 {
                    tcp.recent_ms.remove(0);
                }
                slow
            }
        };
        if spike {
            tcp.spikes.push(at);
            let (connect_ms, error) = match result {
                Ok(took) => (Some(round3(took.as_secs_f64() * 1000.0)), None),
                Err(e) => (None, Some(e)),
            };
            let target = tcp.target.clone();
            self.events.push(WatchEvent::TcpSpike { at: rfc3339(at), target, connect_ms, error });
        }
    }

    /// The summary at `end`. An interval still open counts only if something answered in it.
    pub fn finish(mut self, end: Duration) -> WatchSummary {
        if let Some(window) = self.window.take().filter(|w| !w.is_empty()) {
            self.judge_window(end, window);
        }
        self.stop_holding(end);
        if let Some(since) = self.no_owner_since {
            self.longest_no_owner = self.longest_no_owner.max(end.saturating_sub(since));
        }
        let period_s = regular_period(&self.changes);
        let tcp = self.tcp.as_ref().map(|t| TcpSummary {
            target: t.target.clone(),
            probes: t.probes,
            failures: t.failures,
            spikes: t.spikes.len() as u32,
            correlated_with_owner_change: t
                .spikes
                .iter()
                .filter(|s| self.changes.iter().any(|c| c.abs_diff(**s) <= CORRELATION_WINDOW))
                .count() as u32,
        });
        let owners = self
            .held
            .iter()
            .map(|(mac, held)| OwnerTime {
                mac: *mac,
                node: self.node_of(*mac),
                held_s: round3(held.as_secs_f64()),
            })
            .collect();
        let stable = self.changes.is_empty()
            && self.duplicate_intervals == 0
            && !self.ever_without_owner
            && self.owner.is_some();
        WatchSummary {
            event: "summary",
            target: self.target,
            duration_s: round3(end.saturating_sub(self.start.unwrap_or(end)).as_secs_f64()),
            probes: self.probes,
            owners,
            owner_changes: self.changes.len() as u32,
            period_s,
            longest_no_owner_s: round3(self.longest_no_owner.as_secs_f64()),
            duplicate_intervals: self.duplicate_intervals,
            tcp,
            verdict: if stable { "stable" } else { "unstable" },
        }
    }

    pub fn last_seen(&self) -> Duration {
        self.last_seen
    }
}

/// The mean gap between changes when at least two gaps vary by less than a quarter of their mean.
fn regular_period(changes: &[Duration]) -> Option<f64> {
    if changes.len() < 3 {
        return None;
    }
    let gaps: Vec<f64> = changes.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let variance = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    (mean > 0.0 && variance.sqrt() / mean < 0.25).then(|| (mean * 10.0).round() / 10.0)
}

#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub target: Ipv4Addr,
    pub interface: Option<String>,
    pub interval: Duration,
    /// `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    pub source: Option<Ipv4Addr>,
    pub nodes: Vec<Node>,
    pub tcp: Option<SocketAddr>,
    pub tcp_timeout: Duration,
}

/// Watches live until `duration` or Ctrl-C, handing each event to `on_event` as it happens.
pub fn watch_live(config: &WatchConfig, mut on_event: impl FnMut(&WatchEvent)) -> Result<WatchSummary> {
    if config.interval.is_zero() {
        return Err(Error::invalid("--interval 0", "watching needs a pause between requests, e.g. 1s"));
    }
    let (name, mac, source) =
        super::probe_endpoint(config.interface.as_deref(), config.target, config.source)?;
    let mut capture = LiveCapture::open(&name, "arp")?;
    signal::catch_interrupts();
    let mut watcher = Watcher::new(config.target, config.nodes.clone(), config.tcp.map(|t| t.to_string()));
    let (tcp_tx, tcp_rx) = mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tcp_thread = config.tcp.map(|target| {
        let (interval, timeout, stop) = (config.interval, config.tcp_timeout, stop.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = now_since_epoch();
                let clock = Instant::now();
                let result = TcpStream::connect_timeout(&target, timeout)
                    .map(|_| clock.elapsed())
                    .map_err(|e| e.to_string());
                if tcp_tx.send((started, result)).is_err() {
                    break;
                }
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    });

    let begin = Instant::now();
    let mut next_probe = begin;
    let result = loop {
        let clock = Instant::now();
        if signal::interrupted() || config.duration.is_some_and(|d| clock >= begin + d) {
            break Ok(());
        }
        if clock >= next_probe {
            let at = match capture.send(&arp::request(mac, source, config.target)) {
                Ok(at) => at,
                Err(e) => break Err(e),
            };
            for node in config.nodes.iter().filter(|n| !watcher.nodes().resolved(n.ip)) {
                let _ = capture.send(&arp::request(mac, source, node.ip));
            }
            watcher.probe_sent(at);
            next_probe += config.interval;
        }
        while let Ok((at, result)) = tcp_rx.try_recv() {
            watcher.tcp_result(at, result);
        }
        // Short waits keep TCP results and Ctrl-C prompt.
        let until = next_probe.min(Instant::now() + Duration::from_millis(50));
        match capture.next_before(until) {
            Ok(Some(frame)) => {
                if let Some(arp) = ArpFrame::from_link(frame.link, &frame.data) {
                    watcher.observe(frame.at, &arp);
                }
            }
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        for event in watcher.take_events() {
            on_event(&event);
        }
    };
    let end = now_since_epoch();
    // The connect thread sees the flag (or the closed channel) after its current connect and ends
    // by itself; waiting for it could add a whole connect timeout to the run.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop((tcp_rx, tcp_thread));
    result?;
    Ok(watcher.finish(end))
}

/// Replays a capture's timeline: each request for the VIP in it is one probe.
pub fn watch_capture(
    path: &Path,
    target: Ipv4Addr,
    nodes: Vec<Node>,
    mut on_event: impl FnMut(&WatchEvent),
) -> Result<WatchSummary> {
    let mut watcher = Watcher::new(target, nodes, None);
    capture_file::for_each_frame(path, |frame| {
        if let Some(arp) = ArpFrame::from_link(frame.link, &frame.data) {
            if arp.op == Op::Request && arp.target_ip == target && !arp.is_gratuitous() {
                watcher.probe_sent(frame.at);
            } else {
                watcher.observe(frame.at, &arp);
            }
            for event in watcher.take_events() {
                on_event(&event);
            }
        }
    })?;
    let end = watcher.last_seen();
    let summary = watcher.finish(end);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::arp::{reply, request};
    use crate::wire::link::LinkType;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const ME: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
    const A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xb]);

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(1_800_000_000.0 + secs)
    }

    fn frame(bytes: &[u8]) -> ArpFrame {
        ArpFrame::from_link(LinkType::Ethernet, bytes).unwrap()
    }

    fn answer(w: &mut Watcher, at: f64, mac: MacAddr) {
        w.observe(s(at), &frame(&reply(mac, VIP, ME, CLIENT)));
    }

    fn names(events: &[WatchEvent]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                WatchEvent::OwnerChange { .. } => "owner-change",
                WatchEvent::Gratuitous { .. } => "gratuitous",
                WatchEvent::DuplicateStart { .. } => "duplicate-start",
                WatchEvent::DuplicateEnd { .. } => "duplicate-end",
                WatchEvent::NoReplyStart { .. } => "no-reply-start",
                WatchEvent::NoReplyEnd { .. } => "no-reply-end",
                WatchEvent::TcpSpike { .. } => "tcp-spike",
            })
            .collect()
    }

    #[test]
    fn one_owner_all_along_is_stable_with_no_events() {
        let mut w = Watcher::new(VIP, vec![], None);
        for i in 0..5 {
            w.probe_sent(s(i as f64));
            answer(&mut w, i as f64 + 0.001, A);
        }
        assert!(w.take_events().is_empty(), "the first owner is not a change");
        let summary = w.finish(s(5.0));
        assert_eq!(summary.verdict, "stable");
        assert_eq!(summary.owners, vec![OwnerTime { mac: A, node: None, held_s: 4.999 }]);
        assert_eq!(summary.probes, 5);
    }

    #[test]
    fn a_gap_is_no_reply_and_the_change_comes_with_the_gratuitous_arp() {
        let mut w = Watcher::new(VIP, vec![], None);
        w.probe_sent(s(0.0));
        answer(&mut w, 0.001, A);
        w.probe_sent(s(1.0)); // nobody answers this one
        w.probe_sent(s(2.0));
        w.observe(s(2.5), &frame(&request(B, VIP, VIP)));
        let events = w.take_events();
        assert_eq!(names(&events), vec!["no-reply-start", "gratuitous", "no-reply-end", "owner-change"]);
        match &events[3] {
            WatchEvent::OwnerChange { from, to, seen_in, .. } => {
                assert_eq!((*from, *to, *seen_in), (A, B, "gratuitous"))
            }
            other => panic!("{other:?}"),
        }
        let summary = w.finish(s(3.0));
        assert_eq!(summary.owner_changes, 1);
        assert_eq!(summary.longest_no_owner_s, 1.5, "from the first unanswered request to the announcement");
        assert_eq!(summary.verdict, "unstable");
    }

    #[test]
    fn a_takeover_mid_interval_is_not_followed_by_a_false_no_reply() {
        let mut w = Watcher::new(VIP, vec![], None);
        w.probe_sent(s(0.0));
        answer(&mut w, 0.001, A);
        w.probe_sent(s(1.0));
        answer(&mut w, 1.001, A);
        w.observe(s(1.5), &frame(&request(B, VIP, VIP))); // B takes over; nobody answers the 1 s probe again
        w.probe_sent(s(2.0));
        answer(&mut w, 2.001, B);
        w.probe_sent(s(3.0));
        assert_eq!(names(&w.take_events()), vec!["gratuitous", "owner-change"]);
    }

    #[test]
    fn two_macs_in_one_interval_are_a_duplicate_until_one_is_left() {
        let mut w = Watcher::new(VIP, vec![], None);
        w.probe_sent(s(0.0));
        answer(&mut w, 0.001, A);
        answer(&mut w, 0.002, B);
        w.probe_sent(s(1.0));
        answer(&mut w, 1.001, A);
        w.probe_sent(s(2.0));
        assert_eq!(names(&w.take_events()), vec!["duplicate-start", "duplicate-end"]);
        assert_eq!(w.finish(s(2.0)).duplicate_intervals, 1);
    }

    #[test]
    fn regular_changes_have_a_period_and_stalls_near_them_correlate() {
        let mut w = Watcher::new(VIP, vec![], Some("192.0.2.100:80".into()));
        let mut owner = A;
        w.probe_sent(s(0.0));
        answer(&mut w, 0.001, owner);
        for k in 1..=4 {
            owner = if owner == A { B } else { A };
            w.observe(s(3.0 * k as f64), &frame(&request(owner, VIP, VIP)));
        }
        for i in 0..10 {
            w.tcp_result(s(i as f64 + 0.5), Ok(Duration::from_millis(1)));
        }
        w.tcp_result(s(5.5), Ok(Duration::from_millis(1000))); // 0.5 s before the change at 6 s
        w.tcp_result(s(10.5), Err("timed out".into())); // 1.5 s from the change at 12 s
        w.tcp_result(s(13.9), Err("refused".into())); // 1.9 s from 12 s
        let summary = w.finish(s(14.0));
        assert_eq!(summary.owner_changes, 4);
        assert_eq!(summary.period_s, Some(3.0));
        let tcp = summary.tcp.unwrap();
        assert_eq!((tcp.probes, tcp.failures, tcp.spikes, tcp.correlated_with_owner_change), (13, 2, 3, 3));
        assert_eq!(regular_period(&[s(0.0), s(1.0), s(5.0)]), None, "irregular gaps have no period");
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(Duration::from_millis(1_795_435_200_123)), "2026-11-23T12:00:00.123Z");
    }
}
