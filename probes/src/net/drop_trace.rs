//! Why the kernel dropped our probes, from the kernel itself: the `skb:kfree_skb` tracepoint
//! carries a drop reason (NETFILTER_DROP, UDP_CSUM, NO_SOCKET, VXLAN_VNI_NOT_FOUND, ...) and the
//! function that dropped the packet (kernels 5.17 and later).
//!
//! The tracepoint is system-wide and says nothing of ports, addresses or network namespaces. So a
//! drop counts as one of ours only when the same packet (the same skb address, in order) was
//! first seen by `net:netif_receive_skb` arriving, on any interface (asymmetric routes bring
//! probes in where the route back does not go), with exactly the probes' length, which
//! [`crate::wire::vxlan::probe_packet_len`] makes particular to each probe id. Both events are enabled in a tracefs instance of this agent's own (never the global
//! buffer) that exists only while an expectation is open, with filters as tight as their fields
//! allow (protocol and reason; length), and always disabled and removed again: when
//! the last expectation closes, on error, and when the agent exits. One left by an agent that was
//! killed mid-window is removed by the next agent that starts.
//!
//! Where tracefs is not mounted (it is not under `ip netns exec`, which remounts /sys), a thread
//! of its own mounts it in a mount namespace of its own and keeps only a descriptor of it: the
//! mount is seen by nobody else and goes away with the agent.

#![allow(unsafe_code)] // unshare(2) and mount(2); each with a SAFETY comment.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Drops of our probes with one reason at one place.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelDrop {
    /// The kernel's name for the reason: `NETFILTER_DROP`, `VXLAN_VNI_NOT_FOUND`, ...
    pub reason: String,
    /// The function that dropped them: `nft_do_chain`, `vxlan_rcv`, `__udp4_lib_rcv`, ...
    pub location: String,
    pub count: u32,
}

/// The probes of one expectation: IPv4 packets of `len` bytes arriving on any interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub len: u16,
}

/// Watching the kernel drop packets; the agent reaches it through this trait.
pub trait DropTrace: Send + Sync + 'static {
    /// Starts counting the drops of `what`; an error says why the kernel cannot be asked.
    fn watch(&self, what: Watched) -> Result<Box<dyn DropWatch>, String>;
}

pub trait DropWatch: Send {
    /// Stops counting and gives what the kernel dropped of the watched packets since `watch`.
    fn finish(self: Box<Self>) -> Result<Vec<KernelDrop>, String>;
}

/// No tracing (turned off, or impossible here): every watch says why.
pub struct NoTrace(pub String);

impl DropTrace for NoTrace {
    fn watch(&self, _: Watched) -> Result<Box<dyn DropWatch>, String> {
        Err(self.0.clone())
    }
}

/// The kernel's names (skb:kfree_skb's `reason`) of the drops the judges read by name.
pub mod reason {
    pub const NETFILTER_DROP: &str = "NETFILTER_DROP";
    pub const UDP_CSUM: &str = "UDP_CSUM";
    pub const NO_SOCKET: &str = "NO_SOCKET";
    pub const IP_RPFILTER: &str = "IP_RPFILTER";
    pub const VXLAN_VNI_NOT_FOUND: &str = "VXLAN_VNI_NOT_FOUND";
    pub const VXLAN_INVALID_HDR: &str = "VXLAN_INVALID_HDR";
    pub const OTHERHOST: &str = "OTHERHOST";
}

/// The reasons a probe to a UDP port can be dropped for on its way in; the filter asks for these
/// alone (those this kernel knows).
const REASONS: [&str; 16] = [
    reason::NETFILTER_DROP,
    reason::UDP_CSUM,
    "IP_CSUM",
    reason::NO_SOCKET,
    "SOCKET_FILTER",
    "SOCKET_RCVBUFF",
    reason::VXLAN_VNI_NOT_FOUND,
    reason::VXLAN_INVALID_HDR,
    reason::IP_RPFILTER,
    "XFRM_POLICY",
    reason::OTHERHOST,
    "IP_INADDRERRORS",
    "IP_INNOROUTES",
    "PKT_TOO_SMALL",
    "TC_INGRESS",
    "XDP",
];

/// This agent's tracefs instance.
pub struct Tracefs {
    inner: Arc<Inner>,
}

struct Inner {
    /// The instance's directory: made when the first watch opens, removed when the last closes.
    dir: PathBuf,
    /// kfree_skb's filter for this kernel's reason numbers.
    drop_filter: String,
    /// Keeps a privately mounted tracefs alive (its path is /proc/self/fd/N).
    _mount: Option<OwnedFd>,
    /// Open watches, by id: their filters make up netif_receive_skb's.
    open: Mutex<(u64, Vec<(u64, Watched)>)>,
}

impl Tracefs {
    /// Finds tracefs (or mounts it privately) and reads this kernel's drop reasons; nothing is
    /// made or enabled until a watch starts. Needs CAP_SYS_ADMIN when it must mount.
    pub fn open() -> Result<Tracefs, String> {
        let (root, mount) = find_or_mount()?;
        for event in ["events/skb/kfree_skb", "events/net/netif_receive_skb"] {
            if !root.join(event).exists() {
                return Err(format!("this kernel has no {event} tracepoint"));
            }
        }
        remove_stale_instances(&root.join("instances"));
        let dir = root.join("instances").join(format!("netprobe-{}", std::process::id()));
        let format = std::fs::read_to_string(root.join("events/skb/kfree_skb/format"))
            .map_err(|e| format!("reading the kfree_skb format: {e}"))?;
        let drop_filter = drop_filter(&reasons(&format)).ok_or_else(|| {
            "this kernel's kfree_skb carries no drop reason (5.17 or later has them)".to_string()
        })?;
        let inner = Inner { dir, drop_filter, _mount: mount, open: Mutex::new((0, Vec::new())) };
        Ok(Tracefs { inner: Arc::new(inner) })
    }
}

impl Inner {
    fn write(&self, file: &str, text: &str) -> Result<(), String> {
        std::fs::write(self.dir.join(file), text)
            .map_err(|e| format!("writing {text:?} to tracefs {file}: {e}"))
    }

    /// Both events on in the instance (made if need be), with the receive filter of every open
    /// watch; when none is open, off and the instance removed.
    fn apply(&self, open: &[(u64, Watched)]) -> Result<(), String> {
        if open.is_empty() {
            if !self.dir.exists() {
                return Ok(());
            }
            let off = self.write("events/skb/kfree_skb/enable", "0");
            let off_too = self.write("events/net/netif_receive_skb/enable", "0");
            let _ = std::fs::remove_dir(&self.dir);
            return off.and(off_too);
        }
        if !self.dir.exists() {
            std::fs::create_dir(&self.dir)
                .map_err(|e| format!("making tracefs instance {}: {e}", self.dir.display()))?;
            self.write("trace_clock", "mono")?;
            self.write("buffer_size_kb", "1024")?;
            self.write("events/skb/kfree_skb/filter", &self.drop_filter)?;
        }
        self.write("events/net/netif_receive_skb/filter", &receive_filter(open))?;
        self.write("events/net/netif_receive_skb/enable", "1")?;
        self.write("events/skb/kfree_skb/enable", "1")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.apply(&[]);
    }
}

impl DropTrace for Tracefs {
    fn watch(&self, what: Watched) -> Result<Box<dyn DropWatch>, String> {
        let since = monotonic_seconds();
        let mut open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 += 1;
        let id = open.0;
        open.1.push((id, what.clone()));
        if let Err(e) = self.inner.apply(&open.1) {
            open.1.retain(|(other, _)| *other != id);
            let _ = self.inner.apply(&open.1);
            return Err(e);
        }
        Ok(Box::new(TraceWatch { inner: self.inner.clone(), id, what, since }))
    }
}

struct TraceWatch {
    inner: Arc<Inner>,
    id: u64,
    what: Watched,
    since: f64,
}

impl TraceWatch {
    fn close(&self) {
        let mut open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
        open.1.retain(|(other, _)| *other != self.id);
        let _ = self.inner.apply(&open.1);
    }
}

impl DropWatch for TraceWatch {
    fn finish(self: Box<Self>) -> Result<Vec<KernelDrop>, String> {
        // Read before closing: the last close removes the instance and its buffer.
        let text = std::fs::read_to_string(self.inner.dir.join("trace"));
        self.close();
        let text = text.map_err(|e| format!("reading the tracefs buffer: {e}"))?;
        Ok(drops_of(&text, &self.what, self.since))
    }
}

impl Drop for TraceWatch {
    fn drop(&mut self) {
        // finish() closed it already; an expectation dropped without collect closes it here.
        self.close();
    }
}

/// Instances are the kernel's, not the mount's: one left by an agent that was killed (no Drop
/// ran) would trace forever. Those of processes that are gone are turned off and removed.
fn remove_stale_instances(instances: &Path) {
    let Ok(entries) = std::fs::read_dir(instances) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("netprobe-")) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            for event in ["events/skb/kfree_skb/enable", "events/net/netif_receive_skb/enable"] {
                let _ = std::fs::write(entry.path().join(event), "0");
            }
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Reason numbers by name, from the `print fmt` of kfree_skb's format (they change between
/// kernel versions, so they are never hard-coded).
pub fn reasons(format: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    let Some(start) = format.find("__print_symbolic(REC->reason") else { return out };
    for entry in format[start..].split("{ ").skip(1) {
        let Some((number, rest)) = entry.split_once(',') else { continue };
        let Some(name) = rest.split('"').nth(1) else { continue };
        if let Ok(number) = number.trim().parse() {
            out.insert(name.to_string(), number);
        }
    }
    out
}

/// `protocol == 2048 && (reason == 12 || ...)`: IPv4 drops for the reasons in [`REASONS`] this
/// kernel has; `None` when it has none of them.
fn drop_filter(known: &HashMap<String, u32>) -> Option<String> {
    let mut numbers: Vec<u32> = REASONS.iter().filter_map(|r| known.get(*r).copied()).collect();
    numbers.sort_unstable();
    if numbers.is_empty() {
        return None;
    }
    let any: Vec<String> = numbers.iter().map(|n| format!("reason == {n}")).collect();
    Some(format!("protocol == 2048 && ({})", any.join(" || ")))
}

/// `len == 97 || ...` over the open watches.
fn receive_filter(open: &[(u64, Watched)]) -> String {
    let mut terms: Vec<String> = open.iter().map(|(_, w)| format!("len == {}", w.len)).collect();
    terms.sort();
    terms.dedup();
    terms.join(" || ")
}

/// One line of a trace buffer that matters here.
#[derive(Debug, PartialEq)]
enum Event<'a> {
    Received { at: f64, skb: &'a str, dev: &'a str, len: u16 },
    Freed { at: f64, skb: &'a str, reason: &'a str, location: &'a str },
}

/// Reads a trace line: `  comm-pid  [001] ..s1.  1651.649539: kfree_skb: skbaddr=... reason: X`.
fn event(line: &str) -> Option<Event<'_>> {
    let (head, body) = line.split_once(": ")?;
    let at: f64 = head.rsplit(' ').next()?.parse().ok()?;
    let (name, fields) = body.split_once(": ")?;
    let field =
        |key: &str| fields.split(' ').find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix('=')));
    match name {
        "netif_receive_skb" => Some(Event::Received {
            at,
            skb: field("skbaddr")?,
            dev: field("dev")?,
            len: field("len")?.parse().ok()?,
        }),
        "kfree_skb" => {
            let location = field("location")?;
            // vxlan_rcv+0x8c/0xc50 [vxlan]: the function.
            let location = location.split('+').next().unwrap_or(location);
            let reason = fields.rsplit_once("reason: ")?.1.trim();
            Some(Event::Freed { at, skb: field("skbaddr")?, reason, location })
        }
        _ => None,
    }
}

/// The drops in `trace` of packets that `what` describes, seen arriving at or after `since`: a
/// drop counts when the same skb last arrived with the probes' length.
pub fn drops_of(trace: &str, what: &Watched, since: f64) -> Vec<KernelDrop> {
    let mut arrived: HashMap<&str, bool> = HashMap::new();
    let mut counted: Vec<KernelDrop> = Vec::new();
    for line in trace.lines().filter(|l| !l.starts_with('#')) {
        match event(line) {
            Some(Event::Received { at, skb, len, .. }) => {
                arrived.insert(skb, at >= since && len == what.len);
            }
            // The packet's life ends here either way: its address may be reused by the next.
            Some(Event::Freed { skb, reason, location, .. }) if arrived.remove(skb) == Some(true) => {
                match counted.iter_mut().find(|d| d.reason == reason && d.location == location) {
                    Some(drop) => drop.count += 1,
                    None => counted.push(KernelDrop {
                        reason: reason.to_string(),
                        location: location.to_string(),
                        count: 1,
                    }),
                }
            }
            Some(Event::Freed { .. }) | None => {}
        }
    }
    counted
}

/// CLOCK_MONOTONIC in seconds: the clock of a tracefs instance with trace_clock `mono`.
fn monotonic_seconds() -> f64 {
    super::monotonic_now().as_secs_f64()
}

/// Where tracefs is, or a private mount of it: (its root, the descriptor that keeps the mount).
fn find_or_mount() -> Result<(PathBuf, Option<OwnedFd>), String> {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(root).join("events/skb").exists() {
            return Ok((PathBuf::from(root), None));
        }
    }
    // A thread unshares its own mount namespace (threads may: CLONE_NEWNS unshares only the
    // caller's filesystem context), mounts tracefs there and hands back a descriptor of it.
    let mounted = std::thread::spawn(|| -> Result<OwnedFd, String> {
        let path = c"/sys/kernel/tracing";
        // SAFETY: plain system calls with NUL-terminated strings that outlive them.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(format!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error()));
            }
            // Nothing mounted here propagates back to the namespace we came from.
            let root = c"/";
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), flags, std::ptr::null()) != 0 {
                return Err(format!("making mounts private: {}", std::io::Error::last_os_error()));
            }
            let (source, kind) = (c"nodev", c"tracefs");
            if libc::mount(source.as_ptr(), path.as_ptr(), kind.as_ptr(), 0, std::ptr::null()) != 0 {
                return Err(format!(
                    "mounting tracefs: {} (it needs CAP_SYS_ADMIN, or tracefs mounted at /sys/kernel/tracing)",
                    std::io::Error::last_os_error()
                ));
            }
            let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(format!("opening the tracefs mount: {}", std::io::Error::last_os_error()));
            }
            Ok(OwnedFd::from_raw_fd(fd))
        }
    })
    .join()
    .map_err(|_| "the thread mounting tracefs failed".to_string())??;
    Ok((PathBuf::from(format!("/proc/self/fd/{}", mounted.as_raw_fd())), Some(mounted)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/tracefs/");
        std::fs::read_to_string(format!("{path}{name}")).unwrap()
    }

    #[test]
    fn reason_numbers_come_from_the_kernels_own_format() {
        let known = reasons(&corpus("kfree_skb-format-6.18"));
        assert_eq!(known["NETFILTER_DROP"], 12);
        assert_eq!(known["VXLAN_VNI_NOT_FOUND"], 110);
        assert_eq!(known["NO_SOCKET"], 3);
        assert_eq!(known.len(), 127, "every reason of this kernel");
        let filter = drop_filter(&known).unwrap();
        assert!(
            filter.starts_with("protocol == 2048 && (reason == 3 || reason == 5 || reason == 6"),
            "{filter}"
        );
        assert!(filter.contains("reason == 110"));
        // A kernel before 5.17: no reasons, no filter.
        assert_eq!(drop_filter(&reasons("print fmt: \"skbaddr=%p protocol=%u location=%p\"")), None);
    }

    #[test]
    fn only_drops_of_the_watched_packets_count() {
        let trace = corpus("trace-vni-not-found");
        let probes = Watched { len: 94 };
        let drops = drops_of(&trace, &probes, 0.0);
        assert_eq!(
            drops,
            vec![KernelDrop { reason: "VXLAN_VNI_NOT_FOUND".into(), location: "vxlan_rcv".into(), count: 3 }],
            "the NO_SOCKET drop of another packet (no receive event of that length) is not ours"
        );
        assert!(drops_of(&trace, &Watched { len: 95 }, 0.0).is_empty());
        assert!(drops_of(&trace, &probes, 1743.0).is_empty(), "before the watch began");
    }

    #[test]
    fn receive_filters_cover_every_open_watch_once() {
        let w = |len| Watched { len };
        let open = vec![(1, w(97)), (2, w(97)), (3, w(120))];
        assert_eq!(receive_filter(&open), "len == 120 || len == 97");
    }
}
