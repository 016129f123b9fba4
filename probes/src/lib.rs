//! The packet side of netprobe.
//!
//! - [`wire`]: typed views over bytes (MAC addresses, ARP frames, link-layer headers).
//! - [`net`]: the only code that touches the operating system (captures, interfaces, privileges).
//! - one engine per probe ([`arp`]): a `Config` goes in, a serialisable `Report` comes out.
//!
//! This crate never prints, never parses command-line flags and never exits: the `netprobe`
//! binary does that with the reports and [`Error`]s returned from here.

pub mod arp;
pub mod dns;
pub mod doctor;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod iptables;
pub mod k8s;
pub mod net;
pub mod oui;
pub mod vxlan;
pub mod wire;

pub use error::{Error, Result};
pub use health::Health;

/// Rounds to three decimals (milliseconds to microseconds, seconds to milliseconds) for reports.
pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
