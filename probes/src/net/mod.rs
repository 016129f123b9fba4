//! The only code in netprobe that touches the operating system: live captures and injection,
//! capture files, interfaces and routes, privileges.

pub mod capture;
pub mod capture_file;
pub mod dns;
pub mod interface;
pub mod iptables;
pub mod privilege;
pub mod signal;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::wire::link::LinkType;

/// One frame as a capture saw it, live or from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Capture timestamp since the Unix epoch (the kernel's receive time for live captures).
    pub at: Duration,
    pub link: LinkType,
    pub data: Vec<u8>,
}

/// Wall-clock time since the Unix epoch, the clock capture timestamps use.
pub fn now_since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
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
