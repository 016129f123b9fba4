//! Counting ARP replies per MAC. Pure bookkeeping over timestamped frames, shared by the live probe
//! and capture files, so both give the same verdict for the same exchange.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::report::{ArpReport, NodeAddress, Responder, RttMs, Verdict};
use super::{Node, NodeMacs};
use crate::wire::arp::{ArpFrame, Op};
use crate::wire::MacAddr;
use crate::{oui, round3};

pub struct Tally {
    target: Ipv4Addr,
    nodes: NodeMacs,
    /// Whether requests seen in frames count as sent (capture files) or the caller reports its own
    /// sends with [`Tally::request_sent`] (live).
    requests_from_frames: bool,
    requests: Vec<Duration>,
    responders: Vec<ResponderTally>,
}

struct ResponderTally {
    mac: MacAddr,
    replies: u32,
    rtts: Vec<Duration>,
    /// Index of the request this MAC's next reply answers: replies are matched in order.
    next_request: usize,
    ethernet_sources: Vec<MacAddr>,
}

impl Tally {
    pub fn new(target: Ipv4Addr, nodes: Vec<Node>, requests_from_frames: bool) -> Tally {
        Tally {
            target,
            nodes: NodeMacs::new(nodes),
            requests_from_frames,
            requests: Vec::new(),
            responders: Vec::new(),
        }
    }

    /// A request for the target left at `at`.
    pub fn request_sent(&mut self, at: Duration) {
        self.requests.push(at);
    }

    /// What is known of the `--node` MACs so far.
    pub fn nodes(&self) -> &NodeMacs {
        &self.nodes
    }

    /// One ARP frame seen at `at`. Frames must come in time order.
    pub fn observe(&mut self, at: Duration, frame: &ArpFrame) {
        self.nodes.learn(frame);
        match frame.op {
            Op::Request
                if self.requests_from_frames && frame.target_ip == self.target && !frame.is_gratuitous() =>
            {
                self.requests.push(at);
            }
            // Gratuitous replies are announcements, not answers: they are not counted here.
            Op::Reply if !frame.is_gratuitous() && frame.sender_ip == self.target => {
                self.reply_for_target(at, frame);
            }
            _ => {}
        }
    }

    fn reply_for_target(&mut self, at: Duration, frame: &ArpFrame) {
        let index = match self.responders.iter().position(|r| r.mac == frame.sender_mac) {
            Some(index) => index,
            None => {
                self.responders.push(ResponderTally {
                    mac: frame.sender_mac,
                    replies: 0,
                    rtts: Vec::new(),
                    next_request: 0,
                    ethernet_sources: Vec::new(),
                });
                self.responders.len() - 1
            }
        };
        let responder = &mut self.responders[index];
        responder.replies += 1;
        if let Some(&asked) = self.requests.get(responder.next_request) {
            if asked <= at {
                responder.rtts.push(at - asked);
                responder.next_request += 1;
            }
        }
        if let Some(source) = frame.link_source.filter(|s| *s != frame.sender_mac) {
            if !responder.ethernet_sources.contains(&source) {
                responder.ethernet_sources.push(source);
            }
        }
    }

    pub fn finish(self) -> ArpReport {
        let macs: Vec<MacAddr> = self.responders.iter().map(|r| r.mac).collect();
        let vendors = oui::vendors(&macs);
        let nodes: Vec<NodeAddress> = self.nodes.into_addresses();
        let responders: Vec<Responder> = self
            .responders
            .into_iter()
            .map(|r| Responder {
                mac: r.mac,
                replies: r.replies,
                rtt_ms: rtt_ms(&r.rtts),
                vendor: vendors.get(&r.mac.oui()).cloned(),
                locally_administered: r.mac.is_locally_administered(),
                node: nodes.iter().find(|n| n.macs.contains(&r.mac)).map(|n| n.name.clone()),
                ethernet_sources: r.ethernet_sources,
            })
            .collect();
        let verdict = match responders.len() {
            0 => Verdict::NoReply,
            1 => Verdict::Ok,
            _ => Verdict::Duplicate,
        };
        let sent = u32::try_from(self.requests.len()).unwrap_or(u32::MAX);
        let (summary, next_step) = explain(self.target, sent, verdict, &responders, !nodes.is_empty());
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
        }
    }
}

fn rtt_ms(rtts: &[Duration]) -> Option<RttMs> {
    let ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let min = ms.iter().copied().reduce(f64::min)?;
    let max = ms.iter().copied().reduce(f64::max)?;
    Some(RttMs { min: round3(min), avg: round3(ms.iter().sum::<f64>() / ms.len() as f64), max: round3(max) })
}

/// The verdict as a sentence, and where to look next.
fn explain(
    target: Ipv4Addr,
    sent: u32,
    verdict: Verdict,
    responders: &[Responder],
    nodes_given: bool,
) -> (String, Option<String>) {
    let unknown = responders.iter().filter(|r| r.node.is_none()).count();
    let unknown_note = (nodes_given && unknown > 0).then(|| {
        format!(
            "{unknown} of them match no --node: a host outside the listed nodes answers for {target}, find it by its MAC (switch MAC table, `ip neigh` on the nodes)."
        )
    });
    match verdict {
        Verdict::Ok => {
            let r = &responders[0];
            let owner = r.node.as_deref().map(|n| format!(" (node {n})")).unwrap_or_default();
            (format!("one MAC answers for {target}: {}{owner}", r.mac), unknown_note)
        }
        Verdict::Duplicate => {
            let advice = format!(
                "With MetalLB in layer-2 mode only the elected speaker may answer: list the speakers (kubectl -n metallb-system get pods -o wide), look for a second MetalLB install or a non-official chart, and for a host with {target} configured by hand."
            );
            let next = match unknown_note {
                Some(note) => format!("{note} {advice}"),
                None => advice,
            };
            (format!("{} MACs answer for {target}: more than one host claims it", responders.len()), Some(next))
        }
        Verdict::NoReply => (
            format!("nothing answered {sent} request(s) for {target}"),
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

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const SP1: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);
    const SP2: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x12]);

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn arp(bytes: &[u8]) -> ArpFrame {
        ArpFrame::from_link(LinkType::Ethernet, bytes).unwrap()
    }

    fn answer(from: MacAddr, ip: Ipv4Addr) -> ArpFrame {
        arp(&reply(from, ip, CLIENT_MAC, CLIENT))
    }

    #[test]
    fn one_responder_is_ok_and_rtts_match_requests_in_order() {
        let mut tally = Tally::new(VIP, vec![], false);
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
        assert!(report.next_step.is_none());
    }

    #[test]
    fn a_late_second_responder_makes_a_duplicate_with_its_own_rtt() {
        let mut tally = Tally::new(VIP, vec![], false);
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
    fn silence_is_no_reply() {
        let mut tally = Tally::new(VIP, vec![], false);
        tally.request_sent(ms(0));
        tally.observe(ms(5), &answer(SP1, Ipv4Addr::new(192, 0, 2, 7))); // another address
        let report = tally.finish();
        assert_eq!(report.verdict, Verdict::NoReply);
        assert!(report.responders.is_empty());
    }

    #[test]
    fn gratuitous_announcements_are_not_answers() {
        let mut tally = Tally::new(VIP, vec![], true);
        tally.observe(ms(0), &arp(&request(SP1, VIP, VIP)));
        tally.observe(ms(1), &arp(&reply(SP1, VIP, MacAddr::BROADCAST, VIP)));
        let report = tally.finish();
        assert_eq!(report.sent, 0);
        assert_eq!(report.verdict, Verdict::NoReply);
    }

    #[test]
    fn capture_mode_counts_requests_from_frames() {
        let mut tally = Tally::new(VIP, vec![], true);
        tally.observe(ms(0), &arp(&request(CLIENT_MAC, CLIENT, VIP)));
        tally.observe(ms(3), &answer(SP1, VIP));
        let report = tally.finish();
        assert_eq!(report.sent, 1);
        assert_eq!(report.responders[0].rtt_ms.unwrap().max, 3.0);
    }

    #[test]
    fn nodes_label_responders_and_unknown_ones_are_called_out() {
        let nodes = vec![
            Node { name: "sp1".into(), ip: Ipv4Addr::new(192, 0, 2, 11) },
            Node { name: "sp9".into(), ip: Ipv4Addr::new(192, 0, 2, 19) },
        ];
        let mut tally = Tally::new(VIP, nodes, false);
        tally.request_sent(ms(0));
        tally.observe(ms(1), &answer(SP1, VIP));
        tally.observe(ms(1), &answer(SP1, Ipv4Addr::new(192, 0, 2, 11)));
        tally.observe(ms(2), &answer(SP2, VIP));
        assert!(tally.nodes().resolved(Ipv4Addr::new(192, 0, 2, 11)));
        assert!(!tally.nodes().resolved(Ipv4Addr::new(192, 0, 2, 19)));
        let report = tally.finish();
        assert_eq!(report.responders[0].node.as_deref(), Some("sp1"));
        assert_eq!(report.responders[1].node, None);
        assert_eq!(report.nodes[0].macs, vec![SP1]);
        assert!(report.nodes[1].macs.is_empty());
        assert!(report.next_step.unwrap().contains("1 of them match no --node"));
    }

    #[test]
    fn ethernet_source_differing_from_arp_sender_is_kept() {
        let mut bytes = reply(SP1, VIP, CLIENT_MAC, CLIENT);
        bytes[6..12].copy_from_slice(&SP2.0); // Ethernet source rewritten
        let mut tally = Tally::new(VIP, vec![], false);
        tally.observe(ms(1), &arp(&bytes));
        let report = tally.finish();
        assert_eq!(report.responders[0].mac, SP1);
        assert_eq!(report.responders[0].ethernet_sources, vec![SP2]);
        assert_eq!(report.responders[0].rtt_ms, None, "no request was sent");
    }
}
