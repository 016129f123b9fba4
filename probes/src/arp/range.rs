//! `netprobe arp --range`: every address of an address pool (a MetalLB pool before it is handed
//! out) asked at a polite rate on one capture, and which of them already have an owner, or several.
//! An address that answers before MetalLB assigns it is a conflict waiting to happen.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Serialize;

use super::link::{drain_with, probe_endpoint};
use crate::net::capture::LiveCapture;
use crate::net::{Clock, Link, SystemClock};
use crate::wire::arp;
use crate::wire::neighbour::NeighbourFrame;
use crate::wire::MacAddr;
use crate::{Error, Health, Result};

/// A pool larger than this is not a pool: refused, so a typo cannot flood a segment.
pub const MAX_ADDRESSES: u32 = 4096;

/// The addresses to ask for, first to last, both included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Range {
    /// `A-B` (as MetalLB writes pools) or `A/LEN` (every address of the prefix).
    pub fn parse(text: &str) -> Result<Range> {
        let bad = |why: &str| Error::invalid(format!("--range {text}"), why.to_string());
        let range = if let Some((a, b)) = text.split_once('-') {
            let first: Ipv4Addr = a.trim().parse().map_err(|_| bad("write FIRST-LAST or ADDRESS/LEN"))?;
            let last: Ipv4Addr = b.trim().parse().map_err(|_| bad("write FIRST-LAST or ADDRESS/LEN"))?;
            Range { first, last }
        } else if let Some((a, len)) = text.split_once('/') {
            let address: Ipv4Addr = a.parse().map_err(|_| bad("write FIRST-LAST or ADDRESS/LEN"))?;
            let len: u32 =
                len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| bad("the prefix length is 0 to 32"))?;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let network = u32::from(address) & mask;
            Range { first: network.into(), last: (network | !mask).into() }
        } else {
            return Err(bad("write FIRST-LAST or ADDRESS/LEN, e.g. 192.0.2.100-192.0.2.120"));
        };
        if range.first > range.last {
            return Err(bad("the first address is after the last"));
        }
        if range.size() > MAX_ADDRESSES {
            return Err(bad(&format!("{} addresses: at most {MAX_ADDRESSES} at once", range.size())));
        }
        Ok(range)
    }

    pub fn size(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }

    fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[derive(Clone, Debug)]
pub struct RangeConfig {
    pub range: Range,
    /// `None`: the interface of the route to the first address.
    pub interface: Option<String>,
    /// Requests per address.
    pub count: u32,
    /// Between two requests (any addresses): the rate the segment sees.
    pub interval: Duration,
    /// How long to keep listening after the last request.
    pub wait: Duration,
    pub source: Option<Ipv4Addr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressVerdict {
    /// One MAC answers or announces it: someone already holds it.
    InUse,
    /// More than one MAC answers or announces it.
    Duplicate,
}

impl AddressVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressVerdict::InUse => "in-use",
            AddressVerdict::Duplicate => "duplicate",
        }
    }
}

/// An address of the range that has an owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnedAddress {
    pub address: Ipv4Addr,
    pub verdict: AddressVerdict,
    /// Every MAC that answered or announced it, in order of first claim.
    pub macs: Vec<MacAddr>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RangeReport {
    pub probe: &'static str,
    /// `FIRST-LAST`.
    pub range: String,
    pub interface: Option<String>,
    pub source_ip: Option<Ipv4Addr>,
    /// Addresses in the range.
    pub addresses: u32,
    /// Requests sent for each.
    pub count: u32,
    /// `fault` when any address has an owner: the pool is not free.
    pub verdict: Health,
    /// The addresses that answered, in address order; every other one is free.
    pub owned: Vec<OwnedAddress>,
}

impl RangeReport {
    pub fn health(&self) -> Health {
        self.verdict
    }
}

/// Asks for every address of the range, live.
pub fn scan(config: &RangeConfig) -> Result<RangeReport> {
    if config.count == 0 {
        return Err(Error::invalid("--count 0", "send at least one request"));
    }
    let first = IpAddr::V4(config.range.first);
    let (name, mac, source) =
        probe_endpoint(config.interface.as_deref(), first, config.source.map(IpAddr::V4))?;
    let IpAddr::V4(source) = source else {
        return Err(Error::invalid("--source", "an IPv4 address: --range scans IPv4 pools"));
    };
    let mut capture = LiveCapture::open(&name, "arp")?;
    let mut report = scan_on(&mut capture, &SystemClock, config, mac, source)?;
    report.interface = Some(name);
    report.source_ip = Some(source);
    Ok(report)
}

/// The scan on any [`Link`] and [`Clock`]: one request every `interval`, each address in turn,
/// `count` rounds, then listening until `wait` after the last. A reply counts when it is
/// addressed to us; an announcement (gratuitous ARP) of an address in the range counts too.
pub fn scan_on(
    link: &mut impl Link,
    clock: &impl Clock,
    config: &RangeConfig,
    mac: MacAddr,
    source: Ipv4Addr,
) -> Result<RangeReport> {
    let mut claims: BTreeMap<Ipv4Addr, Vec<MacAddr>> = BTreeMap::new();
    let range = config.range;
    let mut observe = |_: Duration, frame: &NeighbourFrame| {
        let IpAddr::V4(claimed) = frame.sender_ip else { return };
        let reply_to_us =
            frame.op == crate::wire::neighbour::Op::Reply && frame.target_ip == IpAddr::V4(source);
        if (reply_to_us || frame.is_gratuitous()) && range.contains(claimed) {
            let macs = claims.entry(claimed).or_default();
            if !macs.contains(&frame.sender_mac) {
                macs.push(frame.sender_mac);
            }
        }
    };
    let mut next = clock.now();
    for _ in 0..config.count {
        for address in range.addresses() {
            drain_with(link, next, &mut observe)?;
            link.send(&arp::request(mac, source, address))?;
            next = clock
                .now()
                .checked_add(config.interval)
                .ok_or_else(|| Error::invalid("--interval", "too long"))?;
        }
    }
    let end = clock.now().checked_add(config.wait).ok_or_else(|| Error::invalid("--wait", "too long"))?;
    drain_with(link, end, &mut observe)?;
    let owned: Vec<OwnedAddress> = claims
        .into_iter()
        .map(|(address, macs)| OwnedAddress {
            address,
            verdict: if macs.len() > 1 { AddressVerdict::Duplicate } else { AddressVerdict::InUse },
            macs,
        })
        .collect();
    Ok(RangeReport {
        probe: "arp",
        range: range.to_string(),
        interface: None,
        source_ip: None,
        addresses: range.size(),
        count: config.count,
        verdict: if owned.is_empty() { Health::Ok } else { Health::Fault },
        owned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::fake::{Event, FakeClock, FakeLink};

    #[test]
    fn ranges_as_pools_are_written() {
        let r = Range::parse("192.0.2.100-192.0.2.120").unwrap();
        assert_eq!((r.size(), r.to_string()), (21, "192.0.2.100-192.0.2.120".to_string()));
        let r = Range::parse("198.51.100.64/30").unwrap();
        assert_eq!((r.first, r.last), (Ipv4Addr::new(198, 51, 100, 64), Ipv4Addr::new(198, 51, 100, 67)));
        assert_eq!(Range::parse("203.0.113.7/32").unwrap().size(), 1);
        for bad in ["192.0.2.9-192.0.2.1", "192.0.2.0/16", "192.0.2.0/33", "banana", "192.0.2.1-x"] {
            let err = Range::parse(bad).unwrap_err();
            assert!(err.is_bad_input(), "{bad}: {err}");
        }
    }

    #[test]
    fn owners_and_duplicates_are_found_and_others_are_free() {
        let clock = FakeClock::new();
        let me = Ipv4Addr::new(192, 0, 2, 1);
        let (a, b) = (MacAddr([0, 0, 0x5e, 0, 0x53, 0xa]), MacAddr([0, 0, 0x5e, 0, 0x53, 0xb]));
        let mut link = FakeLink::new(&clock);
        // .101 answered by one host, .102 by two, .103 announced unasked, and a reply to another
        // host about .104 (not addressed to us: not counted).
        let reply = |mac, ip: [u8; 4], to: Ipv4Addr| {
            Event::Frame(arp::reply(mac, Ipv4Addr::from(ip), MacAddr::BROADCAST, to).to_vec())
        };
        link.at(Duration::from_millis(5), reply(a, [192, 0, 2, 101], me));
        link.at(Duration::from_millis(15), reply(a, [192, 0, 2, 102], me));
        link.at(Duration::from_millis(16), reply(b, [192, 0, 2, 102], me));
        link.at(
            Duration::from_millis(20),
            Event::Frame(
                arp::request(b, Ipv4Addr::new(192, 0, 2, 103), Ipv4Addr::new(192, 0, 2, 103)).to_vec(),
            ),
        );
        link.at(Duration::from_millis(25), reply(b, [192, 0, 2, 104], Ipv4Addr::new(192, 0, 2, 50)));
        let config = RangeConfig {
            range: Range::parse("192.0.2.100-192.0.2.105").unwrap(),
            interface: None,
            count: 1,
            interval: Duration::from_millis(10),
            wait: Duration::from_millis(500),
            source: None,
        };
        let report = scan_on(&mut link, &clock, &config, MacAddr([2, 0, 0, 0, 0, 1]), me).unwrap();
        let owned: Vec<(String, &str, usize)> =
            report.owned.iter().map(|o| (o.address.to_string(), o.verdict.as_str(), o.macs.len())).collect();
        assert_eq!(
            owned,
            vec![
                ("192.0.2.101".to_string(), "in-use", 1),
                ("192.0.2.102".to_string(), "duplicate", 2),
                ("192.0.2.103".to_string(), "in-use", 1)
            ]
        );
        assert_eq!(report.verdict, Health::Fault);
        assert_eq!(link.sent.len(), 6, "one request per address");
    }
}
