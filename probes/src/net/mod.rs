//! The only code in netprobe that touches the operating system: live captures and injection,
//! capture files, interfaces and routes, privileges, sockets, commands.
//!
//! The engines reach the OS through small traits defined here ([`Link`], [`Clock`], and in the
//! modules beside them), implemented by the real thing and, in tests, by the fakes in [`fake`].

pub mod budget;
pub mod capture;
pub mod capture_file;
pub mod conntrack;
pub mod dns;
pub mod drop_trace;
#[cfg(test)]
pub mod fake;
pub mod firewall;
pub mod input;
pub mod interface;
pub mod iptables;
pub mod memory;
pub mod privilege;
pub mod probe_io;
pub mod signal;
pub mod snmp;
pub mod tcp_connect;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::wire::link::LinkType;

/// One frame as a capture saw it, live or from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Capture timestamp since the Unix epoch (the kernel's receive time for live captures).
    pub at: Duration,
    pub link: LinkType,
    pub data: Vec<u8>,
}

/// A layer-2 link: frames go out, captured frames come in before a deadline. Implemented by
/// [`capture::LiveCapture`] and, in tests, by [`fake::FakeLink`].
pub trait Link {
    fn link_type(&self) -> LinkType;
    /// Sends one complete link-layer frame; returns the wall-clock time it was handed over,
    /// comparable with [`Captured::at`].
    fn send(&mut self, frame: &[u8]) -> crate::Result<Duration>;
    /// The next captured frame, or `None` once `deadline` has passed.
    fn next_before(&mut self, deadline: Instant) -> crate::Result<Option<Captured>>;
}

/// The two clocks a probe reads: monotonic for deadlines, wall-clock for timestamps.
pub trait Clock {
    fn now(&self) -> Instant;
    /// Time since the Unix epoch.
    fn wall(&self) -> Duration;
}

/// The machine's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> Duration {
        now_since_epoch()
    }
}

/// Wall-clock time since the Unix epoch, the clock capture timestamps use.
pub fn now_since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The kernel's CLOCK_MONOTONIC, which stamps what it logs (tracefs with trace_clock `mono`,
/// /dev/kmsg records): how long ago the kernel wrote something. (std's `Instant` reads the same
/// clock but does not show its value.)
#[allow(unsafe_code)] // clock_gettime(2): no safe wrapper gives the value.
pub fn monotonic_now() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into `now`, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0))
}

/// A tokio runtime for one probe: one thread (`workers` None) or a pool of `workers`.
pub fn runtime(op: &str, workers: Option<usize>) -> crate::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        None => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder.enable_all().build().map_err(|e| crate::Error::could_not_run(op, e.to_string()))
}

/// Raises this process's limit on open files to its hard limit (rlimit) and returns the limit now
/// in force: the vxlan driver holds a connection for each request in flight, to every agent.
pub fn raise_open_files_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}
