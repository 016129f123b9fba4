//! Asking on the link, for every mode that sends (the probe, `--watch`, `--range`): the endpoint to
//! ask from, the who-has frame, the capture filter for the answers, and draining them.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::net::{interface, Link};
use crate::wire::neighbour::NeighbourFrame;
use crate::wire::MacAddr;
use crate::{Error, Result};

/// Who has `target`: an ARP request or, for an IPv6 address, a Neighbor Solicitation.
pub(crate) fn ask(mac: MacAddr, source: IpAddr, target: IpAddr) -> Result<Vec<u8>> {
    crate::wire::neighbour::ask(mac, source, target).ok_or_else(|| other_family(source, target))
}

/// Who has `target`, asked of `owner`'s MAC alone (an ARP request or a Neighbor Solicitation by
/// unicast, as a cached neighbour is re-checked).
pub(crate) fn ask_unicast(owner: MacAddr, mac: MacAddr, source: IpAddr, target: IpAddr) -> Result<Vec<u8>> {
    crate::wire::neighbour::ask_unicast(owner, mac, source, target)
        .ok_or_else(|| other_family(source, target))
}

fn other_family(source: IpAddr, target: IpAddr) -> Error {
    Error::invalid(
        format!("{target}"),
        format!("not of the family of the source address {source}: give addresses of one family"),
    )
}

/// The capture filter for what answers an address: ARP for IPv4, Neighbor Solicitations and
/// Advertisements (ICMPv6 135 and 136) for IPv6.
pub fn capture_filter(target: IpAddr) -> &'static str {
    match target {
        IpAddr::V4(_) => "arp",
        IpAddr::V6(_) => "icmp6 and (ip6[40] == 135 or ip6[40] == 136)",
    }
}

/// The interface to probe on (given, or the route's), its MAC, and the source address (given, or
/// the interface's first address of the target's family: for IPv6 a global one before a
/// link-local one).
pub(crate) fn probe_endpoint(
    interface: Option<&str>,
    target: IpAddr,
    source: Option<IpAddr>,
) -> Result<(String, MacAddr, IpAddr)> {
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
    let own = match target {
        IpAddr::V4(_) => iface.ipv4.first().copied().map(IpAddr::V4),
        IpAddr::V6(_) => {
            let link_local = |ip: &std::net::Ipv6Addr| ip.segments()[0] & 0xffc0 == 0xfe80;
            let global = iface.ipv6.iter().find(|ip| !link_local(ip));
            global.or(iface.ipv6.first()).copied().map(IpAddr::V6)
        }
    };
    let family = if target.is_ipv4() { "IPv4" } else { "IPv6" };
    let source = source.or(own).ok_or_else(|| {
        Error::could_not_run(
            format!("probing {target} on {name}"),
            format!("it has no {family} address to ask from: give one with -s/--source"),
        )
    })?;
    Ok((name, mac, source))
}

/// Hands every ARP frame captured before `until` to `observe`, with its capture time.
pub(crate) fn drain_with(
    link: &mut impl Link,
    until: Instant,
    mut observe: impl FnMut(Duration, &NeighbourFrame),
) -> Result<()> {
    while let Some(frame) = link.next_before(until)? {
        if let Some(arp) = NeighbourFrame::from_link(frame.link, &frame.data) {
            observe(frame.at, &arp);
        }
    }
    Ok(())
}
