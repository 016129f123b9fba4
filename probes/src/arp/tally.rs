//! Counting ARP claims per MAC. Pure bookkeeping over timestamped frames, shared by the live probe
//! and capture files, so both give the same verdict for the same exchange.
//!
//! Two kinds of frame claim the target: replies for it (to whoever asked) and announcements
//! (gratuitous ARP, sender IP == target IP == the target). A reply answers a request of the host it
//! is addressed to, never another host's: in a capture from a switched port or a mirror, other
//! hosts' requests are visible but their replies are not, and must not count as unanswered.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use super::report::{ArpReport, NodeAddress, OwnerChange, Responder, RttMs, Unicast, Verdict};
use super::{Node, NodeMacs};
use crate::wire::neighbour::{NeighbourFrame, Op};
use crate::wire::MacAddr;
use crate::{oui, round3};

/// Whose requests count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Askers {
    /// Live: only ours, reported with [`Tally::request_sent`].
    Us(IpAddr),
    /// A capture: every host's requests for the target, seen in the frames.
    Anyone,
}

pub struct Tally {
    target: IpAddr,
    nodes: NodeMacs,
    askers: Askers,
    /// A reply matches a request at most this old (ARP on a LAN takes milliseconds).
    match_window: Duration,
    /// Requests for the target per asking host, in the order seen.
    requests: HashMap<IpAddr, Vec<Duration>>,
    /// Hosts that some reply for the target was addressed to: their answers are visible here.
    visible: HashSet<IpAddr>,
    responders: Vec<ResponderTally>,
    /// Address-conflict probes for the target (RFC 5227 ARP probes, IPv6 duplicate address
    /// detection: sender address unspecified), per MAC: a host about to configure it itself.
    conflict_probes: Vec<(MacAddr, u32)>,
    /// Requests for the target sent to one MAC alone (our unicast round; in a capture, a router's
    /// or a kernel's re-checks of its cached entry) and their replies, per asker and MAC.
    unicast: Vec<UnicastAsks>,
    /// Per asker: the MACs it asked by unicast since its last broadcast request. A reply from one
    /// of them to it answers those, not a broadcast request: ARP carries no request ID, so the
    /// kind of request an answer belongs to is the kind its asker sent last.
    unicast_pending: HashMap<IpAddr, Vec<MacAddr>>,
    /// A capture whose requests keep no link-layer destination (Linux cooked: `tcpdump -i any`).
    requests_without_destination: bool,
}

struct UnicastAsks {
    asker: IpAddr,
    mac: MacAddr,
    sent: u32,
    replies: u32,
}

struct ResponderTally {
    mac: MacAddr,
    replies: u32,
    announcements: u32,
    /// Its first and last claim (reply or announcement): two MACs whose claims never overlap
    /// took the address over one from the other.
    first_claim: Duration,
    last_claim: Duration,
    /// Per asker: when this MAC's replies to it arrived.
    replied_at: HashMap<IpAddr, Vec<Duration>>,
    ethernet_sources: Vec<MacAddr>,
}

impl Tally {
    /// For a live probe from `us`: requests are the ones reported with [`Tally::request_sent`].
    pub fn live(target: IpAddr, nodes: Vec<Node>, us: IpAddr, match_window: Duration) -> Tally {
        Tally::new(target, nodes, Askers::Us(us), match_window)
    }

    /// For a capture: every host's requests for the target in the frames count.
    pub fn capture(target: IpAddr, nodes: Vec<Node>, match_window: Duration) -> Tally {
        Tally::new(target, nodes, Askers::Anyone, match_window)
    }

    fn new(target: IpAddr, nodes: Vec<Node>, askers: Askers, match_window: Duration) -> Tally {
        Tally {
            target,
            nodes: NodeMacs::new(nodes),
            askers,
            match_window,
            requests: HashMap::new(),
            visible: HashSet::new(),
            responders: Vec::new(),
            conflict_probes: Vec::new(),
            unicast: Vec::new(),
            unicast_pending: HashMap::new(),
            requests_without_destination: false,
        }
    }

    /// Our broadcast request for the target left at `at` (live).
    pub fn request_sent(&mut self, at: Duration) {
        if let Askers::Us(us) = self.askers {
            self.broadcast_request(us, at);
        }
    }

    /// Our request for the target to `owner`'s MAC alone left (live).
    pub fn unicast_sent(&mut self, owner: MacAddr) {
        if let Askers::Us(us) = self.askers {
            self.unicast_request(us, owner);
        }
    }

    fn broadcast_request(&mut self, asker: IpAddr, at: Duration) {
        self.requests.entry(asker).or_default().push(at);
        self.unicast_pending.remove(&asker);
    }

    fn unicast_request(&mut self, asker: IpAddr, mac: MacAddr) {
        match self.unicast.iter_mut().find(|u| u.asker == asker && u.mac == mac) {
            Some(asks) => asks.sent += 1,
            None => self.unicast.push(UnicastAsks { asker, mac, sent: 1, replies: 0 }),
        }
        let pending = self.unicast_pending.entry(asker).or_default();
        if !pending.contains(&mac) {
            pending.push(mac);
        }
    }

    /// The MACs that replied to a broadcast request: the ones to ask by unicast.
    pub fn answered_broadcast(&self) -> Vec<MacAddr> {
        self.responders.iter().filter(|r| r.replies > 0).map(|r| r.mac).collect()
    }

    /// What is known of the `--node` MACs so far.
    pub fn nodes(&self) -> &NodeMacs {
        &self.nodes
    }

    /// One ARP frame seen at `at`. Frames should come in time order; when they do not, replies
    /// earlier than their request simply stay unmatched.
    pub fn observe(&mut self, at: Duration, frame: &NeighbourFrame) {
        self.nodes.learn(frame);
        if is_announcement(frame, self.target) {
            let index = self.responder_index(at, frame);
            self.responders[index].announcements += 1;
            return;
        }
        match frame.op {
            Op::Request
                if self.askers == Askers::Anyone
                    && frame.target_ip == self.target
                    && !frame.sender_ip.is_unspecified() =>
            {
                self.requests_without_destination |= frame.link_destination.is_none();
                match frame.sent_to_one_host() {
                    Some(mac) => self.unicast_request(frame.sender_ip, mac),
                    None => self.broadcast_request(frame.sender_ip, at),
                }
            }
            Op::Request if frame.target_ip == self.target && frame.sender_ip.is_unspecified() => {
                match self.conflict_probes.iter_mut().find(|(mac, _)| *mac == frame.sender_mac) {
                    Some((_, n)) => *n += 1,
                    None => self.conflict_probes.push((frame.sender_mac, 1)),
                }
            }
            Op::Reply if frame.sender_ip == self.target => {
                let asker = frame.target_ip;
                let answers_unicast =
                    self.unicast_pending.get(&asker).is_some_and(|macs| macs.contains(&frame.sender_mac));
                if answers_unicast {
                    // A claim all the same, but not an answer to a broadcast request.
                    self.visible.insert(asker);
                    self.responder_index(at, frame);
                    if let Some(asks) =
                        self.unicast.iter_mut().find(|u| u.asker == asker && u.mac == frame.sender_mac)
                    {
                        asks.replies += 1;
                    }
                } else {
                    self.reply_for_target(at, frame);
                }
            }
            _ => {}
        }
    }

    /// The requests sent to `mac` alone and its replies to them, over the askers that count;
    /// `None` when none was sent to it.
    fn unicast_of(&self, mac: MacAddr) -> Option<Unicast> {
        self.unicast.iter().filter(|u| u.mac == mac && self.counted(&u.asker)).fold(None, |sum, u| {
            let Unicast { sent, replies } = sum.unwrap_or(Unicast { sent: 0, replies: 0 });
            Some(Unicast { sent: sent + u.sent, replies: replies + u.replies })
        })
    }

    /// The responder that `frame` (seen at `at`) is a claim of.
    fn responder_index(&mut self, at: Duration, frame: &NeighbourFrame) -> usize {
        let index = match self.responders.iter().position(|r| r.mac == frame.sender_mac) {
            Some(index) => index,
            None => {
                self.responders.push(ResponderTally {
                    mac: frame.sender_mac,
                    replies: 0,
                    announcements: 0,
                    first_claim: at,
                    last_claim: at,
                    replied_at: HashMap::new(),
                    ethernet_sources: Vec::new(),
                });
                self.responders.len() - 1
            }
        };
        let responder = &mut self.responders[index];
        responder.first_claim = responder.first_claim.min(at);
        responder.last_claim = responder.last_claim.max(at);
        if let Some(source) = frame.link_source.filter(|s| *s != frame.sender_mac) {
            if !responder.ethernet_sources.contains(&source) {
                responder.ethernet_sources.push(source);
            }
        }
        index
    }

    fn reply_for_target(&mut self, at: Duration, frame: &NeighbourFrame) {
        let asker = frame.target_ip;
        self.visible.insert(asker);
        let index = self.responder_index(at, frame);
        let responder = &mut self.responders[index];
        responder.replies += 1;
        responder.replied_at.entry(asker).or_default().push(at);
    }

    /// Whether requests of `asker` count: ours (live), or those of hosts whose answers this
    /// capture shows.
    fn counted(&self, asker: &IpAddr) -> bool {
        match self.askers {
            Askers::Us(us) => *asker == us,
            Askers::Anyone => self.visible.contains(asker),
        }
    }

    /// When a responder began to claim the target: its first claim, or the request its first
    /// reply answered when earlier (a late reply claims the address from when it was asked).
    fn claims_from(&self, responder: &ResponderTally) -> Duration {
        let mut from = responder.first_claim;
        for (asker, replies) in &responder.replied_at {
            let asked = self.requests.get(asker).map(Vec::as_slice).unwrap_or(&[]);
            if let Some((request, _)) = matches(asked, replies, self.match_window).first() {
                from = from.min(*request);
            }
        }
        from
    }

    /// The hand-overs of the address, when its claimants claimed it one after the other (each
    /// MAC's claims ended before the next one's began) and someone asked after each hand-over (so
    /// the old owner's silence is evidence). Empty when two claimed it at once; with a note when
    /// they claimed it in turn but nobody asked after, so a hand-over cannot be told from two
    /// claimants.
    fn owner_changes(&self) -> (Vec<OwnerChange>, Option<String>) {
        if self.responders.len() < 2 {
            return (Vec::new(), None);
        }
        let mut spans: Vec<(Duration, &ResponderTally)> =
            self.responders.iter().map(|r| (self.claims_from(r), r)).collect();
        spans.sort_by_key(|(from, _)| *from);
        if spans.windows(2).any(|w| w[0].1.last_claim >= w[1].0) {
            return (Vec::new(), None);
        }
        let asked_since = |t: Duration| {
            self.requests.iter().any(|(asker, times)| self.counted(asker) && times.iter().any(|q| *q >= t))
        };
        if let Some(w) = spans.windows(2).find(|w| !asked_since(w[1].0)) {
            return (
                Vec::new(),
                Some(format!(
                    "{}'s claims ended before {}'s began, but nobody asked after that: whether {} still claims {} cannot be told (a failover, or two claimants)",
                    w[0].1.mac, w[1].1.mac, w[0].1.mac, self.target
                )),
            );
        }
        let changes = spans
            .windows(2)
            .map(|w| OwnerChange {
                from: w[0].1.mac,
                to: w[1].1.mac,
                last_claim: super::watch::rfc3339(w[0].1.last_claim),
                first_claim: super::watch::rfc3339(w[1].0),
                gap_s: round3((w[1].0 - w[0].1.last_claim).as_secs_f64()),
            })
            .collect();
        (changes, None)
    }

    /// Every reply time of one responder, matched to its asker's requests.
    fn rtts(&self, responder: &ResponderTally) -> Vec<Duration> {
        let mut rtts = Vec::new();
        for (asker, replies) in &responder.replied_at {
            let asked = self.requests.get(asker).map(Vec::as_slice).unwrap_or(&[]);
            rtts.extend(match_replies(asked, replies, self.match_window));
        }
        rtts
    }

    pub fn finish(self) -> ArpReport {
        let macs: Vec<MacAddr> = self.responders.iter().map(|r| r.mac).collect();
        let vendors = oui::vendors(&macs);
        let rtts: Vec<Vec<Duration>> = self.responders.iter().map(|r| self.rtts(r)).collect();
        let nodes: Vec<NodeAddress> = self.nodes.clone().into_addresses();
        let responders: Vec<Responder> = self
            .responders
            .iter()
            .zip(&rtts)
            .map(|(r, rtts)| Responder {
                mac: r.mac,
                replies: r.replies,
                announcements: r.announcements,
                rtt_ms: rtt_ms(rtts),
                vendor: vendors.get(&r.mac.oui()).cloned(),
                locally_administered: r.mac.is_locally_administered(),
                node: nodes.iter().find(|n| n.macs.contains(&r.mac)).map(|n| n.name.clone()),
                ethernet_sources: r.ethernet_sources.clone(),
                unicast: self.unicast_of(r.mac),
            })
            .collect();
        let (owner_changes, turn_note) = self.owner_changes();
        let verdict = match responders.as_slice() {
            [] => Verdict::NoReply,
            [one] if broadcast_only(one) => Verdict::BroadcastOnly,
            [_] => Verdict::Ok,
            // One after the other, never at once: the address changed hands.
            _ if !owner_changes.is_empty() => Verdict::OwnerChanged,
            _ => Verdict::Duplicate,
        };
        let sent: usize = self.requests.iter().filter(|(a, _)| self.counted(a)).map(|(_, r)| r.len()).sum();
        let (other_askers, other_requests) = self
            .requests
            .iter()
            .filter(|(a, _)| !self.counted(a))
            .fold((0, 0), |(hosts, requests), (_, r)| (hosts + 1, requests + r.len()));
        let mut notes: Vec<String> = turn_note.into_iter().collect();
        // With several claimants the verdict is theirs; one that ignores unicast is still said.
        if responders.len() > 1 && verdict == Verdict::Duplicate {
            for r in responders.iter().filter(|r| broadcast_only(r)) {
                let sent = r.unicast.map_or(0, |u| u.sent);
                notes.push(format!(
                    "{} answered broadcast requests for {} but none of the {sent} sent to its own MAC",
                    r.mac, self.target
                ));
            }
        }
        // Some requests to a MAC unanswered is not a verdict (one answer keeps a cached entry), but
        // it is said: the numbers in the table show it too.
        for r in &responders {
            if let Some(Unicast { sent, replies }) = r.unicast.filter(|u| u.replies > 0 && u.replies < u.sent)
            {
                notes.push(format!(
                    "{} answered {replies} of the {sent} request(s) for {} sent to its own MAC",
                    r.mac, self.target
                ));
            }
        }
        if self.askers == Askers::Anyone && other_requests > 0 {
            notes.push(format!(
                "{other_requests} request(s) for {} from {other_askers} host(s) whose replies this capture does not show were left out (a switched port or mirror sees other hosts' requests, not the unicast answers)",
                self.target
            ));
        }
        if self.askers == Askers::Anyone && self.requests_without_destination {
            notes.push(format!(
                "this capture keeps no link-layer destination (Linux cooked, tcpdump -i any): requests for {} sent to one MAC (a router's or a kernel's re-check of its entry) cannot be told from broadcast ones; capture on the interface (tcpdump -i eth0) to see them",
                self.target
            ));
        }
        for silent in self.unicast.iter().filter(|u| self.counted(&u.asker)) {
            if !self.responders.iter().any(|r| r.mac == silent.mac) && silent.replies == 0 {
                notes.push(format!(
                    "{} request(s) for {} from {} to {} alone got no answer, and {} claimed it in no other way",
                    silent.sent, self.target, silent.asker, silent.mac, silent.mac
                ));
            }
        }
        if !self.conflict_probes.is_empty() {
            let by: Vec<String> =
                self.conflict_probes.iter().map(|(mac, n)| format!("{mac} ({n})")).collect();
            let kind = if self.target.is_ipv4() {
                "ARP probe(s) (RFC 5227)"
            } else {
                "duplicate address detection probe(s)"
            };
            notes.push(format!(
                "{} {kind} for {} from {}: a host was about to configure this address itself (MetalLB's speakers never probe for a VIP): find it by its MAC",
                self.conflict_probes.iter().map(|(_, n)| n).sum::<u32>(),
                self.target,
                by.join(", ")
            ));
        }
        let sent = u32::try_from(sent).unwrap_or(u32::MAX);
        let quiet_capture = self.askers == Askers::Anyone && sent == 0;
        let (summary, next_step) =
            explain(self.target, sent, quiet_capture, verdict, &responders, &owner_changes, &nodes);
        ArpReport {
            probe: "arp",
            target: self.target,
            interface: None,
            source_ip: None,
            capture_file: None,
            sent,
            verdict,
            summary,
            responders,
            nodes,
            next_step,
            notes,
            owner_changes,
        }
    }
}

/// Round-trip times of one MAC's replies to one asker. ARP carries no request ID, so which
/// request a reply answers is inferred: replies and requests are paired in order (the n-th reply
/// answers an earlier request than the (n+1)-th), each reply as late a request as it can (from the
/// last reply backwards), at most `window` old. That reads a steady late responder right (300 ms
/// late to requests 200 ms apart is 300 ms, not 100), and a reply that was lost, or a MAC that
/// took over midway, does not shift the times of the replies after it.
fn match_replies(requests: &[Duration], replies: &[Duration], window: Duration) -> Vec<Duration> {
    matches(requests, replies, window).into_iter().map(|(asked, replied)| replied - asked).collect()
}

/// The (request, reply) pairs of [`match_replies`], in order.
fn matches(requests: &[Duration], replies: &[Duration], window: Duration) -> Vec<(Duration, Duration)> {
    let mut requests: Vec<Duration> = requests.to_vec();
    requests.sort_unstable();
    let mut replies: Vec<Duration> = replies.to_vec();
    replies.sort_unstable();
    let mut pairs = Vec::new();
    let mut open = requests.len(); // requests[..open] are still free
    for &reply in replies.iter().rev() {
        while open > 0 && requests[open - 1] > reply {
            open -= 1;
        }
        if open == 0 {
            break;
        }
        let asked = requests[open - 1];
        if reply - asked <= window {
            pairs.push((asked, reply));
            open -= 1;
        }
    }
    pairs.reverse();
    pairs
}

/// Answered broadcast requests, then none of the requests sent to its own MAC.
fn broadcast_only(r: &Responder) -> bool {
    r.replies > 0 && matches!(r.unicast, Some(Unicast { sent, replies: 0 }) if sent > 0)
}

/// Gratuitous ARP or an ARP announcement for `target`: its owner says so unasked.
pub fn is_announcement(frame: &NeighbourFrame, target: IpAddr) -> bool {
    frame.sender_ip == target && frame.is_gratuitous() && matches!(frame.op, Op::Request | Op::Reply)
}

fn rtt_ms(rtts: &[Duration]) -> Option<RttMs> {
    let ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let min = ms.iter().copied().reduce(f64::min)?;
    let max = ms.iter().copied().reduce(f64::max)?;
    Some(RttMs { min: round3(min), avg: round3(ms.iter().sum::<f64>() / ms.len() as f64), max: round3(max) })
}

/// The verdict as a sentence, and where to look next.
fn explain(
    target: IpAddr,
    sent: u32,
    quiet_capture: bool,
    verdict: Verdict,
    responders: &[Responder],
    changes: &[OwnerChange],
    nodes: &[NodeAddress],
) -> (String, Option<String>) {
    let nodes_given = !nodes.is_empty();
    let unknown = responders.iter().filter(|r| r.node.is_none()).count();
    let unknown_note = (nodes_given && unknown > 0).then(|| {
        format!(
            "{unknown} of them match no --node: a host outside the listed nodes answers for {target}, find it by its MAC (switch MAC table, `ip neigh` on the nodes)."
        )
    });
    let announced_only = |r: &Responder| r.replies == 0 && r.announcements > 0;
    match verdict {
        Verdict::Ok => {
            let r = &responders[0];
            let owner = r.node.as_deref().map(|n| format!(" (node {n})")).unwrap_or_default();
            let summary = if announced_only(r) {
                format!(
                    "one MAC claims {target}: {}{owner}, by {} announcement(s); no reply seen",
                    r.mac, r.announcements
                )
            } else {
                format!("one MAC answers for {target}: {}{owner}", r.mac)
            };
            (summary, unknown_note)
        }
        Verdict::BroadcastOnly => {
            let r = &responders[0];
            let owner = r.node.as_deref().map(|n| format!(" (node {n})")).unwrap_or_default();
            let unicast = r.unicast.map_or(0, |u| u.sent);
            (
                format!(
                    "{}{owner} answered {} of {sent} broadcast request(s) for {target} but none of the {unicast} sent to its own MAC",
                    r.mac, r.replies
                ),
                Some(format!(
                    "Routers, switches and the kernel re-check a cached neighbour with requests to its MAC (Linux: ucast_solicit, 3, before the entry fails): a speaker that answers only broadcast lets their entries for {target} fail, and traffic stops for seconds until a broadcast request is answered again (MetalLB issue 2920). Find what ignores or drops requests to its MAC: the speaker itself (its ARP/NDP responder: upgrade it), a firewall or bridge rule on its node (nft list ruleset, ebtables -L), or a switch ACL; then run netprobe arp {target} again."
                )),
            )
        }
        Verdict::OwnerChanged => {
            let hand_overs: Vec<String> = changes
                .iter()
                .map(|c| format!("{} until {}, then {} from {} ({:.3} s later)", c.from, c.last_claim, c.to, c.first_claim, c.gap_s))
                .collect();
            let longest = changes.iter().map(|c| c.gap_s).fold(0.0, f64::max);
            (
                format!("the owner of {target} changed, never two at once: {}", hand_overs.join("; ")),
                Some(format!(
                    "A failover (a keepalived master, a MetalLB leader moving): {target} had no owner for up to {longest:.3} s in between. Find why the old owner went (its node, the speaker's or keepalived's log); if it repeats, watch it: netprobe arp {target} --watch."
                )),
            )
        }
        Verdict::Duplicate => {
            // Every node answers: the VIP sits on every node (kube-proxy in IPVS mode puts each
            // Service VIP on kube-ipvs0), and the kernel answers ARP for any local address.
            let every_node = nodes.len() >= 2 && nodes.iter().all(|n| responders.iter().any(|r| r.node.as_deref() == Some(n.name.as_str())));
            let ipvs = "kube-proxy in IPVS mode without strictARP (each Service VIP sits on kube-ipvs0 of every node, and every node's kernel answers for it): set strictARP: true in kube-proxy's configuration (kubectl -n kube-system edit configmap kube-proxy, ipvs.strictARP), as MetalLB requires, and restart kube-proxy.";
            let speakers = format!(
                "only the elected MetalLB speaker may answer in layer-2 mode: list the speakers (kubectl -n metallb-system get pods -o wide), look for a second MetalLB install or a non-official chart, and for a host with {target} configured by hand."
            );
            // Two nodes both answering could be either; three or more all answering is IPVS's mark.
            let advice = match (every_node, nodes.len()) {
                (true, 2) => format!("Both nodes answer for {target}: either {ipvs} Or two speakers answer: {speakers}"),
                (true, _) => format!("Every node answers for {target}: {ipvs}"),
                (false, _) => format!("Several hosts claim {target}: {speakers}"),
            };
            let next = match unknown_note {
                Some(note) => format!("{note} {advice}"),
                None => advice,
            };
            let how = if responders.iter().any(|r| r.announcements > 0) {
                "answer or announce"
            } else {
                "answer for"
            };
            (format!("{} MACs {how} {target}: more than one host claims it", responders.len()), Some(next))
        }
        Verdict::NoReply => (
            if quiet_capture {
                format!("no reply or announcement for {target} in this capture")
            } else {
                format!("nothing answered {sent} request(s) for {target}")
            },
            Some(format!(
                "Check that the Service has {target} as its external IP (kubectl get svc -A -o wide), that this host is on the VIP's layer-2 segment (-i), and the speakers' logs."
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::arp::{reply, request};
    use crate::wire::link::LinkType;
    use crate::Health;
    use std::net::Ipv4Addr;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const OTHER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    const SP1: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);
    const SP2: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x12]);
    const WINDOW: Duration = Duration::from_secs(1);

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn arp(bytes: &[u8]) -> NeighbourFrame {
        NeighbourFrame::from_link(LinkType::Ethernet, bytes).unwrap()
    }

    fn answer(from: MacAddr, ip: Ipv4Addr) -> NeighbourFrame {
        arp(&reply(from, ip, CLIENT_MAC, CLIENT))
    }

    fn live() -> Tally {
        Tally::live(std::net::IpAddr::from(VIP), vec![], std::net::IpAddr::from(CLIENT), WINDOW)
    }

    /// A router's neighbour entry for the VIP in a capture on its port: it asks by broadcast, the
    /// speaker answers; a while later it re-checks the entry by unicast, as Linux does.
    fn router_recheck(speaker_answers_unicast: bool) -> ArpReport {
        let mut tally = Tally::capture(std::net::IpAddr::from(VIP), vec![], WINDOW);
        tally.observe(ms(0), &arp(&request(CLIENT_MAC, CLIENT, VIP)));
        tally.observe(ms(1), &answer(SP1, VIP));
        for at in [30_000, 31_000, 32_000] {
            tally.observe(ms(at), &arp(&crate::wire::arp::unicast_request(SP1, CLIENT_MAC, CLIENT, VIP)));
            if speaker_answers_unicast {
                tally.observe(ms(at + 1), &answer(SP1, VIP));
            }
        }
        tally.finish()
    }

    #[test]
    fn a_capture_of_unanswered_unicast_rechecks_is_broadcast_only() {
        let report = router_recheck(false);
        assert_eq!((report.verdict, report.sent), (Verdict::BroadcastOnly, 1));
        assert_eq!(report.responders[0].unicast, Some(Unicast { sent: 3, replies: 0 }));
        let report = router_recheck(true);
        assert_eq!(
            (report.verdict, report.responders[0].replies),
            (Verdict::Ok, 1),
            "unicast answers are not broadcast ones"
        );
        assert_eq!(report.responders[0].unicast, Some(Unicast { sent: 3, replies: 3 }));
        assert!(report.notes.is_empty(), "{:?}", report.notes);
    }

    #[test]
    fn one_responder_is_ok_and_rtts_match_requests_in_order() {
        let mut tally = live();
        for round in 0..3 {
            tally.request_sent(ms(round * 200));
            tally.observe(ms(round * 200 + 2), &answer(SP1, VIP));
        }
        let report = tally.finish();
        assert_eq!(report.verdict, Verdict::Ok);
        assert_eq!(report.sent, 3);
        assert_eq!(report.responders.len(), 1);
        assert_eq!(report.responders[0].replies, 3);
        assert_eq!(report.responders[0].rtt_ms, Some(RttMs { min: 2.0, avg: 2.0, max: 2.0 }));
        assert!(report.next_step.is_none() && report.notes.is_empty());
    }

    #[test]
    fn a_late_second_responder_makes_a_duplicate_with_its_own_rtt() {
        let mut tally = live();
        tally.request_sent(ms(0));
        tally.observe(ms(1), &answer(SP1, VIP));
        tally.request_sent(ms(200));
        tally.observe(ms(201), &answer(SP1, VIP));
        tally.observe(ms(300), &answer(SP2, VIP)); // answers request 0, 300 ms late
        tally.observe(ms(500), &answer(SP2, VIP)); // answers request 1
        let report = tally.finish();
        assert_eq!(report.verdict, Verdict::Duplicate);
        let macs: Vec<MacAddr> = report.responders.iter().map(|r| r.mac).collect();
        assert_eq!(macs, vec![SP1, SP2], "ordered by first reply");
        assert_eq!(report.responders[1].rtt_ms, Some(RttMs { min: 300.0, avg: 300.0, max: 300.0 }));
        assert!(report.summary.starts_with("2 MACs answer for 192.0.2.100"));
    }

    #[test]
    fn a_lost_reply_does_not_shift_later_rtts() {
        // Requests at 0, 2 s, 4 s; the owner misses the first (it was not the owner yet).
        let mut tally = live();
        for t in [0, 2000, 4000] {
            tally.request_sent(ms(t));
        }
        tally.observe(ms(2003), &answer(SP1, VIP));
        tally.observe(ms(4003), &answer(SP1, VIP));
        let report = tally.finish();
        assert_eq!(report.responders[0].rtt_ms, Some(RttMs { min: 3.0, avg: 3.0, max: 3.0 }));
    }

    #[test]
    fn replies_pair_with_requests_in_order_as_late_as_they_can() {
        let t = |v: &[u64]| v.iter().map(|&m| ms(m)).collect::<Vec<_>>();
        // A steady 300 ms responder to requests 200 ms apart.
        assert_eq!(match_replies(&t(&[0, 200, 400]), &t(&[300, 500, 700]), WINDOW), t(&[300, 300, 300]));
        // A new owner answering only the last two requests.
        assert_eq!(match_replies(&t(&[0, 200, 400]), &t(&[201, 401]), WINDOW), t(&[1, 1]));
        // Retransmissions: the answer goes to the last of them.
        assert_eq!(match_replies(&t(&[0, 1000, 2000]), &t(&[2001]), WINDOW), t(&[1]));
        // Too old for the window, or no request before the reply: unmatched.
        assert_eq!(match_replies(&t(&[0]), &t(&[1500]), WINDOW), t(&[]));
        assert_eq!(match_replies(&t(&[500]), &t(&[100, 501]), WINDOW), t(&[1]));
        assert_eq!(match_replies(&[], &t(&[1]), WINDOW), t(&[]));
    }

    #[test]
    fn silence_is_no_reply() {
        let mut tally = live();
        tally.request_sent(ms(0));
        tally.observe(ms(5), &answer(SP1, Ipv4Addr::new(192, 0, 2, 7))); // another address
        let report = tally.finish();
        assert_eq!(report.verdict, Verdict::NoReply);
        assert_eq!(report.summary, "nothing answered 1 request(s) for 192.0.2.100");
    }

    #[test]
    fn announcements_are_claims() {
        // One MAC announcing, no requests at all (a capture of a takeover): it owns the VIP.
        let mut tally = Tally::capture(std::net::IpAddr::from(VIP), vec![], WINDOW);
        tally.observe(ms(0), &arp(&request(SP1, VIP, VIP)));
        tally.observe(ms(1), &arp(&reply(SP1, VIP, MacAddr::BROADCAST, VIP)));
        let report = tally.finish();
        assert_eq!((report.sent, report.verdict), (0, Verdict::Ok));
        assert_eq!((report.responders[0].replies, report.responders[0].announcements), (0, 2));
        assert!(report.summary.contains("by 2 announcement(s)"), "{}", report.summary);
        // Two MACs announcing the same VIP: two claimants.
        let mut tally = live();
        tally.observe(ms(0), &arp(&request(SP1, VIP, VIP)));
        tally.observe(ms(500), &arp(&request(SP2, VIP, VIP)));
        let report = tally.finish();
        assert_eq!(report.verdict, Verdict::Duplicate);
        assert!(report.summary.starts_with("2 MACs answer or announce 192.0.2.100"), "{}", report.summary);
        // An ARP probe (RFC 5227: sender 0.0.0.0) claims nothing.
        let mut tally = Tally::capture(std::net::IpAddr::from(VIP), vec![], WINDOW);
        tally.observe(ms(0), &arp(&request(SP1, Ipv4Addr::UNSPECIFIED, VIP)));
        let report = tally.finish();
        assert_eq!((report.sent, report.verdict), (0, Verdict::NoReply));
        assert_eq!(report.summary, "no reply or announcement for 192.0.2.100 in this capture");
    }

    #[test]
    fn a_capture_counts_only_requests_whose_replies_it_can_see() {
        // A switched port: OTHER's requests are broadcast and seen, the replies to it are not.
        let mut tally = Tally::capture(std::net::IpAddr::from(VIP), vec![], WINDOW);
        tally.observe(ms(0), &arp(&request(OTHER_MAC, OTHER, VIP)));
        tally.observe(ms(300), &arp(&request(OTHER_MAC, OTHER, VIP)));
        tally.observe(ms(1000), &arp(&request(CLIENT_MAC, CLIENT, VIP)));
        tally.observe(ms(1002), &answer(SP1, VIP));
        let report = tally.finish();
        assert_eq!(report.verdict, Verdict::Ok);
        assert_eq!(report.sent, 1, "only the client's request, whose reply is in the capture");
        assert_eq!(report.responders[0].rtt_ms.unwrap().max, 2.0, "matched to the client's request");
        assert!(
            report.notes[0].starts_with("2 request(s) for 192.0.2.100 from 1 host(s)"),
            "{:?}",
            report.notes
        );
    }

    #[test]
    fn a_reply_matches_its_askers_recent_request_not_an_old_one() {
        // As in a long capture: the client asks every 4 s, only the last request is answered.
        let mut tally = Tally::capture(std::net::IpAddr::from(VIP), vec![], WINDOW);
        for t in [0, 4000, 8000] {
            tally.observe(ms(t), &arp(&request(CLIENT_MAC, CLIENT, VIP)));
        }
        tally.observe(ms(8001), &answer(SP1, VIP));
        let report = tally.finish();
        assert_eq!(report.responders[0].rtt_ms.unwrap().max, 1.0);
        assert_eq!(report.sent, 3);
    }

    #[test]
    fn nodes_label_responders_and_unknown_ones_are_called_out() {
        let nodes = vec![
            Node { name: "sp1".into(), ip: std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 11)) },
            Node { name: "sp9".into(), ip: std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 19)) },
        ];
        let mut tally =
            Tally::live(std::net::IpAddr::from(VIP), nodes, std::net::IpAddr::from(CLIENT), WINDOW);
        tally.request_sent(ms(0));
        tally.observe(ms(1), &answer(SP1, VIP));
        tally.observe(ms(1), &answer(SP1, Ipv4Addr::new(192, 0, 2, 11)));
        tally.observe(ms(2), &answer(SP2, VIP));
        assert!(tally.nodes().resolved(std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 11))));
        assert!(!tally.nodes().resolved(std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 19))));
        let report = tally.finish();
        assert_eq!(report.responders[0].node.as_deref(), Some("sp1"));
        assert_eq!(report.responders[1].node, None);
        assert_eq!(report.nodes[0].macs, vec![SP1]);
        assert!(report.nodes[1].macs.is_empty());
        assert!(report.next_step.unwrap().contains("1 of them match no --node"));
    }

    #[test]
    fn a_failover_is_an_owner_change_not_a_duplicate() {
        // Requests every 200 ms; SP1 answers until 600 ms, then nobody, then SP2 announces at
        // 2.0 s and answers from then on: never both at once, and asked after the hand-over.
        let mut tally = live();
        for round in 0..15u64 {
            tally.request_sent(ms(round * 200));
            match round * 200 {
                t if t <= 600 => tally.observe(ms(t + 1), &answer(SP1, VIP)),
                t if t >= 2000 => tally.observe(ms(t + 1), &answer(SP2, VIP)),
                _ => {}
            }
        }
        tally.observe(ms(1950), &arp(&request(SP2, VIP, VIP)));
        let report = tally.finish();
        assert_eq!(report.verdict, Verdict::OwnerChanged, "{}", report.summary);
        assert_eq!(report.verdict.health(), Health::Fault, "the address was without an owner for a while");
        assert_eq!(report.owner_changes.len(), 1);
        let change = &report.owner_changes[0];
        assert_eq!((change.from, change.to, change.gap_s), (SP1, SP2, 1.349));
        assert!(report.summary.contains("never two at once"), "{}", report.summary);
        assert!(report.next_step.unwrap().contains("no owner for up to 1.349 s"));
        // Claims in turn but nobody asked after the second began: a hand-over cannot be told
        // from two claimants, so it stays a duplicate, and the note says why.
        let mut tally = live();
        tally.request_sent(ms(0));
        tally.observe(ms(1), &answer(SP1, VIP));
        tally.observe(ms(500), &arp(&request(SP2, VIP, VIP)));
        let report = tally.finish();
        assert_eq!(report.verdict, Verdict::Duplicate);
        assert!(report.notes[0].contains("nobody asked after that"), "{:?}", report.notes);
    }

    #[test]
    fn every_node_answering_points_at_kube_proxy_in_ipvs_mode_and_two_of_two_at_both_causes() {
        let node = |name: &str, last: u8| Node {
            name: name.into(),
            ip: std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, last)),
        };
        let answers = |nodes: &[(MacAddr, u8)]| {
            let listed = nodes.iter().map(|(_, ip)| node(&format!("n{ip}"), *ip)).collect();
            let mut tally =
                Tally::live(std::net::IpAddr::from(VIP), listed, std::net::IpAddr::from(CLIENT), WINDOW);
            tally.request_sent(ms(0));
            for (mac, ip) in nodes {
                tally.observe(ms(1), &answer(*mac, Ipv4Addr::new(192, 0, 2, *ip)));
                tally.observe(ms(2), &answer(*mac, VIP));
            }
            let report = tally.finish();
            assert_eq!(report.verdict, Verdict::Duplicate);
            report.next_step.unwrap()
        };
        let sp3 = MacAddr([0x02, 0, 0, 0, 0, 0x13]);
        let next = answers(&[(SP1, 11), (SP2, 12), (sp3, 13)]);
        assert!(next.starts_with("Every node answers") && next.contains("strictARP: true"), "{next}");
        assert!(!next.contains("second MetalLB install"), "{next}");
        // Two nodes of two: as likely two speakers as IPVS, so both are named.
        let next = answers(&[(SP1, 11), (SP2, 12)]);
        assert!(next.contains("strictARP: true") && next.contains("second MetalLB install"), "{next}");
    }

    #[test]
    fn ethernet_source_differing_from_arp_sender_is_kept() {
        let mut bytes = reply(SP1, VIP, CLIENT_MAC, CLIENT);
        bytes[6..12].copy_from_slice(&SP2.0); // Ethernet source rewritten
        let mut tally = live();
        tally.observe(ms(1), &arp(&bytes));
        let report = tally.finish();
        assert_eq!(report.responders[0].mac, SP1);
        assert_eq!(report.responders[0].ethernet_sources, vec![SP2]);
        assert_eq!(report.responders[0].rtt_ms, None, "no request was sent");
    }
}
