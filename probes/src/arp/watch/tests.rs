use super::report::RFC3339_MAX;
use super::watcher::regular_period;
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
    let times: Vec<String> =
        events.iter().map(|e| serde_json::to_value(e).unwrap()["at"].as_str().unwrap().to_string()).collect();
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
        let mut results: Vec<ConnectResult> =
            (0..5).map(|i| (clock.wall_at(Duration::from_secs(i)), Ok(Duration::from_millis(1)))).collect();
        results.push((clock.wall_at(Duration::from_secs(5)), Err("timed out".into())));
        let mut tcp = Stalls(results);
        let (events, summary) = run(&mut link, &clock, Some(&mut tcp));
        assert_eq!(names(&events), vec!["tcp-spike"]);
        let tcp = summary.tcp.unwrap();
        assert_eq!((tcp.probes, tcp.failures, tcp.spikes), (6, 1, 1));
    }
}
