//! The agent's packet I/O: listening for probes (a capture on the interface towards the sender and
//! a control UDP socket, each on a thread) and sending them through the kernel's UDP stack while
//! capturing what leaves. The agent's handlers reach it through [`ProbeIo`]; [`Sockets`] is real.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// What to send.
#[derive(Clone, Copy, Debug)]
pub struct SendSpec {
    pub to: Ipv4Addr,
    pub port: u16,
    pub control_port: u16,
    pub vni: u32,
    pub probe_id: u64,
    pub count: u32,
    /// Between probes.
    pub gap: Duration,
}

/// The sequence numbers heard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    pub probes: HashSet<u32>,
    pub control: HashSet<u32>,
}

/// What left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub left: HashSet<u32>,
    pub control_left: HashSet<u32>,
    /// The first error sendto(2) gave (EPERM when this node's own firewall drops the packet).
    pub send_error: Option<String>,
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
    fn send(&self, spec: SendSpec) -> Result<Sent>;
}

/// The real captures and sockets, and the packet budget every send of this agent shares.
#[derive(Debug)]
pub struct Sockets {
    budget: PacketBudget,
}

impl Sockets {
    /// At most `per_second` packets a second over all sends together.
    pub fn new(per_second: u32) -> Sockets {
        Sockets { budget: PacketBudget::new(per_second) }
    }
}

/// A token bucket: `per_second` packets a second, a tenth of a second's worth at once at most.
#[derive(Debug)]
pub struct PacketBudget {
    per_second: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, Instant)>, // (tokens, last refill)
}

impl PacketBudget {
    pub fn new(per_second: u32) -> PacketBudget {
        let per_second = f64::from(per_second.max(1));
        let burst = (per_second / 10.0).max(1.0);
        PacketBudget { per_second, burst, state: std::sync::Mutex::new((burst, Instant::now())) }
    }

    /// How long to wait before one more packet may go, taking it (zero: go now).
    pub fn take_at(&self, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let tokens =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        let after = tokens - 1.0;
        *state = (after, now.max(last));
        if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / self.per_second)
        }
    }

    /// Blocks until one more packet may go.
    fn take(&self) {
        let wait = self.take_at(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

struct LiveListener {
    interface: String,
    control_port: u16,
    deadline: Arc<Deadline>,
    stop: Arc<AtomicBool>,
    capture: JoinHandle<Result<HashSet<u32>>>,
    control: JoinHandle<HashSet<u32>>,
}

/// When listening ends: moved later by [`Listener::extend`], closed for good by the first thread
/// that finds it passed. Both under one lock, so an extension either keeps the threads going or
/// is refused, never lost between a thread's check and its exit.
struct Deadline(std::sync::Mutex<Option<Instant>>);

impl Deadline {
    fn new(at: Instant) -> Deadline {
        Deadline(std::sync::Mutex::new(Some(at)))
    }

    /// The deadline while it has not passed; once it has (or on `stop`), closes it: None.
    fn still_open(&self, stop: &AtomicBool) -> Option<Instant> {
        let mut deadline = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match *deadline {
            Some(at) if !stop.load(Ordering::Relaxed) && Instant::now() < at => Some(at),
            _ => {
                *deadline = None;
                None
            }
        }
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
        self.stop.store(true, Ordering::Relaxed);
        let failed = |what: &str| {
            Error::could_not_run(
                format!("capturing on {}", self.interface),
                format!("the {what} thread failed"),
            )
        };
        let probes = self.capture.join().map_err(|_| failed("capture"))??;
        let control = self.control.join().map_err(|_| failed("control socket"))?;
        Ok(Heard { probes, control })
    }
}

impl ProbeIo for Sockets {
    fn listen(&self, spec: ListenSpec) -> Result<Box<dyn Listener>> {
        let name = interface::for_route_to(spec.from)?;
        let deadline = Arc::new(Deadline::new(Instant::now() + spec.window));
        let stop = Arc::new(AtomicBool::new(false));
        // Capture first (filter set before anyone sends), then the control socket.
        let filter = format!("udp and src host {} and dst port {}", spec.from, spec.port);
        let mut capture = LiveCapture::open(&name, &filter)?;
        let control = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .map_err(|e| Error::could_not_run("binding the control socket", e.to_string()))?;
        let control_port = control.local_addr().map(|a| a.port()).unwrap_or(0);
        let stopping = stop.clone();
        let until = deadline.clone();
        let capture_thread = std::thread::spawn(move || -> Result<HashSet<u32>> {
            let mut seen = HashSet::new();
            let mut take = |frame: super::Captured| {
                if let Some((_, _, _, payload)) = vxlan::outer_udp(frame.link, &frame.data) {
                    if let Some(seq) = vxlan::probe_seq(payload, spec.vni, spec.probe_id) {
                        seen.insert(seq);
                    }
                }
            };
            while let Some(at) = until.still_open(&stopping) {
                let tick = (Instant::now() + Duration::from_millis(20)).min(at);
                while let Some(frame) = capture.next_before(tick)? {
                    take(frame);
                }
            }
            // Whatever the kernel still buffers was captured before we were asked: take it.
            while let Some(frame) = capture.next_before(Instant::now() + Duration::from_millis(20))? {
                take(frame);
            }
            Ok(seen)
        });
        let stopping = stop.clone();
        let until = deadline.clone();
        let control_thread = std::thread::spawn(move || {
            let mut seen = HashSet::new();
            let _ = control.set_read_timeout(Some(Duration::from_millis(20)));
            let mut buf = [0u8; 256];
            while until.still_open(&stopping).is_some() {
                if let Ok((n, SocketAddr::V4(peer))) = control.recv_from(&mut buf) {
                    if *peer.ip() == spec.from {
                        if let Some(seq) = vxlan::control_seq(&buf[..n], spec.probe_id) {
                            seen.insert(seq);
                        }
                    }
                }
            }
            seen
        });
        Ok(Box::new(LiveListener {
            interface: name,
            control_port,
            deadline,
            stop,
            capture: capture_thread,
            control: control_thread,
        }))
    }

    fn send(&self, spec: SendSpec) -> Result<Sent> {
        let name = interface::for_route_to(spec.to)?;
        let filter = format!(
            "udp and dst host {} and (dst port {} or dst port {})",
            spec.to, spec.port, spec.control_port
        );
        let mut capture = LiveCapture::open(&name, &filter)?;
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .map_err(|e| Error::could_not_run("binding the probe socket", e.to_string()))?;
        let mut sent = Sent::default();
        for seq in 0..spec.count {
            let probe = vxlan::probe_payload(spec.vni, spec.probe_id, seq);
            let control = vxlan::control_payload(spec.probe_id, seq);
            for (payload, port) in [(&probe[..], spec.port), (&control[..], spec.control_port)] {
                self.budget.take();
                if let Err(e) = socket.send_to(payload, (spec.to, port)) {
                    sent.send_error.get_or_insert(e.to_string());
                }
            }
            std::thread::sleep(spec.gap);
        }
        // What left: read the egress capture a little past the last send.
        let until = Instant::now() + Duration::from_millis(100);
        while let Some(frame) = capture.next_before(until)? {
            if let Some((_, _, port, payload)) = vxlan::outer_udp(frame.link, &frame.data) {
                if port == spec.port {
                    if let Some(seq) = vxlan::probe_seq(payload, spec.vni, spec.probe_id) {
                        sent.left.insert(seq);
                    }
                } else if let Some(seq) = vxlan::control_seq(payload, spec.probe_id) {
                    sent.control_left.insert(seq);
                }
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_refills_with_time() {
        let budget = PacketBudget::new(100); // a burst of 10
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(budget.take_at(start), Duration::ZERO);
        }
        // The 11th at the same instant waits a hundredth of a second; the 12th, two.
        assert_eq!(budget.take_at(start), Duration::from_millis(10));
        assert_eq!(budget.take_at(start), Duration::from_millis(20));
        // A second later the bucket is full again, but never fuller than its burst.
        let later = start + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(budget.take_at(later), Duration::ZERO);
        }
        assert!(budget.take_at(later) > Duration::ZERO);
    }
}
