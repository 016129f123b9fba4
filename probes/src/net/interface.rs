//! Interfaces of the current network namespace (names, MAC, IPv4 and IPv6 addresses) and the
//! route to an address. Read with getifaddrs(3) and /proc/thread-self/net/route (ipv6_route),
//! which both follow the namespace of the calling thread.

#![allow(unsafe_code)] // libc calls the OS offers no safe wrapper for here; each with a SAFETY comment.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::MacAddr;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// `None` for interfaces without an Ethernet address (loopback has 00:00:00:00:00:00, tunnels
    /// have none).
    pub mac: Option<MacAddr>,
    pub ipv4: Vec<Ipv4Addr>,
    /// Link-local ones too (fe80::/10), in the kernel's order.
    pub ipv6: Vec<Ipv6Addr>,
}

/// The interface called `name`, or [`Error::NoSuchInterface`].
pub fn lookup(name: &str) -> Result<Interface> {
    all()?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| Error::NoSuchInterface { name: name.to_string() })
}

/// Every interface with its addresses, in the order the kernel lists them.
pub fn all() -> Result<Vec<Interface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::could_not_run("listing interfaces (getifaddrs)", err.to_string()));
    }
    let mut out: Vec<Interface> = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned and has not been freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }.to_string_lossy().into_owned();
        let index = match out.iter().position(|i| i.name == name) {
            Some(index) => index,
            None => {
                out.push(Interface { name, mac: None, ipv4: Vec::new(), ipv6: Vec::new() });
                out.len() - 1
            }
        };
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family says its real type.
        match i32::from(unsafe { (*entry.ifa_addr).sa_family }) {
            libc::AF_INET => {
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                out[index].ipv4.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            libc::AF_INET6 => {
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                out[index].ipv6.push(Ipv6Addr::from(sin6.sin6_addr.s6_addr));
            }
            libc::AF_PACKET => {
                let sll = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_ll) };
                if sll.sll_halen == 6 {
                    out[index].mac = MacAddr::from_slice(&sll.sll_addr[..6]);
                }
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The name of the interface with index `index` in this network namespace (if_indextoname(3)).
pub fn name_of_index(index: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` holds IF_NAMESIZE bytes, as if_indextoname requires, and outlives the call.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success the kernel wrote a NUL-terminated name into `name`.
    Some(unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned())
}

/// The path MTU this node's kernel has cached for `to` (a route exception, learned from an ICMP
/// fragmentation-needed), from `ip -o route get`: `Ok(None)` when it has none.
pub fn cached_path_mtu(to: Ipv4Addr) -> Result<Option<u16>> {
    let text = super::firewall::run_bounded(
        "ip",
        &["-4", "-o", "route", "get", &to.to_string()],
        std::time::Duration::from_secs(5),
    )
    .map_err(|e| Error::could_not_run(format!("ip route get {to}"), e))?;
    Ok(route_get_mtu(&text))
}

/// The `mtu N` of the cache part of `ip -o route get` output (`... \    cache expires 599sec mtu 1400`).
fn route_get_mtu(text: &str) -> Option<u16> {
    let cached = text.split_once(" cache")?.1;
    let mut words = cached.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

/// The MTU of interface `name` in this network namespace (SIOCGIFMTU on a socket of its own, so
/// the namespace is the calling thread's, whatever /sys shows).
pub fn mtu(name: &str) -> Result<u16> {
    let failed =
        |e: std::io::Error| Error::could_not_run(format!("reading the MTU of {name}"), e.to_string());
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(failed)?;
    // SAFETY: an all-zero ifreq is a valid value of the C struct.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= request.ifr_name.len() || bytes.contains(&0) {
        return Err(Error::NoSuchInterface { name: name.to_string() });
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFMTU reads the NUL-terminated name and writes ifru_mtu of `request`, which
    // lives for the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut request) } < 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel filled the union's ifru_mtu member.
    let mtu = unsafe { request.ifr_ifru.ifru_mtu };
    Ok(u16::try_from(mtu).unwrap_or(u16::MAX))
}

/// The interface the main routing table sends `destination` out of (longest prefix, then lowest
/// metric), like the `dev` of `ip route get`. Policy routing rules are not consulted.
pub fn for_route_to(destination: impl Into<IpAddr>) -> Result<String> {
    route_to(destination).map(|route| route.interface)
}

/// The route the main table picks for an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub interface: String,
    /// No gateway: the address is on the interface's own segment, where ARP reaches it.
    pub on_link: bool,
}

/// The route to `destination` (as [`for_route_to`]), or an error naming the address.
pub fn route_to(destination: impl Into<IpAddr>) -> Result<Route> {
    let destination = destination.into();
    let file = if destination.is_ipv4() { "route" } else { "ipv6_route" };
    let table = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
        .map_err(|e| Error::could_not_run(format!("reading /proc/net/{file}"), e.to_string()))?;
    let found = match destination {
        IpAddr::V4(ip) => best_route(&table, ip),
        IpAddr::V6(ip) => best_route6(&table, ip),
    };
    found.ok_or_else(|| {
        Error::could_not_run(
            format!("finding the interface towards {destination}"),
            "no route matches it: pass the interface on the VIP's segment with -i/--interface",
        )
    })
}

/// Which address families this host (this network namespace) has routes for: (IPv4, IPv6).
/// Loopback routes do not count.
pub fn route_families() -> (bool, bool) {
    let v4 = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/thread-self/net/ipv6_route").unwrap_or_default();
    (has_route(&v4, 0), has_route(&v6, 9))
}

/// Whether a route table (/proc/net/route, interface in column 0; /proc/net/ipv6_route, in
/// column 9) lists a route on an interface other than loopback.
fn has_route(table: &str, interface_column: usize) -> bool {
    table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(interface_column))
        .any(|i| i != "lo" && i != "Iface")
}

/// Picks the route from /proc/net/ipv6_route text: destination, prefix length, source, its
/// length, next hop (all hex), metric, refcount, use, flags, interface. The host's own
/// addresses (RTF_LOCAL) and loopback are not routes out.
fn best_route6(table: &str, destination: Ipv6Addr) -> Option<Route> {
    const RTF_LOCAL: u32 = 0x8000_0000;
    let dst = u128::from(destination);
    let matching = table.lines().filter_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 || cols[9] == "lo" {
            return None;
        }
        let net = u128::from_str_radix(cols[0], 16).ok()?;
        let prefix = u32::from_str_radix(cols[1], 16).ok()?.min(128);
        let metric = u32::from_str_radix(cols[5], 16).ok()?;
        let flags = u32::from_str_radix(cols[8], 16).ok()?;
        let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
        let up = flags & RTF_UP != 0 && flags & RTF_LOCAL == 0;
        (up && dst & mask == net & mask).then_some(Candidate { prefix, metric, interface: cols[9], flags })
    });
    pick(matching)
}

/// Picks the route from /proc/net/route text. Addresses there are hex in host byte order.
fn best_route(table: &str, destination: Ipv4Addr) -> Option<Route> {
    let dst = u32::from(destination);
    let matching = table.lines().skip(1).filter_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 {
            return None;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
        let (net, mask) = (hex(cols[1])?, hex(cols[7])?);
        let flags = u32::from_str_radix(cols[3], 16).ok()?;
        let metric: u32 = cols[6].parse().unwrap_or(u32::MAX);
        let up = flags & RTF_UP != 0;
        (up && dst & mask == net).then_some(Candidate {
            prefix: mask.count_ones(),
            metric,
            interface: cols[0],
            flags,
        })
    });
    pick(matching)
}

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

/// A route that matches the destination.
struct Candidate<'a> {
    prefix: u32,
    metric: u32,
    interface: &'a str,
    flags: u32,
}

/// The longest prefix, then the lowest metric (the first listed on a tie), as the kernel picks.
fn pick<'a>(matching: impl Iterator<Item = Candidate<'a>>) -> Option<Route> {
    let best = matching.min_by_key(|c| (std::cmp::Reverse(c.prefix), c.metric))?;
    Some(Route { interface: best.interface.to_string(), on_link: best.flags & RTF_GATEWAY == 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    // As the kernel prints it: default via 203.0.113.1 on wan0, 192.0.2.0/24 on lan0 (metric 0),
    // 192.0.2.0/25 on lan1 (metric 100).
    const TABLE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wan0\t00000000\t017100CB\t0003\t0\t0\t0\t00000000\t0\t0\t0
lan0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
lan1\t000200C0\t00000000\t0001\t0\t0\t100\t80FFFFFF\t0\t0\t0
";

    #[test]
    fn ipv6_routes_by_longest_prefix_never_the_hosts_own_addresses() {
        // As the kernel prints it (this machine, a namespace): 2001:db8::/64 on eth0, a default
        // route via 2001:db8::1, and the host's own 2001:db8::5 (RTF_LOCAL, on eth0 too).
        let table = "\
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000002 00000000 00000003     wan0
20010db8000000000000000000000005 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
";
        let route = |ip: &str| best_route6(table, ip.parse().unwrap());
        assert_eq!(route("2001:db8::100"), Some(Route { interface: "eth0".into(), on_link: true }));
        assert_eq!(route("2001:db9::1"), Some(Route { interface: "wan0".into(), on_link: false }));
        assert_eq!(
            route("2001:db8::5").map(|r| r.interface).as_deref(),
            Some("eth0"),
            "by the /64, not the local /128"
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let interface = |ip| best_route(TABLE, ip).map(|r| r.interface);
        assert_eq!(interface(Ipv4Addr::new(192, 0, 2, 5)).as_deref(), Some("lan1"));
        assert_eq!(interface(Ipv4Addr::new(192, 0, 2, 200)).as_deref(), Some("lan0"));
        assert_eq!(interface(Ipv4Addr::new(198, 51, 100, 1)).as_deref(), Some("wan0"));
        assert!(best_route(TABLE, Ipv4Addr::new(192, 0, 2, 5)).unwrap().on_link);
        assert!(!best_route(TABLE, Ipv4Addr::new(198, 51, 100, 1)).unwrap().on_link, "via a gateway");
    }

    #[test]
    fn no_default_route_means_none() {
        let table: String = TABLE.lines().filter(|l| !l.starts_with("wan0")).collect::<Vec<_>>().join("\n");
        assert_eq!(best_route(&table, Ipv4Addr::new(198, 51, 100, 1)), None);
        assert_eq!(best_route("garbage\nnot a route", Ipv4Addr::new(192, 0, 2, 1)), None);
    }

    #[test]
    fn route_tables_with_only_loopback_have_no_family() {
        assert!(has_route(TABLE, 0));
        assert!(!has_route("Iface\tDestination\n", 0));
        let v6 = "\
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001 lo
";
        assert!(has_route(v6, 9));
        assert!(!has_route(v6.lines().nth(1).unwrap(), 9));
    }

    #[test]
    fn missing_interfaces_are_named() {
        assert!(matches!(lookup("no-such-if0"), Err(Error::NoSuchInterface { .. })));
    }
}

/// What the agent needs to know of its own node before it sends anywhere.
pub trait NodeFacts: Send + Sync + 'static {
    /// Every IPv4 address of this node (network namespace).
    fn addresses(&self) -> Vec<Ipv4Addr>;
    /// This node's own vxlan devices (flannel.1 with VNI 1, Cilium's, ...): their VNIs are never
    /// ours, their MTU is the pod network's, their port the one the overlay listens on. `None`
    /// when they could not be read (no `ip`), which is not the same as having none.
    fn vxlan_devices(&self) -> Option<Vec<VxlanDevice>>;
    /// This node's address on the route to `to`, if any.
    fn address_towards(&self, to: Ipv4Addr) -> Option<Ipv4Addr>;
}

/// A vxlan device of the node, as `ip -d link` shows it, and its transmit checksum offload as
/// `ethtool -k` does (`None` when ethtool is missing or fails).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub mtu: Option<u16>,
    /// tx-checksum-ip-generic: on, the offload behind the known bad-checksum VXLAN failures.
    pub tx_checksum: Option<bool>,
    /// The UDP port it sends to and listens on (`dstport`); `None` when `ip` did not say.
    pub port: Option<u16>,
    /// Administratively up: only then does the kernel hold its UDP socket open.
    pub up: bool,
}

/// The node the agent runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThisNode;

impl NodeFacts for ThisNode {
    fn addresses(&self) -> Vec<Ipv4Addr> {
        all().map(|list| list.into_iter().flat_map(|i| i.ipv4).collect()).unwrap_or_default()
    }

    /// `ip -d link` is run again only when this namespace's links changed (a device made, removed
    /// or renamed gives another list of names and indexes; a VNI cannot change on a live device),
    /// at least every [`VNI_FRESHNESS`] where the links cannot be listed, and at least every
    /// [`VNI_AT_MOST`] anyway: every request asks, and each read is a process. The MTUs are read
    /// on every call (an ioctl each).
    fn vxlan_devices(&self) -> Option<Vec<VxlanDevice>> {
        type Read = Option<(std::time::Instant, Option<Vec<(String, u32)>>, Option<Vec<VxlanDevice>>)>;
        static LAST: std::sync::Mutex<Read> = std::sync::Mutex::new(None);
        let links = links();
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((read, seen, devices)) = &*last {
            // Links listed: reused while they stay the same. Not listed: reused briefly.
            let fresh = match (&links, seen) {
                (Some(now), Some(seen)) => now == seen && read.elapsed() < VNI_AT_MOST,
                _ => read.elapsed() < VNI_FRESHNESS,
            };
            if fresh {
                let mut devices = devices.clone();
                for device in devices.iter_mut().flatten() {
                    device.mtu = mtu(&device.name).ok().or(device.mtu);
                    device.tx_checksum = checksum_offload(&device.name);
                }
                return devices;
            }
        }
        let json = super::firewall::run_bounded(
            "ip",
            &["-j", "-d", "link", "show", "type", "vxlan"],
            std::time::Duration::from_secs(5),
        );
        let mut devices = json.ok().map(|json| vxlan_devices(&json));
        for device in devices.iter_mut().flatten() {
            device.tx_checksum = checksum_offload(&device.name);
        }
        *last = Some((std::time::Instant::now(), links, devices.clone()));
        devices
    }

    fn address_towards(&self, to: Ipv4Addr) -> Option<Ipv4Addr> {
        let name = for_route_to(to).ok()?;
        lookup(&name).ok()?.ipv4.first().copied()
    }
}

/// A device's tx-checksum-ip-generic, from `ethtool -k`, read at most every
/// [`OFFLOAD_FRESHNESS`] per device: offload settings change rarely, and each read is a process.
fn checksum_offload(device: &str) -> Option<bool> {
    type Reads = Vec<(String, std::time::Instant, Option<bool>)>;
    static READ: std::sync::Mutex<Reads> = std::sync::Mutex::new(Vec::new());
    let mut read = READ.lock().unwrap_or_else(|e| e.into_inner());
    read.retain(|(_, at, _)| at.elapsed() < OFFLOAD_FRESHNESS);
    if let Some((_, _, on)) = read.iter().find(|(name, _, _)| name == device) {
        return *on;
    }
    let features =
        super::firewall::run_bounded("ethtool", &["-k", device], std::time::Duration::from_secs(5));
    let on = features.ok().and_then(|text| tx_checksum(&text));
    read.push((device.to_string(), std::time::Instant::now(), on));
    on
}

/// How long a device's checksum offload setting is reused.
const OFFLOAD_FRESHNESS: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a read of this node's vxlan devices is reused when its links cannot be listed.
const VNI_FRESHNESS: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a read of this node's vxlan devices is reused while its links stay the same.
const VNI_AT_MOST: std::time::Duration = std::time::Duration::from_secs(60);

/// This namespace's links: (name, index) of each, sorted; `None` when they cannot be listed.
fn links() -> Option<Vec<(String, u32)>> {
    let mut links: Vec<(String, u32)> = all()
        .ok()?
        .into_iter()
        .map(|i| {
            let index = std::ffi::CString::new(i.name.as_str())
                // SAFETY: a NUL-terminated name that lives across the call.
                .map(|name| unsafe { libc::if_nametoindex(name.as_ptr()) })
                .unwrap_or(0);
            (i.name, index)
        })
        .collect();
    links.sort();
    Some(links)
}

/// The devices in `ip -j -d link show type vxlan` output.
fn vxlan_devices(json: &str) -> Vec<VxlanDevice> {
    let Ok(serde_json::Value::Array(links)) = serde_json::from_str::<serde_json::Value>(json) else {
        return vec![];
    };
    links
        .iter()
        .filter_map(|l| {
            let vni = l.pointer("/linkinfo/info_data/id")?.as_u64()?;
            Some(VxlanDevice {
                name: l.get("ifname").and_then(serde_json::Value::as_str).unwrap_or("?").to_string(),
                vni: u32::try_from(vni).ok()?,
                mtu: l.get("mtu").and_then(serde_json::Value::as_u64).and_then(|m| u16::try_from(m).ok()),
                tx_checksum: None,
                port: l
                    .pointer("/linkinfo/info_data/port")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok()),
                up: l
                    .get("flags")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|flags| flags.iter().any(|f| f == "UP")),
            })
        })
        .collect()
}

/// `tx-checksum-ip-generic` from `ethtool -k` output: `on`, `off`, either maybe `[fixed]`.
fn tx_checksum(features: &str) -> Option<bool> {
    let value = features.lines().find_map(|l| l.trim().strip_prefix("tx-checksum-ip-generic:"))?;
    match value.split_whitespace().next()? {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod vxlan_tests {
    use super::*;

    #[test]
    fn vnis_of_the_nodes_vxlan_devices() {
        let json = r#"[{"ifindex":4,"ifname":"flannel.1","flags":["BROADCAST","UP"],"mtu":1450,"linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"local":"198.51.100.1","port":8472}}},
                       {"ifindex":5,"ifname":"cilium_vxlan","linkinfo":{"info_kind":"vxlan","info_data":{"id":2,"port":8472}}}]"#;
        let devices = vxlan_devices(json);
        let vnis: Vec<u32> = devices.iter().map(|d| d.vni).collect();
        assert_eq!(vnis, vec![1, 2]);
        assert_eq!((devices[0].name.as_str(), devices[0].mtu), ("flannel.1", Some(1450)));
        assert_eq!((devices[0].port, devices[0].up), (Some(8472), true));
        assert_eq!((devices[1].name.as_str(), devices[1].mtu), ("cilium_vxlan", None));
        assert_eq!((devices[1].port, devices[1].up), (Some(8472), false), "no UP flag: down");
        assert!(vxlan_devices("").is_empty() && vxlan_devices("[]").is_empty());
    }

    #[test]
    fn a_cached_path_mtu_from_ip_route_get() {
        // iproute2 6.1, kernel 6.18: after an ICMP fragmentation-needed, and without one.
        let learned = "203.0.113.2 via 198.51.100.254 dev eth0 src 198.51.100.1 uid 0 \\    cache expires 599sec mtu 1400 ";
        assert_eq!(route_get_mtu(learned), Some(1400));
        assert_eq!(
            route_get_mtu("203.0.113.2 via 198.51.100.254 dev eth0 src 198.51.100.1 uid 0 \\    cache "),
            None
        );
        assert_eq!(
            route_get_mtu("192.0.2.1 dev eth0 src 192.0.2.2 uid 0 mtu 9000 \\    cache "),
            None,
            "a route's own mtu is no cache"
        );
    }

    #[test]
    fn ports_and_state_from_the_real_ip_output() {
        // tests/corpus/ip: `ip -j -d link show type vxlan` (iproute2 6.1) of flannel.1 (8472, up),
        // vxlan.calico (4789, up) and Cilium's external cilium_vxlan (8472, down).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/ip/vxlan-devices.json");
        let devices = vxlan_devices(&std::fs::read_to_string(path).unwrap());
        let seen: Vec<(&str, u32, Option<u16>, bool)> =
            devices.iter().map(|d| (d.name.as_str(), d.vni, d.port, d.up)).collect();
        assert_eq!(
            seen,
            [
                ("flannel.1", 1, Some(8472), true),
                ("vxlan.calico", 4096, Some(4789), true),
                ("cilium_vxlan", 0, Some(8472), false)
            ]
        );
    }

    #[test]
    fn checksum_offload_from_the_real_ethtool_output() {
        // tests/corpus/ethtool: `ethtool -k flannel.1` (ethtool 6.1) of a kernel vxlan device.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/ethtool/flannel.1-features");
        assert_eq!(tx_checksum(&std::fs::read_to_string(path).unwrap()), Some(true));
        assert_eq!(tx_checksum("\ttx-checksum-ip-generic: off [fixed]\n"), Some(false));
        assert_eq!(tx_checksum("Cannot get device feature names\n"), None);
    }
}
