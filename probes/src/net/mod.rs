//! The only code in netprobe that touches the operating system: live captures and injection,
//! capture files, interfaces and routes, privileges.

pub mod capture;
pub mod capture_file;
pub mod dns;
pub mod interface;
pub mod iptables;
pub mod privilege;
pub mod signal;

use std::time::Duration;

use crate::wire::link::LinkType;

/// One frame as a capture saw it, live or from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Capture timestamp since the Unix epoch (the kernel's receive time for live captures).
    pub at: Duration,
    pub link: LinkType,
    pub data: Vec<u8>,
}
