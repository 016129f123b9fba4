//! `netprobe arp --watch`: who owns the VIP over time. A broadcast request every interval, every ARP
//! frame about the VIP in between (gratuitous ones from a new leader included), and optionally a TCP
//! connect to a service on the VIP each interval, to tie stalls to changes of owner.
//!
//! [`Watcher`] is the pure state machine; [`watch_on`] (any link and clock, [`watch_live`] on the
//! real ones) and [`watch_capture`] feed it.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::tally::is_announcement;
use super::{Node, NodeMacs};
use crate::net::capture::LiveCapture;
use crate::net::tcp_connect::{ConnectLoop, ConnectTimer};
use crate::net::{capture_file, signal, Clock, Link, SystemClock};
use crate::wire::neighbour::{NeighbourFrame, Op};
use crate::wire::MacAddr;
use crate::{round3, Error, Health, Result};

/// An unanswered request this old when a gratuitous ARP arrives means nobody owned the VIP in
/// between (on a LAN answers take milliseconds).
const REPLY_GRACE: Duration = Duration::from_millis(150);

/// An unanswered request is evidence that nobody owned the VIP for this long after it, at most:
/// an owner answers within milliseconds, and after that nobody was asking. A capture whose hosts
/// ask every few minutes shows short gaps, not minutes without an owner.
const ANSWER_WINDOW: Duration = Duration::from_secs(1);

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
        owners: Vec<Claimant>,
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

/// A MAC that claims the VIP, with its node when known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Claimant {
    pub mac: MacAddr,
    pub node: Option<String>,
}

/// How the VIP's ownership went over the whole watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchVerdict {
    /// One MAC owned it all along, answering every interval.
    Stable,
    /// The owner changed, or there were intervals without one.
    Unstable,
    /// More than one MAC claimed it at once.
    Duplicate,
    /// Nothing ever answered or announced it.
    NoReply,
}

impl WatchVerdict {
    pub fn health(self) -> Health {
        match self {
            WatchVerdict::Stable => Health::Ok,
            _ => Health::Fault,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WatchVerdict::Stable => "stable",
            WatchVerdict::Unstable => "unstable",
            WatchVerdict::Duplicate => "duplicate",
            WatchVerdict::NoReply => "no-reply",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WatchSummary {
    /// Always "summary": the last NDJSON line.
    pub event: &'static str,
    pub target: IpAddr,
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
    pub verdict: WatchVerdict,
    /// The verdict in one sentence.
    pub summary: String,
    /// What was left out of a replayed capture, and why.
    pub notes: Vec<String>,
}

impl WatchSummary {
    pub fn health(&self) -> Health {
        self.verdict.health()
    }
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

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z).
const RFC3339_MAX: Duration = Duration::new(253_402_300_799, 999_000_000);

/// Wall-clock time as RFC 3339 with milliseconds, UTC. A capture's timestamp past year 9999 (a
/// damaged or forged file) is written as seconds since the epoch instead.
pub fn rfc3339(at: Duration) -> String {
    if at > RFC3339_MAX {
        return format!("@{}.{:03}", at.as_secs(), at.subsec_millis());
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + at).to_string()
}

pub struct Watcher {
    target: IpAddr,
    nodes: NodeMacs,
    /// Events not handed out yet, with their times: handed out in time order once nothing earlier
    /// can come (a gap's start is known only when its request's interval is judged).
    events: Vec<(Duration, WatchEvent)>,
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
    /// Where the evidence of the open gap ends (the last unanswered request plus its answer window).
    no_owner_until: Duration,
    ever_without_owner: bool,
    longest_no_owner: Duration,
    duplicate: bool,
    duplicate_intervals: u32,
    changes: Vec<Duration>,
    tcp: Option<TcpTally>,
    /// Whether any MAC ever answered or announced the VIP.
    claimed: bool,
}

struct TcpTally {
    target: String,
    probes: u32,
    failures: u32,
    spikes: Vec<Duration>,
    recent_ms: Vec<f64>,
}

impl Watcher {
    pub fn new(target: IpAddr, nodes: Vec<Node>, tcp_target: Option<String>) -> Watcher {
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
            no_owner_until: Duration::ZERO,
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
            claimed: false,
        }
    }

    /// The events no later judgement can come before, in time order: those before the open
    /// interval's request (its silence is judged later, and dated then) and before an open gap
    /// (whose end is dated at most back to its evidence).
    pub fn take_events(&mut self) -> Vec<WatchEvent> {
        let open_window = self.window.as_ref().filter(|_| !self.window_judged).map(|_| self.window_start);
        let horizon = [open_window, self.no_owner_since].into_iter().flatten().min();
        self.events.sort_by_key(|(at, _)| *at);
        let settled = match horizon {
            Some(horizon) => self.events.partition_point(|(at, _)| *at < horizon),
            None => self.events.len(),
        };
        self.events.drain(..settled).map(|(_, event)| event).collect()
    }

    fn emit(&mut self, at: Duration, event: WatchEvent) {
        self.events.push((at, event));
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

    /// A request for the VIP went out at `at`: the previous interval is judged. Requests closer
    /// together than a reply takes (a burst from several hosts in a capture) share one interval.
    pub fn probe_sent(&mut self, at: Duration) {
        self.seen(at);
        self.probes += 1;
        if self.window.is_some() && at.saturating_sub(self.window_start) < REPLY_GRACE {
            return;
        }
        if let Some(window) = self.window.take() {
            if !(self.window_judged && window.is_empty()) {
                self.judge_window(at, window);
            }
        }
        self.window = Some(Vec::new());
        self.window_judged = false;
        self.window_start = at;
    }

    fn judge_window(&mut self, at: Duration, window: Vec<(MacAddr, Duration)>) {
        match window.len() {
            0 => {
                // Nobody owned the VIP since the unanswered request went out.
                let since = self.window_start.min(at);
                // An open gap whose evidence ended well before this request (nobody asked in
                // between) is closed there: two unanswered requests minutes apart are two short
                // gaps. Requests one after the other, nothing answered in between, are one gap.
                if self.no_owner_since.is_some() && since > self.no_owner_until.saturating_add(ANSWER_WINDOW)
                {
                    self.end_no_reply(self.no_owner_until);
                }
                let evidence = at.min(since.saturating_add(ANSWER_WINDOW));
                self.no_owner_until = self.no_owner_until.max(evidence);
                if self.no_owner_since.is_none() {
                    self.stop_holding(since);
                    self.no_owner_since = Some(since);
                    self.ever_without_owner = true;
                    self.emit(since, WatchEvent::NoReplyStart { at: rfc3339(since) });
                }
            }
            1 => {
                let (mac, first_reply) = window[0];
                // Dated when one owner was seen again: its answer.
                if self.duplicate {
                    self.duplicate = false;
                    self.emit(first_reply, WatchEvent::DuplicateEnd { at: rfc3339(first_reply) });
                }
                self.answered_by(first_reply, mac, "reply");
            }
            _ => {
                self.end_no_reply(at);
                self.duplicate_intervals += 1;
                // Every claimant holds the VIP for the interval; the single-owner clock pauses.
                let since = self.window_start.min(at);
                self.stop_holding(since);
                for (mac, _) in &window {
                    self.credit(*mac, at.saturating_sub(since));
                }
                if !self.duplicate {
                    self.duplicate = true;
                    let owners = window
                        .iter()
                        .map(|(mac, _)| Claimant { mac: *mac, node: self.node_of(*mac) })
                        .collect();
                    // Dated when the second claimant answered.
                    let seen = window[1].1;
                    self.emit(seen, WatchEvent::DuplicateStart { at: rfc3339(seen), owners });
                }
            }
        }
    }

    fn stop_holding(&mut self, at: Duration) {
        if let (Some(owner), Some(since)) = (self.owner, self.holding_since.take()) {
            self.credit(owner, at.saturating_sub(since));
        }
    }

    fn credit(&mut self, mac: MacAddr, held: Duration) {
        match self.held.iter_mut().find(|(m, _)| *m == mac) {
            Some((_, total)) => *total = total.saturating_add(held),
            None => self.held.push((mac, held)),
        }
    }

    /// The gap ends at `at`, or where its evidence ends if that is earlier.
    fn end_no_reply(&mut self, at: Duration) {
        if let Some(since) = self.no_owner_since.take() {
            let end = at.min(self.no_owner_until).max(since);
            self.longest_no_owner = self.longest_no_owner.max(end - since);
            self.emit(end, WatchEvent::NoReplyEnd { at: rfc3339(end) });
        }
    }

    /// `mac` answers for the VIP at `at`: it is the owner from now on.
    fn answered_by(&mut self, at: Duration, mac: MacAddr, seen_in: &'static str) {
        self.claimed = true;
        self.end_no_reply(at);
        match self.owner {
            Some(owner) if owner == mac => {
                self.holding_since.get_or_insert(at);
            }
            previous => {
                self.stop_holding(at);
                if let Some(from) = previous {
                    self.changes.push(at);
                    self.emit(
                        at,
                        WatchEvent::OwnerChange {
                            at: rfc3339(at),
                            from,
                            to: mac,
                            from_node: self.node_of(from),
                            to_node: self.node_of(mac),
                            seen_in,
                        },
                    );
                }
                self.owner = Some(mac);
                self.holding_since = Some(at);
                if !self.held.iter().any(|(m, _)| *m == mac) {
                    self.held.push((mac, Duration::ZERO));
                }
            }
        }
    }

    /// Any ARP frame seen at `at`, in time order (frames out of order are taken as they come;
    /// no arithmetic here can underflow on them).
    pub fn observe(&mut self, at: Duration, frame: &NeighbourFrame) {
        self.nodes.learn(frame);
        if is_announcement(frame, self.target) {
            self.seen(at);
            let mac = frame.sender_mac;
            // The open interval is judged once: here, when answers came before the announcement
            // or its request went unanswered (a takeover after a gap); never again at the next
            // announcement of the same burst, which would call an answered request a gap.
            if !self.window_judged {
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
            }
            // A gap ends at this claim, before the claim's own events.
            self.end_no_reply(at);
            self.emit(at, WatchEvent::Gratuitous { at: rfc3339(at), mac, node: self.node_of(mac) });
            // A takeover is reported at once, not at the next request.
            self.answered_by(at, mac, "gratuitous");
            return;
        }
        if frame.op != Op::Reply {
            return;
        }
        if frame.sender_ip == self.target {
            self.seen(at);
            self.claimed = true;
            // A reply before the first request (a capture that starts mid-exchange) opens the
            // first interval itself.
            if self.window.is_none() {
                self.window = Some(Vec::new());
                self.window_start = at;
            }
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
            self.emit(at, WatchEvent::TcpSpike { at: rfc3339(at), target, connect_ms, error });
        }
    }

    /// The summary at `end`. An interval still open counts only if something answered in it.
    pub fn finish(self, end: Duration) -> WatchSummary {
        self.end(end).1
    }

    /// The events not handed out yet, in time order, and the summary at `end`.
    pub fn end(mut self, end: Duration) -> (Vec<WatchEvent>, WatchSummary) {
        if let Some(window) = self.window.take().filter(|w| !w.is_empty()) {
            self.judge_window(end, window);
        }
        self.stop_holding(end);
        if let Some(since) = self.no_owner_since {
            let until = end.min(self.no_owner_until);
            self.longest_no_owner = self.longest_no_owner.max(until.saturating_sub(since));
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
        let verdict = if !self.claimed {
            WatchVerdict::NoReply
        } else if self.duplicate_intervals > 0 {
            WatchVerdict::Duplicate
        } else if !self.changes.is_empty() || self.ever_without_owner || self.owner.is_none() {
            WatchVerdict::Unstable
        } else {
            WatchVerdict::Stable
        };
        let duration = end.saturating_sub(self.start.unwrap_or(end));
        let summary = match verdict {
            WatchVerdict::NoReply if self.probes == 0 => {
                format!("no ARP for {} in this capture", self.target)
            }
            WatchVerdict::NoReply => {
                format!("nothing answered or announced {} in {} request(s)", self.target, self.probes)
            }
            _ => {
                let period = period_s.map(|p| format!(", every {p:.1} s")).unwrap_or_default();
                format!(
                    "{} owner change(s) in {:.1} s{period}; longest without an owner {:.1} s; {} interval(s) with duplicates",
                    self.changes.len(),
                    duration.as_secs_f64(),
                    self.longest_no_owner.as_secs_f64(),
                    self.duplicate_intervals
                )
            }
        };
        let summary = WatchSummary {
            event: "summary",
            target: self.target,
            duration_s: round3(duration.as_secs_f64()),
            probes: self.probes,
            owners,
            owner_changes: self.changes.len() as u32,
            period_s,
            longest_no_owner_s: round3(self.longest_no_owner.as_secs_f64()),
            duplicate_intervals: self.duplicate_intervals,
            tcp,
            verdict,
            summary,
            notes: Vec::new(),
        };
        self.events.sort_by_key(|(at, _)| *at);
        (self.events.into_iter().map(|(_, event)| event).collect(), summary)
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
    let gaps: Vec<f64> = changes.windows(2).map(|w| w[1].abs_diff(w[0]).as_secs_f64()).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let variance = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    (mean > 0.0 && variance.sqrt() / mean < 0.25).then(|| (mean * 10.0).round() / 10.0)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::arp::{reply, request};
    use crate::wire::link::LinkType;
    use std::net::Ipv4Addr;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const ME: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
    const A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xb]);

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(1_800_000_000.0 + secs)
    }

    fn frame(bytes: &[u8]) -> NeighbourFrame {
        NeighbourFrame::from_link(LinkType::Ethernet, bytes).unwrap()
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
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
        for i in 0..5 {
            w.probe_sent(s(i as f64));
            answer(&mut w, i as f64 + 0.001, A);
        }
        assert!(w.take_events().is_empty(), "the first owner is not a change");
        let summary = w.finish(s(5.0));
        assert_eq!(summary.verdict, WatchVerdict::Stable);
        assert_eq!(summary.owners, vec![OwnerTime { mac: A, node: None, held_s: 4.999 }]);
        assert_eq!(summary.probes, 5);
    }

    #[test]
    fn a_gap_is_no_reply_and_the_change_comes_with_the_gratuitous_arp() {
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
        w.probe_sent(s(0.0));
        answer(&mut w, 0.001, A);
        w.probe_sent(s(1.0)); // nobody answers this one
        w.probe_sent(s(2.0));
        w.observe(s(2.5), &frame(&request(B, VIP, VIP)));
        let events = w.take_events();
        // In time order: the gap ends as the announcement arrives, before the announcement's own events.
        assert_eq!(names(&events), vec!["no-reply-start", "no-reply-end", "gratuitous", "owner-change"]);
        match &events[3] {
            WatchEvent::OwnerChange { from, to, seen_in, .. } => {
                assert_eq!((*from, *to, *seen_in), (A, B, "gratuitous"))
            }
            other => panic!("{other:?}"),
        }
        let summary = w.finish(s(3.0));
        assert_eq!(summary.owner_changes, 1);
        assert_eq!(summary.longest_no_owner_s, 1.5, "from the first unanswered request to the announcement");
        assert_eq!(summary.verdict, WatchVerdict::Unstable);
    }

    #[test]
    fn a_burst_of_announcements_reopens_no_gap_and_events_come_in_time_order() {
        // keepalived's failover as --watch saw it: requests a second apart, the old owner gone
        // after 1 s, two unanswered requests, then the new owner's burst of five gratuitous ARPs
        // (and five more a second later), each answered request answered within 40 us.
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
        let mut events = Vec::new();
        w.probe_sent(s(0.0));
        answer(&mut w, 0.00004, A);
        for t in [1.0, 2.001] {
            w.probe_sent(s(t)); // nobody answers
            events.extend(w.take_events());
        }
        for burst in [2.6, 3.6] {
            if burst > 3.0 {
                w.probe_sent(s(3.0));
                answer(&mut w, 3.00004, B);
            }
            for i in 0..5 {
                w.observe(s(burst + f64::from(i) * 0.001), &frame(&request(B, VIP, VIP)));
                events.extend(w.take_events());
            }
        }
        w.probe_sent(s(4.0));
        answer(&mut w, 4.00004, B);
        let (rest, summary) = w.end(s(4.5));
        events.extend(rest);
        let shown = names(&events);
        assert_eq!(shown.iter().filter(|n| **n == "no-reply-start").count(), 1, "one gap: {shown:?}");
        assert_eq!(shown.iter().filter(|n| **n == "no-reply-end").count(), 1, "{shown:?}");
        assert_eq!(summary.longest_no_owner_s, 1.6, "from the first unanswered request to the takeover");
        let times: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap()["at"].as_str().unwrap().to_string())
            .collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted, "in time order: {events:?}");
    }

    #[test]
    fn a_takeover_mid_interval_is_not_followed_by_a_false_no_reply() {
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
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
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
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
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], Some("192.0.2.100:80".into()));
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
        assert_eq!(rfc3339(RFC3339_MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(Duration::new(253_402_300_800, 5_000_000)), "@253402300800.005");
        assert_eq!(rfc3339(Duration::MAX), format!("@{}.999", u64::MAX));
    }

    #[test]
    fn a_reply_before_the_first_request_counts() {
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
        answer(&mut w, 0.0, A); // the capture starts just after a request
        w.probe_sent(s(1.0));
        answer(&mut w, 1.001, A);
        let summary = w.finish(s(2.0));
        assert_eq!(summary.verdict, WatchVerdict::Stable);
        assert_eq!(summary.owners[0].mac, A);
    }

    #[test]
    fn a_permanent_duplicate_lists_both_owners_and_names_nodes() {
        let nodes =
            vec![Node { name: "node-b".into(), ip: std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 12)) }];
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), nodes, None);
        w.observe(s(0.0), &frame(&reply(B, Ipv4Addr::new(192, 0, 2, 12), ME, CLIENT)));
        for i in 0..4 {
            w.probe_sent(s(i as f64));
            answer(&mut w, i as f64 + 0.001, A);
            answer(&mut w, i as f64 + 0.002, B);
        }
        let events = w.take_events();
        match &events[..] {
            [WatchEvent::DuplicateStart { owners, .. }] => {
                assert_eq!(owners[1], Claimant { mac: B, node: Some("node-b".into()) })
            }
            other => panic!("{other:?}"),
        }
        let summary = w.finish(s(4.0));
        assert_eq!(summary.verdict, WatchVerdict::Duplicate);
        let owners: Vec<MacAddr> = summary.owners.iter().map(|o| o.mac).collect();
        assert_eq!(owners, vec![A, B]);
        assert!(summary.owners.iter().all(|o| o.held_s >= 3.0), "{:?}", summary.owners);
    }

    #[test]
    fn nothing_about_the_vip_is_no_reply_not_unstable() {
        let w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
        let summary = w.finish(s(0.0));
        assert_eq!(summary.verdict, WatchVerdict::NoReply);
        assert_eq!(summary.summary, "no ARP for 192.0.2.100 in this capture");
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
        w.probe_sent(s(0.0));
        w.probe_sent(s(1.0));
        assert_eq!(w.finish(s(2.0)).verdict, WatchVerdict::NoReply);
    }

    #[test]
    fn a_gap_lasts_only_as_long_as_its_evidence() {
        // A host that asks every 5 minutes; one request goes unanswered, later two in a row.
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
        for (i, answered) in [true, false, true, false, false, true].into_iter().enumerate() {
            let t = 300.0 * i as f64;
            w.probe_sent(s(t));
            if answered {
                answer(&mut w, t + 0.001, A);
            }
        }
        w.probe_sent(s(1800.0));
        let events = w.take_events();
        let ends: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                WatchEvent::NoReplyEnd { at } => Some(at.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ends, vec![rfc3339(s(301.0)), rfc3339(s(901.0)), rfc3339(s(1201.0))]);
        assert_eq!(w.finish(s(1801.0)).longest_no_owner_s, 1.0, "unanswered requests, not minutes");
    }

    #[test]
    fn requests_in_a_burst_share_one_interval() {
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
        w.probe_sent(s(0.0));
        w.probe_sent(s(0.001)); // another host asks at once; the reply to the first comes after
        answer(&mut w, 0.002, A);
        w.probe_sent(s(1.0));
        answer(&mut w, 1.001, A);
        w.probe_sent(s(2.0));
        assert!(w.take_events().is_empty());
        assert_eq!(w.finish(s(2.0)).verdict, WatchVerdict::Stable);
    }

    #[test]
    fn timestamps_going_backwards_do_not_panic() {
        // Gratuitous replies at 40, 30, 20 and 10 s, MACs alternating (a merged capture).
        let mut w = Watcher::new(std::net::IpAddr::from(VIP), vec![], None);
        for (i, t) in [40.0, 30.0, 20.0, 10.0].into_iter().enumerate() {
            let mac = if i % 2 == 0 { A } else { B };
            w.observe(s(t), &frame(&reply(mac, VIP, MacAddr::BROADCAST, VIP)));
        }
        let summary = w.finish(s(10.0));
        assert_eq!(summary.owner_changes, 3);
        assert_eq!(summary.verdict, WatchVerdict::Unstable);
    }

    mod live_loop {
        use super::*;
        use crate::net::fake::{Event, FakeClock, FakeLink};
        use crate::net::tcp_connect::ConnectResult;

        fn config() -> WatchConfig {
            WatchConfig {
                target: std::net::IpAddr::from(VIP),
                interface: None,
                interval: Duration::from_secs(1),
                duration: Some(Duration::from_millis(5500)),
                source: None,
                nodes: vec![],
                tcp: Some("192.0.2.100:80".parse().unwrap()),
                tcp_timeout: Duration::from_secs(1),
            }
        }

        /// `owner(offset)` answers each request for the VIP 1 ms later (None: nobody).
        fn segment(clock: &FakeClock, owner: impl Fn(Duration) -> Option<MacAddr> + 'static) -> FakeLink {
            FakeLink::new(clock).responding(move |at, bytes| {
                let Some(req) = NeighbourFrame::from_link(LinkType::Ethernet, bytes) else { return vec![] };
                match owner(at) {
                    Some(mac) if req.target_ip == VIP => {
                        vec![(at + Duration::from_millis(1), reply(mac, VIP, ME, CLIENT).to_vec())]
                    }
                    _ => vec![],
                }
            })
        }

        fn run(
            link: &mut FakeLink,
            clock: &FakeClock,
            tcp: Option<&mut dyn ConnectTimer>,
        ) -> (Vec<WatchEvent>, WatchSummary) {
            let mut events = Vec::new();
            let summary = watch_on(
                link,
                clock,
                &config(),
                ME,
                std::net::IpAddr::from(CLIENT),
                || false,
                tcp,
                |e| events.push(e.clone()),
            )
            .unwrap();
            (events, summary)
        }

        #[test]
        fn one_owner_for_the_whole_duration_is_stable() {
            let clock = FakeClock::new();
            let mut link = segment(&clock, |_| Some(A));
            let (events, summary) = run(&mut link, &clock, None);
            assert!(events.is_empty(), "{events:?}");
            assert_eq!((summary.verdict, summary.probes), (WatchVerdict::Stable, 6));
            assert_eq!(clock.elapsed(), Duration::from_millis(5500), "stopped at --duration");
        }

        #[test]
        fn a_gratuitous_arp_mid_interval_is_a_takeover_at_once() {
            let clock = FakeClock::new();
            let mut link = segment(&clock, |at| Some(if at < Duration::from_millis(2500) { A } else { B }));
            link.at(Duration::from_millis(2500), Event::Frame(request(B, VIP, VIP).to_vec()));
            let (events, summary) = run(&mut link, &clock, None);
            assert_eq!(names(&events), vec!["gratuitous", "owner-change"]);
            assert_eq!(summary.owner_changes, 1);
            let held: Vec<f64> = summary.owners.iter().map(|o| o.held_s).collect();
            assert_eq!(held, vec![2.499, 3.0], "A from its first reply to the takeover, B to the end");
        }

        #[test]
        fn lost_replies_are_a_gap() {
            let clock = FakeClock::new();
            let gap = Duration::from_millis(1500)..Duration::from_millis(3500);
            let mut link = segment(&clock, move |at| (!gap.contains(&at)).then_some(A));
            let (events, summary) = run(&mut link, &clock, None);
            assert_eq!(names(&events), vec!["no-reply-start", "no-reply-end"]);
            assert_eq!(
                summary.longest_no_owner_s, 2.0,
                "from the first unanswered request to the answer window of the last"
            );
            assert_eq!(summary.verdict, WatchVerdict::Unstable);
        }

        #[test]
        fn a_capture_error_ends_the_watch_with_the_error() {
            let clock = FakeClock::new();
            let link = segment(&clock, |_| Some(A));
            link.at(Duration::from_millis(1200), Event::Error("capture failed".into()));
            let mut link = link;
            let err = watch_on(
                &mut link,
                &clock,
                &config(),
                ME,
                std::net::IpAddr::from(CLIENT),
                || false,
                None,
                |_| {},
            )
            .unwrap_err();
            assert!(err.to_string().contains("capture failed"), "{err}");
        }

        struct Stalls(Vec<ConnectResult>);
        impl ConnectTimer for Stalls {
            fn finished(&mut self) -> Vec<ConnectResult> {
                std::mem::take(&mut self.0)
            }
        }

        #[test]
        fn connect_results_are_folded_in() {
            let clock = FakeClock::new();
            let mut link = segment(&clock, |_| Some(A));
            let mut results: Vec<ConnectResult> = (0..5)
                .map(|i| (clock.wall_at(Duration::from_secs(i)), Ok(Duration::from_millis(1))))
                .collect();
            results.push((clock.wall_at(Duration::from_secs(5)), Err("timed out".into())));
            let mut tcp = Stalls(results);
            let (events, summary) = run(&mut link, &clock, Some(&mut tcp));
            assert_eq!(names(&events), vec!["tcp-spike"]);
            let tcp = summary.tcp.unwrap();
            assert_eq!((tcp.probes, tcp.failures, tcp.spikes), (6, 1, 1));
        }
    }
}
