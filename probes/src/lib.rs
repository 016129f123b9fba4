//! The packet side of netprobe: the engines, and the OS beneath them.
//!
//! - [`wire`]: typed views over bytes (its own crate, `netprobe-wire`: no I/O, fuzzed alone).
//! - [`net`]: the only code that touches the operating system (captures, sockets, interfaces,
//!   counters, privileges), behind small traits with fakes for the tests.
//! - one engine per probe: [`arp`], [`dns`], [`vxlan`] (the driver; the agent it drives is the
//!   `netprobe-agent` crate), [`iptables`], and [`doctor`] over them. A `Config` goes in, a
//!   serialisable report comes out, judged by a pure step from typed evidence.
//! - [`cluster`]: what the engines need to know of a cluster, as plain data (the `netprobe-k8s`
//!   crate reads it from the API).
//!
//! This crate never prints, never parses command-line flags and never exits: the `netprobe`
//! binary does that with the reports and [`Error`]s returned from here.

pub mod arp;
pub mod cluster;
pub mod conntrack;
pub mod dns;
pub mod doctor;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod iptables;
pub mod net;
pub mod oui;
pub mod vxlan;
/// The wire formats, from their own crate (no I/O, fuzzed alone).
pub use netprobe_wire as wire;

pub use error::{Error, Result};
pub use health::Health;

/// Rounds to three decimals (milliseconds to microseconds, seconds to milliseconds) for reports.
pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
