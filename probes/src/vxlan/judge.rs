//! A pair's verdict from all its evidence, as a pure step: typed [`Evidence`] in, a [`Finding`]
//! out, and the report's words made from the finding alone.
//!
//! The rule: the count of what arrived comes first. A probe that did not arrive is lost, whatever
//! else was seen; a kernel drop reason, a counter or the overlay's devices may explain what
//! happened to the probes that did arrive, or where the others went, but never cancel a loss.
//! So the finding is decided in this order: did anything leave; did anything arrive (and did
//! anyone answer with an ICMP error); what became of those that arrived (a firewall rule, the
//! kernel's own word, its counters); does the overlay listen where the probes went; and last,
//! whether every probe arrived.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::api::{CollectResponse, GrownRule, SendResponse, UnreachableSeen, VxlanDeviceSeen};
use super::report::{ControlUdp, Delivery, PairReport, PairVerdict};
use crate::net::drop_trace::{reason, KernelDrop};
use crate::wire::vxlan::unreachable_code;

/// What every node of a run said of its VXLAN devices: the overlay as the mesh sees it. A node's
/// devices are the ones its agent listed last (as a source or as a destination).
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    devices: HashMap<Ipv4Addr, Vec<VxlanDeviceSeen>>,
}

impl Overlay {
    /// Gathers the devices each agent listed in its answers: `(source, destination, sent,
    /// arrived)` for each pair measured.
    pub fn gather<'a>(
        pairs: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr, &'a SendResponse, &'a CollectResponse)>,
    ) -> Overlay {
        let mut devices = HashMap::new();
        for (from, to, sent, arrived) in pairs {
            if let Some(list) = &sent.vxlan_devices {
                devices.insert(from, list.clone());
            }
            if let Some(list) = &arrived.vxlan_devices {
                devices.insert(to, list.clone());
            }
        }
        Overlay { devices }
    }

    /// Whether a node other than `except` has a device listening on `port`.
    fn others_listen(&self, except: [Ipv4Addr; 2], port: u16) -> bool {
        self.devices.iter().any(|(ip, list)| !except.contains(ip) && list.iter().any(|d| d.listens_on(port)))
    }

    /// The ports the mesh's devices listen on, but `port`, in order.
    fn other_ports(&self, port: u16) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .devices
            .values()
            .flatten()
            .filter(|d| d.up != Some(false))
            .filter_map(|d| d.port)
            .filter(|p| *p != port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// Everything known of one pair.
pub struct Evidence<'a> {
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    pub port: u16,
    /// The source's answer: what left, what came back about it, its own rules and devices.
    pub sent: &'a SendResponse,
    /// The destination's answer: what arrived, where, and what its firewall, counters and kernel
    /// said of it.
    pub arrived: &'a CollectResponse,
    /// The other nodes' devices.
    pub overlay: &'a Overlay,
}

/// Where the probes went and why: a verdict and its cause in one value.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// No probe left the source: its own firewall (a rule that counted them), or its kernel
    /// refused to send (sendto's error).
    BlockedAtSource { never_left: u32, rule: Option<String>, send_error: Option<String> },
    /// An ICMP destination unreachable came back for the probes: a firewall that rejects, on the
    /// path (`by` a router) or at the destination (with the rule when one counted them).
    Rejected { icmp: UnreachableSeen, at_destination: bool, rule: Option<String>, arrived: u32, sent: u32 },
    /// None arrived and nobody said why. `control_passed`: a datagram to another UDP port did.
    LostInNetwork { control_passed: bool },
    /// They reached the destination's interface and its kernel dropped them.
    Dropped { cause: DropCause, arrived: u32, sent: u32 },
    /// The overlay's devices do not listen where the other side sends.
    PortMismatch { mismatch: Mismatch, arrived: u32, sent: u32, evidence: Option<String> },
    /// Fewer arrived than were sent, and what became of those that arrived is no fault.
    PartialLoss { sent: u32, left: u32, arrived: u32, delivery: Delivery },
    /// Every probe reached the destination's interface, and `what` became of them could not be
    /// told: `why`, with the kernel's drop when it said something.
    Unverified { what: String, why: String, traced: Option<KernelDrop> },
    /// Every probe arrived and went through. `untested_device`: why the overlay's own device
    /// was not part of that (none listens on the port).
    Delivered { delivery: Delivery, untested_device: Option<String> },
}

/// Why the destination's kernel dropped probes that reached its interface.
#[derive(Clone, Debug, PartialEq)]
pub enum DropCause {
    /// A firewall rule that can match the probes counted at least as many as arrived (with the
    /// kernel's word, when traced).
    Rule { rule: GrownRule, traced: Option<KernelDrop> },
    /// The kernel says its firewall dropped them, though no counted rule grew.
    UncountedRule { traced: KernelDrop },
    /// The reverse-path filter: they came in by `arrived_on`, and the route back leaves by
    /// `route_interface`.
    ReversePath {
        arrived_on: Option<String>,
        route_interface: Option<String>,
        rp_filter: Option<u8>,
        counted: Option<u64>,
        traced: Option<KernelDrop>,
    },
    /// A bad UDP checksum (the counter, the kernel's word, or both); `offload` names the source's
    /// device when it offloads its checksum.
    BadChecksum { counted: Option<u64>, traced: Option<KernelDrop>, offload: Option<String> },
    /// Any other reason the kernel gave.
    Kernel { traced: KernelDrop },
}

/// Which side's device is not where the other sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Mismatch {
    /// The destination has no device up on the probed port: `its` are the devices it has, `ours`
    /// the source's device on the port (what sends there), if it has one.
    Destination { its: Vec<VxlanDeviceSeen>, ours: Option<VxlanDeviceSeen>, others: bool },
    /// The source's device sends to another port, where nothing listens on the destination:
    /// `its` is the destination's device on the probed port.
    Source { ours: VxlanDeviceSeen, its: VxlanDeviceSeen },
}

/// The destination kernel's drops of a pair's probes, as its agent traced them. Each probe is
/// freed once, so more drops than probes that arrived means some are other packets that looked
/// alike (the same length, in another namespace): then a reason counts only if it alone accounts
/// for every probe.
struct Traced<'a> {
    drops: &'a [KernelDrop],
    arrived: u32,
}

impl Traced<'_> {
    fn attributable(&self, drop: &KernelDrop) -> bool {
        let total: u32 = self.drops.iter().map(|d| d.count).sum();
        total <= self.arrived || drop.count >= self.arrived
    }

    fn reason(&self, reason: &str) -> Option<KernelDrop> {
        self.drops.iter().find(|d| d.reason == reason && self.attributable(d)).cloned()
    }

    /// How many were dropped with any of `reasons`, and the first such drop.
    fn sum(&self, reasons: &[&str]) -> (u32, Option<KernelDrop>) {
        let matching = self.drops.iter().filter(|d| reasons.contains(&d.reason.as_str()));
        let first = self.drops.iter().find(|d| reasons.contains(&d.reason.as_str())).cloned();
        (matching.map(|d| d.count).sum(), first)
    }

    /// A drop for a reason none of the others covers.
    fn other(&self) -> Option<KernelDrop> {
        use reason::*;
        let known =
            [NETFILTER_DROP, UDP_CSUM, NO_SOCKET, IP_RPFILTER, VXLAN_VNI_NOT_FOUND, VXLAN_INVALID_HDR];
        self.drops.iter().find(|d| !known.contains(&d.reason.as_str()) && self.attributable(d)).cloned()
    }
}

/// What became of the probes that reached the destination's socket layer.
enum AtSocket {
    /// The kernel dropped them at a VTEP's socket (no VTEP has the probes' VNI): a device listens.
    Vtep,
    /// Nothing listens on the port: the kernel said NO_SOCKET, or UdpNoPorts grew by as many.
    NoSocket { traced: Option<KernelDrop>, counted: Option<u64> },
    /// Nobody said.
    Unknown,
}

/// The first rule that grew by at least `missing` packets (the probes it would have to explain).
fn blamed(rules: &[GrownRule], missing: u32) -> Option<&GrownRule> {
    (missing > 0).then(|| rules.iter().find(|r| r.packets >= u64::from(missing))).flatten()
}

/// The ICMP errors about the probes that say they were refused, most telling first: a firewall's
/// "prohibited", then any other but fragmentation-needed (the MTU search reads that one).
fn rejection(sent: &SendResponse) -> Option<&UnreachableSeen> {
    sent.unreachable.iter().max_by_key(|u| (unreachable_code::prohibited(u.code), u.count))
}

/// The finding for a pair, from all its evidence.
pub fn judge(e: &Evidence) -> Finding {
    let (sent, arrived) = (e.sent, e.arrived);
    let never_left = sent.sent.saturating_sub(sent.left_source);
    if sent.left_source == 0 {
        return Finding::BlockedAtSource {
            never_left,
            rule: blamed(&sent.dropping_rules, never_left).map(|r| r.rule.clone()),
            send_error: sent.send_error.clone(),
        };
    }
    let icmp = rejection(sent);
    let n = arrived.arrived;
    if n == 0 {
        return match icmp {
            Some(icmp) => Finding::Rejected {
                icmp: icmp.clone(),
                at_destination: icmp.from == e.to,
                rule: None,
                arrived: 0,
                sent: sent.sent,
            },
            None => Finding::LostInNetwork { control_passed: arrived.control_arrived > 0 },
        };
    }
    let traced = Traced { drops: arrived.kernel_drops.as_deref().unwrap_or(&[]), arrived: n };
    let dropped = |cause| Finding::Dropped { cause, arrived: n, sent: sent.sent };
    // A reject at the destination is its firewall's, and the ICMP says so.
    let rejected_here = icmp.filter(|i| {
        i.from == e.to && (i.code != unreachable_code::PORT || !listening_port_closed(arrived, &traced))
    });
    let reject = |rule: Option<String>, icmp: &UnreachableSeen| Finding::Rejected {
        icmp: icmp.clone(),
        at_destination: true,
        rule,
        arrived: n,
        sent: sent.sent,
    };

    // 1. The destination's firewall: a counted rule, or the kernel's word for an uncounted one.
    if let Some(rule) = blamed(&arrived.dropping_rules, n) {
        return match rejected_here {
            Some(icmp) => reject(Some(rule.rule.clone()), icmp),
            None => {
                dropped(DropCause::Rule { rule: rule.clone(), traced: traced.reason(reason::NETFILTER_DROP) })
            }
        };
    }
    if let Some(firewall) = traced.reason(reason::NETFILTER_DROP) {
        return match rejected_here {
            Some(icmp) => reject(None, icmp),
            None => dropped(DropCause::UncountedRule { traced: firewall }),
        };
    }
    // 2. The reverse-path filter, by the kernel's word or its counter.
    let rp_counted = arrived.reverse_path_filter_drops.filter(|c| *c >= u64::from(n));
    let rp_traced = traced.reason(reason::IP_RPFILTER);
    if rp_counted.is_some() || rp_traced.is_some() {
        let route = arrived.route_interface.clone();
        return dropped(DropCause::ReversePath {
            arrived_on: arrived.arrived_on.iter().find(|i| Some(*i) != route.as_ref()).cloned(),
            route_interface: route,
            rp_filter: arrived.rp_filter,
            counted: rp_counted,
            traced: rp_traced,
        });
    }
    // 3. A bad checksum.
    let csum_counted = arrived.udp_csum_errors.filter(|c| *c >= u64::from(n));
    let csum_traced = traced.reason(reason::UDP_CSUM);
    if csum_counted.is_some() || csum_traced.is_some() {
        let offload = sent.vxlan_device.as_ref().filter(|d| d.tx_checksum_offload == Some(true));
        return dropped(DropCause::BadChecksum {
            counted: csum_counted,
            traced: csum_traced,
            offload: offload.map(|d| d.name.clone()),
        });
    }
    // 4. Any other reason the kernel gave.
    if let Some(other) = traced.other() {
        return dropped(DropCause::Kernel { traced: other });
    }
    // 5. Past every firewall: does the overlay listen where the probes went?
    let at_socket = at_socket(arrived, &traced);
    if let Some(mismatch) = mismatch(e, &at_socket) {
        let evidence = match &at_socket {
            AtSocket::NoSocket { traced: Some(drop), .. } => Some(kernel_words(e.to, drop, n)),
            AtSocket::NoSocket { counted: Some(grown), .. } => Some(format!(
                "{}'s UdpNoPorts grew by {grown} while {n} probe(s) reached its interface: nothing listens on UDP {} there",
                e.to, e.port
            )),
            _ => None,
        };
        return Finding::PortMismatch { mismatch, arrived: n, sent: sent.sent, evidence };
    }
    let delivery = match (&at_socket, &arrived.counters_error) {
        (AtSocket::Vtep | AtSocket::NoSocket { traced: Some(_), .. }, _) => Delivery::Kernel,
        (_, Some(_)) => Delivery::Unverified,
        _ => Delivery::Counters,
    };
    // 6. Last, the count: fewer arrived than were sent is a loss, whatever became of the rest.
    if n < sent.sent {
        return Finding::PartialLoss { sent: sent.sent, left: sent.left_source, arrived: n, delivery };
    }
    if let (Delivery::Unverified, Some(why)) = (delivery, &arrived.counters_error) {
        let why = match &arrived.trace_error {
            Some(trace) => format!("{why}; the kernel's drop reasons were not traced: {trace}"),
            None => why.clone(),
        };
        return Finding::Unverified {
            what: format!("whether {}'s firewall let them through", e.to),
            why,
            traced: None,
        };
    }
    if let AtSocket::NoSocket { traced, .. } = &at_socket {
        // Nothing listens on the port there: a fault if the overlay uses it, which the devices
        // would tell; unread, it cannot be told.
        if arrived.vxlan_devices.is_none() {
            return Finding::Unverified {
                what: format!(
                    "whether {}'s overlay listens on UDP {} (nothing took the probes there)",
                    e.to, e.port
                ),
                why: format!("{}'s VXLAN devices could not be read (ip -d link)", e.to),
                traced: traced.clone(),
            };
        }
    }
    let untested_device =
        (matches!(at_socket, AtSocket::NoSocket { .. }) || no_device_anywhere(e)).then(|| untested_device(e));
    Finding::Delivered { delivery, untested_device }
}

/// Whether the destination's closed port explains an ICMP port unreachable from it.
fn listening_port_closed(arrived: &CollectResponse, traced: &Traced) -> bool {
    matches!(at_socket(arrived, traced), AtSocket::NoSocket { .. })
}

fn at_socket(arrived: &CollectResponse, traced: &Traced) -> AtSocket {
    let n = arrived.arrived;
    let (at_vtep, vtep) = traced.sum(&[reason::VXLAN_VNI_NOT_FOUND, reason::VXLAN_INVALID_HDR]);
    let (closed, no_socket) = traced.sum(&[reason::NO_SOCKET]);
    if at_vtep + closed >= n && n > 0 {
        // Past every firewall to a socket, or to where one would be.
        return match (no_socket, vtep) {
            (Some(drop), _) if closed > 0 => AtSocket::NoSocket { traced: Some(drop), counted: None },
            (_, Some(_)) => AtSocket::Vtep,
            _ => AtSocket::Unknown,
        };
    }
    match arrived.udp_no_ports.filter(|c| *c >= u64::from(n)) {
        Some(grown) => AtSocket::NoSocket { traced: None, counted: Some(grown) },
        None => AtSocket::Unknown,
    }
}

/// The overlay's devices that do not fit the probes' way: the destination has none listening on
/// the port (while its own or other nodes' devices say the overlay uses one), or the source's
/// device sends to a port the destination does not listen on. Never when the kernel said a VTEP
/// took the probes.
fn mismatch(e: &Evidence, at_socket: &AtSocket) -> Option<Mismatch> {
    let (ours, its) = (e.sent.vxlan_devices.as_ref(), e.arrived.vxlan_devices.as_ref());
    let on_port = |list: Option<&Vec<VxlanDeviceSeen>>| list?.iter().find(|d| d.listens_on(e.port)).cloned();
    // The destination: nothing of its own on the port, where the source or other nodes use it.
    // (All nodes on another port is no mismatch: the probes went to the wrong one.)
    if let Some(its_list) = its.filter(|_| !matches!(at_socket, AtSocket::Vtep)) {
        let others = e.overlay.others_listen([e.from, e.to], e.port);
        let ours_on_port = on_port(ours);
        if on_port(its).is_none() && (others || ours_on_port.is_some()) {
            return Some(Mismatch::Destination { its: its_list.clone(), ours: ours_on_port, others });
        }
    }
    // The source: its device sends elsewhere, where the destination does not listen.
    let its_on_port = on_port(its)?;
    if on_port(ours).is_some() {
        return None;
    }
    let listens = |port: u16| its.is_some_and(|list| list.iter().any(|d| d.listens_on(port)));
    let unheard =
        ours?.iter().find(|d| d.up != Some(false) && d.port.is_some_and(|p| p != e.port && !listens(p)))?;
    Some(Mismatch::Source { ours: unheard.clone(), its: its_on_port })
}

/// No node of the run has a device listening on the port (nor said it has one anywhere).
fn no_device_anywhere(e: &Evidence) -> bool {
    let none =
        |list: Option<&Vec<VxlanDeviceSeen>>| list.is_some_and(|l| !l.iter().any(|d| d.listens_on(e.port)));
    none(e.sent.vxlan_devices.as_ref())
        && none(e.arrived.vxlan_devices.as_ref())
        && !e.overlay.others_listen([e.from, e.to], e.port)
}

/// Why delivery to the port says nothing of the overlay's own device.
fn untested_device(e: &Evidence) -> String {
    let ports = e.overlay.other_ports(e.port);
    let hint = match ports.as_slice() {
        [] => String::new(),
        [one] => format!(" (the nodes' VXLAN devices listen on UDP {one}: --port {one} tests them)"),
        many => format!(
            " (the nodes' VXLAN devices listen on UDP {})",
            many.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    format!(
        "no VXLAN device listens on UDP {} on {} or the other nodes: the probes prove UDP delivery, the overlay's own device was not tested{hint}",
        e.port, e.to
    )
}

/// The kernel's drop of the probes, as evidence.
fn kernel_words(to: Ipv4Addr, d: &KernelDrop, arrived: u32) -> String {
    format!(
        "{to}'s kernel (skb:kfree_skb) dropped {} of the {arrived} probes that reached its interface with {} in {}, matched by packet (its address, the probes' length)",
        d.count, d.reason, d.location
    )
}

fn device(owner: Ipv4Addr, d: &VxlanDeviceSeen) -> String {
    format!("{owner}'s {}", d.name)
}

impl Finding {
    pub fn verdict(&self) -> PairVerdict {
        match self {
            Finding::BlockedAtSource { .. } => PairVerdict::BlockedAtSource,
            Finding::Rejected { .. } => PairVerdict::Rejected,
            Finding::LostInNetwork { .. } => PairVerdict::LostInNetwork,
            Finding::Dropped { .. } => PairVerdict::DroppedAtDestination,
            Finding::PortMismatch { .. } => PairVerdict::VtepPortMismatch,
            Finding::PartialLoss { .. } => PairVerdict::PartialLoss,
            Finding::Unverified { .. } => PairVerdict::Unverified,
            Finding::Delivered { .. } => PairVerdict::Ok,
        }
    }

    /// The firewall rule the finding names.
    fn rule(&self) -> Option<String> {
        match self {
            Finding::BlockedAtSource { rule, .. } | Finding::Rejected { rule, .. } => rule.clone(),
            Finding::Dropped { cause: DropCause::Rule { rule, .. }, .. } => Some(rule.rule.clone()),
            _ => None,
        }
    }

    /// The kernel's drop the finding rests on, if any.
    fn traced(&self) -> Option<&KernelDrop> {
        match self {
            Finding::Dropped { cause, .. } => match cause {
                DropCause::Rule { traced, .. }
                | DropCause::ReversePath { traced, .. }
                | DropCause::BadChecksum { traced, .. } => traced.as_ref(),
                DropCause::UncountedRule { traced } | DropCause::Kernel { traced } => Some(traced),
            },
            Finding::Unverified { traced, .. } => traced.as_ref(),
            _ => None,
        }
    }

    /// The kernel's reason for the drop, as the report names it.
    fn drop_reason(&self) -> Option<String> {
        match self {
            Finding::Dropped { cause: DropCause::BadChecksum { .. }, .. } => Some(reason::UDP_CSUM.into()),
            Finding::Dropped { cause: DropCause::ReversePath { .. }, .. } => Some(reason::IP_RPFILTER.into()),
            _ => self.traced().map(|d| d.reason.clone()),
        }
    }

    /// The sentence that says where the probes die and what to do.
    fn diagnosis(&self, from: Ipv4Addr, to: Ipv4Addr, port: u16) -> String {
        let of = |arrived: &u32, sent: &u32| match arrived < sent {
            true => format!(" ({arrived} of {sent} probes arrived)"),
            false => String::new(),
        };
        match self {
            Finding::BlockedAtSource { rule, send_error, .. } => {
                let cause = match (rule, send_error) {
                    (Some(rule), _) => format!("{from}'s own firewall drops it: {rule}"),
                    (None, Some(e)) => {
                        format!("{from}'s kernel refused to send it ({e}): check its OUTPUT rules and routes")
                    }
                    (None, None) => format!("check {from}'s OUTPUT firewall (iptables/nft) and routes"),
                };
                format!("UDP {port} from {from} to {to} never left {from}: {cause}")
            }
            Finding::Rejected { icmp, at_destination: false, .. } => format!(
                "UDP {port} from {from} to {to} is rejected in the network: {} rejects it (ICMP {}): allow UDP {port} between nodes in its firewall (or the security group or NACL it enforces)",
                icmp.from,
                unreachable_code::words(icmp.code)
            ),
            Finding::Rejected { rule, arrived, sent, .. } => match rule {
                Some(rule) => format!("UDP {port} from {from} reached {to}'s interface and {to}'s firewall rejects it: {rule}{}", of(arrived, sent)),
                None => format!(
                    "UDP {port} from {from} to {to} is rejected by {to} itself, though no counted rule grew: look for a REJECT rule for UDP {port} in {to}'s input path (iptables-save, nft list ruleset){}",
                    of(arrived, sent)
                ),
            },
            Finding::LostInNetwork { control_passed: true } => format!(
                "UDP {port} from {from} to {to} is dropped in the network while other UDP passes: allow UDP {port} between nodes in the security group, NACL or firewall"
            ),
            Finding::LostInNetwork { control_passed: false } => format!(
                "all UDP from {from} to {to} is dropped in the network (UDP {port} and the control port): allow UDP (at least {port}) between nodes in the security group, NACL or firewall; if they allow it, a stateful firewall or NAT on the path whose connection table is full drops new flows of every kind (look at its connection count against its maximum), or the route between the nodes is broken"
            ),
            Finding::Dropped { cause, arrived, sent } => match cause {
                DropCause::Rule { rule, .. } => format!(
                    "UDP {port} from {from} reached {to}'s interface but {to} dropped it: {} (counted {} of {arrived} probes){}",
                    rule.rule, rule.packets, of(arrived, sent)
                ),
                DropCause::UncountedRule { traced } => format!(
                    "UDP {port} from {from} reached {to}'s interface and {to}'s firewall dropped it: the kernel says NETFILTER_DROP in {} for {} of {arrived} probes, though no counted rule grew: look for a DROP rule for UDP {port} without a counter in {to}'s input path (nft list ruleset){}",
                    traced.location, traced.count, of(arrived, sent)
                ),
                DropCause::ReversePath { arrived_on, route_interface, rp_filter, .. } => {
                    let mode = match rp_filter {
                        Some(1) => ", strict",
                        Some(2) => ", loose",
                        _ => "",
                    };
                    match (arrived_on, route_interface) {
                        (Some(came), Some(back)) => format!(
                            "UDP {port} from {from} reached {to} on {came}, but {to}'s route back to {from} leaves by {back}, so its reverse-path filter (net.ipv4.conf.{came}.rp_filter{mode}) drops it: make the routes symmetric, or set net.ipv4.conf.all.rp_filter and net.ipv4.conf.{came}.rp_filter to 2 (loose){}",
                            of(arrived, sent)
                        ),
                        _ => format!(
                            "UDP {port} from {from} reached {to}'s interface and {to}'s reverse-path filter (rp_filter) drops it: the route back to {from} leaves by another interface; make the routes symmetric, or set net.ipv4.conf.all.rp_filter and the interface's rp_filter to 2 (loose){}",
                            of(arrived, sent)
                        ),
                    }
                }
                DropCause::BadChecksum { counted, traced, offload } => format!(
                    "UDP {port} from {from} reached {to}'s interface with a bad UDP checksum and {to}'s kernel dropped it ({}): something on the path or the sender's checksum offload breaks it; on the nodes' vxlan devices: ethtool -K flannel.1 tx-checksum-ip-generic off (or the CNI's option){}{}",
                    match (counted, traced) {
                        (Some(n), _) => format!("UdpInCsumErrors grew by {n}"),
                        (None, Some(d)) => format!("the kernel says UDP_CSUM for {}", d.count),
                        (None, None) => reason::UDP_CSUM.to_string(),
                    },
                    match offload {
                        Some(name) => format!(
                            " ({from}'s {name} has tx-checksum-ip-generic on: with a broken offload its own VXLAN traffic leaves like this)"
                        ),
                        None => String::new(),
                    },
                    of(arrived, sent)
                ),
                DropCause::Kernel { traced } => format!(
                    "UDP {port} from {from} reached {to}'s interface and {to}'s kernel dropped it: {} in {} ({} of {arrived} probes){}",
                    traced.reason, traced.location, traced.count, of(arrived, sent)
                ),
            },
            Finding::PortMismatch { mismatch, arrived, sent, .. } => {
                let fix = "give every node's VXLAN device the same port (flannel: Backend.Port; Calico: vxlanPort; Cilium: tunnel-port)";
                let what = match mismatch {
                    Mismatch::Destination { its, ours, others } => {
                        let sends = match ours {
                            Some(d) => format!("{} sends to UDP {port}", device(from, d)),
                            None => format!("the probes went to UDP {port}"),
                        };
                        let listening: Vec<&VxlanDeviceSeen> = its.iter().filter(|d| d.up != Some(false)).collect();
                        let down: Vec<&VxlanDeviceSeen> = its.iter().filter(|d| d.listens_on(port) || (d.up == Some(false) && d.port == Some(port))).collect();
                        if let Some(d) = down.first() {
                            format!("{} is down, so nothing listens on UDP {port} there and {sends}: bring it up (or restart the CNI's pod on {to})", device(to, d))
                        } else if let Some(d) = listening.iter().find(|d| d.port.is_some()) {
                            format!(
                                "{} listens on UDP {}, {sends}: VXLAN from {from} to {to} goes where nothing listens; {fix}",
                                device(to, d),
                                d.port.unwrap_or_default()
                            )
                        } else {
                            let who = match (ours, others) {
                                (Some(d), _) => format!(" ({} does)", device(from, d)),
                                (None, true) => " (other nodes do)".to_string(),
                                (None, false) => String::new(),
                            };
                            format!("{to} has no VXLAN device listening on UDP {port}{who}: the overlay's device is missing on {to}; check the CNI's pod there")
                        }
                    }
                    Mismatch::Source { ours, its } => format!(
                        "{} sends to UDP {}, where nothing listens on {to} ({} listens on UDP {port}): VXLAN from {from} to {to} goes where nothing listens; {fix}",
                        device(from, ours),
                        ours.port.unwrap_or_default(),
                        device(to, its)
                    ),
                };
                format!("{what}{}", of(arrived, sent))
            }
            Finding::PartialLoss { sent, left, arrived, .. } => {
                let never_left = sent - left;
                let lost_after = left.saturating_sub(*arrived);
                let place = match (never_left, lost_after) {
                    (0, _) => "between the nodes".to_string(),
                    (n, 0) => format!("all {n} missing never left {from}"),
                    (n, m) => format!("{n} never left {from}, {m} were lost between the nodes"),
                };
                format!(
                    "{arrived} of {sent} UDP {port} probes from {from} reached {to} ({place}): look for a rate limit or policer on the path, congestion, or MTU trouble"
                )
            }
            Finding::Unverified { what, why, .. } => format!(
                "every UDP {port} probe from {from} reached {to}'s interface; {what} is unverified: {}",
                why.split("; the kernel's drop reasons").next().unwrap_or(why)
            ),
            Finding::Delivered { .. } => format!("VXLAN on UDP {port} from {from} reaches {to}"),
        }
    }

    /// What the finding rests on, beyond the counts.
    fn evidence(&self, e: &Evidence) -> Option<String> {
        let icmp_words = |icmp: &UnreachableSeen| {
            format!(
                "{} ICMP {} from {} about the probes",
                icmp.count,
                unreachable_code::words(icmp.code),
                icmp.from
            )
        };
        match self {
            Finding::BlockedAtSource { send_error, .. } => send_error.as_ref().map(|err| {
                format!("sendto(2) on {} failed ({err}): its kernel refused the probes before they left (its netfilter output path, or an LSM or cgroup BPF program)", e.from)
            }),
            Finding::Rejected { icmp, .. } => Some(icmp_words(icmp)),
            Finding::PortMismatch { evidence, .. } => {
                let closed = e.sent.unreachable.iter().find(|u| u.from == e.to && u.code == unreachable_code::PORT);
                let said = [evidence.clone(), closed.map(icmp_words)].into_iter().flatten().collect::<Vec<_>>();
                (!said.is_empty()).then(|| said.join("; "))
            }
            Finding::Dropped { cause: DropCause::ReversePath { counted, traced, .. }, arrived, .. } => {
                let counted = counted.map(|n| {
                    format!("{}'s TcpExtIPReversePathFilter grew by {n} while {arrived} probe(s) reached it", e.to)
                });
                let said = [counted, traced.as_ref().map(|d| kernel_words(e.to, d, *arrived))];
                Some(said.into_iter().flatten().collect::<Vec<_>>().join("; "))
            }
            Finding::Dropped { cause: DropCause::BadChecksum { counted, traced, .. }, arrived, .. } => {
                let counted = counted.map(|n| {
                    format!("{}'s UdpInCsumErrors grew by {n} while {arrived} probe(s) reached its interface", e.to)
                });
                let said = [counted, traced.as_ref().map(|d| kernel_words(e.to, d, *arrived))];
                Some(said.into_iter().flatten().collect::<Vec<_>>().join("; "))
            }
            Finding::Delivered { delivery: Delivery::Kernel, .. } | Finding::PartialLoss { delivery: Delivery::Kernel, .. } => {
                let traced = Traced { drops: e.arrived.kernel_drops.as_deref().unwrap_or(&[]), arrived: e.arrived.arrived };
                let (_, first) = traced.sum(&[reason::VXLAN_VNI_NOT_FOUND, reason::VXLAN_INVALID_HDR, reason::NO_SOCKET]);
                first.map(|d| kernel_words(e.to, &d, e.arrived.arrived))
            }
            _ => self.traced().map(|d| kernel_words(e.to, d, e.arrived.arrived)),
        }
    }

    fn delivery(&self) -> Option<Delivery> {
        match self {
            Finding::Delivered { delivery, .. } | Finding::PartialLoss { delivery, .. } => Some(*delivery),
            Finding::Unverified { .. } => Some(Delivery::Unverified),
            Finding::Dropped { cause: DropCause::Rule { .. } | DropCause::BadChecksum { .. }, .. } => {
                Some(Delivery::Counters)
            }
            Finding::Dropped { .. } => Some(Delivery::Kernel),
            _ => None,
        }
    }
}

/// The pair's report: the finding and every field the evidence fills in.
pub fn report(e: &Evidence) -> PairReport {
    let finding = judge(e);
    let arrived = e.arrived;
    let delivery_note = match &finding {
        Finding::Unverified { why, .. } => Some(why.clone()),
        Finding::Delivered { untested_device: Some(note), .. } => Some(match &arrived.counters_error {
            Some(why) => format!("{note}; {why}"),
            None => note.clone(),
        }),
        Finding::Delivered { .. } | Finding::PartialLoss { .. } => arrived.counters_error.clone(),
        _ => None,
    };
    PairReport {
        from: e.from,
        to: e.to,
        from_node: e.from.to_string(),
        to_node: e.to.to_string(),
        sent: e.sent.sent,
        left_source: e.sent.left_source,
        arrived: arrived.arrived,
        verdict: finding.verdict(),
        control_udp: if arrived.control_arrived > 0 { ControlUdp::Ok } else { ControlUdp::Lost },
        delivery: finding.delivery(),
        delivery_note,
        rtt_ms: None,
        rule: finding.rule(),
        drop_reason: finding.drop_reason(),
        drop_location: finding.traced().map(|d| d.location.clone()).or_else(|| match &finding {
            Finding::Delivered { delivery: Delivery::Kernel, .. }
            | Finding::PartialLoss { delivery: Delivery::Kernel, .. } => {
                let traced = Traced {
                    drops: arrived.kernel_drops.as_deref().unwrap_or(&[]),
                    arrived: arrived.arrived,
                };
                traced
                    .sum(&[reason::VXLAN_VNI_NOT_FOUND, reason::VXLAN_INVALID_HDR, reason::NO_SOCKET])
                    .1
                    .map(|d| d.location)
            }
            _ => None,
        }),
        evidence: finding.evidence(e),
        diagnosis: finding.diagnosis(e.from, e.to, e.port),
        mtu: None,
        source_vxlan_device: e.sent.vxlan_device.clone(),
        arrived_on: arrived.arrived_on.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;

    /// The pair A -> B on 8472, judged alone (no other node's devices).
    fn judged(sent: &SendResponse, arrived: &CollectResponse) -> PairReport {
        judged_in(sent, arrived, &Overlay::default())
    }

    fn judged_in(sent: &SendResponse, arrived: &CollectResponse, overlay: &Overlay) -> PairReport {
        report(&Evidence { from: A, to: B, port: 8472, sent, arrived, overlay })
    }

    fn rules(rules: &[(&str, u64)]) -> Vec<GrownRule> {
        rules.iter().map(|(r, p)| GrownRule { rule: r.to_string(), packets: *p }).collect()
    }

    fn sent(left: u32, dropping: &[(&str, u64)]) -> SendResponse {
        SendResponse {
            sent: 5,
            left_source: left,
            control_left: 5,
            send_error: None,
            dropping_rules: rules(dropping),
            counters_error: None,
            ..Default::default()
        }
    }

    fn arrived(n: u32, control: u32, dropping: &[(&str, u64)]) -> CollectResponse {
        CollectResponse {
            arrived: n,
            control_arrived: control,
            dropping_rules: rules(dropping),
            counters_error: None,
            udp_csum_errors: Some(0),
            ..Default::default()
        }
    }

    const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    const DROP_IN: &str = "-t filter -A INPUT -p udp -m udp --dport 8472 -j DROP";
    const DROP_OUT: &str = "-t filter -A OUTPUT -p udp -m udp --dport 8472 -j DROP";

    #[test]
    fn verdicts_follow_the_counts() {
        let cases = [
            (sent(5, &[]), arrived(5, 5, &[]), PairVerdict::Ok, ControlUdp::Ok),
            (sent(5, &[]), arrived(3, 5, &[]), PairVerdict::PartialLoss, ControlUdp::Ok),
            (sent(0, &[(DROP_OUT, 5)]), arrived(0, 5, &[]), PairVerdict::BlockedAtSource, ControlUdp::Ok),
            (sent(5, &[]), arrived(0, 5, &[]), PairVerdict::LostInNetwork, ControlUdp::Ok),
            (sent(5, &[]), arrived(0, 0, &[]), PairVerdict::LostInNetwork, ControlUdp::Lost),
            (sent(5, &[]), arrived(5, 5, &[(DROP_IN, 5)]), PairVerdict::DroppedAtDestination, ControlUdp::Ok),
        ];
        for (s, a, verdict, control) in cases {
            let pair = judged(&s, &a);
            assert_eq!((pair.verdict, pair.control_udp), (verdict, control), "{}", pair.diagnosis);
        }
        let lost = judged(&sent(5, &[]), &arrived(0, 5, &[]));
        assert_eq!(
            lost.diagnosis,
            "UDP 8472 from 198.51.100.1 to 203.0.113.2 is dropped in the network while other UDP passes: allow UDP 8472 between nodes in the security group, NACL or firewall"
        );
        let blocked = judged(&sent(0, &[(DROP_OUT, 5)]), &arrived(0, 5, &[]));
        assert_eq!(blocked.rule.as_deref(), Some(DROP_OUT));
        let dropped = judged(&sent(5, &[]), &arrived(5, 5, &[(DROP_IN, 5)]));
        assert!(dropped.diagnosis.contains(DROP_IN));
        assert_eq!(dropped.delivery, Some(Delivery::Counters));
    }

    #[test]
    fn a_busy_rule_that_counted_fewer_than_the_missing_probes_is_not_blamed() {
        // On a busy node a DROP rule that can match grew by 2 while 5 probes went missing.
        let pair = judged(&sent(5, &[]), &arrived(5, 5, &[(DROP_IN, 2)]));
        assert_eq!((pair.verdict, pair.rule), (PairVerdict::Ok, None));
        let pair = judged(&sent(0, &[(DROP_OUT, 1)]), &arrived(0, 5, &[]));
        assert_eq!((pair.verdict, pair.rule), (PairVerdict::BlockedAtSource, None), "no rule named");
    }

    #[test]
    fn probes_the_destination_dropped_for_a_bad_checksum_are_not_ok() {
        // All five reached B's interface and B's UDP checksum drops grew by five.
        let mut a = arrived(5, 5, &[]);
        a.udp_csum_errors = Some(5);
        let pair = judged(&sent(5, &[]), &a);
        assert_eq!(pair.verdict, PairVerdict::DroppedAtDestination, "{}", pair.diagnosis);
        assert_eq!(pair.drop_reason.as_deref(), Some("UDP_CSUM"));
        assert!(pair.diagnosis.contains("bad UDP checksum"), "{}", pair.diagnosis);
        assert!(pair.evidence.unwrap().contains("InCsumErrors grew by 5 while 5 probe(s)"));
        // Fewer checksum drops than probes that arrived cannot explain them all: not blamed.
        a.udp_csum_errors = Some(2);
        assert_eq!(judged(&sent(5, &[]), &a).verdict, PairVerdict::Ok);
        // Unreadable (an older agent, or /proc/net/snmp hidden): as before.
        a.udp_csum_errors = None;
        assert_eq!(judged(&sent(5, &[]), &a).verdict, PairVerdict::Ok);
    }

    #[test]
    fn the_kernels_own_drop_reasons_decide_what_counters_cannot() {
        use crate::net::drop_trace::KernelDrop;
        let drop = |reason: &str, location: &str, count| KernelDrop {
            reason: reason.into(),
            location: location.into(),
            count,
        };
        // Counters unreadable, but the kernel dropped every probe at the tunnel's socket: past
        // every firewall, so ok (not unverified), and the kernel's word is the evidence.
        let mut a = arrived(5, 5, &[]);
        a.counters_error = Some("nft: not installed".into());
        a.kernel_drops = Some(vec![drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 5)]);
        let pair = judged(&sent(5, &[]), &a);
        assert_eq!(
            (pair.verdict, pair.delivery),
            (PairVerdict::Ok, Some(Delivery::Kernel)),
            "{}",
            pair.diagnosis
        );
        assert_eq!((pair.drop_reason, pair.drop_location.as_deref()), (None, Some("vxlan_rcv")));
        assert!(pair.evidence.unwrap().contains(
            "dropped 5 of the 5 probes that reached its interface with VXLAN_VNI_NOT_FOUND in vxlan_rcv"
        ));
        // An uncounted firewall rule: the kernel names the firewall.
        let mut a = arrived(5, 5, &[]);
        a.kernel_drops = Some(vec![drop("NETFILTER_DROP", "nft_do_chain", 5)]);
        let pair = judged(&sent(5, &[]), &a);
        assert_eq!(pair.verdict, PairVerdict::DroppedAtDestination);
        assert_eq!(
            (pair.drop_reason.as_deref(), pair.drop_location.as_deref()),
            (Some("NETFILTER_DROP"), Some("nft_do_chain"))
        );
        assert!(
            pair.diagnosis.contains("the kernel says NETFILTER_DROP in nft_do_chain for 5 of 5"),
            "{}",
            pair.diagnosis
        );
        // Some other reason is named as the kernel's.
        a.kernel_drops = Some(vec![drop("IP_RPFILTER", "ip_rcv_finish_core", 5)]);
        let pair = judged(&sent(5, &[]), &a);
        assert_eq!(
            (pair.verdict, pair.drop_reason.as_deref()),
            (PairVerdict::DroppedAtDestination, Some("IP_RPFILTER"))
        );
        // More drops than probes: another packet that looked alike (the lab's namespaces all have
        // an eth0) is not taken for one of ours when the socket drops account for every probe.
        let mut a = arrived(5, 5, &[]);
        a.kernel_drops =
            Some(vec![drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 5), drop("IP_INNOROUTES", "ip_error", 1)]);
        let pair = judged(&sent(5, &[]), &a);
        assert_eq!(
            (pair.verdict, pair.delivery),
            (PairVerdict::Ok, Some(Delivery::Kernel)),
            "{}",
            pair.diagnosis
        );
        // ... and no reason that covers only some of them is believed when drops outnumber probes.
        a.kernel_drops = Some(vec![
            drop("NETFILTER_DROP", "nft_do_chain", 3),
            drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 2),
            drop("IP_INNOROUTES", "ip_error", 1),
        ]);
        let pair = judged(&sent(5, &[]), &a);
        assert_eq!(
            (pair.verdict, pair.delivery),
            (PairVerdict::Ok, Some(Delivery::Counters)),
            "{}",
            pair.diagnosis
        );
        // Fewer socket drops than probes that arrived prove nothing: as without tracing.
        let mut a = arrived(5, 5, &[]);
        a.counters_error = Some("nft: not installed".into());
        a.kernel_drops = Some(vec![drop("NO_SOCKET", "__udp4_lib_rcv", 3)]);
        assert_eq!(judged(&sent(5, &[]), &a).verdict, PairVerdict::Unverified);
    }

    #[test]
    fn unreadable_counters_are_unverified_never_a_silent_ok() {
        let mut a = arrived(5, 5, &[]);
        a.counters_error = Some("iptables-nft-save: failed".into());
        let pair = judged(&sent(5, &[]), &a);
        assert_eq!((pair.verdict, pair.delivery), (PairVerdict::Unverified, Some(Delivery::Unverified)));
        assert!(pair.diagnosis.contains("unverified: iptables-nft-save: failed"), "{}", pair.diagnosis);
        assert_eq!(pair.verdict.health(), Health::Ok, "nothing wrong was found");
    }

    fn drop(reason: &str, location: &str, count: u32) -> KernelDrop {
        KernelDrop { reason: reason.into(), location: location.into(), count }
    }

    fn flannel(port: u16) -> VxlanDeviceSeen {
        VxlanDeviceSeen {
            name: "flannel.1".into(),
            mtu: 1450,
            tx_checksum_offload: None,
            port: Some(port),
            up: Some(true),
        }
    }

    #[test]
    fn fewer_arrivals_than_probes_is_never_ok_whatever_the_kernel_says_of_those_that_arrived() {
        // 30% lost on the path; the 66 that arrived were dropped at flannel.1's socket, as probes
        // should be: that proves delivery of the 66, not of the 100.
        let s = SendResponse { sent: 100, left_source: 100, ..sent(5, &[]) };
        let mut a = arrived(66, 100, &[]);
        a.kernel_drops = Some(vec![drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 66)]);
        let pair = judged(&s, &a);
        assert_eq!(pair.verdict, PairVerdict::PartialLoss, "{}", pair.diagnosis);
        assert!(
            pair.diagnosis.starts_with("66 of 100 UDP 8472 probes from 198.51.100.1 reached 203.0.113.2"),
            "{}",
            pair.diagnosis
        );
        assert_eq!(pair.delivery, Some(Delivery::Kernel), "those that arrived went through");
    }

    #[test]
    fn no_evidence_ever_turns_a_loss_into_ok_and_no_sentence_contradicts_the_counts() {
        let drops = [
            vec![],
            vec![drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 5)],
            vec![drop("NO_SOCKET", "__udp4_lib_rcv", 5)],
            vec![drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 9)],
            vec![drop("NETFILTER_DROP", "nft_do_chain", 2)],
        ];
        for arrived_n in 0..=5 {
            for kernel in &drops {
                for counters_error in [None, Some("nft: not installed".to_string())] {
                    for no_ports in [None, Some(0), Some(5)] {
                        let mut a = arrived(arrived_n, 5, &[]);
                        a.kernel_drops = Some(kernel.clone());
                        a.counters_error = counters_error.clone();
                        a.udp_no_ports = no_ports;
                        let pair = judged(&sent(5, &[]), &a);
                        if arrived_n < 5 {
                            assert!(
                                !matches!(pair.verdict, PairVerdict::Ok | PairVerdict::Unverified),
                                "{arrived_n}/5 {kernel:?} {counters_error:?}: {pair:?}"
                            );
                        }
                        if pair.diagnosis.contains("every UDP") || pair.diagnosis.contains(" reaches ") {
                            assert_eq!(arrived_n, 5, "{}", pair.diagnosis);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nothing_listening_on_the_port_is_a_fault_where_the_overlay_uses_it() {
        // B's flannel.1 listens on 4789, A's on 8472: B's kernel drops the probes for NO_SOCKET.
        let s = SendResponse { vxlan_devices: Some(vec![flannel(8472)]), ..sent(5, &[]) };
        let mut a = arrived(5, 5, &[]);
        a.kernel_drops = Some(vec![drop("NO_SOCKET", "__udp4_lib_rcv", 5)]);
        a.vxlan_devices = Some(vec![flannel(4789)]);
        let pair = judged(&s, &a);
        assert_eq!(pair.verdict, PairVerdict::VtepPortMismatch, "{}", pair.diagnosis);
        assert!(
            pair.diagnosis.starts_with(
                "203.0.113.2's flannel.1 listens on UDP 4789, 198.51.100.1's flannel.1 sends to UDP 8472"
            ),
            "{}",
            pair.diagnosis
        );
        assert!(pair.evidence.unwrap().contains("with NO_SOCKET"));
        // The same from the counters alone.
        a.kernel_drops = None;
        a.udp_no_ports = Some(5);
        let pair = judged(&s, &a);
        assert_eq!(pair.verdict, PairVerdict::VtepPortMismatch);
        assert!(pair.evidence.unwrap().contains(
            "UdpNoPorts grew by 5 while 5 probe(s) reached its interface: nothing listens on UDP 8472 there"
        ));
        // The other direction: the probes reach A's socket, but B's own VXLAN goes to 4789.
        let back_s = SendResponse { vxlan_devices: Some(vec![flannel(4789)]), ..sent(5, &[]) };
        let mut back_a = arrived(5, 5, &[]);
        back_a.kernel_drops = Some(vec![drop("VXLAN_VNI_NOT_FOUND", "vxlan_rcv", 5)]);
        back_a.vxlan_devices = Some(vec![flannel(8472)]);
        let back = judged(&back_s, &back_a);
        assert_eq!(back.verdict, PairVerdict::VtepPortMismatch, "{}", back.diagnosis);
        assert!(
            back.diagnosis.starts_with(
                "198.51.100.1's flannel.1 sends to UDP 4789, where nothing listens on 203.0.113.2"
            ),
            "{}",
            back.diagnosis
        );
        // B without a device while A (and the rest) have one on the port.
        a.vxlan_devices = Some(vec![]);
        let pair = judged(&s, &a);
        assert!(
            pair.diagnosis.starts_with(
                "203.0.113.2 has no VXLAN device listening on UDP 8472 (198.51.100.1's flannel.1 does)"
            ),
            "{}",
            pair.diagnosis
        );
    }

    #[test]
    fn where_no_node_listens_the_probes_prove_udp_and_say_the_device_was_not_tested() {
        let s = SendResponse { vxlan_devices: Some(vec![]), ..sent(5, &[]) };
        let mut a = arrived(5, 5, &[]);
        a.kernel_drops = Some(vec![drop("NO_SOCKET", "__udp4_lib_rcv", 5)]);
        a.vxlan_devices = Some(vec![]);
        let pair = judged(&s, &a);
        assert_eq!((pair.verdict, pair.delivery), (PairVerdict::Ok, Some(Delivery::Kernel)));
        assert!(pair.delivery_note.as_deref().unwrap().contains("the overlay's own device was not tested"));
        // Every node's device on 4789, probed on 8472: the note says which port tests them.
        let overlay = Overlay::gather([(
            A,
            B,
            &SendResponse { vxlan_devices: Some(vec![flannel(4789)]), ..sent(5, &[]) },
            &CollectResponse { vxlan_devices: Some(vec![flannel(4789)]), ..a.clone() },
        )]);
        let s = SendResponse { vxlan_devices: Some(vec![flannel(4789)]), ..sent(5, &[]) };
        a.vxlan_devices = Some(vec![flannel(4789)]);
        let pair = judged_in(&s, &a, &overlay);
        assert_eq!(pair.verdict, PairVerdict::Ok, "{}", pair.diagnosis);
        assert!(pair.delivery_note.unwrap().contains("--port 4789 tests them"));
        // Devices unread: nothing listened, and whether the overlay uses the port cannot be told.
        a.vxlan_devices = None;
        let pair = judged(&s, &a);
        assert_eq!(pair.verdict, PairVerdict::Unverified, "{}", pair.diagnosis);
        assert_eq!(pair.drop_reason.as_deref(), Some("NO_SOCKET"));
    }

    #[test]
    fn the_reverse_path_filter_is_named_with_its_interface_and_sysctl() {
        let mut a = arrived(5, 5, &[]);
        a.reverse_path_filter_drops = Some(5);
        a.arrived_on = vec!["eth1".into()];
        a.route_interface = Some("eth0".into());
        a.rp_filter = Some(1);
        let pair = judged(&sent(5, &[]), &a);
        assert_eq!(
            (pair.verdict, pair.drop_reason.as_deref()),
            (PairVerdict::DroppedAtDestination, Some("IP_RPFILTER"))
        );
        assert_eq!(
            pair.diagnosis,
            "UDP 8472 from 198.51.100.1 reached 203.0.113.2 on eth1, but 203.0.113.2's route back to 198.51.100.1 leaves by eth0, so its reverse-path filter (net.ipv4.conf.eth1.rp_filter, strict) drops it: make the routes symmetric, or set net.ipv4.conf.all.rp_filter and net.ipv4.conf.eth1.rp_filter to 2 (loose)"
        );
        assert!(pair.evidence.unwrap().contains("TcpExtIPReversePathFilter grew by 5"));
        assert_eq!(pair.arrived_on, ["eth1"]);
    }

    #[test]
    fn a_reject_is_a_reject_and_a_closed_ports_answer_is_not() {
        let icmp = |from: Ipv4Addr, code: u8| UnreachableSeen { from, code, count: 2 };
        let router = Ipv4Addr::new(198, 51, 100, 254);
        // A router's firewall rejects: nothing arrived, its ICMP says who.
        let s = SendResponse { unreachable: vec![icmp(router, 13)], ..sent(5, &[]) };
        let pair = judged(&s, &arrived(0, 5, &[]));
        assert_eq!(pair.verdict, PairVerdict::Rejected, "{}", pair.diagnosis);
        assert!(
            pair.diagnosis.contains("198.51.100.254 rejects it (ICMP administratively prohibited)"),
            "{}",
            pair.diagnosis
        );
        assert_eq!(
            pair.evidence.as_deref(),
            Some("2 ICMP administratively prohibited from 198.51.100.254 about the probes")
        );
        // The destination's REJECT rule: it counted them, and its port unreachable came back.
        const REJECT: &str =
            "-t filter -A INPUT -p udp -m udp --dport 8472 -j REJECT --reject-with icmp-port-unreachable";
        let s = SendResponse { unreachable: vec![icmp(B, 3)], ..sent(5, &[]) };
        let pair = judged(&s, &arrived(5, 5, &[(REJECT, 5)]));
        assert_eq!(
            (pair.verdict, pair.rule.as_deref()),
            (PairVerdict::Rejected, Some(REJECT)),
            "{}",
            pair.diagnosis
        );
        // A closed port answers port unreachable too: that is no firewall.
        let mut a = arrived(5, 5, &[]);
        a.kernel_drops = Some(vec![drop("NO_SOCKET", "__udp4_lib_rcv", 5)]);
        a.vxlan_devices = Some(vec![]);
        let s = SendResponse { unreachable: vec![icmp(B, 3)], vxlan_devices: Some(vec![]), ..sent(5, &[]) };
        assert_eq!(judged(&s, &a).verdict, PairVerdict::Ok);
    }
}
