//! `netprobe arp`: every MAC that answers ARP for an address (a MetalLB layer-2 VIP), live or from
//! a capture file.
//!
//! Live, requests first go out as broadcast (a speaker that only sees unicast re-checks would hide)
//! and the capture keeps listening until the deadline, so late answerers count too. Then, unless
//! turned off, as many go to each MAC that answered, by unicast, as a router or the kernel re-checks
//! a cached neighbour: a speaker that answers broadcast but never unicast lets those entries fail
//! (MetalLB issue 2920). The same [`tally::Tally`] reads live frames and capture files, so both give
//! the same verdict.

mod link;
pub mod range;
mod report;
pub mod services;
mod tally;
pub mod watch;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub use link::capture_filter;
use link::{ask, ask_unicast, drain_with, probe_endpoint};
pub use report::{ArpReport, NodeAddress, Responder, RttMs, Unicast, Verdict};
pub use tally::Tally;

use crate::net::capture::LiveCapture;
use crate::net::{capture_file, Clock, Link, SystemClock};
use crate::wire::neighbour::NeighbourFrame;
use crate::wire::MacAddr;
use crate::{Error, Result};

/// A node name and its IP, from `--node NAME=IP`: responders sharing the node's MAC get its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub ip: IpAddr,
}

/// The MACs seen answering for each `--node` IP, shared by the one-shot probe and `--watch`.
#[derive(Clone, Debug, Default)]
pub struct NodeMacs(Vec<(Node, Vec<MacAddr>)>);

impl NodeMacs {
    pub fn new(nodes: Vec<Node>) -> NodeMacs {
        NodeMacs(nodes.into_iter().map(|n| (n, Vec::new())).collect())
    }

    /// Records the sender of an ARP reply for a node's IP.
    pub fn learn(&mut self, frame: &NeighbourFrame) {
        if frame.op != crate::wire::neighbour::Op::Reply || frame.is_gratuitous() {
            return;
        }
        for (_, macs) in self.0.iter_mut().filter(|(n, _)| n.ip == frame.sender_ip) {
            if !macs.contains(&frame.sender_mac) {
                macs.push(frame.sender_mac);
            }
        }
    }

    /// Whether some MAC has answered for the node at `ip`.
    pub fn resolved(&self, ip: IpAddr) -> bool {
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
    pub target: IpAddr,
    /// `None`: the interface of the route to `target`.
    pub interface: Option<String>,
    pub count: u32,
    pub interval: Duration,
    /// How long to keep listening after the last request.
    pub wait: Duration,
    /// `None`: the interface's first IPv4 address.
    pub source: Option<IpAddr>,
    pub nodes: Vec<Node>,
    /// After the broadcast requests, ask each MAC that answered by unicast (`count` requests each,
    /// `interval` apart, then `wait`).
    pub unicast: bool,
}

impl Config {
    pub fn new(target: IpAddr) -> Config {
        Config {
            target,
            interface: None,
            count: 3,
            interval: Duration::from_millis(200),
            wait: Duration::from_secs(1),
            source: None,
            nodes: Vec::new(),
            unicast: true,
        }
    }
}

/// In a capture, a reply matches a request of its asker at most this old.
pub const CAPTURE_MATCH_WINDOW: Duration = Duration::from_secs(1);

/// Probes live: `count` broadcast requests for the target (and one per unresolved node each round),
/// then listens until `wait` after the last; then the unicast round to each MAC that answered.
pub fn probe(config: &Config) -> Result<ArpReport> {
    if config.count == 0 {
        return Err(Error::invalid("--count 0", "send at least one request"));
    }
    let (name, mac, source) = probe_endpoint(config.interface.as_deref(), config.target, config.source)?;
    // Filter first, then send: nothing can answer before we listen.
    let mut capture = LiveCapture::open(&name, capture_filter(config.target))?;
    let mut report = probe_on(&mut capture, &SystemClock, config, mac, source)?;
    report.interface = Some(name);
    report.source_ip = Some(source);
    Ok(report)
}

/// The probe's loop on any [`Link`] and [`Clock`]: requests on schedule, every frame tallied, until
/// `wait` after the last request.
pub fn probe_on(
    link: &mut impl Link,
    clock: &impl Clock,
    config: &Config,
    mac: MacAddr,
    source: IpAddr,
) -> Result<ArpReport> {
    let window = config.wait.max(Duration::from_secs(1));
    let mut tally = Tally::live(config.target, config.nodes.clone(), source, window);
    let last_send = rounds(link, clock, config, &mut tally, |link, tally| {
        let at = link.send(&ask(mac, source, config.target)?)?;
        tally.request_sent(at);
        for node in config.nodes.iter().filter(|n| !tally.nodes().resolved(n.ip)) {
            link.send(&ask(mac, source, node.ip)?)?;
        }
        Ok(())
    })?;
    drain(link, &mut tally, until(last_send, config.wait)?)?;
    // Only now, so a reply to a broadcast request is never read as one to a unicast request: ARP
    // carries no request ID.
    let owners = if config.unicast { tally.answered_broadcast() } else { Vec::new() };
    if !owners.is_empty() {
        let last_send = rounds(link, clock, config, &mut tally, |link, tally| {
            for owner in &owners {
                link.send(&ask_unicast(*owner, mac, source, config.target)?)?;
                tally.unicast_sent(*owner);
            }
            Ok(())
        })?;
        drain(link, &mut tally, until(last_send, config.wait)?)?;
    }
    Ok(tally.finish())
}

/// `count` rounds `interval` apart, each `send`ing after the frames due before it are tallied;
/// returns when the last round was sent.
fn rounds<L: Link>(
    link: &mut L,
    clock: &impl Clock,
    config: &Config,
    tally: &mut Tally,
    mut send: impl FnMut(&mut L, &mut Tally) -> Result<()>,
) -> Result<Instant> {
    let start = clock.now();
    let mut last_send = start;
    for round in 0..config.count {
        let send_at = config
            .interval
            .checked_mul(round)
            .and_then(|offset| start.checked_add(offset))
            .ok_or_else(|| Error::invalid("--interval", "too long"))?;
        drain(link, tally, send_at)?;
        last_send = clock.now();
        send(link, tally)?;
    }
    Ok(last_send)
}

fn until(last_send: Instant, wait: Duration) -> Result<Instant> {
    last_send.checked_add(wait).ok_or_else(|| Error::invalid("--wait", "too long"))
}

/// Reads a pcap or pcapng capture (Ethernet, Linux SLL or SLL2, any VLAN tags) of ARP traffic and
/// gives the same report as a live probe: every host's requests for the target whose answers the
/// capture shows count as sent.
pub fn from_capture(path: &Path, target: IpAddr, nodes: Vec<Node>) -> Result<ArpReport> {
    let mut tally = Tally::capture(target, nodes, CAPTURE_MATCH_WINDOW);
    let file = capture_file::for_each_frame(path, |frame| {
        if let Some(arp) = NeighbourFrame::from_link(frame.link, &frame.data) {
            tally.observe(frame.at, &arp);
        }
    })?;
    let mut report = tally.finish();
    report.capture_file = Some(path.display().to_string());
    report.notes.extend(file.notes);
    Ok(report)
}

fn drain(link: &mut impl Link, tally: &mut Tally, until: Instant) -> Result<()> {
    drain_with(link, until, |at, arp| tally.observe(at, arp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::fake::{Event, FakeClock, FakeLink};
    use crate::wire::arp;
    use std::net::Ipv4Addr;

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const SP1: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);
    const SP2: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x12]);

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A link where `speakers` answer every request for the VIP after their delay, except the
    /// requests whose index is in `lost`.
    fn segment(clock: &FakeClock, speakers: Vec<(MacAddr, u64)>, lost: Vec<usize>) -> FakeLink {
        segment_ignoring_unicast(clock, speakers, lost, vec![])
    }

    /// [`segment`], where the speakers in `broadcast_only` answer only broadcast requests.
    fn segment_ignoring_unicast(
        clock: &FakeClock,
        speakers: Vec<(MacAddr, u64)>,
        lost: Vec<usize>,
        broadcast_only: Vec<MacAddr>,
    ) -> FakeLink {
        let mut asked = 0;
        FakeLink::new(clock).responding(move |at, frame| {
            let Some(req) = NeighbourFrame::from_link(crate::wire::link::LinkType::Ethernet, frame) else {
                return vec![];
            };
            if req.target_ip != VIP {
                return vec![];
            }
            asked += 1;
            if lost.contains(&(asked - 1)) {
                return vec![];
            }
            let broadcast = frame[..6] == MacAddr::BROADCAST.0;
            speakers
                .iter()
                .filter(|(mac, _)| broadcast || (frame[..6] == mac.0 && !broadcast_only.contains(mac)))
                .map(|(mac, delay)| (at + ms(*delay), arp::reply(*mac, VIP, OUR_MAC, US).to_vec()))
                .collect()
        })
    }

    fn config() -> Config {
        Config { interval: ms(200), wait: ms(1000), ..Config::new(std::net::IpAddr::from(VIP)) }
    }

    #[test]
    fn every_request_answered_once_is_ok() {
        let clock = FakeClock::new();
        let mut link = segment(&clock, vec![(SP1, 1)], vec![]);
        let report = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap();
        assert_eq!((report.verdict, report.sent), (Verdict::Ok, 3));
        assert_eq!(report.responders[0].replies, 3);
        assert_eq!(report.responders[0].rtt_ms, Some(RttMs { min: 1.0, avg: 1.0, max: 1.0 }));
        assert_eq!(report.responders[0].unicast, Some(Unicast { sent: 3, replies: 3 }));
        let offsets: Vec<Duration> = link.sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            offsets,
            vec![ms(0), ms(200), ms(400), ms(1400), ms(1600), ms(1800)],
            "on schedule: broadcast, --wait, then the unicast round"
        );
        let to: Vec<[u8; 6]> = link.sent.iter().map(|(_, f)| f[..6].try_into().unwrap()).collect();
        assert_eq!(to, [[MacAddr::BROADCAST.0; 3], [SP1.0; 3]].concat());
        assert_eq!(clock.elapsed(), ms(2800), "listened until --wait after the last request");
    }

    #[test]
    fn a_speaker_that_ignores_unicast_is_broadcast_only_and_without_the_round_it_is_ok() {
        let clock = FakeClock::new();
        let mut link = segment_ignoring_unicast(&clock, vec![(SP1, 1)], vec![], vec![SP1]);
        let report = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap();
        assert_eq!(report.verdict, Verdict::BroadcastOnly);
        assert_eq!(
            (report.responders[0].replies, report.responders[0].unicast),
            (3, Some(Unicast { sent: 3, replies: 0 }))
        );
        assert!(
            report.summary.contains(
                "answered 3 of 3 broadcast request(s) for 192.0.2.100 but none of the 3 sent to its own MAC"
            ),
            "{}",
            report.summary
        );
        assert!(report.next_step.unwrap().contains("ucast_solicit"));

        // One unicast answer of three keeps a cached entry alive: ok.
        let clock = FakeClock::new();
        let mut link = segment(&clock, vec![(SP1, 1)], vec![3, 4]);
        let report = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap();
        assert_eq!(
            (report.verdict, report.responders[0].unicast),
            (Verdict::Ok, Some(Unicast { sent: 3, replies: 1 }))
        );
        assert_eq!(
            report.notes,
            vec!["02:00:00:00:00:11 answered 1 of the 3 request(s) for 192.0.2.100 sent to its own MAC"]
        );

        let clock = FakeClock::new();
        let mut link = segment_ignoring_unicast(&clock, vec![(SP1, 1)], vec![], vec![SP1]);
        let config = Config { unicast: false, ..config() };
        let report = probe_on(&mut link, &clock, &config, OUR_MAC, std::net::IpAddr::from(US)).unwrap();
        assert_eq!((report.verdict, report.responders[0].unicast, link.sent.len()), (Verdict::Ok, None, 3));
    }

    #[test]
    fn with_two_owners_the_one_that_ignores_unicast_is_noted() {
        let clock = FakeClock::new();
        let mut link = segment_ignoring_unicast(&clock, vec![(SP1, 1), (SP2, 2)], vec![], vec![SP2]);
        let report = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap();
        assert_eq!(report.verdict, Verdict::Duplicate);
        assert_eq!(report.responders[0].unicast, Some(Unicast { sent: 3, replies: 3 }));
        assert_eq!(report.notes, vec!["02:00:00:00:00:12 answered broadcast requests for 192.0.2.100 but none of the 3 sent to its own MAC"]);
    }

    #[test]
    fn a_lost_reply_is_still_ok_and_a_late_speaker_is_found() {
        let clock = FakeClock::new();
        let mut link = segment(&clock, vec![(SP1, 1)], vec![1]);
        let report = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap();
        assert_eq!((report.verdict, report.responders[0].replies), (Verdict::Ok, 2));
        assert_eq!(report.responders[0].rtt_ms.unwrap().max, 1.0, "the lost reply shifts nothing");

        let clock = FakeClock::new();
        let mut link = segment(&clock, vec![(SP1, 1), (SP2, 900)], vec![]);
        let report = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap();
        assert_eq!(report.verdict, Verdict::Duplicate);
        assert_eq!(report.responders[1].rtt_ms.unwrap().min, 900.0);
    }

    #[test]
    fn a_gratuitous_arp_mid_probe_is_a_claim() {
        let clock = FakeClock::new();
        let link = segment(&clock, vec![(SP1, 1)], vec![]);
        link.at(ms(250), Event::Frame(arp::request(SP2, VIP, VIP).to_vec()));
        let mut link = link;
        let report = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap();
        assert_eq!(report.verdict, Verdict::Duplicate);
        assert_eq!(report.responders[1].announcements, 1);
    }

    #[test]
    fn capture_and_send_errors_are_errors_not_verdicts() {
        let clock = FakeClock::new();
        let link = segment(&clock, vec![(SP1, 1)], vec![]);
        link.at(ms(300), Event::Error("interface went down".into()));
        let mut link = link;
        let err = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap_err();
        assert!(!err.is_bad_input() && err.to_string().contains("interface went down"), "{err}");

        let clock = FakeClock::new();
        let mut link = FakeLink::new(&clock);
        link.send_error = Some("Network is down".into());
        let err = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap_err();
        assert!(err.to_string().contains("Network is down"), "{err}");
    }

    #[test]
    fn no_answer_is_no_reply_after_the_whole_wait() {
        let clock = FakeClock::new();
        let mut link = FakeLink::new(&clock);
        let report = probe_on(&mut link, &clock, &config(), OUR_MAC, std::net::IpAddr::from(US)).unwrap();
        assert_eq!((report.verdict, report.sent), (Verdict::NoReply, 3));
        assert_eq!(clock.elapsed(), ms(1400), "no unicast round: nobody to ask");
    }
}
