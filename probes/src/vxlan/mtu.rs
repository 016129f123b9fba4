//! `netprobe vxlan --mtu`: the largest encapsulated packet that gets from one node to another,
//! what that leaves the pods, and whether the pod network's MTU fits in it.
//!
//! Probes leave with the outer Don't Fragment bit set, so a hop with a smaller MTU drops them
//! (and says so with an ICMP fragmentation-needed, unless a firewall eats it: the black hole).
//! The search is a binary search widened to [`WAYS`] sizes per round: each round is one
//! expect/send/collect with the agents, so 16 sizes a round find the exact size between 1200 and
//! 9216 bytes in four rounds where halving would take thirteen.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::api::{FragNeededSeen, MAX_PROBE_PACKET};
use crate::wire::vxlan::OVERHEAD;

/// The smallest outer packet tried: below it, the path is broken for more than large packets.
pub const FLOOR: u16 = 1200;
/// Sizes tried per round.
pub const WAYS: u16 = 16;
/// Probes of each size per round: one lost probe must not read as "too big".
pub const COPIES: usize = 2;
/// Rounds at most (four find any size from FLOOR to MAX_PROBE_PACKET).
pub const MAX_ROUNDS: u32 = 6;

/// What a probe size did in one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// At least one copy arrived at the destination's interface.
    Arrived,
    /// Copies left the source; none arrived.
    Lost,
    /// No copy left the source (longer than its interface's MTU, EMSGSIZE).
    NotSent,
}

/// The search's bounds: every size up to `arrives` is known to arrive, no size above `fits`
/// can; the answer is found when they meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Search {
    /// The largest size seen arriving (FLOOR - 1: none yet).
    pub arrives: u16,
    /// The largest size that may still arrive.
    pub fits: u16,
}

impl Search {
    /// A search up to `upper` bytes (the interfaces' MTU when known).
    pub fn new(upper: u16) -> Search {
        Search { arrives: FLOOR - 1, fits: upper.clamp(FLOOR, MAX_PROBE_PACKET) }
    }

    pub fn done(&self) -> bool {
        self.arrives >= self.fits
    }

    /// The largest outer packet that arrives, once done; `None` when not even FLOOR did.
    pub fn path_mtu(&self) -> Option<u16> {
        (self.arrives >= FLOOR).then_some(self.arrives)
    }

    /// The next round's sizes: up to [`WAYS`], evenly over (arrives, fits], `fits` always among
    /// them, and FLOOR first until something arrived (a path below it ends the search at once).
    pub fn sizes(&self) -> Vec<u16> {
        let span = u32::from(self.fits.saturating_sub(self.arrives));
        let floor_first = self.arrives < FLOOR && !self.done();
        let ways = span.min(u32::from(WAYS) - u32::from(floor_first));
        let mut sizes: Vec<u16> = floor_first.then_some(FLOOR).into_iter().collect();
        sizes.extend((1..=ways).map(|i| self.arrives + (i * span).div_ceil(ways) as u16));
        sizes.dedup();
        sizes
    }

    /// Narrows the bounds by one round: the fate of each size tried, and the source interface's
    /// MTU when it said it (no larger packet can leave).
    pub fn narrow(&mut self, tried: &[(u16, Fate)], interface_mtu: Option<u16>) {
        if let Some(mtu) = interface_mtu {
            self.fits = self.fits.min(mtu.max(FLOOR - 1));
        }
        if let Some(best) = tried.iter().filter(|(_, f)| *f == Fate::Arrived).map(|(s, _)| *s).max() {
            self.arrives = self.arrives.max(best);
            // A larger size can arrive only if the bounds allowed it: keep them ordered.
            self.fits = self.fits.max(self.arrives);
        }
        if let Some(smallest) =
            tried.iter().filter(|(s, f)| *f != Fate::Arrived && *s > self.arrives).map(|(s, _)| *s).min()
        {
            self.fits = self.fits.min(smallest - 1);
        }
    }
}

/// What `--mtu` found for one ordered pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MtuReport {
    /// The largest outer IPv4 packet that arrived, in bytes; `null` when not even 1200 did.
    pub path_mtu: Option<u16>,
    /// What that leaves the pods: `path_mtu` - 50 (outer IPv4, UDP, VXLAN, inner Ethernet).
    pub inner_mtu: Option<u16>,
    /// The MTU of the source's interface towards the destination.
    pub interface_mtu: Option<u16>,
    /// The source node's vxlan device with the largest MTU (the pod network's), when it has one.
    pub vxlan_device: Option<String>,
    pub vxlan_mtu: Option<u16>,
    /// An ICMP fragmentation-needed that reached the source: who sent it and the MTU it gave.
    pub frag_needed: Option<FragNeededSeen>,
    /// Packets the source's interface lets out are lost on the path and no ICMP
    /// fragmentation-needed came back: nothing tells a sender they are too big.
    pub black_hole: bool,
    /// The pod network's MTU does not fit in what the path carries.
    pub too_small: bool,
    pub rounds: u32,
    /// Sized probes sent over all rounds.
    pub probes: u32,
    /// Whether the source's cached path MTU for the destination is as it was before the search
    /// (`unchanged`; the probes leave on a raw socket so that the ICMP answering them changes
    /// nothing), as its agent checked it.
    pub route_cache: Option<String>,
    pub finding: String,
}

/// What the search ended with, and the source's facts it gathered on the way.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub path_mtu: Option<u16>,
    pub interface_mtu: Option<u16>,
    pub vxlan_device: Option<(String, u16)>,
    pub frag_needed: Option<FragNeededSeen>,
    pub rounds: u32,
    pub probes: u32,
    /// The last round's check of the source's route cache.
    pub route_cache: Option<String>,
}

/// The pair's MTU report in words: the size, what it leaves pods, and whether the pod network fits.
pub fn judge(from: Ipv4Addr, to: Ipv4Addr, found: Found) -> MtuReport {
    let inner = found.path_mtu.map(|p| p.saturating_sub(OVERHEAD));
    let (device, vxlan_mtu) = found.vxlan_device.clone().unzip();
    let short_of_interface = match (found.path_mtu, found.interface_mtu) {
        (Some(path), Some(interface)) => path < interface,
        (None, _) => true,
        _ => false,
    };
    let icmp = match (&found.frag_needed, short_of_interface) {
        (_, false) => String::new(),
        (Some(f), true) => format!(
            "; {} sent ICMP fragmentation-needed (next-hop MTU {}), so TCP in the pods can still adapt",
            f.from, f.mtu
        ),
        (None, true) => {
            "; no ICMP fragmentation-needed came back: a path MTU black hole (something drops ICMP type 3 code 4), so nothing tells the senders their packets are too big".into()
        }
    };
    let too_small = match (found.path_mtu, vxlan_mtu) {
        (Some(path), Some(pod)) => u32::from(pod) + u32::from(OVERHEAD) > u32::from(path),
        (None, _) => true,
        _ => false,
    };
    let finding = match (found.path_mtu, inner, &device, vxlan_mtu) {
        (None, ..) => format!(
            "no {FLOOR}-byte VXLAN packet from {from} reaches {to} with Don't Fragment set, while small probes do: a hop with an MTU below {FLOOR}{icmp}"
        ),
        (Some(path), Some(inner), Some(device), Some(pod)) if too_small => format!(
            "{device} MTU {pod} but the path from {from} to {to} carries {path}-byte packets: pods' packets over {inner} bytes are lost; set the CNI MTU to {inner}{icmp}"
        ),
        (Some(path), Some(inner), Some(device), Some(pod)) => format!(
            "the path from {from} to {to} carries {path}-byte packets, pods up to {inner}: {device} MTU {pod} fits{icmp}"
        ),
        (Some(path), Some(inner), ..) => format!(
            "the path from {from} to {to} carries {path}-byte packets, pods up to {inner} (no vxlan device on {from} to compare with: the pod network's MTU must be {inner} or less){icmp}"
        ),
        (Some(path), None, ..) => format!("the path from {from} to {to} carries {path}-byte packets{icmp}"),
    };
    MtuReport {
        path_mtu: found.path_mtu,
        inner_mtu: inner,
        interface_mtu: found.interface_mtu,
        vxlan_device: device,
        vxlan_mtu,
        black_hole: short_of_interface && found.frag_needed.is_none(),
        frag_needed: found.frag_needed,
        too_small,
        rounds: found.rounds,
        probes: found.probes,
        route_cache: found.route_cache,
        finding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a path that carries `path` bytes from a source whose interface
    /// MTU is `interface`: rounds until done.
    fn search(path: u16, interface: u16, upper: u16) -> (Search, u32) {
        let mut s = Search::new(upper);
        let mut rounds = 0;
        while !s.done() && rounds < MAX_ROUNDS {
            rounds += 1;
            let tried: Vec<(u16, Fate)> = s
                .sizes()
                .into_iter()
                .map(|size| {
                    let fate = match size {
                        _ if size > interface => Fate::NotSent,
                        _ if size > path => Fate::Lost,
                        _ => Fate::Arrived,
                    };
                    (size, fate)
                })
                .collect();
            s.narrow(&tried, Some(interface));
        }
        (s, rounds)
    }

    #[test]
    fn finds_the_exact_size_in_few_rounds() {
        for (path, interface, upper) in [
            (1400, 1500, MAX_PROBE_PACKET),
            (1500, 1500, 1500),
            (1450, 9000, 9000),
            (8950, 9000, MAX_PROBE_PACKET),
        ] {
            let (s, rounds) = search(path, interface, upper);
            assert!(s.done(), "{path} {interface}: {s:?}");
            assert_eq!(s.path_mtu(), Some(path), "{path} {interface}");
            assert!(rounds <= 4, "{path} {interface}: {rounds} rounds");
        }
        // Every size between the floor and a jumbo frame.
        for path in (FLOOR..=MAX_PROBE_PACKET).step_by(97) {
            assert_eq!(search(path, MAX_PROBE_PACKET, MAX_PROBE_PACKET).0.path_mtu(), Some(path));
        }
    }

    #[test]
    fn a_path_below_the_floor_has_no_mtu() {
        let (s, rounds) = search(1000, 1500, 1500);
        assert!(s.done());
        assert_eq!((s.path_mtu(), rounds), (None, 1));
    }

    #[test]
    fn a_lost_probe_below_a_larger_one_that_arrived_does_not_lower_the_answer() {
        let mut s = Search::new(1500);
        s.narrow(&[(1300, Fate::Lost), (1400, Fate::Arrived), (1450, Fate::Lost)], Some(1500));
        assert_eq!(s, Search { arrives: 1400, fits: 1449 });
    }

    #[test]
    fn sizes_are_spread_and_end_at_the_upper_bound() {
        let s = Search { arrives: 1199, fits: 1500 };
        let sizes = s.sizes();
        assert_eq!((sizes.len(), sizes[..2].to_vec(), sizes.last()), (16, vec![1200, 1220], Some(&1500)));
        assert_eq!(Search { arrives: 1400, fits: 1403 }.sizes(), vec![1401, 1402, 1403]);
        assert!(Search { arrives: 1400, fits: 1400 }.sizes().is_empty());
    }

    fn found(path: Option<u16>, vxlan: Option<u16>, icmp: bool) -> Found {
        Found {
            path_mtu: path,
            interface_mtu: Some(1500),
            vxlan_device: vxlan.map(|m| ("flannel.1".to_string(), m)),
            frag_needed: icmp.then(|| FragNeededSeen { from: Ipv4Addr::new(198, 51, 100, 254), mtu: 1400 }),
            rounds: 3,
            probes: 96,
            route_cache: Some("unchanged".into()),
        }
    }

    #[test]
    fn the_pod_network_is_compared_with_the_path() {
        let (a, b) = (Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(203, 0, 113, 2));
        let hole = judge(a, b, found(Some(1400), Some(1450), false));
        assert!(hole.too_small && hole.black_hole);
        assert_eq!(hole.inner_mtu, Some(1350));
        assert!(
            hole.finding.starts_with("flannel.1 MTU 1450 but the path from 198.51.100.1 to 203.0.113.2 carries 1400-byte packets: pods' packets over 1350 bytes are lost; set the CNI MTU to 1350; no ICMP fragmentation-needed came back: a path MTU black hole"),
            "{}",
            hole.finding
        );
        let told = judge(a, b, found(Some(1400), Some(1450), true));
        assert!(
            told.too_small
                && !told.black_hole
                && told.finding.contains("198.51.100.254 sent ICMP fragmentation-needed (next-hop MTU 1400)")
        );
        let fits = judge(a, b, found(Some(1500), Some(1450), false));
        assert!(!fits.too_small && !fits.black_hole, "the path carries what the interface lets out");
        assert_eq!(fits.finding, "the path from 198.51.100.1 to 203.0.113.2 carries 1500-byte packets, pods up to 1450: flannel.1 MTU 1450 fits");
        let unknown = judge(a, b, found(Some(1400), None, false));
        assert!(
            !unknown.too_small && unknown.finding.contains("must be 1350 or less"),
            "{}",
            unknown.finding
        );
        let none = judge(a, b, found(None, Some(1450), false));
        assert!(none.too_small && none.finding.starts_with("no 1200-byte VXLAN packet"));
    }
}
