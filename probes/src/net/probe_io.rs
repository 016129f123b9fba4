//! The agent's packet I/O: listening for probes (a capture on every interface of the node, since
//! asymmetric routes bring probes in on another interface than the one towards the sender, and a
//! control UDP socket, each on a thread) and sending them through the kernel's UDP stack while
//! capturing what leaves. The agent's handlers reach it through [`ProbeIo`]; [`ProbeSockets`] is real.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::budget::Budget;
use super::capture::LiveCapture;
use super::{interface, Link};
use crate::wire::vxlan;
use crate::{Error, Result};

/// What to listen for.
#[derive(Clone, Copy, Debug)]
pub struct ListenSpec {
    pub from: Ipv4Addr,
    pub port: u16,
    pub vni: u32,
    pub probe_id: u64,
    pub window: Duration,
}

/// What to send: `count` probes (or one per entry of `sizes`) to each target, interleaved.
#[derive(Clone, Debug)]
pub struct SendSpec {
    pub targets: Vec<Target>,
    pub port: u16,
    pub vni: u32,
    pub count: u32,
    /// Between one target's probes.
    pub gap: Duration,
    /// Sized probes: probe i's outer IPv4 packet is `sizes[i]` bytes, sent with Don't Fragment
    /// (`count` is ignored, and no control datagram goes). Empty: `count` plain probes.
    pub sizes: Vec<u16>,
}

/// One node to send probes to: its address, its agent's control port, the probe id it expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub to: Ipv4Addr,
    pub control_port: u16,
    pub probe_id: u64,
}

/// The sequence numbers heard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    pub probes: HashSet<u32>,
    pub control: HashSet<u32>,
    /// The interfaces the probes were captured arriving on, by name, sorted.
    pub interfaces: Vec<String>,
}

/// What left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub left: HashSet<u32>,
    pub control_left: HashSet<u32>,
    /// The first error sendto(2) gave (EPERM when this node's own firewall drops the packet;
    /// EMSGSIZE for a sized probe longer than the interface's MTU).
    pub send_error: Option<String>,
    /// The MTU of the interface the probes left by.
    pub interface_mtu: Option<u16>,
    /// The ICMP destination-unreachable messages about the probes captured while sending: a
    /// router's or the destination's reject, a closed port, fragmentation needed (sized probes).
    pub unreachable: Vec<vxlan::Unreachable>,
}

/// Listening under way.
pub trait Listener: Send {
    fn interface(&self) -> &str;
    fn control_port(&self) -> u16;
    /// Keeps listening until `until` at least: the sender is about to send (it asked first), so
    /// probes that leave late under load are still heard, never taken for lost. False when the
    /// listening has already ended: then it is too late to send.
    fn extend(&self, until: Instant) -> bool;
    /// Stops listening, takes in what the capture still buffered, and says what was heard; a
    /// capture that failed (or its thread) is an error, never "nothing arrived".
    fn finish(self: Box<Self>) -> Result<Heard>;
}

pub trait ProbeIo: Send + Sync + 'static {
    fn listen(&self, spec: ListenSpec) -> Result<Box<dyn Listener>>;
    /// What left for each target, in the order of `spec.targets`.
    fn send(&self, spec: SendSpec) -> Result<Vec<Sent>>;
}

/// The real captures and sockets, and the packet budget every send of this agent shares.
///
/// Listening is shared: every expectation on one interface and port is served by one capture
/// (and every expectation by one control socket), each read by one thread that hands a packet to
/// the expectation it belongs to. A capture per expectation made every packet pass every open
/// capture's filter and kept two threads awake per expectation: the cost grew with the square of
/// the peers.
#[derive(Debug)]
pub struct ProbeSockets {
    /// The packets of every send together, a tenth of a second's worth at once at most.
    budget: Budget,
    /// The capture of each VXLAN port listened on (every interface at once).
    taps: Mutex<HashMap<u16, Weak<Tap>>>,
    control: Mutex<Weak<Tap>>,
}

impl ProbeSockets {
    /// At most `per_second` packets a second over all sends together.
    pub fn new(per_second: u32) -> ProbeSockets {
        ProbeSockets {
            budget: Budget::new(f64::from(per_second.max(1)), f64::from(per_second) / 10.0),
            taps: Default::default(),
            control: Default::default(),
        }
    }

    /// The capture for probes to `port` on every interface, shared while anyone listens there.
    fn capture_tap(&self, port: u16) -> Result<Arc<Tap>> {
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        taps.retain(|_, tap| tap.strong_count() > 0);
        if let Some(tap) = taps.get(&port).and_then(Weak::upgrade).filter(|t| t.failure().is_none()) {
            return Ok(tap);
        }
        // The filter is set before the capture is handed out, so nobody is asked to send earlier.
        let capture = LiveCapture::open_any(&format!("udp and dst port {port}"))?;
        let tap = Tap::start("capturing on every interface".into(), TapSource::Capture(capture));
        taps.insert(port, Arc::downgrade(&tap));
        Ok(tap)
    }

    /// The control socket, shared while anyone listens.
    fn control_tap(&self) -> Result<Arc<Tap>> {
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tap) = control.upgrade().filter(|t| t.failure().is_none()) {
            return Ok(tap);
        }
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .map_err(|e| Error::could_not_run("binding the control socket", e.to_string()))?;
        let _ = socket.set_read_timeout(Some(TICK));
        let tap = Tap::start("the control socket".into(), TapSource::Control(socket));
        *control = Arc::downgrade(&tap);
        Ok(tap)
    }
}

/// How often a tap's thread looks up from its reads: for stop requests and drain barriers.
const TICK: Duration = Duration::from_millis(20);

/// The longest `finish` waits for a tap to take in what was buffered before it was called.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Who listens on a tap for what: the probes of one probe id from one node.
#[derive(Debug)]
struct Registration {
    from: Ipv4Addr,
    vni: u32,
    probe_id: u64,
    /// Sequence numbers of the probes and of the control datagrams heard.
    heard: Mutex<HashSet<u32>>,
    control_heard: Mutex<HashSet<u32>>,
    /// The indexes of the interfaces its probes were captured on.
    interfaces: Mutex<BTreeSet<u32>>,
}

enum TapSource {
    Capture(LiveCapture),
    Control(UdpSocket),
}

/// One capture or control socket and its reading thread, shared by every registration on it.
/// Stops when the last listener holding it is gone.
#[derive(Debug)]
struct Tap {
    what: String,
    /// The control socket's port (what senders are told); 0 for a capture.
    port: u16,
    registrations: Mutex<Vec<Arc<Registration>>>,
    /// When the thread last found nothing buffered: a drain barrier for `finish`.
    drained: Mutex<Instant>,
    drained_changed: Condvar,
    failed: Mutex<Option<String>>,
}

impl Tap {
    fn start(what: String, source: TapSource) -> Arc<Tap> {
        let port = match &source {
            TapSource::Control(socket) => socket.local_addr().map(|a| a.port()).unwrap_or(0),
            TapSource::Capture(_) => 0,
        };
        let tap = Arc::new(Tap {
            what,
            port,
            registrations: Default::default(),
            drained: Mutex::new(Instant::now()),
            drained_changed: Condvar::new(),
            failed: Default::default(),
        });
        // The thread holds the tap weakly: the listeners own it, and it ends with the last one.
        let weak = Arc::downgrade(&tap);
        std::thread::spawn(move || match source {
            TapSource::Capture(capture) => Tap::read_capture(weak, capture),
            TapSource::Control(socket) => Tap::read_control(weak, socket),
        });
        tap
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn register(&self, registration: Arc<Registration>) {
        self.registrations.lock().unwrap_or_else(|e| e.into_inner()).push(registration);
    }

    fn unregister(&self, registration: &Arc<Registration>) {
        self.registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| !Arc::ptr_eq(r, registration));
    }

    /// Hands a packet from `source` to the registration it belongs to: `seq_of` reads its
    /// sequence number if it is that registration's, `into` is the set it goes in, and `ifindex`
    /// the interface it was captured on, when known.
    fn deliver(
        &self,
        source: Ipv4Addr,
        seq_of: impl Fn(&Registration) -> Option<u32>,
        into: fn(&Registration) -> &Mutex<HashSet<u32>>,
        ifindex: Option<u32>,
    ) {
        for registration in self.registrations.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if registration.from == source {
                if let Some(seq) = seq_of(registration) {
                    into(registration).lock().unwrap_or_else(|e| e.into_inner()).insert(seq);
                    if let Some(index) = ifindex {
                        registration.interfaces.lock().unwrap_or_else(|e| e.into_inner()).insert(index);
                    }
                    return;
                }
            }
        }
    }

    /// Everything buffered at `at` has been handed out.
    fn mark_drained(&self, at: Instant) {
        let mut drained = self.drained.lock().unwrap_or_else(|e| e.into_inner());
        *drained = (*drained).max(at);
        self.drained_changed.notify_all();
    }

    fn fail(&self, why: String) {
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.drained_changed.notify_all();
    }

    /// Waits until everything buffered before `since` has been handed out (or the tap failed).
    fn drain_since(&self, since: Instant) -> Result<()> {
        let mut drained = self.drained.lock().unwrap_or_else(|e| e.into_inner());
        let give_up = since + DRAIN_LIMIT;
        while *drained <= since && self.failure().is_none() && Instant::now() < give_up {
            let wait = give_up.saturating_duration_since(Instant::now()).min(TICK * 2);
            drained = self.drained_changed.wait_timeout(drained, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
        drop(drained);
        match self.failure() {
            Some(why) => Err(Error::could_not_run(self.what.clone(), why)),
            None => Ok(()),
        }
    }

    fn read_capture(tap: Weak<Tap>, mut capture: LiveCapture) {
        while let Some(tap) = tap.upgrade() {
            // Reads until the buffer is found empty once the tick has passed: a call that
            // returns nothing has taken in all that was buffered when it started.
            let tick = Instant::now() + TICK;
            loop {
                let started = Instant::now();
                match capture.next_before(tick) {
                    Ok(Some(frame)) => {
                        if let Some((source, _, _, payload)) = vxlan::outer_udp(frame.link, &frame.data) {
                            let ifindex =
                                crate::wire::link::decode(frame.link, &frame.data).and_then(|f| f.ifindex);
                            tap.deliver(
                                source,
                                |r| vxlan::probe_seq(payload, r.vni, r.probe_id),
                                |r| &r.heard,
                                ifindex,
                            );
                        }
                    }
                    Ok(None) => break tap.mark_drained(started),
                    Err(e) => return tap.fail(e.to_string()),
                }
            }
        }
    }

    fn read_control(tap: Weak<Tap>, socket: UdpSocket) {
        while let Some(tap) = tap.upgrade() {
            // Take in what is buffered, then wait up to a tick for more.
            let _ = socket.set_nonblocking(true);
            loop {
                let started = Instant::now();
                match tap.receive_control(&socket) {
                    Ok(true) => {}
                    Ok(false) => break tap.mark_drained(started),
                    Err(e) => return tap.fail(e.to_string()),
                }
            }
            let _ = socket.set_nonblocking(false);
            if let Err(e) = tap.receive_control(&socket) {
                return tap.fail(e.to_string());
            }
        }
    }

    /// One control datagram handed out (or an interrupted read, to be tried again): false when
    /// none came (nothing buffered, or the timeout).
    fn receive_control(&self, socket: &UdpSocket) -> std::io::Result<bool> {
        let mut buf = [0u8; 256];
        match socket.recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(peer))) => {
                self.deliver(
                    *peer.ip(),
                    |r| vxlan::control_seq(&buf[..n], r.probe_id),
                    |r| &r.control_heard,
                    None,
                );
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// One expectation's listening: its registrations on the shared capture and control taps.
struct LiveListener {
    interface: String,
    control_port: u16,
    deadline: Deadline,
    registration: Arc<Registration>,
    capture: Arc<Tap>,
    control: Arc<Tap>,
}

impl Drop for LiveListener {
    fn drop(&mut self) {
        self.capture.unregister(&self.registration);
        self.control.unregister(&self.registration);
    }
}

/// Until when the sender may still send: moved later by [`Listener::extend`], refused for good
/// once it has passed. Probes that arrive are counted until the expectation is collected.
struct Deadline(Mutex<Option<Instant>>);

impl Deadline {
    fn new(at: Instant) -> Deadline {
        Deadline(Mutex::new(Some(at)))
    }

    fn extend(&self, until: Instant) -> bool {
        let mut deadline = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match deadline.as_mut() {
            Some(at) if Instant::now() < *at => {
                *at = (*at).max(until);
                true
            }
            _ => false,
        }
    }
}

impl Listener for LiveListener {
    fn extend(&self, until: Instant) -> bool {
        self.deadline.extend(until)
    }

    fn interface(&self) -> &str {
        &self.interface
    }

    fn control_port(&self) -> u16 {
        self.control_port
    }

    fn finish(self: Box<Self>) -> Result<Heard> {
        // What the kernel buffered before now was captured before we were asked: take it in.
        let now = Instant::now();
        self.capture.drain_since(now)?;
        self.control.drain_since(now)?;
        let take =
            |set: &Mutex<HashSet<u32>>| std::mem::take(&mut *set.lock().unwrap_or_else(|e| e.into_inner()));
        let indexes =
            std::mem::take(&mut *self.registration.interfaces.lock().unwrap_or_else(|e| e.into_inner()));
        // BTreeSet order: by index; the names are sorted for the report.
        let mut interfaces: Vec<String> = indexes
            .into_iter()
            .map(|index| interface::name_of_index(index).unwrap_or_else(|| format!("ifindex {index}")))
            .collect();
        interfaces.sort();
        Ok(Heard {
            probes: take(&self.registration.heard),
            control: take(&self.registration.control_heard),
            interfaces,
        })
    }
}

impl ProbeIo for ProbeSockets {
    fn listen(&self, spec: ListenSpec) -> Result<Box<dyn Listener>> {
        // The interface of the route back to the sender is what the expectation reports; the
        // capture hears every interface.
        let name = interface::for_route_to(spec.from)?;
        let capture = self.capture_tap(spec.port)?;
        let control = self.control_tap()?;
        let control_port = control.port;
        let registration = Arc::new(Registration {
            from: spec.from,
            vni: spec.vni,
            probe_id: spec.probe_id,
            heard: Default::default(),
            control_heard: Default::default(),
            interfaces: Default::default(),
        });
        capture.register(registration.clone());
        control.register(registration.clone());
        Ok(Box::new(LiveListener {
            interface: name,
            control_port,
            deadline: Deadline::new(Instant::now() + spec.window),
            registration,
            capture,
            control,
        }))
    }

    /// One socket for every target, and one egress capture per interface the targets are reached
    /// by; each round of sequence numbers goes to every target before the next.
    fn send(&self, spec: SendSpec) -> Result<Vec<Sent>> {
        let sized = !spec.sizes.is_empty();
        let mut by_interface: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, target) in spec.targets.iter().enumerate() {
            let name = interface::for_route_to(target.to)?;
            match by_interface.iter_mut().find(|(n, _)| *n == name) {
                Some((_, members)) => members.push(i),
                None => by_interface.push((name, vec![i])),
            }
        }
        let mut sent: Vec<Sent> = vec![Sent::default(); spec.targets.len()];
        // Each target's source address: its interface's (for sized probes, whose IPv4 header
        // is written here).
        let mut sources = vec![Ipv4Addr::UNSPECIFIED; spec.targets.len()];
        let mut captures = Vec::new();
        for (name, members) in &by_interface {
            let towards = |&i: &usize| {
                let t = &spec.targets[i];
                format!("(dst host {} and (dst port {} or dst port {}))", t.to, spec.port, t.control_port)
            };
            // And what comes back about them: a router that cannot forward a probe (too big, no
            // route) or a firewall that rejects it says so, if it is allowed to.
            let filter = format!(
                "(udp and ({})) or (icmp and icmp[0] == 3)",
                members.iter().map(towards).collect::<Vec<_>>().join(" or ")
            );
            captures.push(LiveCapture::open(name, &filter)?);
            let mtu = interface::mtu(name).ok();
            let source = if sized { interface::lookup(name)?.ipv4.first().copied() } else { None };
            for &i in members {
                sent[i].interface_mtu = mtu;
                sources[i] = source.unwrap_or(Ipv4Addr::UNSPECIFIED);
            }
        }
        let outlet = if sized { Outlet::raw()? } else { Outlet::udp()? };
        let probes = if sized { spec.sizes.len() as u32 } else { spec.count };
        for seq in 0..probes {
            let started = Instant::now();
            for (index, (target, sent)) in spec.targets.iter().zip(sent.iter_mut()).enumerate() {
                let probe = match sized {
                    true => vxlan::sized_probe_payload(
                        spec.vni,
                        target.probe_id,
                        seq,
                        usize::from(spec.sizes[seq as usize]),
                    ),
                    false => vxlan::probe_payload(spec.vni, target.probe_id, seq),
                };
                let control = vxlan::control_payload(target.probe_id, seq);
                let datagrams = [(&probe[..], spec.port), (&control[..], target.control_port)];
                for (payload, port) in datagrams.into_iter().take(if sized { 1 } else { 2 }) {
                    self.budget.take();
                    if let Err(e) = outlet.send(sources[index], payload, target.to, port) {
                        sent.send_error.get_or_insert(e.to_string());
                    }
                }
            }
            std::thread::sleep(spec.gap.saturating_sub(started.elapsed()));
        }
        // What left: read the egress captures a little past the last send.
        let until = Instant::now() + Duration::from_millis(100);
        let target_of = |to: Ipv4Addr| spec.targets.iter().position(|t| t.to == to);
        for mut capture in captures {
            while let Some(frame) = capture.next_before(until)? {
                if let Some(said) = vxlan::unreachable(frame.link, &frame.data) {
                    if let Some(i) =
                        target_of(said.quoted_destination).filter(|_| said.quoted_port == spec.port)
                    {
                        sent[i].unreachable.push(said);
                    }
                } else if let Some((_, to, port, payload)) = vxlan::outer_udp(frame.link, &frame.data) {
                    let Some(i) = target_of(to) else { continue };
                    let probe_id = spec.targets[i].probe_id;
                    if port == spec.port {
                        if let Some(seq) = vxlan::probe_seq(payload, spec.vni, probe_id) {
                            sent[i].left.insert(seq);
                        }
                    } else if let Some(seq) = vxlan::control_seq(payload, probe_id) {
                        sent[i].control_left.insert(seq);
                    }
                }
            }
        }
        Ok(sent)
    }
}

/// How probes leave this node.
enum Outlet {
    /// Plain probes and control datagrams: a UDP socket, through the kernel's UDP stack.
    Udp(UdpSocket),
    /// Sized probes: whole IPv4 packets with Don't Fragment on a raw socket, from a port no
    /// socket holds. Through a UDP socket, the ICMP fragmentation-needed that answers a probe
    /// too big for the path would find that socket, and the kernel would cache the smaller path
    /// MTU for the destination for ten minutes, for every sender on the node (it refuses pods'
    /// Don't-Fragment packets above it): the probe would change the node. Without a socket to
    /// deliver it to, the kernel reads the ICMP and changes nothing; the egress capture still
    /// sees it.
    Raw { socket: socket2::Socket, source_port: u16 },
}

impl Outlet {
    fn udp() -> Result<Outlet> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .map_err(|e| Error::could_not_run("binding the probe socket", e.to_string()))?;
        Ok(Outlet::Udp(socket))
    }

    fn raw() -> Result<Outlet> {
        use socket2::{Domain, Protocol, Socket, Type};
        let failed =
            |e: std::io::Error| Error::could_not_run("opening a raw socket for sized probes", e.to_string());
        let socket =
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).map_err(failed)?;
        // A port the kernel hands out, given back at once: free, and held by no socket.
        let source_port = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.local_addr())
            .map_err(|e| Error::could_not_run("picking a source port", e.to_string()))?
            .port();
        Ok(Outlet::Raw { socket, source_port })
    }

    fn send(&self, source: Ipv4Addr, payload: &[u8], to: Ipv4Addr, port: u16) -> std::io::Result<()> {
        match self {
            Outlet::Udp(socket) => socket.send_to(payload, (to, port)).map(drop),
            Outlet::Raw { socket, source_port } => {
                let packet = vxlan::ipv4_udp_packet(source, *source_port, to, port, payload)
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
                let address = socket2::SockAddr::from(std::net::SocketAddrV4::new(to, 0));
                socket.send_to(&packet, &address).map(drop)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(from: Ipv4Addr, probe_id: u64) -> Arc<Registration> {
        Arc::new(Registration {
            from,
            vni: 1,
            probe_id,
            heard: Default::default(),
            control_heard: Default::default(),
            interfaces: Default::default(),
        })
    }

    #[test]
    fn one_control_socket_serves_every_expectation_and_finish_takes_in_what_was_buffered() {
        // Two expectations share the agent's one control socket (on loopback, inside this test).
        let sockets = ProbeSockets::new(100);
        let (tap, again) = (sockets.control_tap().unwrap(), sockets.control_tap().unwrap());
        assert!(Arc::ptr_eq(&tap, &again), "shared while held");
        let me = Ipv4Addr::LOCALHOST;
        let (first, second) = (registration(me, 7), registration(me, 8));
        tap.register(first.clone());
        tap.register(second.clone());
        let sender = UdpSocket::bind((me, 0)).unwrap();
        for (probe_id, seq) in [(7, 0), (7, 1), (8, 5), (9, 0)] {
            sender.send_to(&vxlan::control_payload(probe_id, seq), (me, tap.port)).unwrap();
        }
        // Sent before the barrier: every datagram is handed out by the time it returns.
        tap.drain_since(Instant::now()).unwrap();
        let heard = |r: &Registration| r.control_heard.lock().unwrap().clone();
        assert_eq!(heard(&first), HashSet::from([0, 1]));
        assert_eq!(heard(&second), HashSet::from([5]), "probe 9 is nobody's");
        // Once nobody holds it, the next expectation gets a new socket.
        drop((tap, again));
        let fresh = sockets.control_tap().unwrap();
        assert!(fresh.failure().is_none());
    }
}
