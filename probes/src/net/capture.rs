//! Live capture and layer-2 injection on one interface through libpcap: immediate mode (no
//! buffering delay) and a kernel BPF filter set before the first frame is sent, so no answer can
//! arrive before we listen.

#![allow(unsafe_code)] // libc calls the OS offers no safe wrapper for here; each with a SAFETY comment.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use pcap::{Active, Capture};

use super::{interface, now_since_epoch, privilege, Captured, Link};
use crate::wire::link::LinkType;
use crate::{Error, Result};

pub struct LiveCapture {
    capture: Capture<Active>,
    link: LinkType,
    interface: String,
}

impl LiveCapture {
    /// Opens `interface` with `filter` (BPF syntax, as tcpdump takes it) already applied.
    pub fn open(interface: &str, filter: &str) -> Result<LiveCapture> {
        interface::lookup(interface)?;
        Self::open_device(interface, filter, None)
    }

    /// Opens every interface of this network namespace at once (libpcap's `any`), with SLL2
    /// headers so that each packet says which interface it came in on
    /// ([`crate::wire::link::LinkFrame::ifindex`]).
    pub fn open_any(filter: &str) -> Result<LiveCapture> {
        Self::open_device("any", filter, Some(pcap::Linktype(276)))
    }

    fn open_device(interface: &str, filter: &str, link: Option<pcap::Linktype>) -> Result<LiveCapture> {
        let op = format!("capturing on {interface}");
        privilege::require_net_raw(&op)?;
        let mut capture = Capture::from_device(interface)
            .and_then(|c| c.immediate_mode(true).snaplen(512).open())
            .map_err(|e| pcap_error(&op, interface, e))?;
        if let Some(link) = link {
            capture.set_datalink(link).map_err(|e| pcap_error(&op, interface, e))?;
        }
        // Non-blocking, with our own poll(2) on its fd: libpcap's read timeout is not a deadline
        // (with immediate mode on Linux it polls again by itself instead of returning).
        let mut capture = capture.setnonblock().map_err(|e| pcap_error(&op, interface, e))?;
        capture
            .filter(filter, true)
            .map_err(|e| Error::could_not_run(format!("setting capture filter {filter:?}"), e.to_string()))?;
        let dlt = capture.get_datalink().0;
        let link = u32::try_from(dlt).ok().and_then(LinkType::from_dlt).ok_or_else(|| {
            Error::could_not_run(
                op.clone(),
                format!("link type {dlt} is not Ethernet: pick an Ethernet interface with -i"),
            )
        })?;
        Ok(LiveCapture { capture, link, interface: interface.to_string() })
    }
}

impl Link for LiveCapture {
    fn link_type(&self) -> LinkType {
        self.link
    }

    /// The time is taken before the call: on a veth the answer can be captured before
    /// `sendpacket` even returns.
    fn send(&mut self, frame: &[u8]) -> Result<Duration> {
        let at = now_since_epoch();
        self.capture
            .sendpacket(frame)
            .map_err(|e| pcap_error(&format!("sending on {}", self.interface), &self.interface, e))?;
        Ok(at)
    }

    /// The next frame that passes the filter, or `None` once `deadline` has passed.
    fn next_before(&mut self, deadline: Instant) -> Result<Option<Captured>> {
        loop {
            match self.capture.next_packet() {
                Ok(packet) => {
                    let ts = packet.header.ts;
                    let micros = ts.tv_usec.clamp(0, 999_999) as u32;
                    let at = Duration::new(ts.tv_sec.max(0) as u64, micros * 1000);
                    return Ok(Some(Captured { at, link: self.link, data: packet.data.to_vec() }));
                }
                // Nothing buffered: wait for the fd to become readable, up to the deadline.
                Err(pcap::Error::TimeoutExpired) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    let mut fd =
                        libc::pollfd { fd: self.capture.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                    let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                    // SAFETY: one valid pollfd, owned by this stack frame, for the duration of the call.
                    if unsafe { libc::poll(&mut fd, 1, ms) } < 0 {
                        let err = std::io::Error::last_os_error();
                        if err.kind() != std::io::ErrorKind::Interrupted {
                            return Err(Error::could_not_run(
                                format!("waiting on {}", self.interface),
                                err.to_string(),
                            ));
                        }
                    }
                }
                Err(e) => {
                    return Err(pcap_error(&format!("reading from {}", self.interface), &self.interface, e))
                }
            }
        }
    }
}

/// libpcap reports missing privilege and missing devices as text; turn them into our errors.
fn pcap_error(op: &str, interface: &str, err: pcap::Error) -> Error {
    let text = err.to_string();
    if text.contains("Operation not permitted") || text.contains("Permission denied") {
        Error::NoPrivilege { op: op.to_string() }
    } else if text.contains("No such device") {
        Error::NoSuchInterface { name: interface.to_string() }
    } else {
        Error::could_not_run(op, text)
    }
}
