//! The pure state machine of `--watch`: frames and connect results in, events and a summary out.

use std::net::IpAddr;
use std::time::Duration;

use super::report::*;
use crate::arp::tally::is_announcement;
use crate::arp::{Node, NodeMacs};
use crate::round3;
use crate::wire::neighbour::{NeighbourFrame, Op};
use crate::wire::MacAddr;

/// An unanswered request this old when a gratuitous ARP arrives means nobody owned the VIP in
/// between (on a LAN answers take milliseconds).
const REPLY_GRACE: Duration = Duration::from_millis(150);

/// An unanswered request is evidence that nobody owned the VIP for this long after it, at most:
/// an owner answers within milliseconds, and after that nobody was asking. A capture whose hosts
/// ask every few minutes shows short gaps, not minutes without an owner.
const ANSWER_WINDOW: Duration = Duration::from_secs(1);

/// Connect-time spikes are counted as correlated when they start this close to an owner change.
const CORRELATION_WINDOW: Duration = Duration::from_secs(2);

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
pub(super) fn regular_period(changes: &[Duration]) -> Option<f64> {
    if changes.len() < 3 {
        return None;
    }
    let gaps: Vec<f64> = changes.windows(2).map(|w| w[1].abs_diff(w[0]).as_secs_f64()).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let variance = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    (mean > 0.0 && variance.sqrt() / mean < 0.25).then(|| (mean * 10.0).round() / 10.0)
}
